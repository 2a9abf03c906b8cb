//! The state diagram as a table: every (state × transition) pair, read from
//! docs/architecture.md ("The environment state machine"), checked against the transitions
//! themselves. Then the rules the transitions own.

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::types::RepoName;

const ARCHITECTURE: &str = include_str!("../docs/architecture.md");

const TRANSITIONS: [Transition; 20] = [
    Transition::RequestDeploy,
    Transition::Enqueue,
    Transition::LeaveQueue,
    Transition::WaitForCi,
    Transition::RecheckCi,
    Transition::FailCiGate,
    Transition::BeginDeploy,
    Transition::CommitLive,
    Transition::Restarted,
    Transition::Fail,
    Transition::FinishOp,
    Transition::RequestRestart,
    Transition::RequestTeardown,
    Transition::BeginTeardown,
    Transition::TeardownFailed,
    Transition::Destroyed,
    Transition::Extend,
    Transition::Visit,
    Transition::WarnExpiry,
    Transition::Recover,
];

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn sha(c: char) -> Sha {
    Sha::new(&c.to_string().repeat(40)).unwrap()
}

fn deploy(c: char, force: bool) -> Op {
    Op::Deploy {
        sha: sha(c),
        git_ref: "feature/login".into(),
        trigger: Trigger::PullRequest,
        by: "alice".into(),
        ack: None,
        force,
        gate: None,
        checks: None,
    }
}

fn teardown() -> Op {
    Op::Teardown {
        reason: "closed".into(),
        by: "alice".into(),
        ack: None,
    }
}

fn record(state: EnvState) -> EnvRecord {
    let repo: RepoName = "acme/webapp".parse().unwrap();
    let id = EnvId {
        repo,
        slug: Slug::new("pr-7-login").unwrap(),
    };
    let mut e = EnvRecord::new(id, EnvKind::Preview, "feature/login", now()).with_state(state);
    e.set_generation(4);
    e.set_expires_at(Some(now() + Duration::hours(10)));
    e
}

/// A record in `from` with what `t` needs besides its state (the op a runner would have), and
/// the transition applied to it.
fn run(from: EnvState, t: Transition) -> (EnvRecord, EnvRecord, Result<Change, TransitionError>) {
    let mut e = record(from);
    let g = e.generation();
    match t {
        Transition::RequestDeploy
        | Transition::Enqueue
        | Transition::LeaveQueue
        | Transition::WaitForCi
        | Transition::FailCiGate
        | Transition::BeginDeploy
        | Transition::CommitLive
        | Transition::Fail
        | Transition::FinishOp => e.set_op(Some(deploy('a', false))),
        Transition::RecheckCi => {
            e.set_op(Some(deploy('a', false)));
            e.set_ci_wait(Some("waiting for CI".into()));
        }
        Transition::Restarted => e.set_op(Some(Op::Restart { release: 1 })),
        Transition::RequestRestart => {
            e.set_current_release(Some(1));
            e.restart_backoff = Some(RestartBackoff {
                failures: 1,
                next_at: now() - Duration::minutes(1),
            });
        }
        Transition::BeginTeardown | Transition::TeardownFailed | Transition::Destroyed => {
            e.set_op(Some(teardown()))
        }
        Transition::RequestTeardown
        | Transition::Extend
        | Transition::Visit
        | Transition::WarnExpiry
        | Transition::Recover => {}
    }
    let before = e.clone();
    let out = match t {
        Transition::RequestDeploy => e.request_deploy(deploy('b', false)),
        Transition::Enqueue => e.enqueue(deploy('b', false), now()),
        Transition::LeaveQueue => e.leave_queue(),
        Transition::WaitForCi => e.wait_for_ci(g, &sha('a'), "waiting for CI", true),
        Transition::RecheckCi => e.recheck_ci(),
        Transition::FailCiGate => e.fail_ci_gate(g, &sha('a'), "CI failed"),
        Transition::BeginDeploy => e.begin_deploy(g, &sha('a'), false),
        Transition::CommitLive => e.commit_live(g, 1, "https://pr-7.example"),
        Transition::Restarted => e.restarted(g, 1),
        Transition::Fail => {
            let failure = Failure {
                message: "`build` exited with status 2".into(),
                log_tail: None,
            };
            e.fail(g, failure, None, now())
        }
        Transition::FinishOp => e.finish_op(g),
        Transition::RequestRestart => e.request_restart(now()),
        Transition::RequestTeardown => e.request_teardown("closed", "alice", None),
        Transition::BeginTeardown => e.begin_teardown(g),
        Transition::TeardownFailed => e.teardown_failed("teardown failed: boom".into()),
        Transition::Destroyed => e.destroyed(g),
        Transition::Extend => e.extend(now() + Duration::days(2), now()),
        Transition::Visit => e.visit(now(), Some(now() + Duration::days(1))),
        Transition::WarnExpiry => e.warn_expiry(now()),
        Transition::Recover => e.recover(1, Some((1, None))),
    };
    (before, e, out)
}

/// The table in docs/architecture.md: transition → the state it leads to from each state
/// (`—`: not a transition from there).
fn documented() -> Vec<(String, Vec<Option<EnvState>>)> {
    let mut lines = ARCHITECTURE
        .lines()
        .skip_while(|l| !l.starts_with("| transition |"));
    let header: Vec<&str> = cells(
        lines
            .next()
            .expect("the state table in docs/architecture.md"),
    );
    let states: Vec<&str> = EnvState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        header[1..],
        states[..],
        "the table's columns are the states, in order"
    );
    lines.next();
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let row = cells(l);
            let name = row[0].trim_matches('`').to_owned();
            let to = row[1..]
                .iter()
                .map(|c| match *c {
                    "—" => None,
                    s => Some(
                        *EnvState::ALL
                            .iter()
                            .find(|st| st.as_str() == s)
                            .unwrap_or_else(|| panic!("unknown state {s:?} in row {name}")),
                    ),
                })
                .collect();
            (name, to)
        })
        .collect()
}

fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

#[test]
fn the_documented_table_is_the_state_machine() {
    let table = documented();
    let names: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = TRANSITIONS.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, expected, "one row per transition, in order");
    let mut pairs = 0;
    for ((_, row), t) in table.iter().zip(TRANSITIONS) {
        for (from, want) in EnvState::ALL.into_iter().zip(row.iter().copied()) {
            pairs += 1;
            assert_eq!(target(from, t), want, "target({from}, {t})");
            let (before, after, out) = run(from, t);
            match (want, out) {
                (Some(to), Ok(change)) => {
                    assert_eq!(after.state(), to, "{from} --{t}-->");
                    assert_eq!((change.from, change.to, change.transition), (from, to, t));
                    assert_eq!(change.generation, after.generation());
                }
                (None, Err(TransitionError::Illegal(e))) => {
                    assert_eq!((e.from, e.transition), (from, t));
                    assert_eq!(
                        after, before,
                        "a refused {t} from {from} changed the record"
                    );
                }
                (want, got) => panic!("{from} --{t}--> expected {want:?}, got {got:?}"),
            }
        }
    }
    assert_eq!(pairs, 7 * TRANSITIONS.len());
}

#[test]
fn new_ops_bump_the_generation_and_the_runners_steps_do_not() {
    let bumps = [
        Transition::RequestDeploy,
        Transition::Enqueue,
        Transition::LeaveQueue,
        Transition::RequestRestart,
        Transition::RequestTeardown,
    ];
    for t in TRANSITIONS {
        for from in EnvState::ALL {
            let (before, after, out) = run(from, t);
            if let Ok(change) = out {
                let bumped = after.generation() == before.generation() + 1;
                assert_eq!(bumped, bumps.contains(&t), "{from} --{t}-->");
                assert_eq!(change.new_op, bumped, "{from} --{t}-->");
            }
        }
    }
}

#[test]
fn a_runner_step_of_an_older_generation_is_refused_and_changes_nothing() {
    let mut e = record(EnvState::Live);
    let g = e.request_deploy(deploy('a', false)).unwrap().generation;
    e.begin_deploy(g, &sha('a'), false).unwrap();
    // A newer commit arrives while the provider deploys: newest wins.
    let newer = e.request_deploy(deploy('b', false)).unwrap();
    assert_eq!(newer.generation, g + 1);
    let before = e.clone();
    for refused in [
        e.commit_live(g, 1, "https://x").unwrap_err(),
        e.fail(
            g,
            Failure {
                message: "x".into(),
                log_tail: None,
            },
            None,
            now(),
        )
        .unwrap_err(),
        e.begin_deploy(g, &sha('a'), false).unwrap_err(),
        e.finish_op(g).unwrap_err(),
        e.destroyed(g).unwrap_err(),
    ] {
        assert!(
            matches!(refused, TransitionError::Superseded { expected, found, .. } if expected == g && found == g + 1),
            "{refused}"
        );
    }
    assert_eq!(e, before);
    assert_eq!(e.op(), Some(&deploy('b', false)));
}

#[test]
fn the_same_deploy_requested_again_changes_nothing_unless_forced() {
    let mut e = record(EnvState::Live);
    let first = e.request_deploy(deploy('a', false)).unwrap();
    assert!(first.new_op && !first.unchanged);
    let again = e.request_deploy(deploy('a', false)).unwrap();
    assert!(again.unchanged && !again.new_op);
    assert_eq!(e.generation(), first.generation);
    let queued_again = e.enqueue(deploy('a', false), now()).unwrap();
    assert!(queued_again.unchanged);
    assert_eq!(e.state(), EnvState::Live);
    let forced = e.request_deploy(deploy('a', true)).unwrap();
    assert_eq!(forced.generation, first.generation + 1);
    // Another commit is a new op.
    let other = e.request_deploy(deploy('b', false)).unwrap();
    assert_eq!(other.generation, first.generation + 2);
    // A destroyed environment asked for the same commit deploys it again.
    let mut gone = record(EnvState::Destroyed);
    gone.set_op(Some(deploy('a', false)));
    assert!(!gone.request_deploy(deploy('a', false)).unwrap().unchanged);
    assert_eq!(gone.state(), EnvState::Pending);
}

#[test]
fn a_request_that_is_not_a_deploy_is_refused() {
    let mut e = record(EnvState::Live);
    let before = e.clone();
    for op in [teardown(), Op::Restart { release: 1 }] {
        assert!(matches!(
            e.request_deploy(op.clone()),
            Err(TransitionError::Illegal(_))
        ));
        assert!(matches!(
            e.enqueue(op, now()),
            Err(TransitionError::Illegal(_))
        ));
    }
    assert_eq!(e, before);
}

#[test]
fn extend_never_shortens_the_expiry() {
    let mut e = record(EnvState::Live);
    let far = now() + Duration::days(5);
    e.set_expires_at(Some(far));
    e.set_warned_at(Some(now()));
    e.extend(now() + Duration::days(1), now()).unwrap();
    assert_eq!(e.expires_at(), Some(far));
    assert_eq!(e.warned_at(), None, "an extension clears the warning");
    e.extend(now() + Duration::days(6), now()).unwrap();
    assert_eq!(e.expires_at(), Some(now() + Duration::days(6)));
    let mut none = record(EnvState::Live);
    none.set_expires_at(None);
    none.extend(now() + Duration::days(1), now()).unwrap();
    assert_eq!(none.expires_at(), Some(now() + Duration::days(1)));
}

#[test]
fn a_deploy_request_never_moves_the_expiry_earlier_unless_destroyed() {
    let mut e = record(EnvState::Live);
    let extended = now() + Duration::days(5);
    e.set_expires_at(Some(extended));
    e.note_deploy_request(Some(now() + Duration::days(3)), Some(3 * 86_400), now());
    assert_eq!(e.expires_at(), Some(extended));
    e.note_deploy_request(Some(now() + Duration::days(7)), None, now());
    assert_eq!(e.expires_at(), Some(now() + Duration::days(7)));
    assert_eq!(
        e.ttl_secs,
        Some(3 * 86_400),
        "an unknown TTL keeps the last one"
    );
    let mut gone = record(EnvState::Destroyed);
    gone.set_expires_at(Some(extended));
    gone.note_deploy_request(Some(now() + Duration::days(3)), None, now());
    assert_eq!(gone.expires_at(), Some(now() + Duration::days(3)));
}

#[test]
fn a_visit_moves_the_expiry_later_only() {
    let mut e = record(EnvState::Live);
    let expiry = e.expires_at().unwrap();
    e.set_warned_at(Some(now()));
    e.visit(now(), Some(expiry - Duration::hours(1))).unwrap();
    assert_eq!(e.expires_at(), Some(expiry));
    assert_eq!(
        e.warned_at(),
        Some(now()),
        "a warning stands while the expiry does"
    );
    e.visit(now(), Some(expiry + Duration::hours(1))).unwrap();
    assert_eq!(e.expires_at(), Some(expiry + Duration::hours(1)));
    assert_eq!(e.warned_at(), None);
    assert_eq!(e.last_visit, Some(now()));
}

/// Restart the live release `failures` times in a row, each failing; returns the waits.
fn failing_restarts(failures: u32) -> (EnvRecord, Vec<i64>) {
    let mut e = record(EnvState::Live);
    e.set_current_release(Some(3));
    let mut at = now();
    let mut waits = Vec::new();
    for _ in 0..failures {
        assert_eq!(e.restartable(at), Some(3), "restartable at {at}");
        let g = e.request_restart(at).unwrap().generation;
        e.begin_deploy(g, &sha('a'), true).unwrap();
        let failure = Failure {
            message: "`start` exited".into(),
            log_tail: None,
        };
        e.fail(g, failure, Some(3), at).unwrap();
        assert!(!e.report_pending, "a restart is never reported");
        let next = e.restart_backoff().unwrap().next_at;
        waits.push((next - at).num_minutes());
        // Not before the backoff ran out.
        assert_eq!(e.restartable(next - Duration::seconds(1)), None);
        assert!(e.request_restart(next - Duration::seconds(1)).is_err());
        at = next;
    }
    (e, waits)
}

#[test]
fn failed_restarts_back_off_and_a_success_resets_the_count() {
    let (mut e, waits) = failing_restarts(8);
    assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(e.restart_backoff().map(|b| b.failures), Some(8));
    let at = e.restart_backoff().unwrap().next_at;
    let g = e.request_restart(at).unwrap().generation;
    e.begin_deploy(g, &sha('a'), true).unwrap();
    e.restarted(g, 3).unwrap();
    assert_eq!(e.state(), EnvState::Live);
    assert_eq!(e.restart_backoff(), None);
    assert_eq!(e.current_release(), Some(3));
}

#[test]
fn what_counts_as_restartable() {
    // A failed deploy (not a restart) is not restarted.
    let mut failed = record(EnvState::Live);
    failed.set_current_release(Some(1));
    let g = failed
        .request_deploy(deploy('b', false))
        .unwrap()
        .generation;
    failed.begin_deploy(g, &sha('b'), false).unwrap();
    let failure = Failure {
        message: "x".into(),
        log_tail: None,
    };
    failed.fail(g, failure, None, now()).unwrap();
    assert_eq!(failed.state(), EnvState::Failed);
    assert!(failed.report_pending);
    assert_eq!(failed.restartable(now() + Duration::days(1)), None);
    // Live with a release, no op: yes. With an op, or nothing deployed: no.
    let mut live = record(EnvState::Live);
    assert_eq!(live.restartable(now()), None, "nothing deployed");
    live.set_current_release(Some(2));
    assert_eq!(live.restartable(now()), Some(2));
    live.set_op(Some(deploy('c', false)));
    assert_eq!(live.restartable(now()), None, "an op runs first");
    for state in [
        EnvState::Pending,
        EnvState::Queued,
        EnvState::Deploying,
        EnvState::TearingDown,
        EnvState::Destroyed,
    ] {
        let mut e = record(state);
        e.set_current_release(Some(2));
        assert_eq!(e.restartable(now()), None, "{state}");
    }
}

#[test]
fn the_runner_is_idle_without_an_op_when_queued_or_parked_on_ci() {
    let mut e = record(EnvState::Pending);
    assert!(e.runner_idle());
    let g = e.request_deploy(deploy('a', false)).unwrap().generation;
    assert!(!e.runner_idle());
    e.wait_for_ci(g, &sha('a'), "waiting for CI: 0 of 1", true)
        .unwrap();
    assert!(e.runner_idle() && e.waits_for_ci());
    assert!(!e.recheck_ci().unwrap().unchanged);
    assert!(!e.runner_idle());
    assert!(e.recheck_ci().unwrap().unchanged, "nothing waits any more");
    let mut q = record(EnvState::Pending);
    q.enqueue(deploy('a', false), now()).unwrap();
    assert!(q.runner_idle());
    assert_eq!(q.queued_at(), Some(now()));
    q.leave_queue().unwrap();
    assert!(!q.runner_idle());
    assert_eq!(q.queued_at(), None);
}

#[test]
fn a_whole_story_through_the_transitions() {
    let mut e = record(EnvState::Pending);
    e.set_generation(0);
    let g1 = e.request_deploy(deploy('a', false)).unwrap().generation;
    e.begin_deploy(g1, &sha('a'), false).unwrap();
    assert_eq!(e.deploying(), Some(&sha('a')));
    e.commit_live(g1, 1, "https://pr-7.example").unwrap();
    assert_eq!(
        (e.state(), e.current_release(), e.releases(), e.op()),
        (EnvState::Live, Some(1), 1, None)
    );
    assert!(e.seeded() && e.report_pending);
    let g2 = e.request_deploy(deploy('b', false)).unwrap().generation;
    assert_eq!(
        e.state(),
        EnvState::Live,
        "the old release serves until the runner starts"
    );
    e.begin_deploy(g2, &sha('b'), false).unwrap();
    e.commit_live(g2, 2, "https://pr-7.example").unwrap();
    let g3 = e
        .request_teardown("closed", "alice", None)
        .unwrap()
        .generation;
    e.begin_teardown(g3).unwrap();
    e.destroyed(g3).unwrap();
    assert_eq!(
        (e.state(), e.current_release(), e.expires_at(), e.seeded()),
        (EnvState::Destroyed, Some(2), None, false)
    );
    assert_eq!(e.generation(), 3);
}
