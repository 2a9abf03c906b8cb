//! Process plumbing shared by the providers: child processes in their own process group, a guard
//! that kills the whole group when dropped (so dropping a deploy future cancels its build), the
//! release log, and the environment children start from.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Kills a process group (SIGKILL) when dropped, unless disarmed. A sandboxed command has two:
/// bwrap's own, and the sandbox's (its `--new-session` leader, pid 1 of its PID namespace, whose
/// death takes every process of the sandbox with it).
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Option<i32>,
    sandbox: Option<i32>,
}

impl GroupGuard {
    pub(crate) fn new(pgid: i32) -> Self {
        Self {
            pgid: Some(pgid),
            sandbox: None,
        }
    }

    /// The sandbox's session leader (its host pid), once bwrap has reported it.
    pub(crate) fn set_sandbox(&mut self, pgid: i32) {
        self.sandbox = Some(pgid);
    }

    /// The group that holds the command's processes: the sandbox's, else the spawned one's.
    pub(crate) fn pgid(&self) -> Option<i32> {
        self.sandbox.or(self.pgid)
    }

    /// SIGKILL every group now (the guard stays armed).
    pub(crate) fn kill(&self) {
        for g in [self.sandbox, self.pgid].into_iter().flatten() {
            let _ = signal_group(g, libc::SIGKILL);
        }
    }

    /// The group is someone else's business now (or already gone).
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
        self.sandbox = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `signal` to every process in group `pgid`. A group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group <= 1",
        ));
    }
    // SAFETY: killpg has no memory-safety preconditions; pgid > 1 so it never targets our own
    // group (0) or every process (-1 / 1).
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Stop a group politely: SIGTERM, wait up to `grace` for the leader, then SIGKILL whatever is
/// left of the group. Reaps the leader.
pub(crate) async fn stop_group(child: &mut Child, guard: &mut GroupGuard, grace: Duration) {
    let Some(pgid) = guard.pgid() else {
        return;
    };
    // Only the command's own group is asked to stop: bwrap would die of TERM at once and leave
    // no grace to the app (the sandbox's pid 1 ignores TERM; the app behind it gets it).
    let _ = signal_group(pgid, libc::SIGTERM);
    let _ = tokio::time::timeout(grace, child.wait()).await;
    // Members that outlived the leader (or a leader that ignored TERM) get no second chance.
    guard.kill();
    let _ = child.wait().await;
    guard.disarm();
}

/// Spawn `cmd` as the leader of a new process group, stdin from /dev/null. The caller sets
/// stdout and stderr.
pub(crate) fn spawn_in_group(cmd: &mut Command) -> io::Result<(Child, GroupGuard)> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .kill_on_drop(false);
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
    let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    Ok((child, GroupGuard::new(pgid)))
}

/// Variables passed through from stagebot's own environment to the processes it starts. Nothing
/// else is inherited: stagebot's secrets (`WEBHOOK_SECRET`, `PRIVATE_KEY`, …) never reach an app.
const PASSTHROUGH: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// A clean environment for an app process: [`PASSTHROUGH`] and nothing else.
pub(crate) fn base_env() -> Vec<(String, OsString)> {
    PASSTHROUGH
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| ((*k).to_owned(), v)))
        .collect()
}

/// A release's log file: steps append to it; failures quote its tail.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseLog {
    path: PathBuf,
}

impl ReleaseLog {
    /// Open (creating directories and file) for appending.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let log = Self {
            path: path.to_owned(),
        };
        log.file()?;
        Ok(log)
    }

    pub(crate) fn file(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    /// Append `==> <time> <text>`; logging must never fail a deploy, so errors are ignored.
    pub(crate) fn header(&self, text: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        self.line(&format!("==> {now} {text}"));
    }

    /// Append one line (best effort).
    pub(crate) fn line(&self, text: &str) {
        if let Ok(mut f) = self.file() {
            let _ = writeln!(f, "{text}");
        }
    }

    /// The last `n` lines (reading at most the last 64 KiB).
    pub(crate) fn tail(&self, n: usize) -> String {
        tail_of(&self.path, n).unwrap_or_default()
    }
}

fn tail_of(path: &Path, n: usize) -> io::Result<String> {
    const MAX: u64 = 64 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in the middle
    }
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].join("\n"))
}

/// `exit status 2` / `signal 9`, for messages.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// `90s`, `2m`, `1m30s`, `250ms`: short human durations for messages.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReleaseLog::open(&dir.path().join("a/b/log")).unwrap();
        for i in 0..50 {
            log.line(&format!("line {i}"));
        }
        let t = log.tail(3);
        assert_eq!(t, "line 47\nline 48\nline 49");
    }

    #[test]
    fn refuses_to_signal_everything() {
        assert!(signal_group(1, 0).is_err());
        assert!(signal_group(0, 0).is_err());
    }
}
