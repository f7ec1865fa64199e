//! A real S3-protocol server on loopback for tests: `s3s-fs` (crates.io;
//! `.ci/run` installs it), which checks SigV4 signatures when started with
//! keys and keeps objects as plain files, so a test can see exactly what
//! landed in the bucket. Without `s3s-fs` a test skips with the reason;
//! under `CI=true` that is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tillswarm_coordinator::chunks::bucket::BucketConfig;

/// The access key of a server started with authentication.
pub const ACCESS_KEY: &str = "tillswarm-test";
/// Its secret.
pub const SECRET_KEY: &str = "tillswarm-test-secret";
/// The bucket every server starts with.
pub const BUCKET: &str = "chunks";

/// An `s3s-fs` server on a free loopback port, stopped when dropped.
pub struct S3Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    auth: bool,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`]; `auth` checks every
    /// request's signature against [`ACCESS_KEY`] / [`SECRET_KEY`] (without
    /// it, anonymous reads work, as from a public CDN). `None`: skip.
    pub fn start(auth: bool) -> Option<Self> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "s3s-fs is not installed (cargo install s3s-fs --version 0.14.1 --features binary)"
            );
            eprintln!("skipped: s3s-fs is not installed (.ci/run installs it)");
            return None;
        };
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket folder");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(bin);
        command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        if auth {
            command.args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]);
        }
        let child = command
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            addr,
            root,
            auth,
        })
    }

    /// The coordinator's settings for the bucket under `prefix`.
    pub fn bucket(&self, prefix: &str) -> BucketConfig {
        BucketConfig {
            url: format!("s3://{BUCKET}/{prefix}").parse().expect("url"),
            endpoint: Some(format!("http://{}", self.addr)),
            region: Some("us-east-1".into()),
            access_key_id: self.auth.then(|| ACCESS_KEY.into()),
            secret_access_key: self.auth.then(|| SECRET_KEY.into()),
            session_token: None,
            skip_signature: !self.auth,
        }
    }

    /// The bucket's objects under `prefix` as they lie on disk.
    pub fn folder(&self, prefix: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }

    /// The objects under `prefix`, as sorted relative paths (`ab/abcd...`).
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(self.folder(prefix))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !dir.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    out.push(format!("{}/{name}", dir.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }
}
