//! Small measuring helpers shared by the benchmark binaries (`harness = false`, no extra
//! crates): latency percentiles, throughput, ops/s with warm-up and repeats.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Latencies of one run, sorted on demand.
#[derive(Default, Clone)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    pub errors: usize,
}

impl Samples {
    /// Gather the `(latencies, errors)` of load tasks started at `started`.
    pub async fn gather(
        tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>,
        started: std::time::Instant,
    ) -> Samples {
        let mut s = Samples::default();
        for t in tasks {
            let (lat, errors) = t.await.unwrap();
            s.latencies.extend(lat);
            s.errors += errors;
        }
        s.wall = started.elapsed();
        s
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Median of a list of numbers.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How many times each measurement is repeated (`BENCH_REPEATS`, default 3).
pub fn repeats() -> usize {
    std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// Scale request counts (`BENCH_SCALE`, default 1.0): `BENCH_SCALE=0.1` for a quick check.
pub fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(1)
}

/// Time `f` in a tight loop: warm up for ~0.2 s, then `repeats()` rounds of ~0.5 s each.
/// Returns ns/op per round.
pub fn ops<T>(mut f: impl FnMut() -> T) -> Vec<f64> {
    let warm = Instant::now();
    let mut per_batch = 1usize;
    while warm.elapsed() < Duration::from_millis(200) {
        for _ in 0..per_batch {
            std::hint::black_box(f());
        }
        per_batch = (per_batch * 2).min(1 << 20);
    }
    // Calibrate a batch to ~50 ms.
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed() < Duration::from_millis(50) {
        std::hint::black_box(f());
        n += 1;
    }
    let batch = n.max(1);
    let mut rounds = Vec::new();
    for _ in 0..repeats() {
        let t = Instant::now();
        let mut iters = 0usize;
        while t.elapsed() < Duration::from_millis(500) {
            for _ in 0..batch {
                std::hint::black_box(f());
            }
            iters += batch;
        }
        rounds.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    rounds
}

/// A human figure for ns/op: `1.23 µs`.
pub fn per_op(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// ops/s from ns/op.
pub fn ops_per_sec(ns: f64) -> String {
    let ops = 1e9 / ns;
    if ops >= 1e6 {
        format!("{:.2} M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1} k", ops / 1e3)
    } else {
        format!("{ops:.1}")
    }
}

/// Machine and load header printed by every bench.
pub fn header(name: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# {name}");
    println!(
        "cpus: {cpus}  model: {model}  loadavg at start: {}",
        load.trim()
    );
    println!();
}

/// The load average now (printed next to each measurement).
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Synthetic store records: `n` preview environments (PRs 1..=n) in `repo`, each with
/// `releases` releases, as a busy installation accumulates them.
pub mod fixtures {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};
    use stagebot::environment::{EnvRecord, Release, Trigger};
    use stagebot::slug::preview_slug;
    use stagebot::types::{EnvId, EnvKind, PrNumber, RepoName, Sha};

    pub fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    pub fn sha(i: u64) -> Sha {
        Sha::new(&format!("{i:040x}")).unwrap_or_else(|_| unreachable!("40 hex digits"))
    }

    pub fn env(repo: &RepoName, pr: u64, releases: u32) -> EnvRecord {
        let slug = preview_slug(Some(PrNumber(pr)), &format!("feature/change-number-{pr}"));
        let host = format!("{slug}--{}.preview.example.com", repo.name());
        let id = EnvId {
            repo: repo.clone(),
            slug,
        };
        let branch = format!("feature/change-number-{pr}");
        let mut env = EnvRecord::new(id, EnvKind::Preview, &branch, now());
        env.pr = Some(PrNumber(pr));
        env.installation_id = Some(1);
        env.clone_url = format!("https://github.com/{repo}.git");
        env.url = format!("https://{host}");
        env.host = host;
        env.ttl_secs = Some(3 * 24 * 3600);
        env.seen_shas = (0..u64::from(releases))
            .map(|r| sha(pr * 1000 + r))
            .collect();
        env.deployments = (0..u64::from(releases))
            .map(|r| (sha(pr * 1000 + r).to_string(), pr * 1000 + r))
            .collect::<BTreeMap<_, _>>();
        if releases > 0 {
            env = env
                .deployed(&sha(pr * 1000 + u64::from(releases)), releases)
                .unwrap_or_else(|e| unreachable!("a new record deploys: {e}"));
        }
        env.note_deploy_request(Some(now() + chrono::Duration::days(3)), None, now());
        // A third are long gone: destroyed environments stay in the store.
        if pr.is_multiple_of(3) {
            env = env
                .torn_down("closed")
                .unwrap_or_else(|e| unreachable!("a live record tears down: {e}"));
        }
        env
    }

    pub fn release(env: &EnvRecord, n: u32) -> Release {
        let pr = env.pr.map_or(0, |p| p.0);
        Release {
            v: 1,
            n,
            sha: sha(pr * 1000 + u64::from(n)),
            git_ref: env.branch.clone(),
            by: "octocat".into(),
            trigger: Trigger::PullRequest,
            at: now(),
            url: env.url.clone(),
            log: format!(
                "https://stagebot.example.com/logs/{}/{}/{n}",
                env.id.repo, env.id.slug
            ),
            pr: env.pr,
            checks: None,
            artifact: None,
        }
    }
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` (which also runs bench targets)
/// does not: then do nothing, so the test suite never runs a benchmark in a debug build.
pub fn skip_unless_cargo_bench() -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return false;
    }
    eprintln!("benchmark skipped: run it with `cargo bench --bench <name>`");
    true
}
