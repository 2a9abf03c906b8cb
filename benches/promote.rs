//! Time from `/promote production` to live, with and without artifact reuse (build once): the
//! real server, worker, store and local provider (sandboxed) against the in-process fake GitHub
//! (`testkit::Stack`), with a real git repository and the Python test app, whose `build` takes
//! about 2 s and writes 2,000 files (20 MB) to `dist/` (what a front-end build produces).
//!
//! For each run a new commit is pushed to the PR (the preview builds it), then a maintainer's
//! `/promote production` comment is sent and the time until production is `live` in the store
//! with that commit is measured. `STAGEBOT_ARTIFACT_KEEP=3` (reuse: production copies the
//! preview's build) is compared with `0` (every deploy builds).
//!
//! Run: `cargo bench --bench promote` (`BENCH_RUNS`, default 5; `BENCH_DIR` for the data).

mod common;

use std::time::{Duration, Instant};

use stagebot::environment::EnvState;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr, python_app_files};
use stagebot::types::{EnvId, Permission, Sha, Slug};

const BUILD: &str = "build: sleep 2 && python3 -c \"import os; os.makedirs('dist', exist_ok=True); [open('dist/f%d.js' % i, 'w').write('x' * 10000) for i in range(2000)]\"\n";

fn files(note: &str) -> Vec<(&'static str, String)> {
    let mut f = python_app_files(BUILD);
    f.push(("NOTE.txt", note.to_owned()));
    f
}

fn commit(stack: &Stack, git: &GitRepo, branch: &str, note: &str) -> Sha {
    let f = files(note);
    let sha = git.commit(branch, &f, note).unwrap();
    stack.mirror(&sha, &f);
    sha
}

async fn run(base: &std::path::Path, keep: usize, runs: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir_in(base).unwrap();
    let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files("main")).unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.artifact_keep = keep;
    let stack = Stack::start(opts).await.unwrap();
    stack.mirror(&main_sha, &files("main"));
    stack.mirror_ref("main", &files("main"));
    stack.grant("maria", Permission::Maintain);
    let sha = commit(&stack, &git, "feature/bench", "v0");
    let mut pr = TestPr::new(1, "feature/bench", sha, &git.clone_url());
    stack.open_pr(&pr).await.unwrap();
    stack.settle().await.unwrap();
    let prod = EnvId {
        repo: stack.repo.clone(),
        slug: Slug::production(),
    };
    let mut times = Vec::new();
    for i in 0..runs {
        let sha = commit(&stack, &git, "feature/bench", &format!("v{}", i + 1));
        stack.synchronize(&mut pr, sha.clone()).await.unwrap();
        stack.settle().await.unwrap();
        let started = Instant::now();
        stack
            .comment("maria", 1, "/promote production")
            .await
            .unwrap();
        loop {
            let env = stack.app.store().env(&prod).unwrap();
            let live = env.as_ref().is_some_and(|e| {
                e.state() == EnvState::Live
                    && e.current_release().is_some_and(|n| {
                        stack
                            .app
                            .store()
                            .release(&prod, n)
                            .unwrap()
                            .is_some_and(|r| r.sha == sha)
                    })
            });
            if live {
                break;
            }
            assert!(
                env.as_ref().is_none_or(|e| e.state() != EnvState::Failed),
                "{:?}",
                env.and_then(|e| e.last_error)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(started.elapsed());
        stack.settle().await.unwrap();
    }
    stack.stop().await;
    times
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("/promote production → live, with and without artifact reuse");
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| STAGEBOT_ARTIFACT_KEEP | runs | median | min | max |");
    println!("|---|---|---|---|---|");
    for keep in [3, 0] {
        let mut t = rt.block_on(run(std::path::Path::new(&base), keep, runs));
        t.sort_unstable();
        println!(
            "| {keep} ({}) | {runs} | {} ms | {} ms | {} ms |",
            if keep > 0 { "reuse" } else { "rebuild" },
            common::ms(t[t.len() / 2]),
            common::ms(t[0]),
            common::ms(t[t.len() - 1]),
        );
    }
}
