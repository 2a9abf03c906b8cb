//! The sled store: the durable inbox insert (transaction + flush) per delivery, the reads the
//! worker does for every delivery as the store grows, and `backup` of a big store.
//!
//! Run: `cargo bench --bench store` (`BENCH_DIR` picks the disk; default `target/tmp`).

mod common;

use std::time::Instant;

use common::{Samples, fixtures, ms};
use stagebot::environment::TransitionError;
use stagebot::store::{Inserted, Store};
use stagebot::types::{DeliveryId, EnvKind, RepoName};

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("temp dir")
}

fn lat_row(name: &str, s: &Samples) {
    println!(
        "| {name} | {} | {:.0} | {} | {} | {} | {} | {} |",
        s.latencies.len(),
        s.throughput(),
        ms(s.percentile(50.0)),
        ms(s.percentile(95.0)),
        ms(s.percentile(99.0)),
        ms(s.max()),
        common::load()
    );
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("store (sled)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/github-webhook-examples/pull_request/00-opened.json"),
    )
    .unwrap();

    println!("## inbox insert + flush, one at a time (25 KiB payload)");
    println!();
    println!("| operation | n | ops/s | p50 ms | p95 ms | p99 ms | max ms | load1 |");
    println!("|---|---|---|---|---|---|---|---|");
    for round in 0..common::repeats() {
        let dir = bench_dir();
        let store = Store::open(dir.path()).unwrap();
        let n = common::scaled(2000);
        let mut s = Samples::default();
        let started = Instant::now();
        for i in 0..n {
            let id = DeliveryId::new(&format!("delivery-{round}-{i:08}")).unwrap();
            let t = Instant::now();
            let r = rt
                .block_on(store.insert_delivery(&id, "pull_request", &payload, fixtures::now()))
                .unwrap();
            s.latencies.push(t.elapsed());
            assert_eq!(r, Inserted::New);
        }
        s.wall = started.elapsed();
        lat_row(&format!("insert_delivery (new) r{}", round + 1), &s);
        let mut s = Samples::default();
        let started = Instant::now();
        for i in 0..n {
            let id = DeliveryId::new(&format!("delivery-{round}-{i:08}")).unwrap();
            let t = Instant::now();
            let r = rt
                .block_on(store.insert_delivery(&id, "pull_request", &payload, fixtures::now()))
                .unwrap();
            s.latencies.push(t.elapsed());
            assert_eq!(r, Inserted::Duplicate);
        }
        s.wall = started.elapsed();
        lat_row(&format!("insert_delivery (duplicate) r{}", round + 1), &s);
    }
    println!();

    // A big store: 1,000 environments × 10 releases.
    let dir = bench_dir();
    let store = Store::open(dir.path()).unwrap();
    let repo = RepoName::new("acme", "webapp").unwrap();
    let (envs, releases) = (1000u64, 10u32);
    let t = Instant::now();
    let mut put = Samples::default();
    let mut commit = Samples::default();
    for pr in 1..=envs {
        let env = fixtures::env(&repo, pr, 0);
        let t = Instant::now();
        store.put_env(&env).unwrap();
        put.latencies.push(t.elapsed());
        for n in 1..=releases {
            let rel = fixtures::release(&env, n);
            let target = fixtures::env(&repo, pr, n);
            let t = Instant::now();
            let done = store
                .commit_release(&env.id, &rel, |r| {
                    r.seen_shas = target.seen_shas.clone();
                    r.deployments = target.deployments.clone();
                    Ok::<_, TransitionError>(())
                })
                .unwrap();
            commit.latencies.push(t.elapsed());
            assert!(done.is_some());
        }
        if pr.is_multiple_of(3) {
            store
                .update_env(&env.id, |r| {
                    *r = r.clone().torn_down("closed")?;
                    Ok::<_, TransitionError>(())
                })
                .unwrap();
        }
    }
    put.wall = put.latencies.iter().sum();
    commit.wall = commit.latencies.iter().sum();
    println!(
        "## a store with {envs} environments × {releases} releases (built in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    println!();
    println!("| operation | n | ops/s | p50 ms | p95 ms | p99 ms | max ms | load1 |");
    println!("|---|---|---|---|---|---|---|---|");
    lat_row("put_env (+flush)", &put);
    lat_row("commit_release (+flush)", &commit);
    println!();

    println!("| operation | result | time (median of rounds) | rounds | load1 |");
    println!("|---|---|---|---|---|");
    let mut times = Vec::new();
    let mut summary = None;
    for _ in 0..common::repeats() {
        let path = dir.path().join("backup.json");
        let t = Instant::now();
        summary = Some(store.backup(&path).unwrap());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let summary = summary.unwrap();
    println!(
        "| backup | {} entries, {:.1} MiB | {:.0} ms | {} | {} |",
        summary.entries,
        summary.bytes as f64 / 1048576.0,
        common::median(times.clone()),
        times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        common::load()
    );
    let mut times = Vec::new();
    for i in 0..common::repeats() {
        let other = Store::open(&dir.path().join(format!("restored-{i}"))).unwrap();
        let t = Instant::now();
        other
            .restore(&dir.path().join("backup.json"), false)
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "| restore (into an empty store) | {} entries | {:.0} ms | {} | {} |",
        summary.entries,
        common::median(times.clone()),
        times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        common::load()
    );
    println!();

    // What the worker reads for every delivery of this repository (engine::handle_event):
    // every env of the repo, every release of each, and every env of every repo for the
    // capacity count.
    println!("## reads per delivery as the store grows (engine::handle_event's state gathering)");
    println!();
    println!("| read | store | time/op | ops/s | spread of rounds |");
    println!("|---|---|---|---|---|");
    let label = format!("{envs} envs × {releases} releases");
    let r = common::ops(|| {
        let envs = store.envs_of_repo(&repo).unwrap();
        let mut n = 0;
        for e in &envs {
            n += store.releases(&e.id).unwrap().len();
        }
        n
    });
    cpu_row(
        "envs_of_repo + releases of each (before the fix: every delivery)",
        &label,
        r,
    );
    let r = common::ops(|| store.envs_of_repo(&repo).unwrap().len());
    cpu_row("envs_of_repo alone (every delivery)", &label, r);
    let r = common::ops(|| {
        store
            .envs()
            .unwrap()
            .iter()
            .filter(|e| e.kind == EnvKind::Preview && e.state().occupies_slot())
            .count()
    });
    cpu_row(
        "envs() (previews_in_use; now only with a preview limit)",
        &label,
        r,
    );
    let one = fixtures::env(&repo, 500, releases).id;
    let r = common::ops(|| store.env(&one).unwrap().is_some());
    cpu_row("env(id) (point read)", &label, r);
    let r = common::ops(|| store.releases(&one).unwrap().len());
    cpu_row("releases(id) (prefix scan)", &label, r);
}

fn cpu_row(name: &str, input: &str, rounds: Vec<f64>) {
    let lo = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rounds.iter().copied().fold(0.0, f64::max);
    let med = common::median(rounds);
    println!(
        "| {name} | {input} | {} | {} | {}–{} |",
        common::per_op(med),
        common::ops_per_sec(med),
        common::per_op(lo),
        common::per_op(hi)
    );
}
