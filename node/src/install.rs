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

/// Install logs kept in `logs/`: the newest ones; older ones are deleted as
/// a new install starts (the node writes no other log files: the journal
/// has the rest).
pub const KEPT_LOGS: usize = 20;

/// Deletes all but the newest `keep` install logs (by modification time),
/// never `current`. Best effort: a log that cannot be read or deleted stays.
fn prune_logs(dir: &Path, keep: usize, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("install-") && name.ends_with(".log") && e.path() != current
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort();
    let excess = (logs.len() + 1).saturating_sub(keep);
    for (_, path) in logs.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!(path = %path.display(), error = %e, "could not delete an old install log");
        }
    }
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
    prune_logs(logs_dir, KEPT_LOGS, &log_path);
    let mut child = tokio::process::Command::new("sh")
        .arg("up.sh")
        .current_dir(staged)
        .env("TILLSWARM_ROOT", root)
        .env("TILLSWARM_VERSION", version.as_str())
        // The node's own line to systemd is not up.sh's to use.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
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

    #[test]
    fn only_the_newest_install_logs_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..25u64 {
            let path = dir.path().join(format!("install-1.0.{i}.log"));
            let f = std::fs::File::create(&path).expect("log");
            f.set_modified(base + Duration::from_secs(i))
                .expect("mtime");
        }
        std::fs::write(dir.path().join("other.txt"), "x").expect("other");
        let current = dir.path().join("install-2.0.0.log");
        std::fs::File::create(&current).expect("current");
        prune_logs(dir.path(), 5, &current);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "install-1.0.21.log",
                "install-1.0.22.log",
                "install-1.0.23.log",
                "install-1.0.24.log",
                "install-2.0.0.log",
                "other.txt"
            ]
        );
    }

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
