//! The embedded default provider (docs/providers.md): fetch the commit into a bare cache, check it out
//! per release, run the repository's `build` and `start`, wait for the health path, then switch
//! the built-in proxy's route to the new process and stop the previous one (zero downtime).
//!
//! Layout under `data_dir`:
//! ```text
//! repos/<owner>/<name>.git                    bare cache, fetched into per deploy
//! envs/<owner>/<name>/<slug>/r<release>/      checkout of one release (its cwd)
//! envs/<owner>/<name>/<slug>/r<release>.pgid  its `start`'s process group, start time, port and
//!                                             route (JSON), for adoption after a restart
//! envs/<owner>/<name>/<slug>/r<release>.out   FIFO of `start`'s output (copied into its log)
//! envs/<owner>/<name>/<slug>/r<release>.step.pgid  the running `build`/hook's process group
//! envs/<owner>/<name>/<slug>/home/            the environment's `HOME` (kept across releases)
//! git-home/                                   git's empty `HOME`
//! ```
//!
//! Commands come from the repository's config and run with `sh -c` inside the sandbox
//! ([`super::sandbox`]): they see their own checkout and `HOME`, never stagebot's data dir.
//! Everything that comes from GitHub users (branch names, titles…) reaches processes only as
//! environment variables, never inside a command string. Git always runs with explicit args.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::process::{Child, Command};

use super::process::{self, GroupGuard, ReleaseLog, describe_exit, human, signal_group};
use super::sandbox::{Check, Prepared, Sandbox, SandboxConfig, SandboxError};
use super::{DeploySpec, Deployed, LOG_TAIL_LINES, ProviderError, ProviderStatus, TeardownSpec};
use crate::proxy::Routes;
use crate::repo_config::{self, CONFIG_PATH, Effective};
use crate::types::{EnvId, RepoName};

mod prune;
pub use prune::DirsPruned;

/// Settings of the local provider.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Root for the repository cache and the checkouts (`STAGEBOT_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The proxy's routing table; deploys set routes, teardowns remove them.
    pub routes: Routes,
    /// `build` (and hook) limit when the repository sets none (default 10 min).
    pub build_timeout: Duration,
    /// How long `start` may take to become healthy when the repository sets none (default 2 min).
    pub health_timeout: Duration,
    /// How long the previous release keeps running after the route has switched, so requests
    /// already forwarded to it can finish (default 2 s).
    pub drain: Duration,
    /// Time between SIGTERM and SIGKILL when stopping a release (default 10 s).
    pub stop_grace: Duration,
    /// The git executable (default `git` from `PATH`).
    pub git: PathBuf,
    /// How long one git command (a fetch, a clone) may take (default 5 min).
    pub git_timeout: Duration,
    /// The sandbox around every repository command (`STAGEBOT_SANDBOX`, limits).
    pub sandbox: SandboxConfig,
    /// Built artifacts kept per environment (`STAGEBOT_ARTIFACT_KEEP`, default 3).
    pub artifact_keep: usize,
}

impl LocalConfig {
    /// Defaults for everything but where to keep data and the routing table.
    pub fn new(data_dir: impl Into<PathBuf>, routes: Routes) -> Self {
        Self {
            data_dir: data_dir.into(),
            routes,
            build_timeout: Duration::from_secs(600),
            health_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(2),
            stop_grace: Duration::from_secs(10),
            git: PathBuf::from("git"),
            git_timeout: Duration::from_secs(300),
            sandbox: SandboxConfig::default(),
            artifact_keep: 3,
        }
    }
}

/// The local provider. Cheap to clone; clones share their state. When the last clone is
/// dropped, every process it started is killed, unless [`LocalProvider::keep_apps_on_exit`] was
/// called (`stagebot serve` does): then live apps keep running, and the next stagebot
/// [`adopts`](LocalProvider::adopt) them or stops them.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: LocalConfig,
    sandbox: Sandbox,
    running: Mutex<HashMap<EnvId, Running>>,
    /// Leave live apps running when the provider goes (a restart adopts them).
    keep_on_exit: std::sync::atomic::AtomicBool,
    env_locks: Mutex<HashMap<EnvId, Arc<tokio::sync::Mutex<()>>>>,
    repo_locks: Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>,
    artifacts: super::artifact::Artifacts,
}

/// The live release of one environment.
#[derive(Debug)]
struct Running {
    release: u32,
    proc: Proc,
    guard: GroupGuard,
    addr: SocketAddr,
    dir: PathBuf,
    host: String,
    public_url: String,
    predestroy: Option<String>,
    /// The environment `start` ran with, for `predestroy`.
    env: Vec<(String, OsString)>,
    hook_timeout: Duration,
}

/// The process of a live release: started by this stagebot, or adopted from a previous one.
#[derive(Debug)]
enum Proc {
    Child(Child),
    /// Not our child: known by its pid and start time (so a reused pid is never taken for it).
    Adopted {
        pid: i32,
        start_time: u64,
    },
}

impl Proc {
    fn alive(&mut self) -> bool {
        match self {
            Proc::Child(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Adopted { pid, start_time } => start_time_of(*pid) == Some(*start_time),
        }
    }
}

/// Stop a release's process group: TERM, up to `grace` for the leader, then KILL.
async fn stop_proc(proc: &mut Proc, guard: &mut GroupGuard, grace: Duration) {
    match proc {
        Proc::Child(child) => process::stop_group(child, guard, grace).await,
        Proc::Adopted { pid, start_time } => {
            if start_time_of(*pid) == Some(*start_time) {
                if let Some(pgid) = guard.pgid() {
                    let _ = signal_group(pgid, libc::SIGTERM);
                }
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline && start_time_of(*pid) == Some(*start_time) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Still the same leader: kill its group. Gone: the sandbox's PID namespace went
                // with its pid 1, and its group id may already be someone else's.
                if start_time_of(*pid) == Some(*start_time) {
                    guard.kill();
                }
            }
            guard.disarm();
        }
    }
}

/// What is recorded next to each release's checkout (`r<n>.pgid`) from the moment its `start`
/// runs: enough to adopt it after a restart of stagebot, or to stop it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Record {
    /// The group holding the app: the sandbox's session leader (or the spawned shell's).
    pgid: i32,
    /// The spawned command's own group (bwrap's, when sandboxed).
    outer: Option<i32>,
    /// The leader's start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot).
    start_time: u64,
    release: u32,
    port: u16,
    host: String,
    public_url: String,
    health: String,
    predestroy: Option<String>,
    hook_timeout_ms: u64,
    /// The environment `start` ran with (for `predestroy`).
    env: Vec<(String, String)>,
    /// The release log its output is copied into (through the FIFO `r<n>.out`).
    log: PathBuf,
}

/// The start time of process `pid` (clock ticks since boot), `None` when it does not exist
/// or is a zombie.
fn start_time_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A live release the lifecycle expects to be running (see [`LocalProvider::adopt`]).
#[derive(Debug, Clone)]
pub struct LiveRelease {
    pub env: EnvId,
    pub release: u32,
}

/// What [`LocalProvider::adopt`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdoptSummary {
    /// Live releases still running and healthy: routed again, nothing redeployed.
    pub adopted: usize,
    /// Process groups of a previous stagebot that belonged to no live release (or were not
    /// healthy): killed, their files removed.
    pub stopped: usize,
}

/// Removes a directory when dropped, unless kept.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

impl LocalProvider {
    /// A provider with nothing running yet. Checks the sandbox first: with
    /// `STAGEBOT_SANDBOX=bwrap` (the default) a missing or unusable `bwrap` is an error.
    pub fn new(cfg: LocalConfig) -> Result<Self, SandboxError> {
        let sandbox = Sandbox::probe(&cfg.sandbox, &cfg.data_dir)?;
        Ok(Self::with_sandbox(cfg, sandbox))
    }

    /// A provider using an already checked sandbox (or [`Sandbox::off`]).
    pub fn with_sandbox(cfg: LocalConfig, sandbox: Sandbox) -> Self {
        match sandbox.limits_check() {
            Check { ok: true, detail } => tracing::info!(%detail, "resource limits"),
            Check { ok: false, detail } => tracing::warn!(%detail, "resource limits"),
        }
        if !sandbox.enabled() {
            tracing::warn!(detail = %sandbox.check().detail, "sandbox off");
        }
        Self {
            inner: Arc::new(Inner {
                artifacts: super::artifact::Artifacts::new(
                    cfg.data_dir.join("artifacts"),
                    cfg.artifact_keep,
                ),
                cfg,
                sandbox,
                running: Mutex::new(HashMap::new()),
                keep_on_exit: std::sync::atomic::AtomicBool::new(false),
                env_locks: Mutex::new(HashMap::new()),
                repo_locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Leave live apps running when this provider goes away (`stagebot serve`): the next
    /// stagebot adopts them. Without it (tests, the demo) dropping the provider kills them.
    pub fn keep_apps_on_exit(&self) {
        self.inner
            .keep_on_exit
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// At start-up, before anything is deployed: every process group recorded under the data
    /// dir (`envs/**/r<n>.pgid`) by a previous stagebot is either adopted — it is the release
    /// `live` names for its environment, its leader is alive with the recorded start time, and
    /// it answers its health path — (route restored, no redeploy) or stopped (killed, its
    /// checkout and record removed). Leftovers of failed or cancelled deploys are stopped too.
    #[tracing::instrument(name = "local_adopt", skip_all)]
    pub async fn adopt(&self, live: &[LiveRelease]) -> AdoptSummary {
        let mut summary = AdoptSummary::default();
        // The groups of the adopted releases: the sandbox's, and the one bwrap was spawned in.
        let mut keep = std::collections::HashSet::new();
        for (env, record_path) in self.recorded_groups() {
            let checkout = record_path.with_extension("");
            let record = std::fs::read_to_string(&record_path)
                .ok()
                .and_then(|t| serde_json::from_str::<Record>(&t).ok());
            let wanted = record.as_ref().is_some_and(|r| {
                release_of(&checkout) == Some(r.release)
                    && live.iter().any(|l| l.env == env && l.release == r.release)
                    && !self.running().contains_key(&env)
            });
            if let (Some(rec), true) = (&record, wanted)
                && start_time_of(rec.pgid) == Some(rec.start_time)
                && answers_health(rec.port, &rec.health).await
            {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, rec.port));
                // The sandbox's group only: bwrap's own process exits with the sandbox, and its
                // pid is not checked, so it is never signalled.
                let guard = GroupGuard::new(rec.pgid);
                let mut running = self.running();
                self.inner.cfg.routes.set(&rec.host, addr);
                running.insert(
                    env.clone(),
                    Running {
                        release: rec.release,
                        proc: Proc::Adopted {
                            pid: rec.pgid,
                            start_time: rec.start_time,
                        },
                        guard,
                        addr,
                        dir: checkout.clone(),
                        host: rec.host.clone(),
                        public_url: rec.public_url.clone(),
                        predestroy: rec.predestroy.clone(),
                        env: rec.env.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
                        hook_timeout: Duration::from_millis(rec.hook_timeout_ms),
                    },
                );
                keep.insert(rec.pgid);
                keep.extend(rec.outer);
                tracing::info!(env = %env, release = rec.release, pid = rec.pgid, port = rec.port, "adopted a live release");
                reattach_output(&checkout, &rec.log, rec.release);
                summary.adopted += 1;
                continue;
            }
            if stop_recorded(&record_path) {
                summary.stopped += 1;
            }
            self.sandbox().remove_cgroup(&cgroup_name(&checkout));
            let _ = tokio::fs::remove_file(&record_path).await;
            let _ = tokio::fs::remove_file(fifo_file(&checkout)).await;
            let _ = tokio::fs::remove_dir_all(&checkout).await;
        }
        // What no record names: a crash between spawning a group and writing its record.
        summary.stopped += stop_unrecorded(&self.inner.cfg.data_dir.join("envs"), &keep);
        summary
    }

    /// Every `envs/<owner>/<name>/<slug>/*.pgid` under the data dir, with its environment.
    fn recorded_groups(&self) -> Vec<(EnvId, PathBuf)> {
        let mut found = Vec::new();
        let root = self.inner.cfg.data_dir.join("envs");
        let dirs = |p: &Path| -> Vec<(String, PathBuf)> {
            std::fs::read_dir(p)
                .map(|it| {
                    it.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (owner, owner_dir) in dirs(&root) {
            for (name, repo_dir) in dirs(&owner_dir) {
                let Ok(repo) = RepoName::new(&owner, &name) else {
                    continue;
                };
                for (slug, env_dir) in dirs(&repo_dir) {
                    let Ok(slug) = crate::types::Slug::new(&slug) else {
                        continue;
                    };
                    let env = EnvId {
                        repo: repo.clone(),
                        slug,
                    };
                    let Ok(entries) = std::fs::read_dir(&env_dir) else {
                        continue;
                    };
                    for e in entries.filter_map(Result::ok) {
                        if e.path().extension().is_some_and(|x| x == "pgid") {
                            found.push((env.clone(), e.path()));
                        }
                    }
                }
            }
        }
        found
    }

    /// The sandbox and limits checks for `/readyz` and the dashboard.
    pub fn checks(&self) -> Vec<(&'static str, Check)> {
        vec![
            ("sandbox", self.inner.sandbox.check()),
            ("limits", self.inner.sandbox.limits_check()),
        ]
    }

    /// The routing table this provider updates.
    pub fn routes(&self) -> &Routes {
        &self.inner.cfg.routes
    }

    fn env_dir(&self, env: &EnvId) -> PathBuf {
        self.inner
            .cfg
            .data_dir
            .join("envs")
            .join(env.repo.owner())
            .join(env.repo.name())
            .join(env.slug.as_str())
    }

    fn cache_dir(&self, repo: &RepoName) -> PathBuf {
        self.inner
            .cfg
            .data_dir
            .join("repos")
            .join(repo.owner())
            .join(format!("{}.git", repo.name()))
    }

    fn env_lock(&self, env: &EnvId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .env_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(env.clone()).or_default().clone()
    }

    fn repo_lock(&self, repo: &RepoName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .repo_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(repo.clone()).or_default().clone()
    }

    fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<EnvId, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deploy `spec.sha` as release `spec.release` and route `spec.host` to it once healthy.
    /// On failure (or when the future is dropped) everything this deploy started is killed and
    /// the previous release keeps serving.
    #[tracing::instrument(name = "local_deploy", skip_all, fields(
        env = %spec.env, slug = %spec.env.slug, release = spec.release, sha = %spec.sha.short()
    ))]
    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, ProviderError> {
        let lock = self.env_lock(&spec.env);
        let _env_guard = lock.lock().await;
        let started = Instant::now();
        let log = ReleaseLog::open(&spec.log_path)?;
        log.header(&format!(
            "deploy {} release {} at {} ({})",
            spec.env,
            spec.release,
            spec.sha,
            spec.branch.escape_debug()
        ));
        let result = self.deploy_locked(spec, &log).await;
        match &result {
            Ok(_) => {
                log.header(&format!("live after {}", human(started.elapsed())));
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "deployed"
                );
            }
            Err(e) => {
                log.header(&format!("deploy failed: {e}"));
                tracing::warn!(error = %e, "deploy failed");
            }
        }
        result
    }

    async fn deploy_locked(
        &self,
        spec: &DeploySpec,
        log: &ReleaseLog,
    ) -> Result<Deployed, ProviderError> {
        let cfg = &self.inner.cfg;
        let env_dir = self.env_dir(&spec.env);
        let live_dir = self.running().get(&spec.env).map(|r| r.dir.clone());
        tokio::fs::create_dir_all(&env_dir).await?;
        // Releases left behind by a previous run of stagebot (or a cancelled deploy) go first.
        remove_stale_releases(&env_dir, live_dir.as_deref()).await;

        // 1. Fetch and check out the exact commit.
        let cache = self.cache_dir(&spec.env.repo);
        let sha = {
            let lock = self.repo_lock(&spec.env.repo);
            let _repo_guard = lock.lock().await;
            let sha = fetch(cfg, &cache, spec, log).await?;
            // When it was last used (`prune::prune_dirs` keeps a cache used within the retention).
            let stamp = chrono::Utc::now().to_rfc3339();
            let _ = tokio::fs::write(cache.join(prune::CACHE_USED), stamp).await;
            sha
        };
        let mut dir = env_dir.join(format!("r{}", spec.release));
        if live_dir.as_deref() == Some(dir.as_path()) {
            // Re-deploying the live release: do not pull its files from under it.
            dir = env_dir.join(format!("r{}-{:08x}", spec.release, fastrand::u32(..)));
        }
        let checkout = DirGuard(Some(dir.clone()));
        if tokio::fs::try_exists(&dir).await? {
            tokio::fs::remove_dir_all(&dir).await?;
        }
        let dir_str = dir.to_string_lossy().into_owned();
        let cache_str = cache.to_string_lossy().into_owned();
        git(
            cfg,
            log,
            "check out",
            None,
            &[
                "clone",
                "--quiet",
                "--shared",
                "--no-checkout",
                "--",
                &cache_str,
                &dir_str,
            ],
        )
        .await?;
        git(
            cfg,
            log,
            "check out",
            Some(&dir),
            &["checkout", "--quiet", "--detach", &sha],
        )
        .await?;

        // 2. The repository's configuration at that commit.
        let eff = read_config(&dir, spec)?;
        let Some(start_cmd) = eff.start.clone() else {
            return Err(ProviderError::Config(format!(
                "no `start` command: add {CONFIG_PATH} with a `start:` line that serves the app on \
                 $PORT, for example\n\n    start: ./server --port \"$PORT\"\n    health: /healthz"
            )));
        };
        let build_timeout = eff.build_timeout.unwrap_or(cfg.build_timeout);
        let health_timeout = eff.health_timeout.unwrap_or(cfg.health_timeout);
        let mut env = app_env(spec, &eff);

        // 3. build (or start from the artifact of an earlier build of the same inputs), then
        // migrate on every deploy, then seed on an environment's first deploy.
        let mut artifact = None;
        if let Some(build) = &eff.build {
            let (key, reused) = self
                .build_once(spec, build, &eff, &dir, log, build_timeout)
                .await?;
            artifact = Some((key, reused));
        }
        if let Some(migrate) = &eff.migrate {
            run_step(
                self.sandbox(),
                "migrate",
                migrate,
                &dir,
                &env,
                log,
                build_timeout,
            )
            .await?;
        }
        if spec.first_deploy
            && let Some(seed) = &eff.seed
        {
            run_step(self.sandbox(), "seed", seed, &dir, &env, log, build_timeout).await?;
        }

        // 4. start on a free port and wait until healthy.
        let port = free_port()?;
        env.push(("PORT".to_owned(), port.to_string().into()));
        log.header(&format!("start (PORT={port}): {start_cmd}"));
        let cmd = start_shell(self.sandbox(), &start_cmd, &dir, &env, log)?;
        let mut record = Record {
            log: spec.log_path.clone(),
            release: spec.release,
            port,
            host: spec.host.clone(),
            public_url: spec.public_url.clone(),
            health: eff.health.clone(),
            predestroy: eff.predestroy.clone(),
            hook_timeout_ms: u64::try_from(build_timeout.as_millis()).unwrap_or(u64::MAX),
            env: env
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
                .collect(),
            ..Record::default()
        };
        // Recorded twice: the spawned group at once (a crash while the sandbox starts leaves
        // nothing unrecorded: stopping it stops the sandbox it spawned), then the sandbox's.
        let record_path = pgid_file(&dir);
        let (mut child, guard) = cmd
            .spawn_noting(|outer| {
                record.pgid = outer;
                record.outer = Some(outer);
                record.start_time = start_time_of(outer).unwrap_or_default();
                note_record(&record_path, &record);
            })
            .await?;
        if let Some(pgid) = guard.pgid() {
            record.pgid = pgid;
            record.start_time = start_time_of(pgid).unwrap_or_default();
            note_record(&record_path, &record);
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let health_started = Instant::now();
        if let Err(message) = wait_healthy(&mut child, addr, &eff.health, health_timeout).await {
            drop(guard); // kills the group
            let _ = child.wait().await;
            let _ = std::fs::remove_file(pgid_file(&dir));
            let _ = std::fs::remove_file(fifo_file(&dir));
            self.sandbox().remove_cgroup(&cgroup_name(&dir));
            log.line(&message);
            return Err(ProviderError::Deploy {
                message,
                log_tail: log.tail(LOG_TAIL_LINES),
            });
        }
        log.header(&format!(
            "healthy after {}",
            human(health_started.elapsed())
        ));

        // 5. Switch the route, then retire the previous release.
        let previous = {
            let mut running = self.running();
            cfg.routes.set(&spec.host, addr);
            running.insert(
                spec.env.clone(),
                Running {
                    release: spec.release,
                    proc: Proc::Child(child),
                    guard,
                    addr,
                    dir: checkout.keep(),
                    host: spec.host.clone(),
                    public_url: spec.public_url.clone(),
                    predestroy: eff.predestroy.clone(),
                    env: env.clone(),
                    hook_timeout: build_timeout,
                },
            )
        };
        tracing::info!(host = %spec.host, %addr, "route switched");
        if let Err(e) = self
            .inner
            .artifacts
            .used(
                &spec.env.repo,
                artifact.as_ref().map(|(k, _)| k.as_str()),
                &spec.env.slug,
                spec.release,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot record the artifact's use");
        }
        if let Some(mut old) = previous {
            if old.host != spec.host {
                cfg.routes.remove(&old.host);
            }
            // The new release is serving: retire the old one in the background so the deploy
            // is reported live now, not after the drain. Requests already sent to the old
            // process get `drain` to finish; its group guard kills it even if this task is
            // dropped at shutdown.
            let (drain, grace, log) = (cfg.drain, cfg.stop_grace, log.clone());
            let sandbox = self.sandbox().clone();
            tokio::spawn(async move {
                tokio::time::sleep(drain).await;
                log.header(&format!("stopping release {}", old.release));
                stop_proc(&mut old.proc, &mut old.guard, grace).await;
                sandbox.remove_cgroup(&cgroup_name(&old.dir));
                let _ = tokio::fs::remove_file(pgid_file(&old.dir)).await;
                let _ = tokio::fs::remove_file(fifo_file(&old.dir)).await;
                let _ = tokio::fs::remove_dir_all(&old.dir).await;
            });
        }

        // 6. postdeploy: the release is live already, so a failure is reported in the log only.
        if let Some(hook) = &eff.postdeploy
            && let Err(e) = run_step(
                self.sandbox(),
                "postdeploy",
                hook,
                &dir,
                &env,
                log,
                build_timeout,
            )
            .await
        {
            log.line(&format!(
                "warning: postdeploy failed ({e}); the release stays live"
            ));
            tracing::warn!(error = %e, "postdeploy failed");
        }
        Ok(Deployed {
            url: spec.public_url.clone(),
            artifact: artifact.and_then(|(_, reused)| reused),
        })
    }

    /// Run `build` in `dir`, or copy in the artifact of an earlier build of the same commit,
    /// command and variables (then `build` does not run). Returns the artifact key and, when
    /// one was reused, what the release says about it.
    async fn build_once(
        &self,
        spec: &DeploySpec,
        build: &str,
        eff: &Effective,
        dir: &Path,
        log: &ReleaseLog,
        timeout: Duration,
    ) -> Result<(String, Option<String>), ProviderError> {
        let env = build_env(spec, eff);
        let mut inputs = eff.base_env.clone();
        inputs.extend(spec.vars.clone());
        let key = super::artifact::key(&spec.sha, build, &inputs);
        let artifacts = &self.inner.artifacts;
        if let Some((from, entry)) = artifacts.find(&spec.env.repo, &key).await {
            let note = format!(
                "reused artifact of release #{} ({})",
                entry.release, entry.env
            );
            // Copied next to the fresh checkout, which it replaces only once complete.
            let mut copy = dir.as_os_str().to_owned();
            copy.push(".artifact");
            let copy = PathBuf::from(copy);
            let _ = tokio::fs::remove_dir_all(&copy).await;
            match super::artifact::copy_tree(&from, &copy).await {
                Ok(()) => {
                    tokio::fs::remove_dir_all(dir).await?;
                    tokio::fs::rename(&copy, dir).await?;
                    log.header(&format!("build skipped: {note}"));
                    return Ok((key, Some(note)));
                }
                Err(e) => {
                    let _ = tokio::fs::remove_dir_all(&copy).await;
                    log.line(&format!("cannot use the kept artifact ({e}); building"));
                    tracing::warn!(error = %e, "cannot copy the artifact; building");
                }
            }
        }
        run_step(self.sandbox(), "build", build, dir, &env, log, timeout).await?;
        if let Err(e) = artifacts
            .save(
                &spec.env.repo,
                &key,
                dir,
                &spec.sha,
                &spec.env.slug,
                spec.release,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot keep the build as an artifact");
        }
        Ok((key, None))
    }

    /// Stop the environment: `predestroy` (best effort), remove the route, stop the process
    /// group (TERM, then KILL after the grace period) and delete the checkouts.
    #[tracing::instrument(name = "local_teardown", skip_all, fields(env = %spec.env, slug = %spec.env.slug))]
    pub async fn teardown(&self, spec: &TeardownSpec) -> Result<(), ProviderError> {
        let lock = self.env_lock(&spec.env);
        let _env_guard = lock.lock().await;
        let cfg = &self.inner.cfg;
        let log = ReleaseLog::open(&spec.log_path)?;
        log.header(&format!("teardown {}", spec.env));
        let running = self.running().remove(&spec.env);
        match running {
            Some(mut r) => {
                if let Some(hook) = &r.predestroy
                    && let Err(e) = run_step(
                        self.sandbox(),
                        "predestroy",
                        hook,
                        &r.dir,
                        &r.env,
                        &log,
                        r.hook_timeout,
                    )
                    .await
                {
                    log.line(&format!(
                        "warning: predestroy failed ({e}); tearing down anyway"
                    ));
                    tracing::warn!(error = %e, "predestroy failed");
                }
                if cfg.routes.get(&r.host) == Some(r.addr) {
                    cfg.routes.remove(&r.host);
                }
                stop_proc(&mut r.proc, &mut r.guard, cfg.stop_grace).await;
                self.sandbox().remove_cgroup(&cgroup_name(&r.dir));
                log.line(&format!("stopped release {}", r.release));
            }
            None => {
                log.line("no running release known to this stagebot process; cleaning up files")
            }
        }
        if let Err(e) = self
            .inner
            .artifacts
            .forget(&spec.env.repo, &spec.env.slug)
            .await
        {
            tracing::warn!(error = %e, "cannot let go of the environment's artifacts");
        }
        let env_dir = self.env_dir(&spec.env);
        remove_stale_releases(&env_dir, None).await;
        match tokio::fs::remove_dir_all(&env_dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        log.header("torn down");
        tracing::info!("torn down");
        Ok(())
    }

    /// `Running` if the environment's process is alive and its route is set, else `Stopped`.
    /// After a restart of stagebot only what [`LocalProvider::adopt`] took over is known.
    pub fn status(&self, env: &EnvId) -> ProviderStatus {
        let mut running = self.running();
        let Some(r) = running.get_mut(env) else {
            return ProviderStatus::Stopped;
        };
        let alive = r.proc.alive();
        if alive && self.inner.cfg.routes.get(&r.host) == Some(r.addr) {
            ProviderStatus::Running {
                url: r.public_url.clone(),
            }
        } else {
            ProviderStatus::Stopped
        }
    }
}

/// The environment's `HOME`, next to its releases' checkouts.
const HOME_DIR: &str = "home";

/// The cgroup of the release checked out in `dir` (a hash: names stay short and safe).
fn cgroup_name(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    // FNV-1a: stable across runs, unlike std's hasher.
    let hash = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("env-{hash:016x}")
}

/// `r3` → `r3.pgid`, next to the checkout (outside it, so the app cannot rewrite it).
fn pgid_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(OsString::from).unwrap_or_default();
    name.push(".pgid");
    dir.with_file_name(name)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.keep_on_exit.load(std::sync::atomic::Ordering::Relaxed) {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            for r in running.values_mut() {
                // Left running for the next stagebot to adopt (its record stays on disk).
                r.guard.disarm();
            }
        }
    }
}

/// The direct children of process `pid` (all its threads'), read before it is killed.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|p| *p > 1)
        .collect()
}

/// Write a release's record (0600: it holds the app's environment), replacing any older one.
fn write_record(path: &Path, record: &Record) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let text = serde_json::to_vec(record).map_err(io::Error::other)?;
    let tmp = path.with_extension("pgid.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&text)?;
    std::fs::rename(&tmp, path)
}

/// Write a record, logging (not failing) when it cannot be written.
fn note_record(path: &Path, record: &Record) {
    if let Err(e) = write_record(path, record) {
        tracing::warn!(error = %e, path = %path.display(), "cannot record a process group");
    }
}

/// `r3` → `r3.step.pgid`: the record of the step (`build`, a hook) running in that checkout.
fn step_record_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(OsString::from).unwrap_or_default();
    name.push(".step.pgid");
    dir.with_file_name(name)
}

/// `.../r3` or `.../r3-0badc0de` → 3.
fn release_of(checkout: &Path) -> Option<u32> {
    let name = checkout.file_name()?.to_str()?.strip_prefix('r')?;
    name.split('-').next()?.parse().ok()
}

/// Does `GET http://127.0.0.1:<port><health>` answer 2xx within a few seconds?
async fn answers_health(port: u16, health: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return false;
    };
    client
        .get(format!("http://127.0.0.1:{port}{health}"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Kill the process group a record file (`r<n>.pgid`) names, if it is still the one that was
/// recorded: the same leader start time, or (a record written before start times were kept: a
/// bare pgid) a leader whose working directory is still the release's checkout. So a recycled
/// pid is never hit. True when something was killed.
fn stop_recorded(record_path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(record_path) else {
        return false;
    };
    let checkout = record_path.with_extension("");
    let (pgid, outer, ours) = match serde_json::from_str::<Record>(&text) {
        Ok(r) => (
            r.pgid,
            r.outer,
            r.start_time != 0 && start_time_of(r.pgid) == Some(r.start_time),
        ),
        Err(_) => match text.trim().parse::<i32>() {
            Ok(pgid) => {
                let cwd = std::fs::read_link(format!("/proc/{pgid}/cwd")).ok();
                (pgid, None, cwd.is_some_and(|c| c.starts_with(&checkout)))
            }
            Err(_) => return false,
        },
    };
    let mut stopped = false;
    if ours {
        tracing::info!(pgid, dir = %checkout.display(), "stopping a release left behind");
        // A record of the spawned group only (stagebot died while the sandbox started): the
        // sandbox is a child of the recorded leader, maybe not yet in a session of its own.
        for child in children_of(pgid) {
            let _ = signal_group(child, libc::SIGKILL);
            // SAFETY: kill(2) on a current child of the verified leader; no memory involved.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        let _ = signal_group(pgid, libc::SIGKILL);
        // The leader itself, also when it is not (yet) its group's leader: the sandbox's first
        // process, whose death ends its PID namespace.
        // SAFETY: kill(2) on the leader verified by its start time; no memory involved.
        unsafe { libc::kill(pgid, libc::SIGKILL) };
        stopped = true;
    }
    // Groups whose leader is gone but whose members are not: killing bwrap's group while it
    // creates the sandbox (a deploy cancelled then, or stagebot dying then) can miss the
    // sandbox's first process, which is left in that group. The members whose arguments name
    // this checkout (bwrap's `--chdir`) are stopped.
    for g in [Some(pgid), outer].into_iter().flatten().filter(|g| *g > 1) {
        // A leader that still runs is handled above (or is not ours); a zombie counts as gone.
        if start_time_of(g).is_some() {
            continue;
        }
        for pid in group_members_naming(g, &checkout) {
            tracing::info!(pid, pgid = g, dir = %checkout.display(), "stopping what is left of a release's group");
            // SAFETY: kill(2) on a member of the recorded group that names the checkout.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            stopped = true;
        }
    }
    stopped
}

/// Kill what a previous stagebot left under `envs_root` that no record names (a crash between
/// spawning a release's group and writing its `r<n>.pgid`): every process whose command line
/// names a path under `envs_root` (bwrap's `--chdir`, the sandbox's first process) or whose
/// working directory is under it (an unsandboxed app), unless its group is in `keep` (the
/// adopted live releases). Called at start-up, before this stagebot has started anything there;
/// another stagebot's data dir is another path. The number killed.
fn stop_unrecorded(envs_root: &Path, keep: &std::collections::HashSet<i32>) -> usize {
    let mut prefix = envs_root.as_os_str().as_encoded_bytes().to_vec();
    prefix.push(b'/');
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid > 1 && *pid != me)
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(fields) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        if state == Some("Z") || pgrp.is_some_and(|g| keep.contains(&g)) {
            continue;
        }
        let named = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(prefix.len()).any(|w| w == prefix.as_slice()));
        let inside = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| {
            c.as_os_str()
                .as_encoded_bytes()
                .starts_with(prefix.as_slice())
        });
        if named || inside {
            tracing::info!(
                pid,
                "stopping a process left under the data dir without a record"
            );
            // SAFETY: kill(2) on a process that names this data dir's envs/; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    killed
}

/// The processes of group `pgid` whose command line names `checkout`.
fn group_members_naming(pgid: i32, checkout: &Path) -> Vec<i32> {
    let needle = checkout.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let in_group = stat.rfind(')').is_some_and(|i| {
                // After the command: state, ppid, pgrp.
                stat[i + 1..].split_whitespace().nth(2) == Some(pgid.to_string().as_str())
            });
            in_group
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Kill the processes of every release in `env_dir` except `keep`, and delete their files.
/// A process group is only killed if it is still the recorded one (see [`stop_recorded`]), so
/// a recycled pid is never hit.
async fn remove_stale_releases(env_dir: &Path, keep: Option<&Path>) {
    let Ok(mut entries) = tokio::fs::read_dir(env_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if keep.is_some_and(|k| path == k || path == pgid_file(k) || path == fifo_file(k))
            || path.ends_with(HOME_DIR)
        {
            continue;
        }
        if path.extension().is_some_and(|e| e == "pgid") {
            stop_recorded(&path);
            let _ = tokio::fs::remove_file(&path).await;
        } else if path.extension().is_some_and(|e| e == "out") {
            let _ = tokio::fs::remove_file(&path).await;
        } else if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            let _ = tokio::fs::remove_dir_all(&path).await;
        }
    }
}

/// Make sure the commit is in the cache; returns its full id.
async fn fetch(
    cfg: &LocalConfig,
    cache: &Path,
    spec: &DeploySpec,
    log: &ReleaseLog,
) -> Result<String, ProviderError> {
    let cache_str = cache.to_string_lossy().into_owned();
    if !cache.join("HEAD").exists() {
        tokio::fs::create_dir_all(cache).await?;
        git(
            cfg,
            log,
            "init cache",
            None,
            &["init", "--quiet", "--bare", "--", &cache_str],
        )
        .await?;
        git(
            cfg,
            log,
            "init cache",
            Some(cache),
            &["config", "gc.auto", "0"],
        )
        .await?;
    }
    let sha = spec.sha.as_str();
    if let Some(full) = resolve_commit(cfg, cache, sha).await {
        log.line(&format!("commit {sha} already in the cache"));
        return Ok(full);
    }
    let url = clone_url(&spec.clone_url)?;
    let shown = redact_url(&url);
    log.header(&format!("fetch {sha} from {shown}"));
    let mut extra = Vec::new();
    if let (Some(token), true) = (&spec.clone_token, url.starts_with("https://")) {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose()));
        extra.push(("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()));
        extra.push(("GIT_CONFIG_KEY_0".to_owned(), "http.extraHeader".to_owned()));
        extra.push((
            "GIT_CONFIG_VALUE_0".to_owned(),
            format!("Authorization: Basic {basic}"),
        ));
    }
    // Servers allow fetching a full commit id directly; fall back to fetching all branches
    // (abbreviated ids, servers that refuse unadvertised objects).
    let direct = if sha.len() >= 40 {
        git_with(
            cfg,
            log,
            "fetch",
            Some(cache),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
                &url,
                sha,
            ],
            &extra,
        )
        .await
    } else {
        Err(ProviderError::Git(String::new()))
    };
    if direct.is_err() || resolve_commit(cfg, cache, sha).await.is_none() {
        // Glob refspecs that match nothing (no pull refs on a plain repository) are fine.
        let refspecs = [
            "+refs/heads/*:refs/heads/*",
            "+refs/pull/*/head:refs/pull/*/head",
        ];
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--prune", "--", &url];
        args.extend(refspecs);
        git_with(cfg, log, "fetch", Some(cache), &args, &extra).await?;
    }
    resolve_commit(cfg, cache, sha)
        .await
        .ok_or_else(|| ProviderError::Git(format!("commit {sha} not found in {shown}")))
}

/// Full id of `sha` if the cache has that commit.
async fn resolve_commit(cfg: &LocalConfig, cache: &Path, sha: &str) -> Option<String> {
    let mut cmd = git_command(cfg, Some(cache), &[]);
    cmd.args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{sha}^{{commit}}"));
    let out = git_output(cfg, cmd).await.ok()?;
    let full = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !full.is_empty()).then_some(full)
}

/// Validate the clone URL: a local path, `file://`, `https://` or `http://`, never something git
/// would read as an option.
fn clone_url(url: &str) -> Result<String, ProviderError> {
    let url = url.trim();
    let ok = url.starts_with("https://")
        || url.starts_with("http://")
        || url.starts_with("file://")
        || url.starts_with('/');
    if !ok || url.chars().any(char::is_control) {
        return Err(ProviderError::Git(format!(
            "unsupported clone URL {:?}: expected https://, http://, file:// or an absolute path",
            redact_url(url)
        )));
    }
    Ok(url.to_owned())
}

/// Drop any `user:password@` from a URL before it is shown.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// git with a cleared environment: `PATH`, a `HOME` of its own (empty, stagebot's), no system
/// or global configuration, no prompts, no hooks, and only the auth `extra_env` carries.
fn git_command(cfg: &LocalConfig, dir: Option<&Path>, extra_env: &[(String, String)]) -> Command {
    let home = cfg.data_dir.join("git-home");
    let _ = std::fs::create_dir_all(&home);
    let mut cmd = Command::new(&cfg.git);
    cmd.args(["-c", "core.hooksPath=/dev/null"]);
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "file:https:http")
        .env("LC_ALL", "C")
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Run a git command to completion within `cfg.git_timeout`; on timeout its whole process group
/// (git and its helpers) is killed.
async fn git_output(
    cfg: &LocalConfig,
    mut cmd: Command,
) -> Result<std::process::Output, ProviderError> {
    let cannot =
        |e: io::Error| ProviderError::Git(format!("cannot run {}: {e}", cfg.git.display()));
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(cannot)?;
    let guard = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(GroupGuard::new);
    match tokio::time::timeout(cfg.git_timeout, child.wait_with_output()).await {
        Ok(out) => {
            if let Some(mut g) = guard {
                g.disarm();
            }
            out.map_err(cannot)
        }
        // Dropping the guard kills the group.
        Err(_) => Err(ProviderError::Git(format!(
            "git timed out after {}",
            human(cfg.git_timeout)
        ))),
    }
}

async fn git(
    cfg: &LocalConfig,
    log: &ReleaseLog,
    what: &str,
    dir: Option<&Path>,
    args: &[&str],
) -> Result<(), ProviderError> {
    git_with(cfg, log, what, dir, args, &[]).await
}

/// Run git with `args` (never through a shell); its output goes to the log.
async fn git_with(
    cfg: &LocalConfig,
    log: &ReleaseLog,
    what: &str,
    dir: Option<&Path>,
    args: &[&str],
    extra_env: &[(String, String)],
) -> Result<(), ProviderError> {
    let mut cmd = git_command(cfg, dir, extra_env);
    cmd.args(args);
    let out = git_output(cfg, cmd).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        log.line(&format!("git: {line}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(ProviderError::Git(format!(
            "{what} failed ({}): {last}",
            describe_exit(out.status)
        )))
    }
}

/// `.github/stagebot.yml` of the checkout (missing → defaults), resolved for this environment.
fn read_config(dir: &Path, spec: &DeploySpec) -> Result<Effective, ProviderError> {
    let path = dir.join(CONFIG_PATH);
    let cfg = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => repo_config::RepoConfig::default(),
        Err(e) => return Err(e.into()),
        Ok(meta) if !meta.is_file() => {
            return Err(ProviderError::Config(format!(
                "{CONFIG_PATH} must be a regular file (not a symlink)"
            )));
        }
        Ok(_) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ProviderError::Config(format!("{CONFIG_PATH}: cannot read: {e}")))?;
            repo_config::parse(&text).map_err(|e| ProviderError::Config(e.to_string()))?
        }
    };
    cfg.effective(spec.kind, spec.profile.as_deref())
        .map_err(|e| ProviderError::Config(e.to_string()))
}

/// The environment of every app process: a few basics from stagebot's own environment, the
/// repository's `env` (global, kind, profile), the operator's `spec.vars`, and last the
/// `STAGEBOT_*` variables, which nothing overrides. `PORT` is added for `start` and later hooks.
fn app_env(spec: &DeploySpec, eff: &Effective) -> Vec<(String, OsString)> {
    let mut env = process::base_env();
    env.extend(eff.env.iter().map(|(k, v)| (k.clone(), v.into())));
    if let Some(dsn) = eff
        .sentry_dsn
        .as_deref()
        .filter(|_| !spec.vars.contains_key("SENTRY_DSN"))
    {
        env.extend(
            crate::sentry::env_vars(dsn, spec.kind, &spec.sha)
                .into_iter()
                .map(|(k, v)| (k, v.into())),
        );
    }
    env.extend(spec.vars.iter().map(|(k, v)| (k.clone(), v.into())));
    env.extend(spec.stagebot_vars().into_iter().map(|(k, v)| (k, v.into())));
    env
}

/// The environment of `build`: the basics, the repository's base `env`, the operator's
/// variables, and only the commit's identity (`STAGEBOT_REPO`, `STAGEBOT_SHA`): a build is
/// shared by every environment of its commit, so nothing kind- or profile-specific.
fn build_env(spec: &DeploySpec, eff: &Effective) -> Vec<(String, OsString)> {
    let mut env = process::base_env();
    env.extend(eff.base_env.iter().map(|(k, v)| (k.clone(), v.into())));
    env.extend(spec.vars.iter().map(|(k, v)| (k.clone(), v.into())));
    env.push(("STAGEBOT_REPO".to_owned(), spec.env.repo.to_string().into()));
    env.push(("STAGEBOT_SHA".to_owned(), spec.sha.to_string().into()));
    env
}

/// `sh -c <command>` in `dir` with exactly `env`, in the sandbox, output appended to the log.
/// `HOME` is the environment's, next to the checkout.
fn shell(
    sandbox: &Sandbox,
    command: &str,
    dir: &Path,
    env: &[(String, OsString)],
    log: &ReleaseLog,
) -> io::Result<Prepared> {
    let home = dir
        .parent()
        .map(|p| p.join(HOME_DIR))
        .ok_or_else(|| io::Error::other("a checkout has no parent directory"))?;
    let mut cmd = sandbox.command(command, dir, &home, env, Some(&cgroup_name(dir)))?;
    cmd.cmd.stdout(log.file()?).stderr(log.file()?);
    Ok(cmd)
}

/// [`shell`] for `start`: its output goes through a FIFO next to the checkout (`r<n>.out`)
/// instead of an anonymous pipe, and the command also holds a read end of it. So when stagebot
/// exits, the app's writes neither fail (`EPIPE`, `SIGPIPE`) nor get lost: they wait in the
/// FIFO (up to its size, then the app's writes block) until the next stagebot adopts the app
/// and copies the FIFO into the log again ([`reattach_output`]).
fn start_shell(
    sandbox: &Sandbox,
    command: &str,
    dir: &Path,
    env: &[(String, OsString)],
    log: &ReleaseLog,
) -> io::Result<Prepared> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let home = dir
        .parent()
        .map(|p| p.join(HOME_DIR))
        .ok_or_else(|| io::Error::other("a checkout has no parent directory"))?;
    let mut cmd = sandbox.command(command, dir, &home, env, Some(&cgroup_name(dir)))?;
    let fifo = fifo_file(dir);
    match std::fs::remove_file(&fifo) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("the FIFO's path holds a NUL byte"))?;
    // SAFETY: mkfifo reads the NUL-terminated path `c_path` owns.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let open_read = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
    };
    // The reader first: opening the write end then does not block.
    let reader = open_read()?;
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo)?;
    let keeper = open_read()?;
    // Room for what the app writes while no stagebot reads (best effort; 1 MiB is the
    // default limit for unprivileged processes).
    // SAFETY: fcntl on a descriptor `writer` owns; no memory is passed.
    unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    log.attach(io::PipeReader::from(std::os::fd::OwnedFd::from(reader)))?;
    cmd.cmd.stdout(writer.try_clone()?).stderr(writer);
    let keep_fd = keeper.as_raw_fd();
    // SAFETY: runs in the child between fork and exec; fcntl is async-signal-safe and `keep_fd`
    // is open (the closure owns `keeper`, which lives as long as the command).
    unsafe {
        cmd.cmd.pre_exec(move || {
            let _owned = &keeper;
            if libc::fcntl(keep_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// `r3` → `r3.out`: the FIFO a release's `start` writes its output into.
fn fifo_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(OsString::from).unwrap_or_default();
    name.push(".out");
    dir.with_file_name(name)
}

/// Copy an adopted release's output into its log again (best effort: a missing FIFO, a release
/// started by an older stagebot, only loses the output).
fn reattach_output(checkout: &Path, log_path: &Path, release: u32) {
    use std::os::unix::fs::OpenOptionsExt as _;
    if log_path.as_os_str().is_empty() {
        return;
    }
    let attached = ReleaseLog::open(log_path).and_then(|log| {
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo_file(checkout))?;
        log.attach(io::PipeReader::from(std::os::fd::OwnedFd::from(reader)))?;
        log.header(&format!(
            "stagebot restarted; release {release} kept running and was adopted"
        ));
        Ok(())
    });
    if let Err(e) = attached {
        tracing::warn!(error = %e, "cannot copy the adopted release's output into its log");
    }
}

/// Run one step (`build`, a hook) to completion in its own process group, killing the group on
/// timeout or when the future is dropped.
async fn run_step(
    sandbox: &Sandbox,
    step: &str,
    command: &str,
    dir: &Path,
    env: &[(String, OsString)],
    log: &ReleaseLog,
    timeout: Duration,
) -> Result<(), ProviderError> {
    log.header(&format!("{step}: {command}"));
    let started = Instant::now();
    let cmd = shell(sandbox, command, dir, env, log)?;
    // Recorded while it runs, so a crash of stagebot does not leave it running unknown.
    let record_path = step_record_file(dir);
    let (mut child, mut guard) = cmd
        .spawn_noting(|outer| {
            note_record(
                &record_path,
                &Record {
                    pgid: outer,
                    outer: Some(outer),
                    start_time: start_time_of(outer).unwrap_or_default(),
                    ..Record::default()
                },
            );
        })
        .await?;
    let result = wait_step(step, &mut child, &mut guard, log, timeout, started).await;
    let _ = std::fs::remove_file(&record_path);
    if result.is_err() {
        // The release will not start: its cgroup goes (best effort; busy while `start` runs).
        sandbox.remove_cgroup(&cgroup_name(dir));
    }
    result
}

async fn wait_step(
    step: &str,
    child: &mut Child,
    guard: &mut GroupGuard,
    log: &ReleaseLog,
    timeout: Duration,
    started: Instant,
) -> Result<(), ProviderError> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // Anything the step left running in its group goes with it.
            guard.kill();
            guard.disarm();
            if status.success() {
                log.line(&format!("{step} finished in {}", human(started.elapsed())));
                Ok(())
            } else {
                let message = format!("`{step}` failed: exited with {}", describe_exit(status));
                log.line(&message);
                Err(ProviderError::Deploy {
                    message,
                    log_tail: log.tail(LOG_TAIL_LINES),
                })
            }
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            guard.kill();
            guard.disarm();
            let _ = child.wait().await;
            log.line(&format!(
                "{step} timed out after {}; killed",
                human(timeout)
            ));
            Err(ProviderError::Timeout {
                step: step.to_owned(),
                after: timeout,
                log_tail: log.tail(LOG_TAIL_LINES),
            })
        }
    }
}

/// A port nothing listens on right now (bind to :0, read, release).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Poll `http://addr<health>` until it answers 2xx (every 25 ms for a second, then backing off). Fails at once if the process
/// exits, and after `timeout` otherwise.
async fn wait_healthy(
    child: &mut Child,
    addr: SocketAddr,
    health: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{addr}{health}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build the health-check client: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(25);
    let mut last = "no answer yet".to_owned();
    loop {
        tokio::select! {
            status = child.wait() => {
                return Err(match status {
                    Ok(s) => format!("`start` exited with {} before answering GET {health}", describe_exit(s)),
                    Err(e) => format!("`start` could not be watched: {e}"),
                });
            }
            answer = client.get(&url).send() => match answer {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => last = format!("answered {}", resp.status()),
                Err(e) if e.is_connect() => last = "connection refused".to_owned(),
                Err(e) => last = e.to_string(),
            },
            () = tokio::time::sleep_until(deadline) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "`start` did not become healthy within {}: GET {health} on port {}: {last}",
                human(timeout),
                addr.port()
            ));
        }
        tokio::select! {
            status = child.wait() => {
                return Err(match status {
                    Ok(s) => format!("`start` exited with {} before answering GET {health}", describe_exit(s)),
                    Err(e) => format!("`start` could not be watched: {e}"),
                });
            }
            () = tokio::time::sleep(delay) => {}
        }
        // Every 25 ms for the first second (most apps are ready within it, and a doubling
        // schedule rounds readiness up to the next poll: ~100 ms of a 250 ms deploy), then
        // backing off to 500 ms for slow starters.
        if tokio::time::Instant::now() + timeout >= deadline + Duration::from_secs(1) {
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(clone_url("https://github.com/o/r.git").is_ok());
        assert!(clone_url("/srv/git/r").is_ok());
        assert!(clone_url("file:///srv/git/r").is_ok());
        assert!(clone_url("--upload-pack=touch /tmp/x").is_err());
        assert!(clone_url("ext::sh -c touch% /tmp/x").is_err());
        assert!(clone_url("relative/path").is_err());
        assert_eq!(
            redact_url("https://x:tok@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("https://github.com/o/r"),
            "https://github.com/o/r"
        );
    }

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let start = start_time_of(me);
        assert!(start.is_some_and(|t| t > 0), "{start:?}");
        assert_eq!(start_time_of(me), start, "stable");
        assert_eq!(start_time_of(i32::MAX), None, "no such process");
    }

    #[test]
    fn records_name_their_release() {
        assert_eq!(release_of(Path::new("/d/envs/o/r/s/r3")), Some(3));
        assert_eq!(
            release_of(Path::new("/d/envs/o/r/s/r12-0badc0de")),
            Some(12)
        );
        assert_eq!(release_of(Path::new("/d/envs/o/r/s/r3.step")), None);
        assert_eq!(release_of(Path::new("/d/envs/o/r/s/home")), None);
        assert_eq!(
            step_record_file(Path::new("/d/s/r3")),
            Path::new("/d/s/r3.step.pgid")
        );
        assert_eq!(fifo_file(Path::new("/d/s/r3")), Path::new("/d/s/r3.out"));
        // A record without the newer fields (or from an older layout) still parses.
        let old: Record = serde_json::from_str(r#"{"pgid":42,"start_time":7}"#).unwrap_or_default();
        assert_eq!((old.pgid, old.start_time, old.release), (42, 7, 0));
    }

    #[test]
    fn a_process_left_without_a_record_is_stopped_and_an_adopted_one_kept() {
        let data = tempfile::tempdir().unwrap();
        let envs = data.path().join("envs");
        let checkout = envs.join("acme/webapp/pr-1/r1");
        std::fs::create_dir_all(&checkout).unwrap();
        let spawn = |own_group: bool| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("60").current_dir(&checkout);
            if own_group {
                use std::os::unix::process::CommandExt as _;
                cmd.process_group(0);
            }
            cmd.spawn().unwrap()
        };
        let mut orphan = spawn(false);
        let mut adopted = spawn(true);
        let adopted_pid = i32::try_from(adopted.id()).unwrap();
        let keep = std::collections::HashSet::from([adopted_pid]);
        // Another data dir's processes are not ours.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(stop_unrecorded(&other.path().join("envs"), &keep), 0);
        assert_eq!(stop_unrecorded(&envs, &keep), 1);
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert!(
            adopted.try_wait().unwrap().is_none(),
            "the adopted one runs"
        );
        let _ = adopted.kill();
        let _ = adopted.wait();
    }

    #[test]
    fn pgid_file_sits_next_to_the_checkout() {
        assert_eq!(
            pgid_file(Path::new("/d/envs/o/r/s/r3")),
            Path::new("/d/envs/o/r/s/r3.pgid")
        );
    }
}
