//! Process plumbing shared by the providers: child processes in their own process group, a guard
//! that kills the whole group when dropped (so dropping a deploy future cancels its build), the
//! release log, and the environment children start from.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
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

/// The default cap of one release's log (`STAGEBOT_LOG_MAX`).
pub const DEFAULT_LOG_MAX: u64 = 10 * 1024 * 1024;

/// The caps configured per log directory (a data dir's `logs/`), so every server in the process
/// (tests run several) keeps its own setting without threading it through every provider call.
/// A log under no registered directory gets [`DEFAULT_LOG_MAX`].
static LOG_CAPS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

/// Cap every release log under `logs_dir` at `max` bytes (at least 4 KiB).
pub fn set_log_max(logs_dir: &Path, max: u64) {
    let mut caps = LOG_CAPS.lock().unwrap_or_else(PoisonError::into_inner);
    caps.retain(|(dir, _)| dir != logs_dir);
    caps.push((logs_dir.to_owned(), max.max(4096)));
}

fn log_max_for(path: &Path) -> u64 {
    let caps = LOG_CAPS.lock().unwrap_or_else(PoisonError::into_inner);
    caps.iter()
        .filter(|(dir, _)| path.starts_with(dir))
        .max_by_key(|(dir, _)| dir.as_os_str().len())
        .map_or(DEFAULT_LOG_MAX, |(_, max)| *max)
}

/// The previous segment of a rotated log: `7.log` → `7.log.1`.
pub(crate) fn previous_segment(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// The one writer of a log file: counts what it writes and, when the next write would pass the
/// cap, moves the file to its `.1` segment (replacing the older one) and starts afresh. So a log
/// takes at most about twice its cap on disk, however long its app writes.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    max: u64,
    file: Option<File>,
    len: u64,
    /// The read ends of the pipes being copied in (see [`ReleaseLog::settled`]).
    pumps: Vec<RawFd>,
}

/// A sink and the signal that a pump has copied something (or finished).
type SinkCell = (Mutex<Sink>, Condvar);
type Shared = Arc<SinkCell>;

impl Sink {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.len >= self.max {
                self.rotate()?;
            }
            let room = usize::try_from(self.max - self.len).unwrap_or(usize::MAX);
            // Cut at the last line end that fits, so a segment starts with a whole line. When
            // not even the first line fits, start a new segment for it (a line longer than a
            // whole segment is cut).
            let take = if buf.len() <= room {
                buf.len()
            } else {
                match buf[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.len > 0 => {
                        self.rotate()?;
                        continue;
                    }
                    None => room,
                }
            };
            let file = self.open()?;
            file.write_all(&buf[..take])?;
            self.len += take as u64;
            buf = &buf[take..];
            if !buf.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<&mut File> {
        match &mut self.file {
            Some(f) => Ok(f),
            slot @ None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.len = f.metadata()?.len();
                Ok(slot.insert(f))
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        std::fs::rename(&self.path, previous_segment(&self.path))?;
        self.len = 0;
        Ok(())
    }
}

/// Every open log's sink, by path: all writers of one file share its sink, so the count is
/// right and a rotation never leaves a writer appending to the old segment.
static SINKS: Mutex<Vec<(PathBuf, Weak<SinkCell>)>> = Mutex::new(Vec::new());

fn sink_for(path: &Path) -> io::Result<Shared> {
    let mut sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
    sinks.retain(|(_, w)| w.strong_count() > 0);
    if let Some(s) = sinks
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(s);
    }
    let mut sink = Sink {
        path: path.to_owned(),
        max: log_max_for(path),
        file: None,
        len: 0,
        pumps: Vec::new(),
    };
    sink.open()?;
    let sink = Arc::new((Mutex::new(sink), Condvar::new()));
    sinks.push((path.to_owned(), Arc::downgrade(&sink)));
    Ok(sink)
}

/// A release's log file: steps append to it; failures quote its tail. Capped at
/// `STAGEBOT_LOG_MAX` and rotated (one previous segment, `<n>.log.1`, is kept).
#[derive(Debug, Clone)]
pub(crate) struct ReleaseLog {
    path: PathBuf,
    sink: Shared,
}

impl ReleaseLog {
    /// Open (creating directories and file) for appending.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self {
            path: path.to_owned(),
            sink: sink_for(path)?,
        })
    }

    /// A file handle for a child's stdout or stderr (or anything that writes lines): the write
    /// end of a pipe whose output a thread copies into the log under its cap. The copy ends when
    /// every holder of the write end (the child and what it spawned) has closed it.
    pub(crate) fn file(&self) -> io::Result<File> {
        let (reader, writer) = io::pipe()?;
        self.attach(reader)?;
        Ok(File::from(std::os::fd::OwnedFd::from(writer)))
    }

    /// Copy what arrives on `reader` (a pipe or a FIFO's read end) into the log until every
    /// writer has closed it.
    pub(crate) fn attach(&self, reader: io::PipeReader) -> io::Result<()> {
        set_nonblocking(&reader)?;
        let fd = reader.as_raw_fd();
        lock(&self.sink).pumps.push(fd);
        let sink = Arc::clone(&self.sink);
        let spawned = std::thread::Builder::new()
            .name("release-log".into())
            .spawn(move || {
                pump(&reader, &sink);
                // Unregistered before `reader` (and so its descriptor) goes.
                lock(&sink).pumps.retain(|p| *p != fd);
                sink.1.notify_all();
                drop(reader);
            });
        if let Err(e) = spawned {
            lock(&self.sink).pumps.retain(|p| *p != fd);
            return Err(e);
        }
        Ok(())
    }

    /// The sink once every byte already written into its pipes has been copied into the file
    /// (waiting at most `max`, for a child that never stops writing).
    fn settled(&self, max: Duration) -> std::sync::MutexGuard<'_, Sink> {
        let (sink, copied) = &*self.sink;
        let guard = sink.lock().unwrap_or_else(PoisonError::into_inner);
        // Pumps read only while holding this lock, so "nothing waiting in any pipe" seen under
        // it means everything written so far is in the file.
        copied
            .wait_timeout_while(guard, max, |s| s.pumps.iter().any(|fd| unread(*fd) > 0))
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn write(&self, bytes: &[u8]) {
        let mut sink = self.settled(Duration::from_millis(250));
        if let Err(e) = sink.write(bytes) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the release log");
        }
    }

    /// Append `==> <time> <text>`; logging must never fail a deploy, so errors are ignored.
    pub(crate) fn header(&self, text: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        self.line(&format!("==> {now} {text}"));
    }

    /// Append one line (best effort), after what the children wrote before it.
    pub(crate) fn line(&self, text: &str) {
        self.write(format!("{text}\n").as_bytes());
    }

    /// The last `n` lines (reading at most the last 64 KiB), including everything the children
    /// wrote before the call.
    pub(crate) fn tail(&self, n: usize) -> String {
        let _settled = self.settled(Duration::from_secs(1));
        tail_of(&self.path, n).unwrap_or_default()
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Sink> {
    shared.0.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes waiting in a pipe (0 when it cannot be told).
fn unread(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`. The descriptor
    // is a registered pump's, open until it is unregistered under the same lock as this call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    if rc == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Wait until the pipe is readable or closed (`false` on an error that will not go away).
fn wait_readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes the one pollfd `pfd` points at.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc >= 0 {
            return true;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Copy a child's output into the log until the pipe closes, whole lines at a time (so stdout
/// and stderr do not interleave mid-line and a rotated segment starts with a whole line; a line
/// longer than 64 KiB is cut). Reading and writing happen under the sink's lock, at most 256 KiB
/// at a time, so [`ReleaseLog::settled`] can tell when nothing is in flight.
fn pump(reader: &io::PipeReader, shared: &SinkCell) {
    const BATCH: usize = 256 * 1024;
    const LINE_MAX: usize = 64 * 1024;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let fd = reader.as_raw_fd();
    let mut reader = reader;
    loop {
        if !wait_readable(fd) {
            return;
        }
        let mut sink = shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut moved = 0;
        let ended = loop {
            match reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let cut = match pending.iter().rposition(|&b| b == b'\n') {
                        Some(i) => i + 1,
                        None if pending.len() >= LINE_MAX => pending.len(),
                        None => 0,
                    };
                    // Best effort: a full disk must not stop the app (its output is dropped).
                    let _ = sink.write(&pending[..cut]);
                    pending.drain(..cut);
                    moved += n;
                    if moved >= BATCH {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if ended && !pending.is_empty() {
            let _ = sink.write(&pending);
        }
        drop(sink);
        shared.1.notify_all();
        if ended {
            return;
        }
    }
}

fn tail_of(path: &Path, n: usize) -> io::Result<String> {
    const MAX: u64 = 64 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut start = len.saturating_sub(MAX);
    let mut buf = Vec::new();
    // Just after a rotation the current segment is short: the previous one holds the rest.
    if len < MAX
        && let Ok(mut prev) = File::open(previous_segment(path))
    {
        let prev_len = prev.metadata()?.len();
        start = prev_len.saturating_sub(MAX - len);
        prev.seek(SeekFrom::Start(start))?;
        prev.read_to_end(&mut buf)?;
    }
    f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
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
    fn a_log_written_past_its_cap_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let cap = 64 * 1024;
        set_log_max(&logs, cap);
        let path = logs.join("octo/webapp/pr-1/3.log");
        let log = ReleaseLog::open(&path).unwrap();
        log.header("start");
        // A real process writing ~2 MB to stdout and stderr, 30x the cap.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 20000 ]; do echo \"out $i ..........................................\"; echo \"err $i\" >&2; i=$((i+1)); done")
            .stdout(log.file().unwrap())
            .stderr(log.file().unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        let tail = log.tail(2);
        assert!(tail.contains("19999"), "{tail}");
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(previous_segment(&path)).unwrap().len();
        assert!(current <= cap, "current segment {current} > cap {cap}");
        assert!(previous <= cap, "previous segment {previous} > cap {cap}");
        assert!(
            previous > cap / 2,
            "the previous segment is nearly full: {previous}"
        );
        // Whole lines only: every segment starts with the beginning of a line.
        for p in [path.clone(), previous_segment(&path)] {
            let text = std::fs::read_to_string(&p).unwrap();
            for line in text.lines() {
                assert!(
                    line.starts_with("out ") || line.starts_with("err "),
                    "{} has a cut line: {line:?}",
                    p.display()
                );
            }
        }
        // A second handle on the same file shares the count: still bounded.
        let again = ReleaseLog::open(&path).unwrap();
        for i in 0..5000 {
            again.line(&format!("again {i}"));
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= cap);
        assert!(std::fs::metadata(previous_segment(&path)).unwrap().len() <= cap);
        assert_eq!(log.tail(1), "again 4999");
    }

    #[test]
    fn what_stagebot_writes_after_a_child_comes_after_the_childs_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let log = ReleaseLog::open(&path).unwrap();
        for i in 0..20 {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo child {i}; echo child {i} err >&2"))
                .stdout(log.file().unwrap())
                .stderr(log.file().unwrap())
                .status()
                .unwrap();
            assert!(status.success());
            log.line(&format!("stagebot {i}"));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 60, "{text}");
        for (i, chunk) in lines.chunks(3).enumerate() {
            assert_eq!(chunk[2], format!("stagebot {i}"), "{text}");
            let mut children = chunk[..2].to_vec();
            children.sort_unstable();
            assert_eq!(
                children,
                [format!("child {i}"), format!("child {i} err")],
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_to_signal_everything() {
        assert!(signal_group(1, 0).is_err());
        assert!(signal_group(0, 0).is_err());
    }
}
