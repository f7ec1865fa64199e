//! `coordinator.toml`: every flag of `tillswarm coordinator` as a config key
//! of the same name (`--max-package-mb` is `max_package_mb`). Precedence:
//! a flag given on the command line (or through its environment variable),
//! then the file, then the built-in default. The packaged unit reads
//! `/etc/tillswarm/coordinator.toml`; the example lives in
//! `fixtures/config/coordinator.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use super::CoordinatorArgs;

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/tillswarm/coordinator.toml";

/// Largest config file read; a real one is a few hundred bytes.
const MAX_BYTES: u64 = 64 * 1024;

/// The file's keys; any other key is refused (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorFile {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    max_package_mb: Option<u64>,
    max_unpacked_mb: Option<u64>,
    poll_interval_s: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_http: Option<bool>,
    allowed_origin: Option<Vec<String>>,
    secure_cookies: Option<bool>,
    metrics_token: Option<String>,
    header_timeout_s: Option<u64>,
    max_connections: Option<usize>,
    body_timeout_s: Option<u64>,
    session_idle_min: Option<u64>,
    session_max_hours: Option<u64>,
    audit_retention_days: Option<u64>,
    init_admin: Option<String>,
    chunk_store: Option<tillswarm_coordinator::chunks::bucket::BucketUrl>,
    chunk_base_url: Option<String>,
    database: Option<tillswarm_coordinator::db::Database>,
}

impl CoordinatorFile {
    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        toml::from_str(text).with_context(|| format!("reading {}", origin.display()))
    }

    /// Reads the file at `path`, bounded in size.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(
            meta.len() <= MAX_BYTES,
            "{} is {} bytes; a coordinator config is at most {MAX_BYTES}",
            path.display(),
            meta.len()
        );
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }
}

/// Whether the argument `id` was given on the command line or through its
/// environment variable, at this level or in a subcommand (a global flag such
/// as `--data` may follow the subcommand).
fn given(matches: &ArgMatches, id: &str) -> bool {
    let here = matches!(
        matches
            .try_get_raw(id)
            .ok()
            .flatten()
            .and_then(|_| matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    here || matches.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

impl CoordinatorArgs {
    /// Fills in what the command line left to the config file: `--config`
    /// when given (it must exist), else [`DEFAULT_PATH`] when it exists.
    /// Returns the file read, if any.
    pub fn apply_config_file(&mut self, matches: &ArgMatches) -> anyhow::Result<Option<PathBuf>> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok(None),
        };
        let file = CoordinatorFile::load(&path)?;
        self.merge(file, matches);
        Ok(Some(path))
    }

    /// Takes each key of `file` that the command line did not give.
    fn merge(&mut self, file: CoordinatorFile, matches: &ArgMatches) {
        // A key with a default (or a flag): the file replaces the default.
        macro_rules! plain {
            ($($key:ident),* $(,)?) => {$(
                if let Some(v) = file.$key {
                    if !given(matches, stringify!($key)) {
                        self.$key = v;
                    }
                }
            )*};
        }
        // A key whose flag is optional.
        macro_rules! optional {
            ($($key:ident),* $(,)?) => {$(
                if file.$key.is_some() && !given(matches, stringify!($key)) {
                    self.$key = file.$key;
                }
            )*};
        }
        plain!(
            data,
            listen,
            max_package_mb,
            max_unpacked_mb,
            poll_interval_s,
            insecure_http,
            allowed_origin,
            secure_cookies,
            header_timeout_s,
            max_connections,
            body_timeout_s,
            session_idle_min,
            session_max_hours,
            audit_retention_days,
            database,
        );
        optional!(
            tls_cert,
            tls_key,
            metrics_token,
            init_admin,
            chunk_store,
            chunk_base_url
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CoordinatorArgs,
    }

    fn parse(argv: &[&str], file: &str) -> CoordinatorArgs {
        let matches = Wrapper::command()
            .try_get_matches_from(std::iter::once("coordinator").chain(argv.iter().copied()))
            .expect("arguments");
        let mut w = Wrapper::from_arg_matches(&matches).expect("arguments");
        let file = CoordinatorFile::parse(file, Path::new("test.toml")).expect("config");
        w.args.merge(file, &matches);
        w.args
    }

    fn example() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config/coordinator.toml");
        std::fs::read_to_string(path).expect("example coordinator.toml")
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_and_flags_win() {
        let file = "listen = \"0.0.0.0:8443\"\npoll_interval_s = 60\n\
                    allowed_origin = [\"https://panel.example\"]\ninsecure_http = true\n\
                    tls_cert = \"/etc/a.pem\"\ntls_key = \"/etc/a.key\"\ndata = \"/srv/d\"\n";
        let a = parse(&[], file);
        assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(a.poll_interval_s, 60);
        assert_eq!(a.allowed_origin, ["https://panel.example"]);
        assert!(a.insecure_http);
        assert_eq!(a.tls_cert.as_deref(), Some(Path::new("/etc/a.pem")));
        assert_eq!(a.data, Path::new("/srv/d"));
        // Defaults stay where the file is silent.
        assert_eq!(a.max_package_mb, 4096);

        let a = parse(
            &[
                "--listen",
                "127.0.0.1:9000",
                "--poll-interval-s",
                "5",
                "--tls-cert",
                "/x.pem",
                "--tls-key",
                "/x.key",
                "--data",
                "/cli",
            ],
            file,
        );
        assert_eq!(a.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(a.poll_interval_s, 5);
        assert_eq!(a.tls_cert.as_deref(), Some(Path::new("/x.pem")));
        assert_eq!(a.data, Path::new("/cli"));
        // Keys the command line did not give still come from the file.
        assert_eq!(a.allowed_origin, ["https://panel.example"]);
    }

    #[test]
    fn a_global_flag_after_a_subcommand_still_wins() {
        let a = parse(&["user", "list", "--data", "/cli"], "data = \"/file\"\n");
        assert_eq!(a.data, Path::new("/cli"));
        let a = parse(&["user", "list"], "data = \"/file\"\n");
        assert_eq!(a.data, Path::new("/file"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_the_key_named() {
        for (text, needle) in [
            ("listn = \"0.0.0.0:1\"\n", "listn"),
            ("poll_interval_s = \"thirty\"\n", "poll_interval_s"),
            ("listen = \"not an address\"\n", "listen"),
            ("max_connections = -1\n", "max_connections"),
        ] {
            let err = CoordinatorFile::parse(text, Path::new("c.toml")).expect_err(text);
            let msg = format!("{err:#}");
            assert!(msg.contains(needle) && msg.contains("c.toml"), "{msg}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, "# x\n".repeat(20_000)).expect("write");
        let err = CoordinatorFile::load(&path).expect_err("too large");
        assert!(format!("{err:#}").contains("at most"), "{err:#}");
    }

    #[test]
    fn every_flag_has_a_key_and_the_example_names_each_and_parses() {
        let example = example();
        let parsed = CoordinatorFile::parse(&example, Path::new("example")).expect("example");
        assert!(parsed.data.is_some() && parsed.listen.is_some());
        let command = Wrapper::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "config" | "help" | "version") {
                continue;
            }
            // The key is known to the file's struct...
            let one = match arg.get_action().takes_values() {
                false => format!("{id} = true\n"),
                true if id == "allowed_origin" => format!("{id} = [\"https://x\"]\n"),
                true if id == "listen" => format!("{id} = \"127.0.0.1:1\"\n"),
                true if id == "chunk_store" => format!("{id} = \"s3://chunks\"\n"),
                true if id == "database" => format!("{id} = \"postgres://u@h/db\"\n"),
                true if id.ends_with("_mb")
                    || id.ends_with("_s")
                    || id.ends_with("_min")
                    || id.ends_with("_hours")
                    || id.ends_with("_days")
                    || id == "max_connections" =>
                {
                    format!("{id} = 1\n")
                }
                true => format!("{id} = \"x\"\n"),
            };
            CoordinatorFile::parse(&one, Path::new("one")).expect(&one);
            // ...and the example documents it (set or commented out).
            assert!(
                example.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{id} ="))),
                "fixtures/config/coordinator.toml does not mention `{id}`"
            );
        }
    }
}
