//! Destroyed environments and the hot path (issue 13, docs/performance.md §0 round 3): what the
//! worker reads per delivery for the policy (the repository's environments, and those the
//! event names by key) and what start-up and every reconcile pass decode (every environment),
//! as destroyed environments pile up next to 10 live ones.
//!
//! Run: `cargo bench --bench archive` (`BENCH_DIR` picks the disk; default `target/tmp`).
//! Only public store calls that exist before and after the archive, so the same file measures
//! both builds.

mod common;

use std::time::Instant;

use common::fixtures;
use stagebot::slug::preview_slug;
use stagebot::store::Store;
use stagebot::types::{EnvId, PrNumber, RepoName, Slug};

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("temp dir")
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("destroyed environments (store)");
    let repo = RepoName::new("acme", "webapp").unwrap();
    println!(
        "| destroyed envs (+10 live, 3 releases each) | per-delivery state read | envs() (start-up, every reconcile) | reopen the store | load1 |"
    );
    println!("|---|---|---|---|---|");
    for destroyed in [0u64, 1_000, 10_000] {
        let destroyed = common::scaled(destroyed as usize) as u64 * u64::from(destroyed > 0);
        let dir = bench_dir();
        let store = Store::open(dir.path()).unwrap();
        // Live: PRs 1, 2, 4, 5, … (the fixture destroys every third).
        let mut live = 0;
        let mut pr = 0;
        while live < 10 {
            pr += 1;
            if pr % 3 == 0 {
                continue;
            }
            let mut env = fixtures::env(&repo, pr, 3);
            env.report_pending = false;
            store.put_env(&env).unwrap();
            live += 1;
        }
        // Destroyed, and GitHub told (as the reporter leaves them).
        for pr in 100_000..100_000 + destroyed {
            let mut env = fixtures::env(&repo, pr, 3);
            if env.is_active() {
                env = env.torn_down("closed").unwrap();
            }
            env.report_pending = false;
            store.put_env(&env).unwrap();
        }
        // engine::handle_event: the repository's environments, and those the event names
        // (a synchronize of PR 1: its preview; a push: production, staging, its branch's).
        let named = [
            preview_slug(Some(PrNumber(1)), "feature/change-number-1"),
            Slug::production(),
            Slug::staging(),
        ];
        let per_delivery = common::median(common::ops(|| {
            let mut envs = store.envs_of_repo(&repo).unwrap();
            for slug in &named {
                if !envs.iter().any(|e| &e.id.slug == slug) {
                    let id = EnvId {
                        repo: repo.clone(),
                        slug: slug.clone(),
                    };
                    if let Some(e) = store.env(&id).unwrap() {
                        envs.push(e);
                    }
                }
            }
            assert!(envs.len() >= 10);
            envs.len()
        }));
        let scan = common::median(common::ops(|| store.envs().unwrap().len()));
        drop(store);
        let mut opens = Vec::new();
        for _ in 0..common::repeats() {
            let t = Instant::now();
            let store =
                Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).unwrap();
            opens.push(t.elapsed().as_secs_f64() * 1e9);
            drop(store);
            // sled's flusher lets go of the lock shortly after the drop.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        println!(
            "| {destroyed} | {} | {} | {} | {} |",
            common::per_op(per_delivery),
            common::per_op(scan),
            common::per_op(common::median(opens)),
            common::load()
        );
    }
}
