//! The sandbox every repository-supplied command of the local provider runs in (docs/providers.md,
//! "Sandbox"): bubblewrap (`bwrap`) with an allow-list of what the command may see.
//!
//! Inside: new PID, IPC, UTS (and cgroup) namespaces and a new session; its own `/proc`, a minimal
//! `/dev`, a private `/tmp`; the system directories (`/usr`, `/bin`, `/lib*`, `/etc`, `/opt`) and
//! the directories on `PATH` read-only; the release's checkout and the environment's `HOME`
//! writable. Never mounted, not even read-only: stagebot's data dir (store, logs, admin socket,
//! git cache, every other environment) and the directories of its secrets (the key file…); where
//! one of them lies under an allowed directory, an empty tmpfs hides it. The network is shared:
//! the app listens on `$PORT` of the host.
//!
//! When stagebot runs as root, the command runs as `nobody` (65534) in a new user namespace with
//! every capability dropped.

use std::ffi::{CString, OsString};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::process::{self, GroupGuard};

/// The sentence `stagebot serve` stops with when `bwrap` is missing.
pub const INSTALL_HINT: &str = "the local provider runs pull requests' code in a bubblewrap sandbox, \
     but `bwrap` was not found: install it (`apt-get install bubblewrap`), or set \
     STAGEBOT_SANDBOX=off to run apps unsandboxed";

/// Default memory limit per release (`STAGEBOT_ENV_MEMORY`): 1 GiB.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default process limit per release (`STAGEBOT_ENV_PIDS`).
pub const DEFAULT_PIDS: u64 = 512;

/// `STAGEBOT_SANDBOX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxMode {
    /// Run every command under this `bwrap` executable (a name looked up on `PATH`, or a path).
    Bwrap(PathBuf),
    /// Run commands unsandboxed, as stagebot's own user (a warning everywhere).
    Off,
}

impl Default for SandboxMode {
    fn default() -> Self {
        SandboxMode::Bwrap(PathBuf::from("bwrap"))
    }
}

/// Sandbox settings of the local provider.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Paths the sandbox never shows, in addition to the data dir (the directory of
    /// `PRIVATE_KEY_PATH`, …).
    pub hidden: Vec<PathBuf>,
    /// More directories offered read-only (the demo's own executable); hidden paths win.
    pub read_only: Vec<PathBuf>,
    /// `memory.max` of each release's cgroup, in bytes (`STAGEBOT_ENV_MEMORY`).
    pub memory_max: u64,
    /// `pids.max` of each release's cgroup (`STAGEBOT_ENV_PIDS`).
    pub pids_max: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            mode: SandboxMode::default(),
            hidden: Vec::new(),
            read_only: Vec::new(),
            memory_max: DEFAULT_MEMORY,
            pids_max: DEFAULT_PIDS,
        }
    }
}

/// Why the sandbox cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// `bwrap` is not installed (or not where the setting says).
    #[error("{INSTALL_HINT}")]
    Missing,
    /// `bwrap` is there but cannot build a sandbox here (user namespaces disabled…).
    #[error(
        "`bwrap` cannot create a sandbox on this machine ({0}); allow unprivileged user namespaces, or set STAGEBOT_SANDBOX=off to run apps unsandboxed"
    )]
    Broken(String),
}

/// One line of `/readyz`'s `checks` map and of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

/// A checked, ready-to-use sandbox (or the decision to run without one).
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: Option<PathBuf>,
    /// Paths never shown inside, canonical.
    hidden: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    root: bool,
    disable_userns: bool,
    cgroups: Result<PathBuf, String>,
    memory_max: u64,
    pids_max: u64,
}

impl Sandbox {
    /// Check `cfg` on this machine: is `bwrap` there and does it work; can limits be enforced.
    /// `data_dir` is always hidden.
    pub fn probe(cfg: &SandboxConfig, data_dir: &Path) -> Result<Self, SandboxError> {
        let mut hidden: Vec<PathBuf> = std::iter::once(data_dir.to_path_buf())
            .chain(cfg.hidden.iter().cloned())
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| absolute(&p))
            .collect();
        hidden.sort();
        hidden.dedup();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let cgroups = if matches!(cfg.mode, SandboxMode::Off) {
            Err("no sandbox (STAGEBOT_SANDBOX=off)".to_owned())
        } else {
            delegated_cgroup()
        };
        let mut sandbox = Self {
            bwrap: None,
            hidden,
            read_only: cfg.read_only.clone(),
            root,
            disable_userns: false,
            cgroups,
            memory_max: cfg.memory_max,
            pids_max: cfg.pids_max,
        };
        let SandboxMode::Bwrap(bwrap) = &cfg.mode else {
            return Ok(sandbox);
        };
        let bwrap = &find_executable(bwrap).ok_or(SandboxError::Missing)?;
        let help = std::process::Command::new(bwrap)
            .arg("--help")
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|_| SandboxError::Missing)?;
        sandbox.disable_userns = String::from_utf8_lossy(&help.stdout).contains("--disable-userns");
        sandbox.bwrap = Some(bwrap.clone());
        // A real sandbox running `true`, so a machine where namespaces are not allowed is caught
        // at start, not at the first deploy.
        let scratch = std::env::temp_dir();
        let out = sandbox
            .command_std(
                "exit 0",
                &scratch,
                &scratch,
                &[("PATH".to_owned(), "/usr/bin:/bin".into())],
                None,
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SandboxError::Broken(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_owned();
            return Err(SandboxError::Broken(why));
        }
        Ok(sandbox)
    }

    /// No sandbox at all (`STAGEBOT_SANDBOX=off`).
    pub fn off() -> Self {
        Self {
            bwrap: None,
            hidden: Vec::new(),
            read_only: Vec::new(),
            root: false,
            disable_userns: false,
            cgroups: Err("no sandbox (STAGEBOT_SANDBOX=off)".to_owned()),
            memory_max: DEFAULT_MEMORY,
            pids_max: DEFAULT_PIDS,
        }
    }

    /// Is every command sandboxed?
    pub fn enabled(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The `sandbox` check: on, or the warning that it is off.
    pub fn check(&self) -> Check {
        match &self.bwrap {
            Some(b) => Check {
                ok: true,
                detail: format!(
                    "bubblewrap ({}){}",
                    b.display(),
                    if self.root {
                        "; commands run as nobody with no capabilities"
                    } else {
                        ""
                    }
                ),
            },
            None => Check {
                ok: false,
                detail: "warning: STAGEBOT_SANDBOX=off, pull requests' code runs unsandboxed as \
                         stagebot's own user and can read its secrets"
                    .to_owned(),
            },
        }
    }

    /// The `limits` check: memory and process limits enforced per release, or why not.
    pub fn limits_check(&self) -> Check {
        match &self.cgroups {
            Ok(dir) => Check {
                ok: true,
                detail: format!(
                    "enforced with cgroup v2 under {}: memory.max {} bytes, pids.max {}",
                    dir.display(),
                    self.memory_max,
                    self.pids_max
                ),
            },
            Err(why) => Check {
                ok: false,
                detail: format!(
                    "not enforced: STAGEBOT_ENV_MEMORY and STAGEBOT_ENV_PIDS need a delegated cgroup v2 subtree ({why})"
                ),
            },
        }
    }

    /// `sh -c <command>` in `dir`, sandboxed (or not), with exactly `env`. `home` is the
    /// environment's writable `HOME` (created if missing). `cgroup` names the release's cgroup
    /// when limits are enforced. The caller sets stdout/stderr, then [`Prepared::spawn`]s.
    pub(crate) fn command(
        &self,
        command: &str,
        dir: &Path,
        home: &Path,
        env: &[(String, OsString)],
        cgroup: Option<&str>,
    ) -> io::Result<Prepared> {
        let mut info = None;
        let mut std_cmd = match &self.bwrap {
            Some(_) => {
                std::fs::create_dir_all(home)?;
                let (read, write) = pipe()?;
                let fd = write.as_raw_fd();
                let mut c = self.command_std(command, dir, home, env, Some(fd));
                use std::os::unix::process::CommandExt as _;
                // SAFETY: runs in the child between fork and exec; fcntl is async-signal-safe and
                // `fd` is open (the parent keeps `write` until after the spawn).
                unsafe {
                    c.pre_exec(move || {
                        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                info = Some((read, write));
                c
            }
            None => {
                let mut c = std::process::Command::new("sh");
                c.arg("-c")
                    .arg(command)
                    .current_dir(dir)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)));
                c
            }
        };
        if let (Some(name), Ok(parent)) = (cgroup, &self.cgroups) {
            let procs = self.release_cgroup(parent, name)?;
            use std::os::unix::process::CommandExt as _;
            // SAFETY: the closure runs in the child between fork and exec and only makes
            // async-signal-safe calls (open, write, close) on memory prepared before the fork.
            unsafe {
                std_cmd.pre_exec(move || join_cgroup(&procs));
            }
        }
        Ok(Prepared {
            cmd: Command::from(std_cmd),
            info,
        })
    }

    /// Create (or reuse) the release's cgroup with its limits; returns its `cgroup.procs` path.
    fn release_cgroup(&self, parent: &Path, name: &str) -> io::Result<CString> {
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::write(dir.join("memory.max"), self.memory_max.to_string())?;
        std::fs::write(dir.join("pids.max"), self.pids_max.to_string())?;
        CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::other("cgroup path holds a NUL byte"))
    }

    /// Remove a release's cgroup once its processes are gone (best effort).
    pub(crate) fn remove_cgroup(&self, name: &str) {
        if let Ok(parent) = &self.cgroups {
            let _ = std::fs::remove_dir(parent.join(name));
        }
    }

    fn command_std(
        &self,
        command: &str,
        dir: &Path,
        home: &Path,
        env: &[(String, OsString)],
        info_fd: Option<i32>,
    ) -> std::process::Command {
        let bwrap = self.bwrap.clone().unwrap_or_else(|| PathBuf::from("bwrap"));
        let mut c = std::process::Command::new(bwrap);
        if let Some(fd) = info_fd {
            c.arg("--info-fd").arg(fd.to_string());
        }
        c.args(self.args(dir, home))
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(command)
            // bwrap itself (and so the sandbox) starts from exactly `env`; see `args`.
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HOME", home)
            .env("TMPDIR", "/tmp")
            .current_dir(dir);
        c
    }

    /// bwrap's arguments for a command in `dir` with `HOME` at `home`.
    ///
    /// The environment is given to the bwrap process itself (cleared, then exactly the app's
    /// variables) rather than with `--clearenv --setenv …`, which would put every value on
    /// bwrap's command line where any process of the same user can read it.
    fn args(&self, dir: &Path, home: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push =
            |items: &[&std::ffi::OsStr]| a.extend(items.iter().map(|s| s.to_os_string()));
        push(&[
            "--unshare-user".as_ref(),
            "--unshare-pid".as_ref(),
            "--unshare-ipc".as_ref(),
            "--unshare-uts".as_ref(),
            "--unshare-cgroup-try".as_ref(),
            // No --hostname: systemd's ProtectHostname= forbids sethostname even in a new
            // UTS namespace.
            "--new-session".as_ref(),
        ]);
        if self.root {
            push(&[
                "--uid".as_ref(),
                "65534".as_ref(),
                "--gid".as_ref(),
                "65534".as_ref(),
                "--cap-drop".as_ref(),
                "ALL".as_ref(),
            ]);
        }
        if self.disable_userns {
            push(&["--disable-userns".as_ref()]);
        }
        // The directories on stagebot's own PATH, never the app's: a repository's config sets
        // the app's `PATH` (`env: {PATH: /}` must not mount the host's root).
        let path_var = std::env::var_os("PATH");
        // The private /tmp and /var/tmp first: mounts below come after them, so a directory
        // offered under /tmp (a checkout, a binary built there) is layered on top, not hidden.
        push(&[
            "--proc".as_ref(),
            "/proc".as_ref(),
            "--dev".as_ref(),
            "/dev".as_ref(),
            "--tmpfs".as_ref(),
            "/tmp".as_ref(),
            "--tmpfs".as_ref(),
            "/var/tmp".as_ref(),
        ]);
        for m in mounts(&self.hidden, &self.read_only, path_var.as_deref()) {
            match m {
                Mount::ReadOnly(p) => push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]),
                Mount::Symlink { target, at } => {
                    push(&["--symlink".as_ref(), target.as_os_str(), at.as_os_str()])
                }
                Mount::Hide(p) => push(&["--tmpfs".as_ref(), p.as_os_str()]),
            }
        }
        push(&["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        if !dir.starts_with(home) {
            push(&["--bind".as_ref(), home.as_os_str(), home.as_os_str()]);
        }
        push(&["--chdir".as_ref(), dir.as_os_str()]);
        a
    }
}

/// A command ready to spawn: for a sandbox, with the pipe bwrap reports the sandbox's pid on.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) cmd: Command,
    info: Option<(OwnedFd, OwnedFd)>,
}

impl Prepared {
    /// Spawn as the leader of a new process group (stdin from /dev/null). For a sandbox, the
    /// guard also covers the sandbox's own session (bwrap's `--new-session`), which is where
    /// the command's processes live. `spawned` is called with the spawned command's process group as soon as it exists
    /// (before the sandbox has reported its own), so the caller can record it.
    pub(crate) async fn spawn_noting(
        mut self,
        spawned: impl FnOnce(i32),
    ) -> io::Result<(Child, GroupGuard)> {
        let (child, mut guard) = process::spawn_in_group(&mut self.cmd)?;
        if let Some(pgid) = guard.pgid() {
            spawned(pgid);
        }
        if let Some((read, write)) = self.info.take() {
            drop(write);
            let pid = tokio::task::spawn_blocking(move || sandbox_pid(read))
                .await
                .ok()
                .flatten();
            match pid {
                Some(pid) => guard.set_sandbox(pid),
                // bwrap failed before the sandbox existed: its exit status and stderr tell why.
                None => tracing::debug!("bwrap reported no sandbox pid"),
            }
        }
        Ok((child, guard))
    }
}

/// A pipe, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Read bwrap's `--info-fd` report until it parses; its `child-pid` is the sandbox's pid 1.
fn sandbox_pid(read: OwnedFd) -> Option<i32> {
    let mut file = std::fs::File::from(read);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while buf.len() < 64 * 1024 {
        let n = file.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
            return v
                .get("child-pid")
                .and_then(serde_json::Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .filter(|&p| p > 1);
        }
    }
    None
}

/// `1GiB`, `512MiB`, `100M`, `2G`, `1048576`: a size in bytes (K/M/G are binary multiples, as
/// in cgroup files). `None` for anything else or zero.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift).filter(|&b| b > 0)
}

/// Move the calling process into the cgroup whose `cgroup.procs` is `procs`. Async-signal-safe.
fn join_cgroup(procs: &CString) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated string; open/write/close are async-signal-safe.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// One entry of the sandbox's filesystem, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mount {
    ReadOnly(PathBuf),
    Symlink { target: PathBuf, at: PathBuf },
    Hide(PathBuf),
}

/// The system directories always offered (those that exist).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// The read-only part of the sandbox: system directories and `PATH`'s, minus (and with a tmpfs
/// over) everything in `hidden`.
fn mounts(
    hidden: &[PathBuf],
    read_only: &[PathBuf],
    path_var: Option<&std::ffi::OsStr>,
) -> Vec<Mount> {
    let mut wanted: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
    wanted.extend(read_only.iter().filter(|p| p.is_absolute()).cloned());
    if let Some(path) = path_var {
        for dir in std::env::split_paths(path).filter(|d| d.is_absolute()) {
            // A version manager's shims (pyenv, rbenv, nodenv, asdf) run programs from the
            // manager's root, next to them: offer that root too.
            if dir.file_name().is_some_and(|n| n == "shims")
                && let Some(root) = dir.parent().filter(|p| p.parent().is_some())
            {
                wanted.push(root.to_path_buf());
            }
            wanted.push(dir);
        }
    }
    // DNS: /etc/resolv.conf is often a link into /run (systemd-resolved).
    if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf")
        && let Some(parent) = target.parent()
    {
        wanted.push(parent.to_path_buf());
    }
    let mut symlinks = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in wanted {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            // `/bin -> usr/bin`: recreate the link; its target is offered on its own.
            if let (Ok(target), Ok(resolved)) = (std::fs::read_link(&p), std::fs::canonicalize(&p))
                && p.parent() == Some(Path::new("/"))
            {
                symlinks.push((target, p.clone()));
                dirs.push(resolved);
            } else if let Ok(resolved) = std::fs::canonicalize(&p) {
                dirs.push(resolved);
            }
        } else if meta.is_dir()
            && let Ok(resolved) = std::fs::canonicalize(&p)
        {
            dirs.push(resolved);
        }
    }
    // Never anything inside a hidden path.
    dirs.retain(|d| !hidden.iter().any(|h| d.starts_with(h)));
    dirs.sort();
    dirs.dedup();
    // Drop what a mounted ancestor already covers.
    let mut top: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !top.iter().any(|t| d.starts_with(t)) {
            top.push(d);
        }
    }
    let mut out: Vec<Mount> = top.iter().cloned().map(Mount::ReadOnly).collect();
    let mut seen_links = Vec::new();
    for (target, at) in symlinks {
        if !top.contains(&at) && !seen_links.contains(&at) {
            seen_links.push(at.clone());
            out.push(Mount::Symlink { target, at });
        }
    }
    // A hidden path under an offered directory gets an empty tmpfs over it.
    for h in hidden {
        // A path that does not exist has nothing to hide (and a tmpfs needs a mount point).
        if top.iter().any(|t| h.starts_with(t)) && h.exists() {
            out.push(Mount::Hide(h.clone()));
        }
    }
    out
}

/// `name` as given when it holds a `/`, else the first executable file of that name on
/// stagebot's own `PATH` (resolved here: a command with a cleared environment would otherwise
/// be looked up on a default path).
fn find_executable(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let is_exe = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.as_os_str().as_bytes().contains(&b'/') {
        return is_exe(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_exe(p))
}

/// `p` made absolute and, when it exists, canonical (so `/etc/../etc/x` and links compare).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// stagebot's own cgroup v2 directory if it is delegated to us with the memory and pids
/// controllers (the systemd unit's `Delegate=yes`), ready for child cgroups; else why not.
fn delegated_cgroup() -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 hierarchy")?
        .trim()
        .trim_start_matches('/')
        .to_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .ok_or("cgroup2 is not mounted")?;
    let dir = mount.join(rel);
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("memory") && has("pids")) {
        return Err(format!(
            "the memory and pids controllers are not available in {}",
            dir.display()
        ));
    }
    let enabled = |d: &Path| {
        let s = std::fs::read_to_string(d.join("cgroup.subtree_control")).unwrap_or_default();
        s.split_whitespace().any(|x| x == "memory") && s.split_whitespace().any(|x| x == "pids")
    };
    if enabled(&dir) {
        return Ok(dir);
    }
    // Already moved into our `stagebot` child by an earlier probe of this process.
    if dir.file_name().is_some_and(|n| n == "stagebot")
        && let Some(parent) = dir.parent().filter(|p| enabled(p))
    {
        return Ok(parent.to_path_buf());
    }
    // No process may sit in a cgroup that hands controllers to its children: move stagebot
    // into a child of its own first, then enable the controllers for the environments.
    let supervisor = dir.join("stagebot");
    match std::fs::create_dir(&supervisor) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(format!("{} is not writable ({e})", dir.display()));
        }
        _ => {}
    }
    std::fs::write(
        supervisor.join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("cannot move stagebot into {}: {e}", supervisor.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.subtree_control"))
        .and_then(|mut f| f.write_all(b"+memory +pids"))
        .map_err(|e| format!("cannot enable memory and pids in {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_path_never_decides_what_is_mounted() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let sandbox = Sandbox::probe(&SandboxConfig::default(), &data)
            .expect("bwrap (Debian package bubblewrap)");
        let dir = data.join("envs/o/r/s/r1");
        let hostile: Vec<(String, OsString)> = vec![(
            "PATH".into(),
            OsString::from("/:/proc:/home:/var/lib:/root"),
        )];
        // The command bwrap runs, with the app's environment as a repository's `env` makes it.
        let cmd = sandbox.command_std("true", &dir, &data.join("envs/o/r/s/home"), &hostile, None);
        let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
        let bound: Vec<&std::ffi::OsStr> = args
            .windows(2)
            .filter(|w| w[0] == "--ro-bind")
            .map(|w| w[1])
            .collect();
        for p in ["/", "/proc", "/home", "/var/lib", "/root", "/var"] {
            assert!(
                !bound.iter().any(|b| *b == std::ffi::OsStr::new(p)),
                "{p} mounted from the app's PATH: {args:?}"
            );
        }
    }

    #[test]
    fn a_directory_offered_under_tmp_is_mounted_after_the_private_tmp() {
        // The demo offers its own executable's directory, which is under /tmp in a clone
        // there: the private /tmp must not cover it.
        let base = tempfile::tempdir().unwrap();
        let bin = base.path().join("target/debug");
        std::fs::create_dir_all(&bin).unwrap();
        let data = base.path().join("data");
        let cfg = SandboxConfig {
            read_only: vec![bin.clone()],
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::probe(&cfg, &data).expect("bwrap (Debian package bubblewrap)");
        let dir = data.join("envs/o/r/s/r1");
        let args = sandbox.args(&dir, &data.join("envs/o/r/s/home"));
        let at = |flag: &str, path: &Path| {
            args.windows(2)
                .position(|w| w[0] == flag && w[1] == path.as_os_str())
                .unwrap_or_else(|| panic!("no {flag} {} in {args:?}", path.display()))
        };
        let bin = std::fs::canonicalize(&bin).unwrap();
        assert!(at("--tmpfs", Path::new("/tmp")) < at("--ro-bind", &bin));
        assert!(at("--tmpfs", Path::new("/tmp")) < at("--bind", &dir));
    }

    #[test]
    fn hidden_paths_under_offered_dirs_get_a_tmpfs_and_inside_ones_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let tools = tmp.path().join("tools");
        let secret = tools.join("secret");
        let inside = secret.join("bin");
        std::fs::create_dir_all(&inside).unwrap();
        let tools = std::fs::canonicalize(&tools).unwrap();
        let secret = std::fs::canonicalize(&secret).unwrap();
        let path = std::env::join_paths([&tools, &inside]).unwrap();
        let m = mounts(std::slice::from_ref(&secret), &[], Some(&path));
        assert!(m.contains(&Mount::ReadOnly(tools.clone())));
        assert!(m.contains(&Mount::Hide(secret.clone())));
        assert!(
            !m.iter()
                .any(|x| matches!(x, Mount::ReadOnly(p) if p.starts_with(&secret))),
            "{m:?}"
        );
        // The tmpfs comes after the directory it covers.
        let ro = m.iter().position(|x| x == &Mount::ReadOnly(tools.clone()));
        let hide = m.iter().position(|x| x == &Mount::Hide(secret.clone()));
        assert!(ro < hide);
    }

    #[test]
    fn shims_offer_their_managers_root() {
        let tmp = tempfile::tempdir().unwrap();
        let shims = tmp.path().join(".pyenv/shims");
        std::fs::create_dir_all(&shims).unwrap();
        let root = std::fs::canonicalize(tmp.path().join(".pyenv")).unwrap();
        let m = mounts(&[], &[], Some(shims.as_os_str()));
        assert!(m.contains(&Mount::ReadOnly(root)), "{m:?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("100M"), Some(100 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("0"), None);
        assert_eq!(parse_bytes("1.5G"), None);
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("99999999999999999999G"), None);
    }

    #[test]
    fn off_is_a_warning_and_limits_are_not_enforced() {
        let s = Sandbox::off();
        assert!(!s.enabled());
        assert!(!s.check().ok);
        assert!(s.check().detail.contains("STAGEBOT_SANDBOX=off"));
        assert!(s.limits_check().detail.starts_with("not enforced"));
    }
}
