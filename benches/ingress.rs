//! Webhook ingress: signed deliveries → 202 (stored in sled and flushed before the answer),
//! over loopback, at several concurrencies; then the duplicate path (same id → 200).
//!
//! Run: `cargo bench --bench ingress` (env: `BENCH_SCALE=0.2` for a quick run,
//! `BENCH_REPEATS=3`, `BENCH_DIR=/path` for the store's disk; default `target/tmp`).
//!
//! Two server modes:
//! - `quiet`: the public router only, no worker: measures the front door alone (the inbox grows).
//! - `worker`: the full `serve::start` with the worker draining. Deliveries carry
//!   `X-GitHub-Event: check_run` (ignored by the engine without any GitHub call), so the worker
//!   does what it does for every ignored event: parse, record the outcome, flush. This shows
//!   ingress while the worker competes for the same disk flushes.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Samples, ms};
use stagebot::app::{App, Parts, Settings};
use stagebot::fake_github::FakeGitHub;
use stagebot::github::GitHub;
use stagebot::provider::Provider;
use stagebot::provider::local::{LocalConfig, LocalProvider};
use stagebot::proxy::Routes;
use stagebot::store::Store;
use stagebot::webhook::{WebhookSecrets, sign};

const SECRET: &str = "bench-secret";
const PAYLOAD: &str = "pull_request/00-opened.json";

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-webhook-examples")
}

pub fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("temp dir")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Quiet,
    Worker,
}

/// Start a server on its own 2-thread runtime; returns its address.
fn start_server(rt: &tokio::runtime::Runtime, data: PathBuf, mode: Mode) -> SocketAddr {
    rt.block_on(async move {
        let fake = FakeGitHub::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings::new(
            data.clone(),
            format!("http://{addr}"),
            format!("localhost:{}", addr.port()),
        );
        let github = GitHub::new(fake.github_config()).unwrap();
        let routes = Routes::default();
        let provider = Provider::Local(
            LocalProvider::new(LocalConfig::new(data.clone(), routes.clone()))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let app = App::new(Parts {
            settings,
            store: Store::open(&data).unwrap(),
            github,
            provider,
            routes,
            clock: Arc::new(stagebot::clock::SystemClock),
            secrets: WebhookSecrets::parse(SECRET).unwrap(),
        });
        match mode {
            Mode::Quiet => {
                let router = stagebot::server::router(app);
                tokio::spawn(async move { axum::serve(listener, router).await });
            }
            Mode::Worker => {
                let server =
                    stagebot::serve::start(app, listener, stagebot::serve::Intervals::default())
                        .await;
                // Runs until the process exits.
                std::mem::forget(server);
            }
        }
        std::mem::forget(fake);
        addr
    })
}

/// Fire `total` deliveries with `concurrency` workers; ids come from `id_of(i)`.
async fn fire(
    target: &Target,
    total: usize,
    concurrency: usize,
    expect: u16,
    id_of: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> Samples {
    let Target {
        client,
        url,
        event,
        body,
    } = target;
    let event = *event;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, next, id_of) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            next.clone(),
            id_of.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("X-GitHub-Event", event)
                    .header("X-GitHub-Delivery", id_of(i))
                    .header("X-Hub-Signature-256", body.signature.as_str())
                    .header("Content-Type", "application/json")
                    .body(body.bytes.clone())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == expect => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    Ok(r) => {
                        errors += 1;
                        if errors < 3 {
                            eprintln!("unexpected {}: {:?}", r.status(), r.text().await);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors < 3 {
                            eprintln!("error: {e:?}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    Samples::gather(tasks, started).await
}

/// Where and what to send.
struct Target {
    client: reqwest::Client,
    url: String,
    event: &'static str,
    body: Body,
}

/// The fixed, signed payload.
#[derive(Clone)]
struct Body {
    bytes: axum::body::Bytes,
    signature: String,
}

fn row(label: &str, c: usize, s: &Samples) {
    println!(
        "| {label} | {c} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        s.latencies.len(),
        s.throughput(),
        ms(s.percentile(50.0)),
        ms(s.percentile(95.0)),
        ms(s.percentile(99.0)),
        ms(s.max()),
        s.errors,
        common::load(),
    );
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("webhook ingress");
    let payload = std::fs::read(examples_dir().join(PAYLOAD)).expect("example payload");
    let body = Body {
        signature: sign(SECRET, &payload),
        bytes: axum::body::Bytes::from(payload.clone()),
    };
    println!(
        "payload: {PAYLOAD} ({} bytes), HMAC-SHA256 signed; each request a new delivery id",
        payload.len()
    );
    println!();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run_id = format!("{:08x}", fastrand::u32(..));
    println!(
        "| mode | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | load1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mode in [Mode::Quiet, Mode::Worker] {
        let label = match mode {
            Mode::Quiet => "new → 202 (no worker)",
            Mode::Worker => "new → 202 (worker draining)",
        };
        let event = match mode {
            Mode::Quiet => "pull_request",
            Mode::Worker => "check_run",
        };
        for round in 0..common::repeats() {
            let dir = bench_dir();
            let server_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let addr = start_server(&server_rt, dir.path().to_path_buf(), mode);
            let url = format!("http://{addr}/webhook");
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let target = Target {
                client,
                url,
                event,
                body: body.clone(),
            };
            for c in [1usize, 8, 32] {
                let total = common::scaled(if c == 1 { 1000 } else { 3000 });
                let prefix = format!("{run_id}-{}-{round}-{c}", mode as u8);
                let ids: Arc<dyn Fn(usize) -> String + Send + Sync> =
                    Arc::new(move |i| format!("{prefix}-{i:08}"));
                // warm-up (also opens the pooled connections)
                let warm_prefix = format!("{run_id}-w{}-{round}-{c}", mode as u8);
                client_rt.block_on(fire(
                    &target,
                    (c * 4).max(50),
                    c,
                    202,
                    Arc::new(move |i| format!("{warm_prefix}-{i:08}")),
                ));
                let s = client_rt.block_on(fire(&target, total, c, 202, ids));
                row(&format!("{label} r{}", round + 1), c, &s);
            }
            if mode == Mode::Quiet {
                // The duplicate path: ids stored above, answered 200 without a write.
                for c in [1usize, 8, 32] {
                    let total = common::scaled(if c == 1 { 1000 } else { 3000 });
                    let prefix = format!("{run_id}-{}-{round}-{c}", mode as u8);
                    let n = common::scaled(if c == 1 { 1000 } else { 3000 });
                    let ids: Arc<dyn Fn(usize) -> String + Send + Sync> =
                        Arc::new(move |i| format!("{prefix}-{:08}", i % n));
                    let s = client_rt.block_on(fire(&target, total, c, 200, ids));
                    row(&format!("duplicate → 200 r{}", round + 1), c, &s);
                }
            }
            drop(target);
            server_rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
