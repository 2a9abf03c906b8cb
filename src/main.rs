//! The `stagebot` binary: argument parsing and the `anyhow` edge. Everything else is the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use stagebot::app::{App, Parts, Settings};
use stagebot::clock::SystemClock;
use stagebot::credentials::{AppCredentials, EnvCredentials, Resolved};
use stagebot::github::{GitHub, GitHubConfig, RetryPolicy};
use stagebot::provider::Provider;
use stagebot::provider::command::{CommandConfig, CommandProvider};
use stagebot::provider::local::{LocalConfig, LocalProvider};
use stagebot::provider::sandbox::{SandboxConfig, SandboxMode};
use stagebot::proxy::Routes;
use stagebot::store::Store;
use stagebot::types::{DeliveryId, EnvId, RepoName, Secret, Slug};

#[derive(Parser)]
#[command(
    name = "stagebot",
    version,
    about = "A live environment for every branch and pull request"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(
        long,
        env = "STAGEBOT_LOG_JSON",
        global = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the GitHub App: webhook, worker, proxy, dashboard.
    Serve(Box<ServeArgs>),
    /// Run the whole flow on this machine against a built-in fake GitHub (no account needed).
    Demo(DemoArgs),
    /// Inspect or tear down environments.
    Env {
        #[command(subcommand)]
        cmd: EnvCmd,
        #[arg(
            long,
            env = "STAGEBOT_DATA_DIR",
            default_value = "./stagebot-data",
            global = true
        )]
        data_dir: PathBuf,
    },
    /// Inspect or replay webhook deliveries.
    Deliveries {
        #[command(subcommand)]
        cmd: DeliveriesCmd,
        #[arg(
            long,
            env = "STAGEBOT_DATA_DIR",
            default_value = "./stagebot-data",
            global = true
        )]
        data_dir: PathBuf,
    },
    /// Write a consistent export of the store (works while the server runs).
    Backup {
        file: PathBuf,
        #[arg(long, env = "STAGEBOT_DATA_DIR", default_value = "./stagebot-data")]
        data_dir: PathBuf,
    },
    /// Load an export into an empty data dir (the server must be stopped).
    Restore {
        file: PathBuf,
        #[arg(long, env = "STAGEBOT_DATA_DIR", default_value = "./stagebot-data")]
        data_dir: PathBuf,
        /// Replace whatever the data dir holds.
        #[arg(long)]
        force: bool,
    },
    /// Refresh a repository's snapshot database from an environment's (via the running server).
    Snapshot {
        /// OWNER/REPO
        repo: String,
        /// The environment whose database becomes the snapshot.
        #[arg(long, default_value = "staging")]
        from: String,
        #[arg(long, env = "STAGEBOT_DATA_DIR", default_value = "./stagebot-data")]
        data_dir: PathBuf,
    },
    /// The tiny web app `stagebot demo` deploys (serves on $PORT).
    #[command(hide = true)]
    DemoApp,
    /// Promote a release of an environment to production, as the operator (the server must
    /// run; the repository's `require_checks` applies).
    Promote {
        /// OWNER/REPO
        repo: String,
        /// The environment to promote from.
        #[arg(long, default_value = "staging")]
        from: String,
        /// Its release number (default: its live release).
        #[arg(long)]
        release: Option<u32>,
        #[arg(long, env = "STAGEBOT_DATA_DIR", default_value = "./stagebot-data")]
        data_dir: PathBuf,
    },
    /// Rebuild an empty data dir from GitHub: environments, releases, sticky comments (takes the
    /// same settings as `serve`; the next `serve` restarts what should be live).
    Recover(Box<ServeArgs>),
    /// Validate a repository's `.github/stagebot.yml`.
    CheckConfig {
        #[arg(default_value = ".github/stagebot.yml")]
        file: PathBuf,
    },
    /// Maintain the store file (the server must be stopped).
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
        #[arg(
            long,
            env = "STAGEBOT_DATA_DIR",
            default_value = "./stagebot-data",
            global = true
        )]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Rotate the store file: copy every tree into a fresh one and swap it in, giving back the
    /// space sled keeps after pruning (docs/operations.md, "Disk").
    Compact,
}

#[derive(Subcommand)]
enum EnvCmd {
    /// List environments.
    List,
    /// Show one environment and its releases.
    Show { repo: String, slug: String },
    /// Tear an environment down.
    Teardown { repo: String, slug: String },
    /// Deploy a branch's environment (`br-<branch>`) at the branch's head (the server must run).
    Deploy {
        repo: String,
        /// The branch.
        #[arg(long)]
        branch: String,
    },
}

#[derive(Subcommand)]
enum DeliveriesCmd {
    /// List deliveries, newest first.
    List {
        /// Only deliveries that failed (retrying or dead).
        #[arg(long)]
        failed: bool,
    },
    /// Put a delivery back in the inbox.
    Replay { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum SandboxKind {
    /// Every repository command runs in bubblewrap.
    Bwrap,
    /// No sandbox: apps run as stagebot's user (a warning at start, in /readyz and on the
    /// dashboard).
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderKind {
    Local,
    Command,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Webhook secret(s), comma-separated (several allow rotation without downtime).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    #[arg(long, env = "STAGEBOT_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    #[arg(long, env = "STAGEBOT_DATA_DIR", default_value = "./stagebot-data")]
    data_dir: PathBuf,
    /// The GitHub App's id.
    #[arg(long, env = "APP_ID")]
    app_id: Option<u64>,
    /// The GitHub App's private key (PEM).
    #[arg(long, env = "PRIVATE_KEY", hide_env_values = true)]
    private_key: Option<String>,
    /// A file holding the GitHub App's private key (PEM).
    #[arg(long, env = "PRIVATE_KEY_PATH")]
    private_key_path: Option<PathBuf>,
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api_url: String,
    /// Domain previews live under (default: `localhost:<listen port>`).
    #[arg(long, env = "STAGEBOT_PREVIEW_DOMAIN")]
    preview_domain: Option<String>,
    /// `http` or `https` for preview URLs.
    #[arg(long, env = "STAGEBOT_PREVIEW_SCHEME", default_value = "http")]
    preview_scheme: String,
    /// stagebot's own public URL, for log links (default: `http://<listen>`).
    #[arg(long, env = "STAGEBOT_PUBLIC_URL")]
    public_url: Option<String>,
    #[arg(long, env = "STAGEBOT_PROVIDER", value_enum, default_value = "local")]
    provider: ProviderKind,
    /// Command provider: the deploy executable.
    #[arg(long, env = "STAGEBOT_DEPLOY_CMD")]
    deploy_cmd: Option<PathBuf>,
    /// Command provider: the teardown executable.
    #[arg(long, env = "STAGEBOT_TEARDOWN_CMD")]
    teardown_cmd: Option<PathBuf>,
    /// Command provider: an optional status executable.
    #[arg(long, env = "STAGEBOT_STATUS_CMD")]
    status_cmd: Option<PathBuf>,
    /// Command provider: timeout for one script run (e.g. `15m`).
    #[arg(long, env = "STAGEBOT_COMMAND_TIMEOUT", default_value = "15m")]
    command_timeout: String,
    /// Live previews per installation; more wait in a queue.
    #[arg(long, env = "STAGEBOT_MAX_PREVIEWS")]
    max_previews: Option<usize>,
    /// How far `/extend` may push an expiry from now (e.g. `14d`).
    #[arg(long, env = "STAGEBOT_MAX_EXTEND", default_value = "14d")]
    max_extend: String,
    /// How often the reconciler and sweeper run (e.g. `1m`).
    #[arg(long, env = "STAGEBOT_RECONCILE_INTERVAL", default_value = "1m")]
    reconcile_interval: String,
    /// Body bytes all requests together may hold before their signature is checked (at least
    /// 25MiB); a request beyond it is answered 503 with Retry-After.
    #[arg(long, env = "STAGEBOT_MAX_UNVERIFIED_BYTES", default_value = "64MiB")]
    max_unverified_bytes: String,
    /// Open client connections at most (proxied streams included); more are answered 503.
    #[arg(long, env = "STAGEBOT_MAX_CONNECTIONS", default_value = "1024")]
    max_connections: String,
    /// Size at which a release's log rotates; one previous segment is kept.
    #[arg(long, env = "STAGEBOT_LOG_MAX", default_value = "10MiB")]
    log_max: String,
    /// Show private repositories' environments, logs and releases to anonymous visitors.
    #[arg(
        long,
        env = "STAGEBOT_DASHBOARD_PUBLIC",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    dashboard_public: bool,
    /// How long finished deliveries and dead letters are kept (at least 3d).
    #[arg(long, env = "STAGEBOT_DELIVERY_RETENTION", default_value = "7d")]
    delivery_retention: String,
    /// Dead letters kept at most; the oldest go first.
    #[arg(long, env = "STAGEBOT_DEAD_LETTERS_MAX", default_value = "10000")]
    dead_letters_max: String,
    /// Local provider: run repository commands in bubblewrap (`bwrap`) or not at all (`off`).
    #[arg(long, env = "STAGEBOT_SANDBOX", value_enum, default_value = "bwrap")]
    sandbox: SandboxKind,
    /// Local provider: memory limit per release (e.g. `1GiB`, `512MiB`), where cgroup v2 is
    /// delegated.
    #[arg(long, env = "STAGEBOT_ENV_MEMORY", default_value = "1GiB")]
    env_memory: String,
    /// Local provider: process limit per release, where cgroup v2 is delegated.
    #[arg(long, env = "STAGEBOT_ENV_PIDS", default_value_t = 512)]
    env_pids: u64,
    /// PostgreSQL admin connection (a superuser): a database per environment.
    #[arg(long, env = "STAGEBOT_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Secret the environments' database passwords are derived from (default: the private key).
    #[arg(long, env = "STAGEBOT_POSTGRES_SECRET", hide_env_values = true)]
    postgres_secret: Option<String>,
    /// Snapshot databases allowed besides `<repo>_…`, comma-separated.
    #[arg(long, env = "STAGEBOT_POSTGRES_TEMPLATES", default_value = "")]
    postgres_templates: String,
    /// Refresh every repository's snapshot from staging this often (e.g. `24h`).
    #[arg(long, env = "STAGEBOT_SNAPSHOT_EVERY")]
    snapshot_every: Option<String>,
    /// Sentry DSN every environment receives.
    #[arg(long, env = "SENTRY_DSN")]
    sentry_dsn: Option<String>,
    /// Sentry API token (releases, deploys, issue counts).
    #[arg(long, env = "SENTRY_AUTH_TOKEN", hide_env_values = true)]
    sentry_auth_token: Option<String>,
    /// Sentry organization slug.
    #[arg(long, env = "SENTRY_ORG")]
    sentry_org: Option<String>,
    /// Sentry project slug.
    #[arg(long, env = "SENTRY_PROJECT")]
    sentry_project: Option<String>,
    /// Sentry's URL.
    #[arg(long, env = "SENTRY_URL", default_value = "https://sentry.io")]
    sentry_url: String,
    /// Write a verified backup of the store into this directory on a schedule.
    #[arg(long, env = "STAGEBOT_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    /// How often to back up (with STAGEBOT_BACKUP_DIR).
    #[arg(long, env = "STAGEBOT_BACKUP_EVERY", default_value = "24h")]
    backup_every: String,
    /// How many scheduled backups to keep.
    #[arg(long, env = "STAGEBOT_BACKUP_KEEP", default_value = "7")]
    backup_keep: usize,
    /// Local provider: built artifacts kept per environment (0: build on every deploy).
    #[arg(long, env = "STAGEBOT_ARTIFACT_KEEP", default_value_t = 3)]
    artifact_keep: usize,
    /// `auto`: on an empty store, rebuild environments and releases from GitHub at start
    /// (`stagebot recover`); `off`: start empty.
    #[arg(long, env = "STAGEBOT_RECOVER", value_enum, default_value = "off")]
    recover: RecoverArg,
    /// sled's page cache (at least 1MiB); the store's memory beyond it is what is in flight.
    #[arg(long, env = "STAGEBOT_STORE_CACHE", default_value = "16MiB")]
    store_cache: String,
    /// Proxy: a request or response body, a server-sent event stream or a WebSocket that moves
    /// no byte (either way) for this long is cut off (e.g. `2m`, `1h`).
    #[arg(long, env = "STAGEBOT_PROXY_IDLE_TIMEOUT", default_value = "2m")]
    proxy_idle_timeout: String,
    /// GitHub's web address, for the manifest flow (/setup) and the dashboard's sign-in
    /// (GitHub Enterprise Server: `https://HOST`).
    #[arg(long, env = "GITHUB_WEB_URL", default_value = "https://github.com")]
    github_web_url: String,
    /// Opens /setup (`Authorization: Bearer …` or `?token=…`); without it, /setup answers only
    /// while no App is configured.
    #[arg(long, env = "STAGEBOT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The App's OAuth client id: the dashboard's "Sign in with GitHub" (with the secret).
    #[arg(long, env = "GITHUB_CLIENT_ID")]
    github_client_id: Option<String>,
    /// The App's OAuth client secret.
    #[arg(long, env = "GITHUB_CLIENT_SECRET", hide_env_values = true)]
    github_client_secret: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RecoverArg {
    Off,
    Auto,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the demo keeps its data (a fresh temp dir by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep serving after the scripted flow so you can browse the previews.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

/// A settings problem: one sentence, exit code 2, before anything binds.
struct Usage(String);

fn duration(name: &str, s: &str) -> Result<Duration, Usage> {
    stagebot::command::parse_duration(s).ok_or_else(|| {
        Usage(format!(
            "{name} must be a duration like 90m, 12h, 3d or 1w (got {s:?})"
        ))
    })
}

fn bytes(name: &str, s: &str, min: u64) -> Result<u64, Usage> {
    let n = stagebot::serve::parse_bytes(s).ok_or_else(|| {
        Usage(format!(
            "{name} must be a size like 64MiB, 512KiB or 1048576 (got {s:?})"
        ))
    })?;
    if n < min {
        return Err(Usage(format!(
            "{name} must be at least {} KiB (got {s:?})",
            min / 1024
        )));
    }
    Ok(n)
}

fn count(name: &str, s: &str) -> Result<usize, Usage> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Usage(format!("{name} must be a whole number above 0 (got {s:?})")))
}

/// The front door, log, dashboard and retention settings (validated before anything binds).
fn front_door(a: &ServeArgs, settings: &mut Settings) -> Result<(), Usage> {
    let unverified = bytes(
        "STAGEBOT_MAX_UNVERIFIED_BYTES",
        &a.max_unverified_bytes,
        stagebot::webhook::MAX_BODY as u64,
    )?;
    settings.max_unverified_bytes = usize::try_from(unverified).unwrap_or(usize::MAX);
    settings.max_connections = count("STAGEBOT_MAX_CONNECTIONS", &a.max_connections)?;
    settings.log_max = bytes("STAGEBOT_LOG_MAX", &a.log_max, 64 * 1024)?;
    settings.dashboard_public = a.dashboard_public;
    let retention = duration("STAGEBOT_DELIVERY_RETENTION", &a.delivery_retention)?;
    if retention < Duration::from_secs(3 * 24 * 3600) {
        return Err(Usage(format!(
            "STAGEBOT_DELIVERY_RETENTION must be at least 3d: GitHub redelivers deliveries up to \
             3 days old, and stagebot must still know them to answer a redelivery as a duplicate \
             (got {:?})",
            a.delivery_retention
        )));
    }
    settings.delivery_retention = retention;
    settings.dead_letters_max = count("STAGEBOT_DEAD_LETTERS_MAX", &a.dead_letters_max)?;
    settings.proxy_idle_timeout = duration("STAGEBOT_PROXY_IDLE_TIMEOUT", &a.proxy_idle_timeout)?;
    settings.own_hosts = stagebot::server::own_hosts(a.public_url.as_deref(), Some(a.listen));
    if settings.own_hosts.is_empty() {
        return Err(Usage(format!(
            "STAGEBOT_PUBLIC_URL must be an absolute URL like https://stagebot.example.com (got {:?})",
            a.public_url.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The App's credentials: the environment's, else those `/setup` wrote to the data dir
/// (src/credentials.rs); `None`: none at all (setup mode).
fn credentials(a: &ServeArgs) -> Result<Option<Resolved>, Usage> {
    let private_key = match (&a.private_key, &a.private_key_path) {
        (Some(k), _) => Some(Secret::new(k.clone())),
        (None, Some(p)) => Some(Secret::new(std::fs::read_to_string(p).map_err(|e| {
            Usage(format!(
                "PRIVATE_KEY_PATH {} cannot be read: {e}",
                p.display()
            ))
        })?)),
        (None, None) => None,
    };
    let env = EnvCredentials {
        app_id: a.app_id,
        private_key,
        webhook_secret: a.webhook_secret.clone(),
    };
    let file = AppCredentials::load(&a.data_dir).map_err(|e| Usage(e.to_string()))?;
    stagebot::credentials::resolve(&env, file).map_err(|e| Usage(e.to_string()))
}

fn build_app(a: &ServeArgs) -> Result<(App, Duration), Usage> {
    let creds = credentials(a)?.ok_or_else(|| {
        Usage(
            "no GitHub App is configured: set APP_ID, PRIVATE_KEY (or PRIVATE_KEY_PATH) and \
             WEBHOOK_SECRET, or start `stagebot serve` and register one at /setup"
                .into(),
        )
    })?;
    let (prepared, reconcile) = prepare(a)?;
    Ok((finish(a, prepared, creds)?, reconcile))
}

/// Everything but the App's credentials, validated and opened (the store, the provider).
struct Prepared {
    settings: Settings,
    store: Store,
    provider: Provider,
    routes: Routes,
}

fn prepare(a: &ServeArgs) -> Result<(Prepared, Duration), Usage> {
    // systemd's `LoadCredential=` directory, when the unit uses one: never shown to apps.
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let port = a.listen.port();
    let preview_domain = a
        .preview_domain
        .clone()
        .unwrap_or_else(|| format!("localhost:{port}"));
    let public_url = a
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", a.listen));
    let mut settings = Settings::new(a.data_dir.clone(), public_url, preview_domain);
    settings.preview_scheme = a.preview_scheme.clone();
    settings.limits.max_previews = a.max_previews;
    settings.limits.max_extend = duration("STAGEBOT_MAX_EXTEND", &a.max_extend)?;
    let reconcile = duration("STAGEBOT_RECONCILE_INTERVAL", &a.reconcile_interval)?;
    settings.reconcile_interval = reconcile;
    front_door(a, &mut settings)?;
    if let Some(url) = &a.postgres_url {
        // Checked now; built in `finish`, once the key (the default secret) is known.
        let secret = Secret::new(a.postgres_secret.clone().unwrap_or_default());
        stagebot::database::Postgres::new(url, secret, &a.postgres_templates)
            .map_err(|e| Usage(e.to_string()))?;
    }
    settings.github_web_url = a.github_web_url.trim_end_matches('/').to_owned();
    if !settings.github_web_url.starts_with("https://")
        && !settings.github_web_url.starts_with("http://")
    {
        return Err(Usage(format!(
            "GITHUB_WEB_URL must be an absolute URL like https://github.com (got {:?})",
            a.github_web_url
        )));
    }
    settings.admin_token = match a.admin_token.as_deref().map(str::trim) {
        Some(t) if t.len() < 16 => {
            return Err(Usage(
                "STAGEBOT_ADMIN_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        Some(t) => Some(Secret::new(t)),
        None => None,
    };
    settings.snapshot_every = match &a.snapshot_every {
        Some(s) => Some(duration("STAGEBOT_SNAPSHOT_EVERY", s)?),
        None => None,
    };
    settings.sentry = stagebot::sentry::SentrySettings::from_parts(
        a.sentry_dsn.clone(),
        a.sentry_auth_token.clone(),
        a.sentry_org.clone(),
        a.sentry_project.clone(),
        &a.sentry_url,
    )
    .map_err(Usage)?;
    if let Some(dir) = &a.backup_dir {
        if a.backup_keep == 0 {
            return Err(Usage("STAGEBOT_BACKUP_KEEP must be at least 1".into()));
        }
        let mut backup = stagebot::backup::BackupSettings::new(dir.clone());
        backup.every = duration("STAGEBOT_BACKUP_EVERY", &a.backup_every)?;
        backup.keep = a.backup_keep;
        settings.backup = Some(backup);
    }
    settings.github_oauth = match (&a.github_client_id, &a.github_client_secret) {
        (Some(id), Some(secret)) if !id.trim().is_empty() && !secret.trim().is_empty() => {
            Some(stagebot::web::OAuthApp {
                client_id: id.trim().to_owned(),
                client_secret: Secret::new(secret.trim().to_owned()),
            })
        }
        (None, None) => None,
        _ => {
            return Err(Usage(
                "GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together: set both (sign-in on the dashboard) or neither".into(),
            ));
        }
    };
    // Every setting is checked before the provider looks for bwrap and anything is created.
    let cache = bytes("STAGEBOT_STORE_CACHE", &a.store_cache, 1024 * 1024)?;
    let routes = Routes::default();
    let provider = match a.provider {
        ProviderKind::Local => {
            let mut cfg = LocalConfig::new(a.data_dir.clone(), routes.clone());
            cfg.sandbox = SandboxConfig {
                mode: match a.sandbox {
                    SandboxKind::Bwrap => SandboxMode::default(),
                    SandboxKind::Off => SandboxMode::Off,
                },
                // The key's directory, the conventional settings directory (the env file the
                // systemd unit reads) and systemd's credentials directory are never shown.
                hidden: a
                    .private_key_path
                    .iter()
                    .filter_map(|p| std::path::absolute(p).ok()?.parent().map(Path::to_path_buf))
                    .chain([PathBuf::from("/etc/stagebot")])
                    .chain(credentials_dir.iter().cloned())
                    .collect(),
                memory_max: stagebot::provider::sandbox::parse_bytes(&a.env_memory).ok_or_else(
                    || {
                        Usage(format!(
                            "STAGEBOT_ENV_MEMORY must be a size like 1GiB or 512MiB (got {:?})",
                            a.env_memory
                        ))
                    },
                )?,
                pids_max: a.env_pids,
                ..SandboxConfig::default()
            };
            // The data dir must exist (0700) before the sandbox is told to hide it.
            stagebot::store::create_private_dir(&a.data_dir).map_err(|e| {
                Usage(format!(
                    "the data dir {} cannot be created: {e}",
                    a.data_dir.display()
                ))
            })?;
            cfg.artifact_keep = a.artifact_keep;
            let local = LocalProvider::new(cfg).map_err(|e| Usage(e.to_string()))?;
            // A restart (graceful or not) leaves live apps running; the next start adopts them.
            local.keep_apps_on_exit();
            Provider::Local(local)
        }
        ProviderKind::Command => {
            let deploy_cmd = a.deploy_cmd.clone().ok_or_else(|| {
                Usage("STAGEBOT_DEPLOY_CMD is required with STAGEBOT_PROVIDER=command".into())
            })?;
            Provider::Command(CommandProvider::new(CommandConfig {
                deploy_cmd,
                teardown_cmd: a.teardown_cmd.clone(),
                status_cmd: a.status_cmd.clone(),
                timeout: duration("STAGEBOT_COMMAND_TIMEOUT", &a.command_timeout)?,
            }))
        }
    };
    // A previous stagebot may still be exiting (a restart): give it a moment to let go.
    let store =
        Store::open_with_cache(&a.data_dir, Duration::from_secs(10), cache).map_err(|e| {
            Usage(format!(
                "the data dir {} cannot be opened: {e}",
                a.data_dir.display()
            ))
        })?;
    Ok((
        Prepared {
            settings,
            store,
            provider,
            routes,
        },
        reconcile,
    ))
}

/// The App, with its credentials.
fn finish(a: &ServeArgs, p: Prepared, creds: Resolved) -> Result<App, Usage> {
    let Prepared {
        mut settings,
        store,
        provider,
        routes,
    } = p;
    let github = GitHub::new(GitHubConfig {
        api_url: a.github_api_url.clone(),
        app_id: creds.app_id,
        private_key_pem: creds.private_key_pem.clone(),
        retry: RetryPolicy::default(),
    })
    .map_err(|e| Usage(format!("the GitHub App settings are invalid: {e}")))?;
    if let Some(url) = &a.postgres_url {
        let secret = match &a.postgres_secret {
            Some(s) => Secret::new(s.clone()),
            None => creds.private_key_pem.clone(),
        };
        settings.postgres = Some(
            stagebot::database::Postgres::new(url, secret, &a.postgres_templates)
                .map_err(|e| Usage(e.to_string()))?,
        );
    }
    settings.credentials_from_env = creds.from_env;
    let app = App::new(Parts {
        settings,
        store,
        github,
        provider,
        routes,
        clock: std::sync::Arc::new(SystemClock),
        secrets: creds.webhook_secrets,
    });
    app.setup().set_flow_credentials(creds.file);
    Ok(app)
}

fn init_tracing(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Variables holding secrets: read once by the argument parser, then removed from stagebot's
/// environment so nothing it starts can inherit them.
const SECRET_VARS: &[&str] = &[
    "WEBHOOK_SECRET",
    "PRIVATE_KEY",
    "STAGEBOT_ADMIN_TOKEN",
    "GITHUB_CLIENT_SECRET",
];

/// Blank the values of `names` in the process's original environment block (what
/// `/proc/<pid>/environ` shows, which `unsetenv` leaves untouched), then remove them.
///
/// # Safety
/// No other thread may exist that reads or writes the environment.
unsafe fn scrub_env(names: &[&str]) {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY (whole block): single-threaded per the contract; `environ` is the C runtime's
    // NUL-terminated array of NUL-terminated strings, and only bytes inside a string (before its
    // NUL) are overwritten, so every string stays valid.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = *entry;
            let bytes = std::ffi::CStr::from_ptr(text).to_bytes();
            for name in names {
                let n = name.len();
                if bytes.len() > n && bytes.starts_with(name.as_bytes()) && bytes[n] == b'=' {
                    std::ptr::write_bytes(text.add(n + 1), b'x', bytes.len() - n - 1);
                }
            }
            entry = entry.add(1);
        }
        for name in names {
            std::env::remove_var(name);
        }
    }
}

fn main() -> ExitCode {
    // Not dumpable: processes of the same user (an app run unsandboxed, a compromised helper)
    // cannot ptrace stagebot or read its /proc/<pid>/{environ,mem}.
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let cli = Cli::parse();
    // SAFETY: still single-threaded: no tokio runtime, no tracing subscriber, no thread of ours
    // or of a library has been started yet (clap parsed on this thread), so nothing reads or
    // writes the environment concurrently.
    unsafe { scrub_env(SECRET_VARS) };
    // The demo narrates on stdout; its logs stay quiet unless RUST_LOG asks for them.
    let default_level = if matches!(cli.command, Cmd::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_json, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// `stagebot serve` with an App: recover if asked, then serve until a signal.
async fn serve_full(
    args: &ServeArgs,
    prepared: Prepared,
    creds: Resolved,
    reconcile: Duration,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<ExitCode> {
    let app = match finish(args, prepared, creds) {
        Ok(app) => app,
        Err(Usage(msg)) => {
            eprintln!("error: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    if matches!(args.recover, RecoverArg::Auto) && app.store().is_empty() {
        // Before the start-up reconcile, which then restarts what should be live.
        let summary = app
            .recover()
            .await
            .context("STAGEBOT_RECOVER=auto: recovering from GitHub failed")?;
        if summary.skipped.is_empty() {
            tracing::info!(?summary, "empty store recovered from GitHub");
        } else {
            tracing::error!(skipped = ?summary.skipped, "store recovered from GitHub in part: stop stagebot and run `stagebot recover` into an empty data dir");
        }
    }
    stagebot::serve::run(
        app,
        listener,
        stagebot::serve::Intervals {
            reconcile,
            ..Default::default()
        },
        shutdown_signal(),
    )
    .await
    .context("server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Open the store directly; `None` when the running server holds it (then the CLI goes through
/// the server's admin socket).
fn open_store(data_dir: &Path) -> anyhow::Result<Option<Store>> {
    match Store::open(data_dir) {
        Ok(store) => Ok(Some(store)),
        Err(stagebot::store::StoreError::Sled(e)) if Store::is_locked(&e) => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot open the store in {}", data_dir.display()))
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Serve(args) => {
            let usage = |Usage(msg)| {
                eprintln!("error: {msg}");
                Ok(ExitCode::from(2))
            };
            let creds = match credentials(&args) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let (prepared, reconcile) = match prepare(&args) {
                Ok(x) => x,
                Err(e) => return usage(e),
            };
            let listener = match tokio::net::TcpListener::bind(args.listen).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on {}: {e}", args.listen);
                    return Ok(ExitCode::from(2));
                }
            };
            let creds = match creds {
                Some(c) => c,
                None => {
                    // Setup mode on a duplicate of the listening socket: connections made while
                    // it hands over to the full service wait in the kernel's backlog.
                    let std_listener = listener.into_std().context("listening socket")?;
                    let setup_listener = tokio::net::TcpListener::from_std(
                        std_listener.try_clone().context("listening socket")?,
                    )
                    .context("listening socket")?;
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .context("listening socket")?;
                    let settings = &prepared.settings;
                    let mode = stagebot::setup::SetupMode::new(
                        stagebot::setup::SetupCore::from_settings(settings, &args.github_api_url),
                        settings.own_hosts.clone(),
                    );
                    let registered = stagebot::setup::run_setup_mode(
                        setup_listener,
                        mode,
                        settings.max_connections,
                        shutdown_signal(),
                    )
                    .await
                    .context("setup mode failed")?;
                    let Some(file) = registered else {
                        return Ok(ExitCode::SUCCESS);
                    };
                    let resolved = match stagebot::credentials::resolve(
                        &EnvCredentials::default(),
                        Some(file),
                    ) {
                        Ok(Some(r)) => r,
                        Ok(None) => bail!("the registered App's credentials are incomplete"),
                        Err(e) => return Err(e).context("the registered App's credentials"),
                    };
                    return serve_full(&args, prepared, resolved, reconcile, listener).await;
                }
            };
            serve_full(&args, prepared, creds, reconcile, listener).await
        }
        Cmd::Recover(args) => {
            let (app, _) = match build_app(&args) {
                Ok(x) => x,
                Err(Usage(msg)) => {
                    eprintln!("error: {msg}");
                    return Ok(ExitCode::from(2));
                }
            };
            let s = app.recover().await.context("recovery failed")?;
            println!(
                "recovered {} environments ({} live, {} releases) and {} sticky comments in {} repositories of {} installations",
                s.environments, s.live, s.releases, s.stickies, s.repositories, s.installations
            );
            for skipped in &s.skipped {
                println!("skipped {skipped}");
            }
            println!("start `stagebot serve`: it restarts the live environments");
            Ok(if s.skipped.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Demo(args) => {
            stagebot::demo::run(stagebot::demo::DemoOptions {
                data_dir: args.data_dir,
                keep: args.keep,
                listen: args.listen,
            })
            .await
            .context("demo failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DemoApp => {
            stagebot::demo::demo_app()
                .await
                .context("demo app failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Store {
            cmd: StoreCmd::Compact,
            data_dir,
        } => {
            let c = match Store::compact(&data_dir) {
                Err(stagebot::store::StoreError::Sled(e)) if Store::is_locked(&e) => bail!(
                    "the store in {} is in use: stop `stagebot serve` first",
                    data_dir.display()
                ),
                other => other.context("store compaction failed")?,
            };
            println!(
                "rotated the store file: {} entries, {} -> {} bytes in {} ms",
                c.entries,
                c.before,
                c.after,
                c.took.as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Env { cmd, data_dir } => env_cmd(cmd, &data_dir).await,
        Cmd::Deliveries { cmd, data_dir } => deliveries_cmd(cmd, &data_dir).await,
        Cmd::Backup { file, data_dir } => {
            let file = std::path::absolute(&file).context("backup path")?;
            match open_store(&data_dir)? {
                Some(store) => {
                    let s = store.backup(&file).context("backup failed")?;
                    println!(
                        "wrote {} ({} entries, {} bytes)",
                        file.display(),
                        s.entries,
                        s.bytes
                    );
                }
                None => {
                    let v = admin(
                        &data_dir,
                        "POST",
                        "/admin/backup",
                        Some(serde_json::json!({ "path": file })),
                    )
                    .await?;
                    println!(
                        "wrote {} ({} entries, {} bytes) via the running server",
                        file.display(),
                        v["entries"],
                        v["bytes"]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshot {
            repo,
            from,
            data_dir,
        } => {
            let repo: RepoName = repo.parse()?;
            let from = Slug::new(&from)?;
            let v = admin(
                &data_dir,
                "POST",
                "/admin/snapshot",
                Some(serde_json::json!({ "repo": repo.to_string(), "from": from.as_str() })),
            )
            .await?;
            println!(
                "snapshot {} refreshed from {}",
                v["snapshot"].as_str().unwrap_or("?"),
                v["from"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restore {
            file,
            data_dir,
            force,
        } => {
            let store = Store::open(&data_dir).with_context(|| {
                format!(
                    "cannot open {} (stop the server before restoring)",
                    data_dir.display()
                )
            })?;
            let s = store.restore(&file, force).context("restore failed")?;
            println!("restored {} entries from {}", s.entries, file.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Promote {
            repo,
            from,
            release,
            data_dir,
        } => {
            let repo = repo.parse::<RepoName>()?;
            let from = Slug::new(&from)?;
            if open_store(&data_dir)?.is_some() {
                bail!("the server is not running: start `stagebot serve` to promote");
            }
            let v = admin(
                &data_dir,
                "POST",
                &format!("/admin/repos/{repo}/promote"),
                Some(serde_json::json!({ "from": from.as_str(), "release": release })),
            )
            .await?;
            println!(
                "promotion of {} from {from} to production requested: {}",
                v["sha"].as_str().unwrap_or("?"),
                v["url"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match stagebot::repo_config::parse(&text) {
                Ok(cfg) => {
                    println!("{}: ok", file.display());
                    for warning in cfg.warnings() {
                        eprintln!("{}: warning: {warning}", file.display());
                    }
                    println!("{cfg:#?}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

async fn admin(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let sock = stagebot::serve::admin_socket(data_dir);
    match stagebot::admin::call(&sock, method, path, body).await {
        Ok(v) => Ok(v),
        Err(e @ stagebot::admin::AdminError::Connect { .. }) => Err(e).with_context(|| {
            format!(
                "the store in {} is in use, but the server's admin socket did not answer",
                data_dir.display()
            )
        }),
        Err(e) => Err(e.into()),
    }
}

fn parse_env(repo: &str, slug: &str) -> anyhow::Result<EnvId> {
    Ok(EnvId {
        repo: repo.parse::<RepoName>()?,
        slug: Slug::new(slug)?,
    })
}

async fn env_cmd(cmd: EnvCmd, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(data_dir)?;
    match cmd {
        EnvCmd::List => {
            let envs: serde_json::Value = match &store {
                Some(s) => serde_json::to_value(s.all_envs()?)?,
                None => admin(data_dir, "GET", "/admin/environments", None).await?,
            };
            println!(
                "{:<28} {:<40} {:<11} {:<13} URL",
                "REPOSITORY", "ENVIRONMENT", "KIND", "STATE"
            );
            for e in envs.as_array().into_iter().flatten() {
                let repo = e.pointer("/id/repo").or_else(|| e.get("repo"));
                let slug = e.pointer("/id/slug").or_else(|| e.get("slug"));
                println!(
                    "{:<28} {:<40} {:<11} {:<13} {}",
                    repo.and_then(|v| v.as_str()).unwrap_or("?"),
                    slug.and_then(|v| v.as_str()).unwrap_or("?"),
                    e["kind"].as_str().unwrap_or("?"),
                    e["state"].as_str().unwrap_or("?"),
                    e["url"].as_str().unwrap_or(""),
                );
            }
        }
        EnvCmd::Show { repo, slug } => {
            let id = parse_env(&repo, &slug)?;
            let v = match &store {
                Some(s) => {
                    let Some(env) = s.env(&id)? else {
                        bail!("no environment {id}")
                    };
                    serde_json::json!({ "environment": env, "releases": s.releases(&id)? })
                }
                None => {
                    admin(
                        data_dir,
                        "GET",
                        &format!("/admin/environments/{}/{}", id.repo, id.slug),
                        None,
                    )
                    .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        EnvCmd::Deploy { repo, branch } => {
            let repo = repo.parse::<RepoName>()?;
            if store.is_some() {
                bail!("the server is not running: start `stagebot serve` to deploy");
            }
            let v = admin(
                data_dir,
                "POST",
                &format!("/admin/repos/{repo}/branch-deploy"),
                Some(serde_json::json!({ "branch": branch })),
            )
            .await?;
            println!(
                "deploy of {} at {} requested: {}",
                v["env"]["slug"].as_str().unwrap_or("?"),
                v["sha"].as_str().unwrap_or("?"),
                v["url"].as_str().unwrap_or("")
            );
        }
        EnvCmd::Teardown { repo, slug } => {
            let id = parse_env(&repo, &slug)?;
            if store.is_some() {
                bail!(
                    "the server is not running: start `stagebot serve` so the provider can stop the environment's processes"
                );
            }
            admin(
                data_dir,
                "POST",
                &format!("/admin/environments/{}/{}/teardown", id.repo, id.slug),
                None,
            )
            .await?;
            println!("teardown of {id} requested");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn deliveries_cmd(cmd: DeliveriesCmd, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(data_dir)?;
    match cmd {
        DeliveriesCmd::List { failed } => {
            let list: serde_json::Value = match &store {
                Some(s) => serde_json::to_value(
                    s.deliveries()?
                        .into_iter()
                        .filter(|d| !failed || d.is_failing())
                        .collect::<Vec<_>>(),
                )?,
                None => {
                    admin(
                        data_dir,
                        "GET",
                        &format!("/admin/deliveries?failed={failed}"),
                        None,
                    )
                    .await?
                }
            };
            println!(
                "{:<38} {:<22} {:<10} {:>8} {:<9}  ERROR / REASON",
                "DELIVERY", "EVENT", "STATE", "ATTEMPTS", "RECOVERED"
            );
            let recovered_total = match &store {
                Some(s) => serde_json::json!({ "recovered_total": s.recovered_total()? }),
                None => admin(data_dir, "GET", "/admin/deliveries/summary", None).await?,
            };
            for d in list.as_array().into_iter().flatten() {
                let status = &d["status"];
                let detail = d["last_error"]
                    .as_str()
                    .or_else(|| status["reason"].as_str())
                    .unwrap_or("");
                // Redelivered by GitHub at the catch-up's request (src/catchup.rs).
                let recovered = if d["recovered"].as_bool() == Some(true) {
                    "yes"
                } else {
                    ""
                };
                println!(
                    "{:<38} {:<22} {:<10} {:>8} {:<9}  {}",
                    d["id"].as_str().unwrap_or("?"),
                    d["event"].as_str().unwrap_or("?"),
                    status["state"].as_str().unwrap_or("?"),
                    d["attempts"],
                    recovered,
                    detail
                );
            }
            // The count outlives the deliveries (they are forgotten after the retention).
            println!(
                "recovered from GitHub's delivery log since the store was created: {}",
                recovered_total["recovered_total"].as_u64().unwrap_or(0)
            );
        }
        DeliveriesCmd::Replay { id } => {
            let id = DeliveryId::new(&id)?;
            match &store {
                Some(s) => {
                    s.replay_delivery(&id)?;
                    println!("{id} is back in the inbox; it is processed when the server runs");
                }
                None => {
                    admin(
                        data_dir,
                        "POST",
                        &format!("/admin/deliveries/{id}/replay"),
                        None,
                    )
                    .await?;
                    println!("{id} replayed by the running server");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
