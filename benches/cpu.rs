//! Pure CPU paths, single-threaded, in a tight loop: event parsing on GitHub's example payloads,
//! the command parser on typical and adversarial comments, the policy, HMAC verification and
//! slugs. Reports the median of `BENCH_REPEATS` rounds (default 3) of ~0.5 s each.
//!
//! Run: `cargo bench --bench cpu`

mod common;

use std::path::PathBuf;

use common::fixtures;
use stagebot::command::parse_commands;
use stagebot::event::parse_event;
use stagebot::event::payloads::{self, PrPayload};
use stagebot::policy::{self, Limits, State};
use stagebot::repo_config::RepoConfig;
use stagebot::slug::preview_slug;
use stagebot::types::{PrNumber, RepoName};
use stagebot::webhook::{WebhookSecrets, sign};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/github-webhook-examples")
}

fn row(name: &str, input: &str, rounds: Vec<f64>) {
    let spread = {
        let lo = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rounds.iter().copied().fold(0.0, f64::max);
        format!("{}–{}", common::per_op(lo), common::per_op(hi))
    };
    let med = common::median(rounds);
    println!(
        "| {name} | {input} | {} | {} | {spread} |",
        common::per_op(med),
        common::ops_per_sec(med)
    );
}

/// A 64 KiB comment: prose, fenced and indented code blocks full of `/stage`-looking lines,
/// quotes, inline code, and one real command at the end.
fn big_comment() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 64 * 1024 {
        s.push_str(&format!(
            "Paragraph {i} mentions `/stage` inline and [a /promote link](https://x.invalid/{i}).\n\n\
             ```sh\n/stage\n/promote staging\n/rollback 3\n```\n\n\
             > /teardown in a quote\n\n    /stage in an indented block\n\n"
        ));
        i += 1;
    }
    s.push_str("/stage\n");
    s
}

fn main() {
    if common::skip_unless_cargo_bench() {
        return;
    }
    common::header("pure CPU paths (one core)");
    println!("| path | input | time/op | ops/s | spread of rounds |");
    println!("|---|---|---|---|---|");

    // 1. parse_event on every pull_request example.
    let dir = examples_dir().join("pull_request");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let payloads: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let total: usize = payloads.iter().map(Vec::len).sum();
    let rounds = common::ops(|| {
        for p in &payloads {
            std::hint::black_box(parse_event("pull_request", p).is_ok());
        }
    });
    let per_payload: Vec<f64> = rounds.iter().map(|ns| ns / payloads.len() as f64).collect();
    row(
        "event::parse_event",
        &format!(
            "{} pull_request examples, mean {} KiB (per payload)",
            payloads.len(),
            total / payloads.len() / 1024
        ),
        per_payload,
    );
    let opened = std::fs::read(dir.join("00-opened.json")).unwrap();
    row(
        "event::parse_event",
        &format!("00-opened.json ({} KiB)", opened.len() / 1024),
        common::ops(|| parse_event("pull_request", &opened).is_ok()),
    );
    row(
        "serde_json → Value (ingress check)",
        &format!("00-opened.json ({} KiB)", opened.len() / 1024),
        common::ops(|| serde_json::from_slice::<serde_json::Value>(&opened).is_ok()),
    );

    // 2. parse_commands.
    let typical = "Looks good to me, thanks!\n\n/stage\n";
    row(
        "command::parse_commands",
        "typical (`LGTM` + `/stage`, 34 B)",
        common::ops(|| parse_commands(typical).len()),
    );
    let several = "Deploying this to check the login flow.\r\n\r\n/stage\r\n/promote staging\r\n/extend 2d\r\n/rollback 3\r\n";
    row(
        "command::parse_commands",
        "4 commands, CRLF (95 B)",
        common::ops(|| parse_commands(several).len()),
    );
    let big = big_comment();
    assert_eq!(
        parse_commands(&big).len(),
        1,
        "only the last line is a command"
    );
    row(
        "command::parse_commands",
        &format!("64 KiB, code blocks/quotes/links ({} B)", big.len()),
        common::ops(|| parse_commands(&big).len()),
    );
    let adversarial: Vec<(&str, String)> = vec![
        ("64 KiB of `/stage` lines", "/stage\n".repeat(64 * 1024 / 7)),
        ("64 KiB of unclosed backticks", "`a ".repeat(64 * 1024 / 3)),
        ("64 KiB of `[` (unclosed links)", "[".repeat(64 * 1024)),
        ("64 KiB of nested `>` quotes", ">".repeat(64 * 1024)),
        ("64 KiB of `*a` emphasis openers", "*a".repeat(32 * 1024)),
        ("64 KiB one line, no newline", "x".repeat(64 * 1024)),
    ];
    for (label, text) in &adversarial {
        row(
            "command::parse_commands",
            label,
            common::ops(|| parse_commands(text).len()),
        );
    }

    // 3. policy::decide for `pull_request.opened`, with few and many environments.
    let repo = RepoName::new("acme", "webapp").unwrap();
    let mut p = PrPayload::new("opened", &repo, 4242);
    p.head_ref = "feature/new-login".into();
    p.installation_id = Some(1);
    let body = serde_json::to_vec(&payloads::pull_request(&p)).unwrap();
    let event = parse_event("pull_request", &body).unwrap();
    let config = RepoConfig::default();
    for (envs, releases) in [(0usize, 0u32), (10, 10), (1000, 10)] {
        let recs: Vec<_> = (1..=envs as u64)
            .map(|pr| fixtures::env(&repo, pr, releases))
            .collect();
        let rels = recs
            .iter()
            .map(|e| {
                (
                    e.id.slug.clone(),
                    (1..=releases).map(|n| fixtures::release(e, n)).collect(),
                )
            })
            .collect();
        let state = State {
            now: fixtures::now(),
            envs: recs,
            releases: rels,
            pr_record: None,
            pr_info: None,
            permission: None,
            head_profiles: None,
            previews_in_use: envs,
            limits: Limits::default(),
            received: None,
            open_pr_branches: Vec::new(),
        };
        row(
            "policy::decide (`opened`)",
            &format!("{envs} envs × {releases} releases in the repo"),
            common::ops(|| {
                matches!(
                    policy::decide(&event, &config, &state),
                    policy::Decision::Act(_)
                )
            }),
        );
    }

    // 4. HMAC verification.
    let secrets = WebhookSecrets::parse("bench-secret").unwrap();
    for (label, len) in [("25 KiB body", 25 * 1024), ("1 MiB body", 1024 * 1024)] {
        let body = vec![b'x'; len];
        let sig = sign("bench-secret", &body);
        let rounds = common::ops(|| secrets.verify(&sig, &body));
        let med = common::median(rounds.clone());
        row(
            "webhook verify (HMAC-SHA256)",
            &format!(
                "{label} — {:.0} MiB/s",
                len as f64 / (med / 1e9) / 1048576.0
            ),
            rounds,
        );
    }
    let body = vec![b'x'; 1024 * 1024];
    let sig = sign("old", &body);
    let rotated = WebhookSecrets::parse("new,old").unwrap();
    row(
        "webhook verify (HMAC-SHA256)",
        "1 MiB body, matching the 2nd of 2 secrets",
        common::ops(|| rotated.verify(&sig, &body)),
    );

    // 5. Slugs.
    row(
        "slug::preview_slug",
        "`feature/login` (PR 42)",
        common::ops(|| preview_slug(Some(PrNumber(42)), "feature/login")),
    );
    let long = "Feature/ÜBER-lange_Branch.Name mit Leerzeichen und 🚀 ".repeat(4);
    row(
        "slug::preview_slug",
        "220-char unicode branch (hashed)",
        common::ops(|| preview_slug(Some(PrNumber(42)), &long)),
    );
}
