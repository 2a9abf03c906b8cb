//! Proxy overhead: GET through stagebot's built-in reverse proxy vs straight to the upstream,
//! at concurrency 8, for two upstreams: a tiny in-process axum app (keep-alive, isolates the
//! proxy's own cost) and the Python test app (`testkit::python_app_files`, HTTP/1.0, a new
//! upstream connection per request — what the deploy tests serve).
//!
//! The server is the real one (`testkit::Stack`: router, proxy middleware, pooled client) on its
//! own 2-thread runtime; the load generator runs on another 2-thread runtime in the same process.
//! Run: `cargo bench --bench proxy`

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Samples, ms};
use stagebot::testkit::{Stack, StackOptions, python_app_files};

async fn load(client: reqwest::Client, url: String, total: usize, c: usize) -> Samples {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    Samples::gather(tasks, started).await
}

fn row(label: &str, s: &Samples) {
    println!(
        "| {label} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
        s.latencies.len(),
        s.throughput(),
        ms(s.percentile(50.0)),
        ms(s.percentile(95.0)),
        ms(s.percentile(99.0)),
        ms(s.max()),
        s.errors,
        common::load()
    );
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("proxy overhead");
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Upstreams: a tiny axum app, and the Python test app.
    let (stack, axum_addr) = server_rt.block_on(async {
        let stack = Stack::start(StackOptions::new(&dir.path().join("data")))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = "0123456789abcdef0123456789abcdef01234567";
        let app = axum::Router::new().route("/", axum::routing::get(move || async move { body }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (stack, addr)
    });
    let py_dir = dir.path().join("py");
    std::fs::create_dir_all(&py_dir).unwrap();
    for (path, content) in python_app_files("") {
        let p = py_dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let py_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut py = std::process::Command::new("python3")
        .arg("app.py")
        .current_dir(&py_dir)
        .env("PORT", py_port.to_string())
        .env("STAGEBOT_SHA", "0123456789abcdef0123456789abcdef01234567")
        .spawn()
        .expect("python3");
    let py_addr = SocketAddr::from(([127, 0, 0, 1], py_port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(py_addr).is_err() {
        assert!(Instant::now() < deadline, "python app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let domain = format!("localhost:{}", stack.addr.port());
    let hosts = [
        ("axum", format!("axum--bench.{domain}"), axum_addr),
        ("python", format!("python--bench.{domain}"), py_addr),
    ];
    for (_, host, addr) in &hosts {
        stack.app.routes().set(host, *addr);
    }

    println!("| path | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | load1 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let c = 8;
    for round in 1..=common::repeats() {
        for (name, host, addr) in &hosts {
            let total = common::scaled(if *name == "axum" { 5000 } else { 2000 });
            let direct = reqwest::Client::new();
            let proxied = reqwest::Client::builder()
                .resolve(host.split(':').next().unwrap_or(host), stack.addr)
                .build()
                .unwrap();
            let direct_url = format!("http://{addr}/");
            let proxied_url = format!("http://{host}/");
            // warm up both
            client_rt.block_on(load(direct.clone(), direct_url.clone(), 200, c));
            client_rt.block_on(load(proxied.clone(), proxied_url.clone(), 200, c));
            let s = client_rt.block_on(load(direct, direct_url, total, c));
            row(&format!("{name}: direct r{round}"), &s);
            let s = client_rt.block_on(load(proxied, proxied_url, total, c));
            row(&format!("{name}: through the proxy r{round}"), &s);
        }
    }
    let _ = py.kill();
    let _ = py.wait();
    server_rt.block_on(async { stack.stop().await });
}
