//! The chaos run (issue 14; docs/reliability.md, "A flaky GitHub changes nothing in the end"):
//! a scripted day of activity on three repositories runs twice against the real server, worker,
//! store and local provider — once against a well-behaved fake GitHub, once against one that
//! answers 30% of the calls with 500/502/timeouts/secondary rate limits (before or after
//! applying them) and loses webhooks — and the end states, normalised, must be the same: every
//! environment's state, live commit and release history, one sticky comment per PR with the
//! same content, every command answered once, the same reactions, commit statuses and GitHub
//! deployments. Below it, a regression test for each bug the chaos run found.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use stagebot::event::payloads::{self, CommentPayload, PrPayload, PushPayload};
use stagebot::fake_github::{Chaos, ChaosStats, FakeGitHub, FakePr, Fault, FaultKind, Method};
use stagebot::testkit::{GitRepo, INSTALLATION, Stack, StackOptions, python_app_files};
use stagebot::types::{DeliveryId, Permission, PrNumber, RepoName, Sha};

const CONFIG: &str = "on_merge: staging\n";
/// The seed of the chaos run (`STAGEBOT_CHAOS_SEED` picks another one).
const SEED: u64 = 14;
/// How long stagebot waits for one GitHub answer in this test: long enough that a fake slowed
/// down by a loaded machine is not taken for a timeout (a request the fake starts to serve after
/// the client gave up would be applied late, out of order, which no client can prevent).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the chaotic fake holds a "timed out" answer: longer than stagebot waits.
const HANG: Duration = Duration::from_millis(800);

/// One repository's commits, made once and shared by both runs (same shas).
struct Source {
    name: RepoName,
    git: GitRepo,
    main: Sha,
    /// `f1` v1, v2; `f2` v1, v2; `f3` v1.
    heads: BTreeMap<&'static str, Sha>,
    merge: Sha,
    files: Vec<(&'static str, String)>,
}

fn sources(dir: &std::path::Path) -> Vec<Source> {
    ["web", "api", "docs"]
        .iter()
        .map(|name| {
            let files = python_app_files(CONFIG);
            let (git, main) = GitRepo::init(&dir.join(name), &files).unwrap();
            let mut heads = BTreeMap::new();
            for (label, branch, note) in [
                ("f1v1", "f1", "one"),
                ("f1v2", "f1", "two"),
                ("f2v1", "f2", "three"),
                ("f2v2", "f2", "four"),
                ("f3v1", "f3", "five"),
            ] {
                let mut f = files.clone();
                f.push(("NOTE.txt", format!("{name} {note}")));
                heads.insert(label, git.commit(branch, &f, note).unwrap());
            }
            let merge = git.merge("f1").unwrap();
            Source {
                name: RepoName::new("acme", name).unwrap(),
                git,
                main,
                heads,
                merge,
                files,
            }
        })
        .collect()
}

/// One run of the day: its stack and what the script needs to remember.
struct Run<'a> {
    stack: Stack,
    sources: &'a [Source],
    /// (repo index, script label) → the command comment's id.
    commands: BTreeMap<(usize, String), u64>,
    /// Settle rounds that needed a catch-up redelivery or a retry to finish.
    rounds: usize,
}

impl<'a> Run<'a> {
    async fn start(data: &std::path::Path, sources: &'a [Source], chaos: Option<Chaos>) -> Self {
        let fake = FakeGitHub::start().await;
        fake.add_installation(INSTALLATION, "acme");
        for s in sources {
            fake.add_repo(&s.name, "main", INSTALLATION);
            // GitHub's contents API serves the configuration (the same in every commit).
            for sha in s.heads.values().chain([&s.main, &s.merge]) {
                for (path, content) in &s.files {
                    fake.set_file(&s.name, sha.as_str(), path, content);
                }
            }
            for (path, content) in &s.files {
                fake.set_file(&s.name, "main", path, content);
            }
            fake.set_permission(&s.name, "alice", Permission::Write);
            fake.set_permission(&s.name, "maria", Permission::Maintain);
        }
        let mut opts = StackOptions::new(data);
        opts.repo = sources[0].name.clone();
        opts.github_attempt_timeout = Some(ATTEMPT_TIMEOUT);
        opts.delivery_attempts = Some(8);
        let stack = Stack::start_with(fake, opts).await.unwrap();
        // GitHub's delivery times have whole seconds: a delivery in the store's first second
        // would count as older than the store and never be caught up.
        let ms = 1000 - u64::from(chrono::Utc::now().timestamp_subsec_millis());
        tokio::time::sleep(Duration::from_millis(ms + 50)).await;
        stack.fake.set_chaos(chaos);
        Run {
            stack,
            sources,
            commands: BTreeMap::new(),
            rounds: 0,
        }
    }

    async fn send(&self, event: &str, payload: &Value) {
        let (status, body) = self.stack.send(event, payload).await.unwrap();
        assert!(
            status == 202 || (status == 0 && body["lost"] == true),
            "{event}: {status} {body}"
        );
    }

    fn pr_payload(&self, r: usize, action: &str, n: u64, head: &str) -> PrPayload {
        let s = &self.sources[r];
        let mut p = PrPayload::new(action, &s.name, n);
        p.head_ref = format!("f{n}");
        p.head_sha = s.heads[head].to_string();
        p.author_login = "octocat".into();
        p.clone_url = Some(s.git.clone_url());
        p.head_clone_url = Some(s.git.clone_url());
        p.installation_id = Some(INSTALLATION);
        p
    }

    async fn open(&self, r: usize, n: u64, head: &str) {
        let s = &self.sources[r];
        self.stack.fake.upsert_pr(
            &s.name,
            FakePr::new(n, &format!("f{n}"), s.heads[head].clone()).clone_url(&s.git.clone_url()),
        );
        let p = self.pr_payload(r, "opened", n, head);
        self.send("pull_request", &payloads::pull_request(&p)).await;
    }

    async fn synchronize(&self, r: usize, n: u64, before: &str, head: &str) {
        let s = &self.sources[r];
        self.stack
            .fake
            .set_pr_head(&s.name, PrNumber(n), s.heads[head].clone());
        let mut p = self.pr_payload(r, "synchronize", n, head);
        p.before = Some(s.heads[before].to_string());
        self.send("pull_request", &payloads::pull_request(&p)).await;
    }

    async fn close(&self, r: usize, n: u64, head: &str, merged: bool) {
        let s = &self.sources[r];
        self.stack
            .fake
            .set_pr_state(&s.name, PrNumber(n), false, merged);
        let mut p = self.pr_payload(r, "closed", n, head);
        p.merged = merged;
        if merged {
            p.merge_commit_sha = Some(s.merge.to_string());
        }
        self.send("pull_request", &payloads::pull_request(&p)).await;
    }

    async fn push_main(&self, r: usize) {
        let s = &self.sources[r];
        let mut p = PushPayload::new(&s.name, "main");
        p.before = s.main.to_string();
        p.after = s.merge.to_string();
        p.clone_url = Some(s.git.clone_url());
        p.installation_id = Some(INSTALLATION);
        self.send("push", &payloads::push(&p)).await;
    }

    async fn command(&mut self, r: usize, n: u64, user: &str, body: &str) {
        let s = &self.sources[r];
        let id = self
            .stack
            .fake
            .add_user_comment(&s.name, PrNumber(n), user, body);
        self.commands.insert((r, format!("#{n} {body}")), id);
        let mut p = CommentPayload::new(&s.name, n, body);
        p.comment_id = id;
        p.author_login = user.to_owned();
        p.author_association = "MEMBER".into();
        p.installation_id = Some(INSTALLATION);
        p.clone_url = Some(s.git.clone_url());
        self.send("issue_comment", &payloads::issue_comment(&p))
            .await;
    }

    /// Let stagebot finish everything: process what is in, run the catch-up pass (as its
    /// periodic task would) until every delivery GitHub logged as failed was redelivered, and
    /// the reconciler. Both runs settle the same way.
    async fn settle(&mut self) {
        let store = self.stack.app.store().clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        for round in 0.. {
            self.stack.settle().await.unwrap();
            let missing = missing_deliveries(&self.stack.fake, &store);
            let inbox = store.inbox_ids().unwrap().len();
            if missing.is_empty() && inbox == 0 && self.stack.app.busy_runners() == 0 {
                if round > 0 {
                    self.rounds += 1;
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not settled: missing {missing:?}, inbox {inbox}"
            );
            if !missing.is_empty() {
                // Errors are the chaos's: the next pass tries again.
                let _ = self.stack.app.catch_up().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The day, interleaved over the repositories; settled after each step.
    async fn day(&mut self) {
        let repos = self.sources.len();
        for step in 0..18 {
            for r in 0..repos {
                match step {
                    0 => self.open(r, 1, "f1v1").await,
                    1 => self.open(r, 2, "f2v1").await,
                    2 => self.synchronize(r, 1, "f1v1", "f1v2").await,
                    3 => self.command(r, 1, "maria", "/status").await,
                    4 => self.command(r, 2, "alice", "/stage").await,
                    5 => self.command(r, 1, "alice", "/promote staging").await,
                    6 => self.command(r, 2, "alice", "/extend 2h").await,
                    7 => self.close(r, 1, "f1v2", true).await,
                    8 => self.push_main(r).await,
                    9 => self.command(r, 1, "maria", "/promote production").await,
                    10 => self.synchronize(r, 2, "f2v1", "f2v2").await,
                    11 => self.command(r, 2, "alice", "/rollback").await,
                    12 => self.open(r, 3, "f3v1").await,
                    13 => self.command(r, 3, "alice", "/rollback staging 1").await,
                    14 => self.command(r, 2, "alice", "/teardown").await,
                    15 => self.close(r, 2, "f2v2", false).await,
                    // Refused (a writer may not deploy production): a reply and 😕.
                    16 => self.command(r, 3, "alice", "/promote production").await,
                    _ => self.command(r, 3, "maria", "/status\n/help").await,
                }
            }
            self.settle().await;
        }
        // The periodic passes, as in the quiet hour after the day: the reconciler sends the
        // reports GitHub did not take (it may fail again under the chaos; it runs again).
        for _ in 0..20 {
            let _ = self.stack.app.reconcile().await;
            self.settle().await;
            let store = self.stack.app.store();
            if store.envs().unwrap().iter().all(|e| !e.report_pending) {
                break;
            }
        }
    }

    /// Everything that must come out the same, normalised (ports, times and GitHub's ids).
    fn end_state(&self) -> String {
        let store = self.stack.app.store();
        let fake = &self.stack.fake;
        let port = self.stack.addr.port().to_string();
        let mut out = String::new();
        let mut envs = store.envs().unwrap();
        envs.sort_by(|a, b| (&a.id.repo, &a.id.slug).cmp(&(&b.id.repo, &b.id.slug)));
        for e in &envs {
            let releases = store.releases(&e.id).unwrap();
            let live = e
                .current_release()
                .and_then(|n| releases.iter().find(|r| r.n == n))
                .map(|r| r.sha.to_string());
            writeln!(
                out,
                "env {}/{}: {:?}, release {:?} of {}, live {:?}, report pending {}, error {:?}",
                e.id.repo,
                e.id.slug,
                e.state(),
                e.current_release(),
                e.releases(),
                live,
                e.report_pending,
                e.last_error
            )
            .unwrap();
            for r in releases {
                writeln!(
                    out,
                    "  release {} {} by {} {:?} pr {:?} checks {:?} artifact {:?}",
                    r.n, r.sha, r.by, r.trigger, r.pr, r.checks, r.artifact
                )
                .unwrap();
            }
        }
        for (r, s) in self.sources.iter().enumerate() {
            for n in 1..=3 {
                let comments = fake.comments(&s.name, PrNumber(n));
                let stickies: Vec<_> = comments.iter().filter(|c| c.is_sticky()).collect();
                writeln!(out, "{} #{n}: {} sticky comment(s)", s.name, stickies.len()).unwrap();
                for c in stickies {
                    writeln!(out, "{}", normalise(c.text(), &port)).unwrap();
                }
                for c in comments.iter().filter(|c| c.by_app && !c.is_sticky()) {
                    let mut body = normalise(&c.body, &port);
                    // The hidden marker names the command's comment, whose id is GitHub's.
                    for ((cr, label), id) in &self.commands {
                        if *cr == r {
                            body = body.replace(
                                &format!("stagebot:reply:{id} "),
                                &format!("stagebot:reply:({label}) "),
                            );
                        }
                    }
                    writeln!(out, "  reply: {body}").unwrap();
                }
            }
            for ((cr, label), id) in &self.commands {
                if *cr == r {
                    writeln!(out, "{} {label}: {:?}", s.name, fake.reactions(*id)).unwrap();
                }
            }
            // Commit statuses: the last state per context is what GitHub shows on a commit.
            for (label, sha) in s
                .heads
                .iter()
                .map(|(l, sha)| (*l, sha))
                .chain([("merge", &s.merge), ("main", &s.main)])
            {
                let mut last: BTreeMap<String, String> = BTreeMap::new();
                for st in fake.statuses(&s.name, sha) {
                    last.insert(
                        st.context.clone(),
                        format!(
                            "{} {} {}",
                            st.state,
                            normalise(&st.description, &port),
                            normalise(st.target_url.as_deref().unwrap_or(""), &port)
                        ),
                    );
                }
                writeln!(out, "{} {label} statuses: {last:?}", s.name).unwrap();
            }
            let mut by_env: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in fake.all_deployments(&s.name) {
                // A status posted again after its answer was lost repeats the same state, and
                // an `in_progress` that could not be posted before the deploy finished is not
                // posted late: the outcomes are compared (docs/reliability.md).
                let mut states: Vec<_> = d
                    .statuses
                    .iter()
                    .map(|s| s.state.as_str())
                    .filter(|s| *s != "in_progress")
                    .collect();
                states.dedup();
                let mut payload = d.payload.clone();
                // The attempt number is stagebot's own counter (a retried delivery makes a
                // new attempt); the rest is compared.
                if let Some(o) = payload.get_mut("stagebot").and_then(Value::as_object_mut) {
                    o.remove("attempt");
                }
                by_env
                    .entry(d.environment.clone())
                    .or_default()
                    .push(format!(
                        "{} {} {:?}",
                        d.sha,
                        normalise(&payload.to_string(), &port),
                        states
                    ));
            }
            for (env, deps) in by_env {
                writeln!(out, "{} deployments to {env}: {deps:#?}", s.name).unwrap();
            }
        }
        out
    }
}

/// GUIDs GitHub's log shows as never answered 2xx (and not refused) that stagebot has not stored.
fn missing_deliveries(fake: &FakeGitHub, store: &stagebot::store::Store) -> Vec<String> {
    let log = fake.hook_deliveries();
    let mut missing: Vec<String> = log
        .iter()
        .filter(|d| d.event != "ping" && !(200..500).contains(&d.status_code))
        .filter(|d| {
            DeliveryId::new(&d.guid)
                .ok()
                .is_none_or(|id| store.delivery(&id).ok().flatten().is_none())
        })
        .map(|d| d.guid.clone())
        .collect();
    missing.dedup();
    missing
}

/// Times (`2026-11-29T23:15:35Z`, `2026-11-29 23:15 UTC`…) become `TIME`; the server's port
/// becomes `PORT`.
fn normalise(text: &str, port: &str) -> String {
    let text = text.replace(&format!(":{port}"), ":PORT");
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let date = (0..4).all(|k| digit(i + k))
            && b.get(i + 4) == Some(&b'-')
            && digit(i + 5)
            && digit(i + 6)
            && b.get(i + 7) == Some(&b'-')
            && digit(i + 8)
            && digit(i + 9);
        if date {
            let mut j = i + 10;
            if matches!(b.get(j), Some(b'T' | b' ')) && digit(j + 1) {
                j += 1;
                while j < b.len() && (b[j].is_ascii_digit() || matches!(b[j], b':' | b'.')) {
                    j += 1;
                }
                if b.get(j) == Some(&b'Z') {
                    j += 1;
                } else if text[j..].starts_with("+00:00") {
                    j += 6;
                } else if text[j..].starts_with(" UTC") {
                    j += 4;
                }
            }
            out.push_str("TIME");
            i = j;
        } else {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The lines that differ (`-` only in `a`, `+` only in `b`), by longest common subsequence.
fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            writeln!(out, "{:>4} + {}", j + 1, b[j]).unwrap();
            j += 1;
        } else {
            writeln!(out, "{:>4} - {}", i + 1, a[i]).unwrap();
            i += 1;
        }
    }
    out
}

fn seed() -> u64 {
    std::env::var("STAGEBOT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_github_changes_nothing_in_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let sources = sources(&dir.path().join("src"));

    let started = Instant::now();
    let mut calm = Run::start(&dir.path().join("calm"), &sources, None).await;
    calm.day().await;
    let expected = calm.end_state();
    // The replies are part of the end state compared below.
    calm.stack.read_every_reply();
    let calm_calls = calm.stack.fake.requests().len();
    let calm_time = started.elapsed();
    calm.stack.stop().await;

    let started = Instant::now();
    let seed = seed();
    let mut faults = Chaos::new(seed, HANG);
    // A harsher (or milder) GitHub to explore with: `STAGEBOT_CHAOS_RATE=0.5`.
    if let Some(rate) = std::env::var("STAGEBOT_CHAOS_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
    {
        faults.fault_rate = rate;
    }
    let mut chaos = Run::start(&dir.path().join("chaos"), &sources, Some(faults)).await;
    chaos.day().await;
    let actual = chaos.end_state();
    chaos.stack.read_every_reply();
    let stats: ChaosStats = chaos.stack.fake.chaos_stats();
    let redelivered = chaos
        .stack
        .fake
        .hook_deliveries()
        .iter()
        .filter(|d| d.redelivery)
        .count();
    eprintln!(
        "chaos run (seed {seed}): calm {calm_calls} calls in {calm_time:?}; chaos {} calls, \
         {stats:?}, {redelivered} redeliveries, {} rounds needed more than one pass, in {:?}",
        chaos.stack.fake.requests().len(),
        chaos.rounds,
        started.elapsed()
    );
    chaos.stack.fake.set_chaos(None);
    // The chaos did happen: faults of every kind, both ways, and lost webhooks.
    assert!(
        stats.faults * 5 >= stats.calls || std::env::var("STAGEBOT_CHAOS_RATE").is_ok(),
        "{stats:?}"
    );
    assert_eq!(stats.by_kind.len(), 4, "{stats:?}");
    assert!(stats.applied > 0 && stats.webhooks_lost > 0, "{stats:?}");
    assert!(redelivered > 0, "nothing was redelivered");

    assert!(
        expected == actual,
        "the chaos run ended differently (seed {seed}; - fault-free, + chaos):\n{}",
        diff(&expected, &actual)
    );
    // What the comparison covers is not empty.
    assert!(expected.contains("staging: Live"), "{expected}");
    assert!(expected.contains("production: Live"), "{expected}");
    chaos.stack.stop().await;
}

#[test]
fn normalise_replaces_times_and_the_port() {
    assert_eq!(
        normalise(
            "live since 2026-11-29T23:15:35.123Z at http://x.localhost:4711/ (2026-11-29 23:15 UTC)",
            "4711"
        ),
        "live since TIME at http://x.localhost:PORT/ (TIME)"
    );
}

/// Found by the chaos run: a sticky comment GitHub created but whose answer was lost (502) was
/// posted again, leaving two sticky comments on the PR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_comment_whose_answer_was_lost_is_not_posted_twice() {
    let fake = FakeGitHub::start().await;
    let repo: RepoName = "octo/web".parse().unwrap();
    fake.add_installation(INSTALLATION, "octo");
    fake.add_repo(&repo, "main", INSTALLATION);
    fake.upsert_pr(
        &repo,
        FakePr::new(9, "b", Sha::new("abcdef1234567").unwrap()),
    );
    let gh = stagebot::github::GitHub::new(stagebot::github::GitHubConfig {
        api_url: fake.url(),
        app_id: fake.app_id(),
        private_key_pem: fake.private_key_pem(),
        retry: stagebot::github::RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..stagebot::github::RetryPolicy::default()
        },
    })
    .unwrap();
    let rc = gh.repo(INSTALLATION, repo.clone());
    fake.inject_fault(
        Fault::new(
            "/repos/octo/web/issues/9/comments",
            1,
            FaultKind::ServedThen502,
        )
        .method(Method::POST),
    );
    let id = rc
        .upsert_sticky_comment(PrNumber(9), None, "hello")
        .await
        .unwrap();
    let comments = fake.comments(&repo, PrNumber(9));
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert_eq!((comments[0].id, comments[0].is_sticky()), (id, true));
    // One POST (its answer lost), then a look that finds it; no second POST.
    assert_eq!(
        fake.requests_to("POST", "/repos/octo/web/issues/9/comments")
            .len(),
        1
    );
}

/// Found by the chaos run: a deployment GitHub created but whose answer was lost (502, or a
/// timeout) was created again; the first stayed without a status forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_whose_answer_was_lost_is_not_created_twice() {
    let w = crate::flows::World::new("").await;
    let sha = w.commit("lost-deploy", "v1", "");
    w.stack.fake.inject_fault(
        Fault::new(
            &format!("/repos/{}/deployments", w.repo()),
            1,
            FaultKind::ServedThen502,
        )
        .method(Method::POST),
    );
    w.stack
        .open_pr(&stagebot::testkit::TestPr::new(
            12,
            "lost-deploy",
            sha,
            &w.git.clone_url(),
        ))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(12, "lost-deploy");
    assert_eq!(env.state(), stagebot::environment::EnvState::Live);
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{}", env.id.slug));
    assert_eq!(deps.len(), 1, "{deps:#?}");
    let states: Vec<_> = deps[0].statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"]);
}

/// Found by the chaos run (at 50% faults): the report that a release went live failed for good,
/// and the preview moved on (a push) before the reconciler sent it again; the commit's status
/// and the release's deployment never showed that it had been live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_report_lost_for_good_is_made_up_when_the_environment_moves_on() {
    let w = crate::flows::World::new("").await;
    let sha1 = w.commit("owed", "v1", "");
    let mut pr = stagebot::testkit::TestPr::new(13, "owed", sha1.clone(), &w.git.clone_url());
    // Every deployment status fails, through all retries: the deploy's reports fail for good.
    w.stack.fake.inject_fault(
        Fault::new(
            &format!("/repos/{}/deployments/", w.repo()),
            1000,
            FaultKind::Status500,
        )
        .method(Method::POST),
    );
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(13, "owed");
    assert_eq!(env.state(), stagebot::environment::EnvState::Live);
    assert!(env.report_pending, "{env:?}");
    let slug = env.id.slug.clone();
    w.stack.fake.clear_faults();

    // A push: the preview moves on to release 2.
    let sha2 = w.commit("owed", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();

    let ours = |sha: &Sha| -> Vec<String> {
        w.stack
            .fake
            .statuses(w.repo(), sha)
            .into_iter()
            .filter(|s| s.context == "stagebot/preview")
            .map(|s| s.state)
            .collect()
    };
    assert_eq!(ours(&sha1).last().map(String::as_str), Some("success"));
    assert_eq!(ours(&sha2).last().map(String::as_str), Some("success"));
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{slug}"));
    let states: Vec<Vec<&str>> = deps
        .iter()
        .map(|d| d.statuses.iter().map(|s| s.state.as_str()).collect())
        .collect();
    assert_eq!(
        states,
        [vec!["success", "inactive"], vec!["in_progress", "success"]],
        "{deps:#?}"
    );
    assert!(!w.preview(13, "owed").report_pending);
}
