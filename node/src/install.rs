//! Running a staged package's `up.sh` (the seed's `sudo ./up.sh`) with a time
//! limit, keeping its full log, and rebooting afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tillswarm_protocol::Version;
use tillswarm_protocol::api::MAX_LOG_TAIL_LEN;

use crate::error::{Error, Result};

/// How an `up.sh` run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Exit status 0 within the time limit.
    pub success: bool,
    /// Why it failed, for the report.
    pub error: Option<String>,
    /// The end of its output (stdout and stderr interleaved).
    pub log_tail: String,
    /// The full log on the till.
    pub log_path: PathBuf,
}

/// Runs `<staged>/up.sh` with `sh`, in the staged folder, with `TILLSWARM_ROOT`
/// and `TILLSWARM_VERSION` set, for at most `timeout`; output goes to a log in
/// `logs_dir`. On timeout the whole process group is killed.
pub async fn run_up_sh(
    staged: &Path,
    root: &Path,
    version: &Version,
    timeout: Duration,
    logs_dir: &Path,
) -> Result<InstallOutcome> {
    tokio::fs::create_dir_all(logs_dir).await?;
    let log_path = logs_dir.join(format!("install-{version}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = tokio::process::Command::new("sh")
        .arg("up.sh")
        .current_dir(staged)
        .env("TILLSWARM_ROOT", root)
        .env("TILLSWARM_VERSION", version.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Install(format!("cannot start up.sh: {e}")))?;
    let (success, error) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, None),
        Ok(Ok(status)) => (false, Some(format!("up.sh failed: {status}"))),
        Ok(Err(e)) => (false, Some(format!("waiting for up.sh: {e}"))),
        Err(_) => {
            if let Some(pid) = child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|&p| p > 1)
            {
                // up.sh runs in its own process group (process_group(0) above), whose
                // id is its pid: kill the group so its children do not outlive it.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            (
                false,
                Some(format!(
                    "up.sh did not finish within {} s and was killed",
                    timeout.as_secs()
                )),
            )
        }
    };
    let log_tail = tail(&log_path, MAX_LOG_TAIL_LEN / 2)?;
    Ok(InstallOutcome {
        success,
        error,
        log_tail,
        log_path,
    })
}

/// The last `max` bytes of a file, as text (cut at a character boundary).
pub fn tail(path: &Path, max: usize) -> Result<String> {
    let bytes = std::fs::read(path)?;
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    // Lossy decoding may grow the text; keep it within the protocol's cap.
    Ok(text
        .chars()
        .rev()
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= max).then_some(c)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect())
}

/// Runs the reboot command (`none`: do nothing).
pub async fn reboot(command: &str) -> Result<()> {
    if command.trim() == "none" {
        return Ok(());
    }
    tracing::warn!(command, "rebooting the till after an install");
    let status = tokio::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .await
        .map_err(|e| Error::Install(format!("cannot run the reboot command: {e}")))?;
    if !status.success() {
        return Err(Error::Install(format!("reboot command failed: {status}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(script: &str, timeout_ms: u64) -> InstallOutcome {
        let dir = tempfile::tempdir().expect("tempdir");
        let staged = dir.path().join("stage");
        std::fs::create_dir_all(&staged).expect("mkdir");
        std::fs::write(staged.join("up.sh"), script).expect("write");
        run_up_sh(
            &staged,
            dir.path(),
            &"1.0".parse().expect("version"),
            Duration::from_millis(timeout_ms),
            &dir.path().join("logs"),
        )
        .await
        .expect("run")
    }

    #[tokio::test]
    async fn success_failure_and_timeout() {
        let ok = run("echo hello from $TILLSWARM_VERSION\n", 10_000).await;
        assert!(ok.success);
        assert_eq!(ok.log_tail.trim(), "hello from 1.0");
        let failed = run("echo about to fail >&2\nexit 3\n", 10_000).await;
        assert!(!failed.success);
        assert!(
            failed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("exit status: 3")),
            "{failed:?}"
        );
        assert!(failed.log_tail.contains("about to fail"));
        let started = std::time::Instant::now();
        let slow = run("echo start\nsleep 30 & wait\n", 300).await;
        assert!(!slow.success);
        assert!(slow.error.as_deref().is_some_and(|e| e.contains("killed")));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_keeps_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        std::fs::write(&p, "a".repeat(100) + "END").expect("write");
        assert_eq!(tail(&p, 5).expect("tail"), "aaEND");
    }
}
