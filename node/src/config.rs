//! The node's configuration file (TOML). Every field is documented; the example in
//! `fixtures/config/node.toml` is parsed by a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tillswarm_protocol::manifest::PublicKey;
use tillswarm_protocol::{ChainId, DeviceId, StoreId, Version};

use crate::error::{Error, Result};

/// Settings of one till's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The till's GUID, as the store's till server knows it.
    pub device_id: DeviceId,
    /// The retail chain; peers of other chains are never contacted.
    pub chain_id: ChainId,
    /// The store the till stands in; peers of other stores are never contacted.
    pub store_id: StoreId,
    /// Base URL of the coordinator, e.g. `https://updates.example:8443`.
    pub coordinator_url: String,
    /// PEM file with the CA that issued the coordinator's TLS certificate
    /// (a chain's private CA): only it is trusted for `https://`. Absent: the
    /// system's trusted roots.
    #[serde(default)]
    pub coordinator_ca_file: Option<PathBuf>,
    /// The coordinator's manifest signing key (64 hex, from `coordinator.pub`):
    /// manifests signed by any other key are refused.
    pub coordinator_public_key: PublicKey,
    /// A store enrollment token (`tillswarm coordinator enroll-token create`),
    /// for a till the store registry does not list: its first login joins
    /// the store. Tills in the registry need none; a till with neither waits
    /// for an admin's approval. The till proves itself with its own device key
    /// (`device.key` in `data_dir`, made on first start).
    #[serde(default)]
    pub enroll_token: Option<String>,
    /// Folder for the node's own state, chunks and logs.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The till software's root; packages are staged in `<update_root>/update/<version>/`.
    #[serde(default = "default_update_root")]
    pub update_root: PathBuf,
    /// Command that reboots the till after an install (run by `sh -c`); `none`
    /// skips the reboot (simulated tills, tests).
    #[serde(default = "default_reboot_command")]
    pub reboot_command: String,
    /// Cap on bandwidth from the coordinator (the WAN), in kbit/s; absent: none.
    #[serde(default)]
    pub wan_rate_limit_kbit: Option<u64>,
    /// Cap on bandwidth from the store's other tills (the LAN), in kbit/s;
    /// absent: none. Keeps sharing from crowding a busy store LAN.
    #[serde(default)]
    pub lan_rate_limit_kbit: Option<u64>,
    /// Disk space (MiB) kept free on the update volume: a package that would
    /// leave less is refused before it is fetched.
    #[serde(default = "default_disk_reserve_mb")]
    pub disk_reserve_mb: u64,
    /// Longest an `up.sh` may run before it is killed and the install fails.
    #[serde(default = "default_install_timeout_s")]
    pub install_timeout_s: u64,
    /// Address of the local interface the POS software (or a person) uses to
    /// answer the update prompt; keep it on loopback.
    #[serde(default = "default_local_api")]
    pub local_api_listen: SocketAddr,
    /// Longest wait for the POS to confirm it left sale mode before installing.
    #[serde(default = "default_sale_mode_timeout_s")]
    pub sale_mode_timeout_s: u64,
    /// How often `<update_root>/update/` is scanned for packages dropped in by hand.
    #[serde(default = "default_drop_in_scan_s")]
    pub drop_in_scan_s: u64,
    /// Also offer a loose folder (`update/<version>/up.sh`, or one tar in it)
    /// put there by hand, which nothing signed. Off: only signed bundles
    /// (`tillswarm package export`, `*.tsb`) are offered, and a loose folder
    /// is reported to the coordinator as refused.
    #[serde(default)]
    pub allow_unsigned_dropin: bool,
    /// File with the secret the local interface's callers send as
    /// `Authorization: Bearer` (made on first start, mode 0640; let the POS
    /// software's group read it). Absent: `<data_dir>/local-api.secret`.
    #[serde(default)]
    pub local_api_secret_file: Option<PathBuf>,
    /// The version the till runs before tillswarm installs anything (later the
    /// node remembers what it installed).
    #[serde(default)]
    pub initial_version: Option<Version>,
    /// The chain's store-swarm key (64 hex): tills share chunks only with peers
    /// holding the same key. Absent: no swarm, every chunk comes over the WAN.
    #[serde(default)]
    pub swarm_key: Option<String>,
    /// Where the swarm listens for the store's other tills.
    #[serde(default = "default_swarm_listen")]
    pub swarm_listen: SocketAddr,
    /// Subnets (CIDR) store peers may be dialled in, besides the subnets of
    /// this till's own interfaces, which are always allowed. An address
    /// elsewhere that a LAN record names is never dialled.
    #[serde(default)]
    pub swarm_peer_subnets: Vec<ipnet::IpNet>,
    /// The lowest and highest port store peers may be dialled on (keep the
    /// chain's swarm port inside; the default leaves out privileged ports).
    #[serde(default = "default_swarm_peer_ports")]
    pub swarm_peer_ports: [u16; 2],
    /// Find the store's other tills with mDNS (off: only peers given by the harness).
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Most chunk uploads served to peers at once.
    #[serde(default = "default_max_uploads")]
    pub max_uploads: usize,
}

fn default_swarm_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
fn default_swarm_peer_ports() -> [u16; 2] {
    [1024, 65535]
}
fn default_true() -> bool {
    true
}
fn default_max_uploads() -> usize {
    4
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/tillswarm")
}
fn default_update_root() -> PathBuf {
    PathBuf::from("/home/ukm5/mint")
}
fn default_reboot_command() -> String {
    "systemctl reboot".into()
}
fn default_disk_reserve_mb() -> u64 {
    512
}
fn default_install_timeout_s() -> u64 {
    // The seed: an update takes 15 to 20 minutes.
    45 * 60
}
fn default_local_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7781))
}
fn default_sale_mode_timeout_s() -> u64 {
    120
}
fn default_drop_in_scan_s() -> u64 {
    60
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let url = self.coordinator_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "coordinator_url must be http(s)://..., got {url:?}"
            )));
        }
        if !self.local_api_listen.ip().is_loopback() {
            return Err(Error::Config(
                "local_api_listen must be a loopback address".into(),
            ));
        }
        if self.install_timeout_s == 0 || self.drop_in_scan_s == 0 {
            return Err(Error::Config(
                "install_timeout_s and drop_in_scan_s must be positive".into(),
            ));
        }
        if let Some(k) = &self.swarm_key {
            self.swarm_psk().map_err(|_| {
                Error::Config(format!(
                    "swarm_key must be 64 hex characters, got {} characters",
                    k.len()
                ))
            })?;
        }
        if self.wan_rate_limit_kbit == Some(0) || self.lan_rate_limit_kbit == Some(0) {
            return Err(Error::Config(
                "wan_rate_limit_kbit and lan_rate_limit_kbit must be positive (omit for no cap)"
                    .into(),
            ));
        }
        let [lo, hi] = self.swarm_peer_ports;
        if lo == 0 || lo > hi {
            return Err(Error::Config(format!(
                "swarm_peer_ports must be [lowest, highest] with 0 < lowest <= highest, got [{lo}, {hi}]"
            )));
        }
        if self.max_uploads == 0 {
            return Err(Error::Config("max_uploads must be positive".into()));
        }
        if self.reboot_command.trim().is_empty() {
            return Err(Error::Config(
                "reboot_command is empty (use \"none\" to skip rebooting)".into(),
            ));
        }
        Ok(())
    }

    /// The coordinator URL without a trailing slash.
    pub fn coordinator(&self) -> &str {
        self.coordinator_url.trim_end_matches('/')
    }

    /// The swarm key's 32 bytes, when a swarm is configured.
    pub fn swarm_psk(&self) -> Result<Option<[u8; 32]>> {
        match &self.swarm_key {
            None => Ok(None),
            Some(k) => {
                let h: tillswarm_protocol::ChunkHash = k
                    .trim()
                    .parse()
                    .map_err(|_| Error::Config("swarm_key must be 64 hex characters".into()))?;
                Ok(Some(h.0))
            }
        }
    }

    /// `<update_root>/update`.
    pub fn update_dir(&self) -> PathBuf {
        self.update_root.join("update")
    }

    /// The local interface's secret file (see [`Self::local_api_secret_file`]).
    pub fn local_api_secret_path(&self) -> PathBuf {
        self.local_api_secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("local-api.secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/config/node.toml");
        let c = NodeConfig::load(&path).expect("example config");
        assert_eq!(c.store_id.as_str(), "store-001");
        assert_eq!(c.update_dir(), PathBuf::from("/home/ukm5/mint/update"));
        assert_eq!(c.wan_rate_limit_kbit, Some(8000));
        assert_eq!(c.lan_rate_limit_kbit, Some(200_000));
        assert_eq!(
            c.initial_version.map(|v| v.to_string()),
            Some("5.2.100".into())
        );
    }

    /// The Debian package's `/etc/tillswarm/node.toml` is the example with
    /// per-chain and per-till values left to set, and refuses to start as
    /// shipped (pointing at a value to set).
    #[test]
    fn the_packaged_template_is_the_example_with_values_to_set() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example =
            std::fs::read_to_string(root.join("fixtures/config/node.toml")).expect("example");
        let template = std::fs::read_to_string(root.join("packaging/node.toml")).expect("template");
        let err = NodeConfig::parse(&template).expect_err("the template is not a config");
        assert!(err.to_string().contains("SET-"), "{err}");
        let header_end = template.find("\n\n").expect("header") + 2;
        let mut filled = template[header_end..].to_owned();
        for (placeholder, value) in [
            (
                "\"SET-THIS-TILLS-GUID\"",
                "\"71110000-0000-0000-0000-000000000001\"",
            ),
            ("\"SET-CHAIN-ID\"", "\"acme\""),
            ("\"SET-STORE-ID\"", "\"store-001\""),
            (
                "\"https://SET-COORDINATOR-HOST:8443\"",
                "\"http://127.0.0.1:8080\"",
            ),
            (
                "\"SET-FROM-tillswarm-coordinator-keys-show\"",
                "\"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\"",
            ),
            (
                "# swarm_key = \"SET-CHAINS-SWARM-KEY\"",
                "swarm_key = \"5f1b1a0c9d3e7f2a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c\"",
            ),
        ] {
            assert_eq!(filled.matches(placeholder).count(), 1, "{placeholder}");
            filled = filled.replace(placeholder, value);
        }
        let example_body = &example[example.find("\n\n").expect("header") + 2..];
        assert_eq!(
            filled, example_body,
            "packaging/node.toml drifted from the example"
        );
    }

    #[test]
    fn bad_configs_are_refused_with_reasons() {
        let good = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/config/node.toml"),
        )
        .expect("example");
        for (from, to, needle) in [
            (
                "coordinator_url = \"http://127.0.0.1:8080\"",
                "coordinator_url = \"ftp://x\"",
                "coordinator_url",
            ),
            ("127.0.0.1:7781", "0.0.0.0:7781", "loopback"),
            (
                "wan_rate_limit_kbit = 8000",
                "wan_rate_limit_kbit = 0",
                "must be positive",
            ),
            (
                "lan_rate_limit_kbit = 200000",
                "lan_rate_limit_kbit = 0",
                "must be positive",
            ),
            (
                "store_id = \"store-001\"",
                "store_id = \"bad store\"",
                "store",
            ),
            (
                "reboot_command = \"systemctl reboot\"",
                "reboot_command = \"systemctl reboot\"\nsurprise = 1",
                "surprise",
            ),
            (
                "swarm_peer_ports = [7782, 7782]",
                "swarm_peer_ports = [7783, 7782]",
                "swarm_peer_ports",
            ),
            (
                "swarm_peer_subnets = []",
                "swarm_peer_subnets = [\"10.0.0.0/33\"]",
                "swarm_peer_subnets",
            ),
            (
                "coordinator_public_key = \"8a",
                "coordinator_public_key = \"zz",
                "key",
            ),
        ] {
            let text = good.replace(from, to);
            assert_ne!(text, good, "{from} not found in the example");
            let err = NodeConfig::parse(&text).expect_err(to).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
