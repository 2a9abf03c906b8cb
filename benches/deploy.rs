//! Deploy latency with the local provider, end to end: the real server, worker, store and
//! provider against the in-process fake GitHub (`testkit::Stack`), with real git repositories
//! and the Python test app (`testkit::python_app_files`).
//!
//! - open: `pull_request.opened` answered 202 → environment `live` in the store (and the
//!   milestones on the way: `deploying` persisted, route switched, success reported to GitHub);
//! - redeploy: `pull_request.synchronize` answered 202 → the new commit served through the
//!   proxy, and → `live` recorded;
//! - zero downtime: GETs through the proxy at concurrency 4 while a preview is redeployed several
//!   times; every answer must be a 200 with a commit.
//!
//! Deploys run one at a time (no contention between deploys). Run: `cargo bench --bench deploy`
//! (`BENCH_RUNS`, default 10).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr, python_app_files};
use stagebot::types::{EnvId, PrNumber, Sha};

const POLL: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Open {
    accepted: Duration,
    deploying: Duration,
    routed: Duration,
    live: Duration,
    reported: Duration,
    healthy_ms: Option<u64>,
}

#[derive(Default)]
struct Redeploy {
    accepted: Duration,
    served: Duration,
    live: Duration,
}

fn files(note: &str) -> Vec<(&'static str, String)> {
    let mut f = python_app_files("");
    f.push(("NOTE.txt", note.to_owned()));
    f
}

fn commit(stack: &Stack, git: &GitRepo, branch: &str, note: &str) -> Sha {
    let f = files(note);
    let sha = git.commit(branch, &f, note).unwrap();
    stack.mirror(&sha, &f);
    sha
}

/// `healthy after 123ms` in the release log (the Python process's start-up as the provider saw it).
fn healthy_ms(log: &str) -> Option<u64> {
    let at = log.find("healthy after ")? + "healthy after ".len();
    let rest = &log[at..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let v = &rest[..end];
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().ok()
    } else {
        v.strip_suffix('s')?.parse::<u64>().ok().map(|s| s * 1000)
    }
}

fn proxy_client(stack: &Stack, host: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host.split(':').next().unwrap_or(host), stack.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn run(dir: &std::path::Path, runs: usize) {
    let (git, main_sha) = GitRepo::init(&dir.join("src"), &files("main")).unwrap();
    let stack = Stack::start(StackOptions::new(&dir.join("data")))
        .await
        .unwrap();
    stack.mirror(&main_sha, &files("main"));
    let clone_url = git.clone_url();

    let mut opens = Vec::new();
    let mut redeploys = Vec::new();
    let mut prs = Vec::new();
    for i in 1..=runs as u64 {
        let branch = format!("feature/bench-{i}");
        let sha = commit(&stack, &git, &branch, &format!("v1 of {i}"));
        let pr = TestPr::new(i, &branch, sha.clone(), &clone_url);
        let id = EnvId {
            repo: stack.repo.clone(),
            slug: preview_slug(Some(PrNumber(i)), &branch),
        };
        let env_name = format!("preview/{}", id.slug);
        let t0 = Instant::now();
        stack.open_pr(&pr).await.unwrap();
        let accepted = t0.elapsed();
        let t202 = Instant::now();
        let mut o = Open {
            accepted,
            ..Open::default()
        };
        loop {
            let env = stack.app.store().env(&id).unwrap();
            if let Some(env) = &env {
                if o.deploying.is_zero() && env.state() == EnvState::Deploying {
                    o.deploying = t202.elapsed();
                }
                if o.routed.is_zero() && stack.app.routes().get(&env.host).is_some() {
                    o.routed = t202.elapsed();
                }
                if o.live.is_zero() && env.state() == EnvState::Live {
                    o.live = t202.elapsed();
                }
                assert_ne!(env.state(), EnvState::Failed, "{:?}", env.last_error);
            }
            let reported = stack
                .fake
                .deployments(&stack.repo, &env_name)
                .iter()
                .any(|d| d.statuses.iter().any(|s| s.state == "success"));
            if reported {
                o.reported = t202.elapsed();
            }
            if !o.live.is_zero() && !o.reported.is_zero() {
                break;
            }
            assert!(t202.elapsed() < Duration::from_secs(60), "deploy timed out");
            tokio::time::sleep(POLL).await;
        }
        let (log, _) = stack.app.log_location(&id, 1);
        o.healthy_ms = healthy_ms(&std::fs::read_to_string(log).unwrap_or_default());
        stack.settle().await.unwrap();
        opens.push(o);
        prs.push((pr, id));
    }

    for (pr, id) in &mut prs {
        let env = stack.app.store().env(id).unwrap().unwrap();
        let client = proxy_client(&stack, &env.host);
        let sha2 = commit(&stack, &git, &pr.branch, &format!("v2 of {}", pr.number));
        let t0 = Instant::now();
        stack.synchronize(pr, sha2.clone()).await.unwrap();
        let accepted = t0.elapsed();
        let t202 = Instant::now();
        let mut r = Redeploy {
            accepted,
            ..Redeploy::default()
        };
        loop {
            if r.served.is_zero()
                && let Ok(resp) = client.get(&env.url).send().await
                && resp.text().await.ok().as_deref() == Some(sha2.as_str())
            {
                r.served = t202.elapsed();
            }
            let env = stack.app.store().env(id).unwrap().unwrap();
            if r.live.is_zero() && env.state() == EnvState::Live && env.current_release() == Some(2)
            {
                r.live = t202.elapsed();
            }
            if !r.served.is_zero() && !r.live.is_zero() {
                break;
            }
            assert!(
                t202.elapsed() < Duration::from_secs(60),
                "redeploy timed out"
            );
            tokio::time::sleep(POLL).await;
        }
        stack.settle().await.unwrap();
        redeploys.push(r);
    }

    print_open(&opens);
    print_redeploy(&redeploys);

    // Zero downtime: hammer PR 1's preview while it is redeployed several times.
    let (pr, id) = &mut prs[0];
    let env = stack.app.store().env(id).unwrap().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, ok, failures) = (
            proxy_client(&stack, &env.host),
            env.url.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp.text().await.unwrap_or_default();
                        if status == 200 && body.len() == 40 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{status}: {}", body.trim()));
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let redeploys_zd = 5;
    let t = Instant::now();
    for k in 0..redeploys_zd {
        let sha = commit(&stack, &git, &pr.branch.clone(), &format!("zd {k}"));
        stack.synchronize(pr, sha).await.unwrap();
        stack.settle().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    println!("## zero downtime");
    println!();
    println!(
        "| redeploys | duration | GETs through the proxy (c=4) | 200 with a commit | failures |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {redeploys_zd} | {:.1} s | {} | {} | {} |",
        t.elapsed().as_secs_f64(),
        ok.load(Ordering::Relaxed) + failures.len(),
        ok.load(Ordering::Relaxed),
        failures.len()
    );
    for f in failures.iter().take(5) {
        println!("failure: {f}");
    }
    println!();

    // Tear everything down so no app process outlives the bench.
    for (pr, _) in &mut prs {
        stack.close_pr(pr, false).await.unwrap();
    }
    stack.settle().await.unwrap();
    stack.stop().await;
}

fn stats(v: &[Duration]) -> String {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "{:.0} | {:.0} | {:.0}",
        common::median(ms.clone()),
        ms.first().copied().unwrap_or(0.0),
        ms.last().copied().unwrap_or(0.0)
    )
}

fn print_open(v: &[Open]) {
    println!("## open PR → preview live (N={}, sequential)", v.len());
    println!();
    println!("| milestone (from the 202) | median ms | min ms | max ms |");
    println!("|---|---|---|---|");
    let col = |f: fn(&Open) -> Duration| v.iter().map(f).collect::<Vec<_>>();
    println!(
        "| webhook answered 202 (request time) | {} |",
        stats(&col(|o| o.accepted))
    );
    println!(
        "| `deploying` persisted (worker picked it up) | {} |",
        stats(&col(|o| o.deploying))
    );
    println!(
        "| route switched (cloned, started, healthy) | {} |",
        stats(&col(|o| o.routed))
    );
    println!(
        "| `live` committed in the store | {} |",
        stats(&col(|o| o.live))
    );
    println!(
        "| success reported to GitHub (deployment status) | {} |",
        stats(&col(|o| o.reported))
    );
    let healthy: Vec<Duration> = v
        .iter()
        .filter_map(|o| o.healthy_ms.map(Duration::from_millis))
        .collect();
    println!(
        "| (app start → healthy, from the release log) | {} |",
        stats(&healthy)
    );
    println!();
}

fn print_redeploy(v: &[Redeploy]) {
    println!(
        "## synchronize → new commit served (N={}, sequential)",
        v.len()
    );
    println!();
    println!("| milestone (from the 202) | median ms | min ms | max ms |");
    println!("|---|---|---|---|");
    let col = |f: fn(&Redeploy) -> Duration| v.iter().map(f).collect::<Vec<_>>();
    println!(
        "| webhook answered 202 (request time) | {} |",
        stats(&col(|r| r.accepted))
    );
    println!(
        "| new commit served through the proxy | {} |",
        stats(&col(|r| r.served))
    );
    println!(
        "| `live` committed (after the old release drained and stopped) | {} |",
        stats(&col(|r| r.live))
    );
    println!();
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("deploy latency (local provider, Python test app)");
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(dir.path(), runs));
}
