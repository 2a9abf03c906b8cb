//! The command provider (docs/providers.md): operator-configured executables do the work, so stagebot can
//! drive Kubernetes, Terraform or a PaaS. See `deploy/README.md` for the contract.
//!
//! - Executables run directly (no shell), in their own process group, stdin from /dev/null,
//!   stdout and stderr appended to the release log, killed (whole group) on timeout. When the
//!   script exits, anything it left running in its group is killed too; a daemon must detach.
//! - The environment is stagebot's own minus its secrets (`WEBHOOK_SECRET`, `PRIVATE_KEY`,
//!   `PRIVATE_KEY_PATH`, `STAGEBOT_POSTGRES_URL`, `STAGEBOT_POSTGRES_SECRET`, `SENTRY_AUTH_TOKEN`), plus the spec's `vars`, every `STAGEBOT_*` variable of
//!   [`DeploySpec::stagebot_vars`], `STAGEBOT_CLONE_URL`, `STAGEBOT_CLONE_TOKEN` (only when there
//!   is one), `STAGEBOT_PROFILE` (when set), `STAGEBOT_FIRST_DEPLOY` (`1`/`0`) and `STAGEBOT_LOG`.
//! - deploy: exit 0 and a `url=<http(s) URL>` line on stdout (the last one wins).
//! - teardown (optional): exit 0. status (optional): `state=running` + `url=…`, or
//!   `state=stopped`; anything else is "unknown".

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::process::{self, ReleaseLog, describe_exit, human, signal_group};
use super::{DeploySpec, Deployed, LOG_TAIL_LINES, ProviderError, ProviderStatus, TeardownSpec};
use crate::types::EnvId;

/// Settings of the command provider.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// Run for every deploy; prints `url=…`.
    pub deploy_cmd: PathBuf,
    /// Run on teardown; none means teardown has nothing to do.
    pub teardown_cmd: Option<PathBuf>,
    /// Run for status checks; none means the status is `Unknown`.
    pub status_cmd: Option<PathBuf>,
    /// Limit for each run; the script's whole process group is killed when it is hit.
    pub timeout: Duration,
}

/// The command provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    cfg: Arc<CommandConfig>,
}

/// Variables of stagebot's own environment a script must not see.
const SECRET_VARS: &[&str] = &[
    "WEBHOOK_SECRET",
    "PRIVATE_KEY",
    "PRIVATE_KEY_PATH",
    "STAGEBOT_POSTGRES_URL",
    "STAGEBOT_POSTGRES_SECRET",
    "SENTRY_AUTH_TOKEN",
    "GITHUB_CLIENT_SECRET",
    "STAGEBOT_ADMIN_TOKEN",
];

/// What a script printed that matters.
#[derive(Debug, Default)]
struct Printed {
    url: Option<String>,
    state: Option<String>,
}

impl CommandProvider {
    /// A provider running the configured executables.
    pub fn new(cfg: CommandConfig) -> Self {
        Self { cfg: Arc::new(cfg) }
    }

    /// Run the deploy script; its last `url=` line is the environment's URL.
    #[tracing::instrument(name = "command_deploy", skip_all, fields(
        env = %spec.env, slug = %spec.env.slug, release = spec.release, sha = %spec.sha.short()
    ))]
    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, ProviderError> {
        let log = ReleaseLog::open(&spec.log_path)?;
        let mut vars = spec.vars.clone();
        vars.extend(spec.stagebot_vars());
        vars.insert("STAGEBOT_CLONE_URL".into(), spec.clone_url.clone());
        if let Some(token) = &spec.clone_token {
            vars.insert("STAGEBOT_CLONE_TOKEN".into(), token.expose().to_owned());
        }
        if let Some(profile) = &spec.profile {
            vars.insert("STAGEBOT_PROFILE".into(), profile.clone());
        }
        vars.insert(
            "STAGEBOT_FIRST_DEPLOY".into(),
            if spec.first_deploy { "1" } else { "0" }.into(),
        );
        vars.insert(
            "STAGEBOT_LOG".into(),
            spec.log_path.to_string_lossy().into_owned(),
        );
        log.header(&format!(
            "deploy {} release {} at {} with {}",
            spec.env,
            spec.release,
            spec.sha,
            self.cfg.deploy_cmd.display()
        ));
        let printed = self
            .run("deploy script", &self.cfg.deploy_cmd, &vars, Some(&log))
            .await?;
        let Some(url) = printed.url else {
            let message =
                "deploy script exited 0 but printed no `url=` line on stdout (print e.g. \
                           `url=https://$STAGEBOT_SLUG.example.dev` as its last url= line)"
                    .to_owned();
            log.line(&message);
            return Err(ProviderError::Deploy {
                message,
                log_tail: log.tail(LOG_TAIL_LINES),
            });
        };
        log.header(&format!("live at {url}"));
        Ok(Deployed {
            url,
            artifact: None,
        })
    }

    /// Run the teardown script, if one is configured.
    #[tracing::instrument(name = "command_teardown", skip_all, fields(env = %spec.env, slug = %spec.env.slug))]
    pub async fn teardown(&self, spec: &TeardownSpec) -> Result<(), ProviderError> {
        let log = ReleaseLog::open(&spec.log_path)?;
        let Some(cmd) = &self.cfg.teardown_cmd else {
            log.header("teardown: no teardown script configured, nothing to do");
            return Ok(());
        };
        let mut vars = spec.stagebot_vars();
        vars.insert(
            "STAGEBOT_LOG".to_owned(),
            spec.log_path.to_string_lossy().into_owned(),
        );
        log.header(&format!("teardown {} with {}", spec.env, cmd.display()));
        self.run("teardown script", cmd, &vars, Some(&log)).await?;
        log.header("torn down");
        Ok(())
    }

    /// Ask the status script; `Unknown` when there is none or it says nothing clear.
    pub async fn status(&self, env: &EnvId) -> Result<ProviderStatus, ProviderError> {
        let Some(cmd) = &self.cfg.status_cmd else {
            return Ok(ProviderStatus::Unknown);
        };
        let mut vars = BTreeMap::new();
        vars.insert("STAGEBOT_SLUG".to_owned(), env.slug.to_string());
        vars.insert("STAGEBOT_REPO".to_owned(), env.repo.to_string());
        let printed = match self.run("status script", cmd, &vars, None).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%env, error = %e, "status script failed");
                return Ok(ProviderStatus::Unknown);
            }
        };
        Ok(match (printed.state.as_deref(), printed.url) {
            (Some("running"), Some(url)) => ProviderStatus::Running { url },
            (Some("stopped"), _) => ProviderStatus::Stopped,
            _ => ProviderStatus::Unknown,
        })
    }

    /// Run `exe` with `vars`; stdout lines go to the log (if any) and are scanned for
    /// `url=` / `state=`; stderr goes to the log (or stagebot's stderr without one).
    async fn run(
        &self,
        what: &str,
        exe: &Path,
        vars: &BTreeMap<String, String>,
        log: Option<&ReleaseLog>,
    ) -> Result<Printed, ProviderError> {
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .envs(script_env(vars))
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(log) => Stdio::from(log.file()?),
                None => Stdio::inherit(),
            });
        let started = Instant::now();
        let (mut child, mut guard) = spawn_retrying(&mut cmd).await.map_err(|e| {
            ProviderError::Config(format!("cannot run the {what} {}: {e}", exe.display()))
        })?;
        let stdout = child.stdout.take();
        let reader_log = log.cloned();
        let reader = tokio::spawn(async move {
            let mut printed = Printed::default();
            let Some(stdout) = stdout else {
                return printed;
            };
            let mut file = reader_log.and_then(|log| log.file().ok());
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = &mut file {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(url) = line.trim().strip_prefix("url=") {
                    printed.url = Some(url.trim().to_owned());
                } else if let Some(state) = line.trim().strip_prefix("state=") {
                    printed.state = Some(state.trim().to_ascii_lowercase());
                }
            }
            printed
        });
        let waited = tokio::time::timeout(self.cfg.timeout, child.wait()).await;
        // The script is done (or out of time): whatever it left in its group goes too, which
        // also closes the stdout pipe for the reader.
        if let Some(pgid) = guard.pgid() {
            let _ = signal_group(pgid, libc::SIGKILL);
        }
        guard.disarm();
        let tail = || log.map(|l| l.tail(LOG_TAIL_LINES)).unwrap_or_default();
        let status: ExitStatus = match waited {
            Ok(status) => status?,
            Err(_) => {
                let _ = child.wait().await;
                if let Some(log) = log {
                    log.line(&format!(
                        "{what} timed out after {}; killed",
                        human(self.cfg.timeout)
                    ));
                }
                return Err(ProviderError::Timeout {
                    step: what.to_owned(),
                    after: self.cfg.timeout,
                    log_tail: tail(),
                });
            }
        };
        let printed = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if !status.success() {
            let message = format!("{what} exited with {}", describe_exit(status));
            if let Some(log) = log {
                log.line(&message);
            }
            return Err(ProviderError::Deploy {
                message,
                log_tail: tail(),
            });
        }
        if let Some(url) = &printed.url
            && (!(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(char::is_whitespace))
        {
            let message = format!("{what} printed url={url:?}, which is not an http(s) URL");
            return Err(ProviderError::Deploy {
                message,
                log_tail: tail(),
            });
        }
        tracing::debug!(
            what,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "script finished"
        );
        Ok(printed)
    }
}

/// Spawn, retrying briefly on ETXTBSY: an executable that was just written can be "busy" while
/// another thread's fork still holds the writer's descriptor.
async fn spawn_retrying(
    cmd: &mut Command,
) -> std::io::Result<(tokio::process::Child, process::GroupGuard)> {
    let mut attempt = 0;
    loop {
        match process::spawn_in_group(cmd) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// stagebot's environment minus its secrets and any stale `STAGEBOT_*`, then `vars`.
fn script_env(vars: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !SECRET_VARS.contains(&k.as_ref()) && !k.starts_with("STAGEBOT_")
        })
        .collect();
    env.extend(vars.iter().map(|(k, v)| (k.into(), v.into())));
    env
}
