//! The soak benchmark's server: the whole `serve::start` (front door, worker, periodic loop with
//! the pruning) on a data dir, with a retention of minutes instead of days so a soak reaches the
//! steady state within its time. The load and the sampling come from `scripts/soak.sh`, which
//! runs this binary; run alone it serves until killed.
//!
//! `STAGEBOT_DELIVERY_RETENTION` must be at least 3 days for the real binary (GitHub redelivers
//! up to 3 days late); only this benchmark sets a shorter one, through the library.
//!
//! Env: `SOAK_LISTEN` (default 127.0.0.1:39201), `SOAK_DATA` (required: the data dir),
//! `SOAK_SEED_ENVS` (instead of serving: write this many environments, nine in ten of them
//! destroyed, into the store in `SOAK_DATA` and exit; for the start-up measurement of
//! `scripts/bench-ingest.sh`), `SOAK_COMPACT` (instead of serving: rotate the store file in
//! `SOAK_DATA` as `stagebot store compact` does, print the sizes and the time, and exit),
//! `SOAK_RETENTION_SECS` (default 120), `SOAK_PRUNE_SECS` (how often the periodic loop runs,
//! default 15), `SOAK_SECRET` (default `bench-secret`), `STAGEBOT_STORE_CACHE_BYTES` (default
//! the store's default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stagebot::app::{App, Parts, Settings};
use stagebot::environment::EnvRecord;
use stagebot::fake_github::FakeGitHub;
use stagebot::github::GitHub;
use stagebot::provider::Provider;
use stagebot::provider::local::{LocalConfig, LocalProvider};
use stagebot::proxy::Routes;
use stagebot::store::{DEFAULT_STORE_CACHE, Store};
use stagebot::types::{EnvId, EnvKind, PrNumber, RepoName, Sha, Slug};
use stagebot::webhook::WebhookSecrets;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} cannot be parsed: {v:?}")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to do unless the soak script asked for a server.
    let Ok(data) = std::env::var("SOAK_DATA") else {
        eprintln!("soak: set SOAK_DATA (run scripts/soak.sh)");
        return;
    };
    let data = PathBuf::from(data);
    if std::env::var("SOAK_COMPACT").is_ok() {
        // The store-file rotation of `stagebot store compact`, on the soak's data dir.
        let c = Store::compact(&data).expect("compact the store");
        println!(
            "rotated: {} entries, db {:.1} MB -> {:.1} MB in {} ms",
            c.entries,
            c.before as f64 / 1e6,
            c.after as f64 / 1e6,
            c.took.as_millis()
        );
        return;
    }
    if let Ok(n) = std::env::var("SOAK_SEED_ENVS") {
        let n: usize = n.parse().expect("SOAK_SEED_ENVS: a number");
        seed(&data, n);
        return;
    }
    let listen: SocketAddr = env_or("SOAK_LISTEN", "127.0.0.1:39201".parse().unwrap());
    let retention = Duration::from_secs(env_or("SOAK_RETENTION_SECS", 120));
    let prune = Duration::from_secs(env_or("SOAK_PRUNE_SECS", 15));
    let secret: String = env_or("SOAK_SECRET", "bench-secret".to_owned());
    let cache: u64 = env_or("STAGEBOT_STORE_CACHE_BYTES", DEFAULT_STORE_CACHE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let fake = FakeGitHub::start().await;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("soak: cannot listen on {listen}: {e}"));
        let mut settings = Settings::new(
            data.clone(),
            format!("http://{listen}"),
            format!("localhost:{}", listen.port()),
        );
        settings.delivery_retention = retention;
        let github = GitHub::new(fake.github_config()).expect("GitHub client");
        let routes = Routes::default();
        // The soak's payloads never deploy: the provider is there because the app needs one.
        let provider = Provider::Local(
            LocalProvider::new(LocalConfig::new(data.clone(), routes.clone()))
                .expect("local provider (bubblewrap installed)"),
        );
        let store = Store::open_with_cache(&data, Duration::from_secs(10), cache)
            .unwrap_or_else(|e| panic!("soak: cannot open the store in {}: {e}", data.display()));
        let app = App::new(Parts {
            settings,
            store,
            github,
            provider,
            routes,
            clock: Arc::new(stagebot::clock::SystemClock),
            secrets: WebhookSecrets::parse(&secret).expect("secret"),
        });
        let intervals = stagebot::serve::Intervals {
            reconcile: prune,
            ..Default::default()
        };
        let server = stagebot::serve::start(app, listener, intervals).await;
        eprintln!("soak: serving on {listen}, retention {retention:?}, pruning every {prune:?}");
        let _ = server.wait().await;
        drop(fake);
    });
}

/// `n` preview environments over 10 repositories, nine in ten destroyed (closed PRs), written
/// through the store's public API.
fn seed(data: &std::path::Path, n: usize) {
    let store = Store::open(data).expect("open the store");
    let now = chrono::Utc::now();
    for i in 0..n {
        let repo = RepoName::new("acme", &format!("repo-{}", i % 10)).expect("repo name");
        let id = EnvId {
            repo,
            slug: Slug::new(&format!("pr-{i}")).expect("slug"),
        };
        let mut env = EnvRecord::new(id, EnvKind::Preview, &format!("feature/{i}"), now);
        env.pr = Some(PrNumber(i as u64 + 1));
        let sha = Sha::new(&format!("{i:040x}")).expect("40 hex digits");
        let env = if i % 10 == 0 {
            env.failed_deploy(&sha, "`build` exited with status 1")
        } else {
            env.deployed(&sha, 1).and_then(|e| e.torn_down("closed"))
        }
        .expect("a new record's story");
        // GitHub was told, as the reporter leaves them.
        let mut env = env;
        env.report_pending = false;
        store.put_env(&env).expect("put_env");
    }
    eprintln!("soak: seeded {n} environments in {}", data.display());
}
