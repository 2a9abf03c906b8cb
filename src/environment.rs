//! An environment as a typed state machine (docs/architecture.md, "The environment state
//! machine"): its stored record ([`EnvRecord`]), its states, its durable op and its releases.
//!
//! Nothing outside this module writes an environment's state, op, generation or release
//! bookkeeping: those fields are private and change only through the named transitions below
//! (`request_deploy`, `begin_deploy`, `commit_live`, `fail`, `request_teardown`, …). Each
//! transition checks the state it starts from (and, for the runner's own steps, the generation
//! the caller read) and returns a [`Change`] the caller can log, or a [`TransitionError`]
//! without touching the record. The store persists records; it never decides anything.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{EnvId, EnvKind, PrNumber, Sha, Slug};

/// The layout version of [`EnvRecord`] this build writes (`v`); older records are migrated by
/// the store when it opens (see `Store::open`).
pub const ENV_RECORD_VERSION: u32 = 2;

/// The environment state machine's states (docs/architecture.md, "The environment state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvState {
    Pending,
    /// Waiting for a free preview slot (capacity limit).
    Queued,
    Deploying,
    Live,
    Failed,
    TearingDown,
    Destroyed,
}

impl EnvState {
    /// Every state, in the order of the documentation's table.
    pub const ALL: [EnvState; 7] = [
        EnvState::Pending,
        EnvState::Queued,
        EnvState::Deploying,
        EnvState::Live,
        EnvState::Failed,
        EnvState::TearingDown,
        EnvState::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvState::Pending => "pending",
            EnvState::Queued => "queued",
            EnvState::Deploying => "deploying",
            EnvState::Live => "live",
            EnvState::Failed => "failed",
            EnvState::TearingDown => "tearing_down",
            EnvState::Destroyed => "destroyed",
        }
    }
    /// Counts against the preview capacity.
    pub fn occupies_slot(self) -> bool {
        matches!(
            self,
            EnvState::Deploying | EnvState::Live | EnvState::Pending | EnvState::Failed
        )
    }
}

impl std::fmt::Display for EnvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    PullRequest,
    Push,
    Stage,
    Promote {
        from: Slug,
        /// The release of `from` that was promoted (recorded since promotions without a
        /// preview; older records lack it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<u32>,
    },
    Rollback {
        to_release: u32,
    },
    Merge,
    /// The live release deployed again as it is (the dashboard's "Redeploy").
    Redeploy {
        release: u32,
    },
    /// Asked for on the dashboard by a signed-in user (the release's `by`): what was asked.
    Dashboard {
        then: Box<Trigger>,
    },
}

impl Trigger {
    /// What was asked for, seen through [`Trigger::Dashboard`].
    pub fn inner(&self) -> &Trigger {
        match self {
            Trigger::Dashboard { then } => then.inner(),
            other => other,
        }
    }

    /// Back to a commit that ran before (a rollback or a redeploy): no CI gate.
    pub fn is_rollback(&self) -> bool {
        matches!(
            self.inner(),
            Trigger::Rollback { .. } | Trigger::Redeploy { .. }
        )
    }
}

/// The durable intent for an environment: persisted before the work starts, cleared when the
/// outcome is committed, so a crash in between means the work is done again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Deploy {
        sha: Sha,
        git_ref: String,
        trigger: Trigger,
        by: String,
        /// A PR comment to react to when done.
        ack: Option<u64>,
        /// Deploy even when this commit is already live (a restart or a forced `/stage`).
        force: bool,
        /// The CI gate the commit must pass before the deploy starts (`require_checks`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<crate::repo_config::CiGate>,
        /// What allowed the deploy without a gate, recorded on the release (an admin's
        /// `--skip-checks`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checks: Option<String>,
    },
    /// Start the live release again as it was (after a restart of stagebot); no new release.
    Restart { release: u32 },
    Teardown {
        reason: String,
        by: String,
        ack: Option<u64>,
    },
}

/// One successful deploy (docs/architecture.md, "The environment state machine").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub v: u32,
    pub n: u32,
    pub sha: Sha,
    pub git_ref: String,
    pub by: String,
    pub trigger: Trigger,
    pub at: DateTime<Utc>,
    pub url: String,
    /// The log URL of this release's build and start output.
    pub log: String,
    pub pr: Option<PrNumber>,
    /// The CI result that allowed this release (`require_checks`), or how the gate was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
    /// "reused artifact of release #n (env)" when the local provider did not run `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

/// Failed restarts of the live release (after stagebot restarted and found it stopped): how
/// many in a row, and when the reconciler may try again. Owned by [`EnvRecord::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartBackoff {
    pub failures: u32,
    pub next_at: DateTime<Utc>,
}

impl RestartBackoff {
    /// The wait after the `failures`-th failed restart in a row: 2, 4, 8, 16, 32, then 60
    /// minutes.
    pub fn delay(failures: u32) -> chrono::Duration {
        let minutes = 1i64 << failures.clamp(1, 6);
        chrono::Duration::minutes(minutes.min(60))
    }
}

/// The named transitions (docs/architecture.md, "The environment state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A deploy of a commit is asked for (webhook, command, operator).
    RequestDeploy,
    /// A deploy is asked for while no preview slot is free: it waits in the queue.
    Enqueue,
    /// A queued deploy gets its slot.
    LeaveQueue,
    /// The deploy's CI gate is not decided yet: the runner parks the op.
    WaitForCi,
    /// A check event (or the reconciler) wakes a parked deploy.
    RecheckCi,
    /// The CI gate failed before the deploy began.
    FailCiGate,
    /// The runner starts the deploy (or a restart of the live release).
    BeginDeploy,
    /// A deploy succeeded: the new release is live.
    CommitLive,
    /// A restart of the live release succeeded.
    Restarted,
    /// A deploy or restart failed.
    Fail,
    /// The op needs no work (the commit is already live; the release to restart is gone).
    FinishOp,
    /// The reconciler found the live release stopped: start it again.
    RequestRestart,
    /// A teardown is asked for.
    RequestTeardown,
    /// The runner starts the teardown.
    BeginTeardown,
    /// A teardown attempt failed (the op stays; the runner retries).
    TeardownFailed,
    /// The teardown is done.
    Destroyed,
    /// `/extend`: the expiry moves later, never earlier.
    Extend,
    /// The proxy saw a visit: activity, and the expiry moves later, never earlier.
    Visit,
    /// The sweeper warned about the expiry.
    WarnExpiry,
    /// `stagebot recover`: the record rebuilt from GitHub's deployments.
    Recover,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::RequestDeploy => "request_deploy",
            Transition::Enqueue => "enqueue",
            Transition::LeaveQueue => "leave_queue",
            Transition::WaitForCi => "wait_for_ci",
            Transition::RecheckCi => "recheck_ci",
            Transition::FailCiGate => "fail_ci_gate",
            Transition::BeginDeploy => "begin_deploy",
            Transition::CommitLive => "commit_live",
            Transition::Restarted => "restarted",
            Transition::Fail => "fail",
            Transition::FinishOp => "finish_op",
            Transition::RequestRestart => "request_restart",
            Transition::RequestTeardown => "request_teardown",
            Transition::BeginTeardown => "begin_teardown",
            Transition::TeardownFailed => "teardown_failed",
            Transition::Destroyed => "destroyed",
            Transition::Extend => "extend",
            Transition::Visit => "visit",
            Transition::WarnExpiry => "warn_expiry",
            Transition::Recover => "recover",
        }
    }
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine does not have from this state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{transition}` is not a transition from `{from}`")]
pub struct IllegalTransition {
    pub from: EnvState,
    pub transition: Transition,
}

/// Why a transition was refused. The record is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The caller read the record at `expected`; a newer op replaced it meanwhile (newest wins).
    #[error(
        "`{transition}` of generation {expected} refused: the environment is at generation {found}"
    )]
    Superseded {
        transition: Transition,
        expected: u64,
        found: u64,
    },
}

/// What a transition did, for the caller's logs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub transition: Transition,
    pub from: EnvState,
    pub to: EnvState,
    /// The generation after the transition.
    pub generation: u64,
    /// A new op was written (the generation was bumped): a runner has work.
    pub new_op: bool,
    /// Nothing was written: the transition found the record already as asked (the same deploy
    /// requested again).
    pub unchanged: bool,
}

/// The failure a [`EnvRecord::fail`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    pub v: u32,
    pub id: EnvId,
    pub kind: EnvKind,
    state: EnvState,
    pub branch: String,
    pub pr: Option<PrNumber>,
    pub installation_id: Option<u64>,
    pub clone_url: String,
    pub host: String,
    pub url: String,
    /// Bumped whenever `op` is replaced: a runner only commits the outcome of its own generation.
    generation: u64,
    op: Option<Op>,
    /// The commit being deployed right now.
    deploying: Option<Sha>,
    /// The release that is live (or was, before a teardown).
    current_release: Option<u32>,
    releases: u32,
    pub last_error: Option<String>,
    pub last_log_tail: Option<String>,
    pub profile: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    /// The last request the proxy forwarded to it, as the sweeper last recorded it.
    #[serde(default)]
    pub last_visit: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    warned_at: Option<DateTime<Utc>>,
    /// Inactivity TTL in seconds (previews), from the repo config at the last deploy.
    pub ttl_secs: Option<u64>,
    /// When the environment entered the capacity queue.
    queued_at: Option<DateTime<Utc>>,
    /// Commits this environment has been asked for or moved past, newest last (bounded): a late
    /// delivery naming one of them never moves the environment back.
    pub seen_shas: Vec<Sha>,
    /// GitHub deployment id per commit (so a retried report never creates a second one).
    pub deployments: BTreeMap<String, u64>,
    /// A transition GitHub has not been told about yet (set with the transition, cleared when
    /// the report went through; the reconciler retries it).
    pub report_pending: bool,
    /// The commit of the last deploy attempt (what a failure report is about).
    #[serde(default)]
    attempted: Option<Sha>,
    /// The `seed` hook has run for this incarnation of the environment.
    #[serde(default)]
    seeded: bool,
    /// Failed restarts in a row and when the next may happen (schema 2; schema 1 stored
    /// `restart_failures` and `next_restart_at`, migrated on open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_backoff: Option<RestartBackoff>,
    /// A fork PR's preview (its branch name is the fork's, not this repository's).
    #[serde(default)]
    pub fork: bool,
    /// The pending deploy waits for CI (`require_checks`): what it waits for, as shown on
    /// GitHub. The runner is idle meanwhile; a check event for the commit wakes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ci_wait: Option<String>,
    /// The repository is private (from the last deploy's payload): hidden from anonymous
    /// visitors. A record written before stagebot knew counts as private until its next deploy.
    #[serde(default = "unknown_is_private")]
    pub private: bool,
}

fn unknown_is_private() -> bool {
    true
}

/// The states a transition may start from.
fn allowed(t: Transition) -> &'static [EnvState] {
    use EnvState::*;
    match t {
        Transition::RequestDeploy | Transition::RecheckCi | Transition::Visit => &EnvState::ALL,
        Transition::Enqueue => &[Pending, Queued, TearingDown, Destroyed],
        Transition::LeaveQueue => &[Queued],
        Transition::WaitForCi | Transition::FailCiGate => {
            &[Pending, Deploying, Live, Failed, TearingDown]
        }
        Transition::BeginDeploy => &[Pending, Deploying, Live, Failed, TearingDown],
        Transition::CommitLive | Transition::Restarted | Transition::Fail => &[Deploying],
        Transition::FinishOp => &[Pending, Deploying, Live, Failed, TearingDown],
        Transition::RequestRestart => &[Live, Failed],
        Transition::RequestTeardown => &[Pending, Queued, Deploying, Live, Failed, TearingDown],
        Transition::BeginTeardown => &[Pending, Deploying, Live, Failed, TearingDown],
        Transition::TeardownFailed | Transition::Destroyed => &[TearingDown],
        Transition::Extend | Transition::WarnExpiry => &[Pending, Queued, Deploying, Live, Failed],
        Transition::Recover => &[Pending],
    }
}

/// The state a legal transition leads to from `from` (the state diagram as a function; the
/// table test in `environment_tests.rs` checks every pair against docs/architecture.md).
pub fn target(from: EnvState, t: Transition) -> Option<EnvState> {
    use EnvState::*;
    if !allowed(t).contains(&from) {
        return None;
    }
    Some(match t {
        Transition::RequestDeploy => match from {
            Queued | Destroyed => Pending,
            other => other,
        },
        Transition::Enqueue => Queued,
        Transition::LeaveQueue => Pending,
        // A queued environment runs nothing: its runner (idle while queued) does the teardown.
        Transition::RequestTeardown if from == Queued => Pending,
        Transition::FailCiGate | Transition::Fail => Failed,
        Transition::BeginDeploy => Deploying,
        Transition::CommitLive | Transition::Restarted => Live,
        Transition::BeginTeardown => TearingDown,
        Transition::Destroyed => Destroyed,
        Transition::Recover => Live,
        Transition::WaitForCi
        | Transition::RecheckCi
        | Transition::FinishOp
        | Transition::RequestRestart
        | Transition::RequestTeardown
        | Transition::TeardownFailed
        | Transition::Extend
        | Transition::Visit
        | Transition::WarnExpiry => from,
    })
}

impl EnvRecord {
    /// A new environment in `pending`, with nothing deployed yet; callers fill in where it
    /// comes from (`pr`, `installation_id`, `clone_url`, `host`, `url`…).
    pub fn new(id: EnvId, kind: EnvKind, branch: &str, now: DateTime<Utc>) -> Self {
        Self {
            v: ENV_RECORD_VERSION,
            id,
            kind,
            state: EnvState::Pending,
            branch: branch.to_owned(),
            pr: None,
            installation_id: None,
            clone_url: String::new(),
            host: String::new(),
            url: String::new(),
            generation: 0,
            op: None,
            deploying: None,
            current_release: None,
            releases: 0,
            last_error: None,
            last_log_tail: None,
            profile: None,
            created_at: now,
            updated_at: now,
            last_activity: now,
            last_visit: None,
            expires_at: None,
            warned_at: None,
            ttl_secs: None,
            queued_at: None,
            seen_shas: Vec::new(),
            deployments: BTreeMap::new(),
            report_pending: false,
            attempted: None,
            seeded: false,
            restart_backoff: None,
            fork: false,
            private: false,
            ci_wait: None,
        }
    }

    // -- reading ------------------------------------------------------------------------------

    pub fn state(&self) -> EnvState {
        self.state
    }
    /// What should happen next (`None`: nothing to do).
    pub fn op(&self) -> Option<&Op> {
        self.op.as_ref()
    }
    /// Bumped whenever the op is replaced.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The commit being deployed right now.
    pub fn deploying(&self) -> Option<&Sha> {
        self.deploying.as_ref()
    }
    /// The release that is live (or was, before a teardown).
    pub fn current_release(&self) -> Option<u32> {
        self.current_release
    }
    /// The highest release number recorded.
    pub fn releases(&self) -> u32 {
        self.releases
    }
    /// The commit of the last deploy attempt.
    pub fn attempted(&self) -> Option<&Sha> {
        self.attempted.as_ref()
    }
    /// What a parked deploy waits for (`require_checks`).
    pub fn ci_wait(&self) -> Option<&str> {
        self.ci_wait.as_deref()
    }
    pub fn queued_at(&self) -> Option<DateTime<Utc>> {
        self.queued_at
    }
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
    pub fn warned_at(&self) -> Option<DateTime<Utc>> {
        self.warned_at
    }
    /// The `seed` hook has run for this incarnation of the environment.
    pub fn seeded(&self) -> bool {
        self.seeded
    }
    pub fn restart_backoff(&self) -> Option<RestartBackoff> {
        self.restart_backoff
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.state, EnvState::Destroyed)
    }
    /// A deploy op parked until its CI gate changes (`require_checks`).
    pub fn waits_for_ci(&self) -> bool {
        self.ci_wait.is_some() && matches!(self.op, Some(Op::Deploy { .. }))
    }
    /// Nothing for a runner to do now: no op, queued, or parked on CI.
    pub fn runner_idle(&self) -> bool {
        self.op.is_none() || self.state == EnvState::Queued || self.waits_for_ci()
    }
    /// The release to start again when its process is found stopped: the live one, or after
    /// failed restarts, the one whose restart backoff has run out by `now`.
    pub fn restartable(&self, now: DateTime<Utc>) -> Option<u32> {
        if self.op.is_some() {
            return None;
        }
        let ok = match self.state {
            EnvState::Live => true,
            EnvState::Failed => self.restart_backoff.is_some_and(|b| b.next_at <= now),
            _ => false,
        };
        self.current_release.filter(|_| ok)
    }

    /// Remember `sha` (bounded to the last 100).
    pub fn remember(&mut self, sha: &Sha) {
        if !self.seen_shas.contains(sha) {
            self.seen_shas.push(sha.clone());
            if self.seen_shas.len() > 100 {
                self.seen_shas.remove(0);
            }
        }
    }

    // -- transitions --------------------------------------------------------------------------

    fn check(&self, t: Transition) -> Result<EnvState, TransitionError> {
        target(self.state, t).ok_or(TransitionError::Illegal(IllegalTransition {
            from: self.state,
            transition: t,
        }))
    }

    fn check_gen(&self, t: Transition, expected: u64) -> Result<EnvState, TransitionError> {
        if self.generation != expected {
            return Err(TransitionError::Superseded {
                transition: t,
                expected,
                found: self.generation,
            });
        }
        self.check(t)
    }

    fn moved(&mut self, t: Transition, to: EnvState, new_op: bool) -> Change {
        let from = self.state;
        self.state = to;
        if new_op {
            self.generation += 1;
        }
        Change {
            transition: t,
            from,
            to,
            generation: self.generation,
            new_op,
            unchanged: false,
        }
    }

    fn unchanged(&self, t: Transition) -> Change {
        Change {
            transition: t,
            from: self.state,
            to: self.state,
            generation: self.generation,
            new_op: false,
            unchanged: true,
        }
    }

    /// A deploy was asked for: an activity that moves the expiry to `expires` (never earlier
    /// than what `/extend` granted, unless the environment was destroyed) and clears a given
    /// warning. Called with every deploy request, also one that changes nothing else.
    pub fn note_deploy_request(
        &mut self,
        expires: Option<DateTime<Utc>>,
        ttl_secs: Option<u64>,
        now: DateTime<Utc>,
    ) {
        self.last_activity = now;
        self.expires_at = match (expires, self.expires_at) {
            (Some(new), Some(old)) if self.state != EnvState::Destroyed => Some(new.max(old)),
            (new, old) => new.or(old),
        };
        self.ttl_secs = ttl_secs.or(self.ttl_secs);
        self.warned_at = None;
        self.updated_at = now;
    }

    /// Same-op idempotence: the same commit already asked for (not forced) changes nothing.
    fn same_deploy(&self, op: &Op) -> bool {
        match (op, &self.op) {
            (
                Op::Deploy {
                    sha, force: false, ..
                },
                Some(Op::Deploy { sha: pending, .. }),
            ) => sha == pending && self.is_active(),
            _ => false,
        }
    }

    fn deploy_op(&self, t: Transition, op: &Op) -> Result<(), TransitionError> {
        match op {
            Op::Deploy { .. } => Ok(()),
            _ => Err(IllegalTransition {
                from: self.state,
                transition: t,
            }
            .into()),
        }
    }

    /// Ask for a deploy (`op` must be [`Op::Deploy`]); the runner does it. From every state:
    /// a newer op replaces an older one (newest wins). A queued or destroyed environment
    /// becomes `pending`.
    pub fn request_deploy(&mut self, op: Op) -> Result<Change, TransitionError> {
        let t = Transition::RequestDeploy;
        self.deploy_op(t, &op)?;
        if self.same_deploy(&op) {
            return Ok(self.unchanged(t));
        }
        let to = self.check(t)?;
        if to != EnvState::Queued {
            self.queued_at = None;
        }
        self.op = Some(op);
        self.ci_wait = None;
        Ok(self.moved(t, to, true))
    }

    /// Ask for a deploy that waits for a free preview slot (`op` must be [`Op::Deploy`]).
    pub fn enqueue(&mut self, op: Op, now: DateTime<Utc>) -> Result<Change, TransitionError> {
        let t = Transition::Enqueue;
        self.deploy_op(t, &op)?;
        if self.same_deploy(&op) {
            return Ok(self.unchanged(t));
        }
        let to = self.check(t)?;
        self.op = Some(op);
        self.ci_wait = None;
        self.queued_at.get_or_insert(now);
        Ok(self.moved(t, to, true))
    }

    /// A queued deploy got its slot: the runner may start it.
    pub fn leave_queue(&mut self) -> Result<Change, TransitionError> {
        let to = self.check(Transition::LeaveQueue)?;
        self.queued_at = None;
        Ok(self.moved(Transition::LeaveQueue, to, true))
    }

    /// The deploy's CI gate is undecided (`text` says what it waits for): the op is parked
    /// until [`EnvRecord::recheck_ci`]. `report`: a report (the queued deployment) is owed.
    pub fn wait_for_ci(
        &mut self,
        expected: u64,
        sha: &Sha,
        text: &str,
        report: bool,
    ) -> Result<Change, TransitionError> {
        let t = Transition::WaitForCi;
        let to = self.check_gen(t, expected)?;
        if !matches!(self.op, Some(Op::Deploy { .. })) {
            return Err(IllegalTransition {
                from: self.state,
                transition: t,
            }
            .into());
        }
        self.ci_wait = Some(text.to_owned());
        self.attempted = Some(sha.clone());
        if report {
            self.report_pending = true;
        }
        Ok(self.moved(t, to, false))
    }

    /// Wake a deploy parked on its CI gate; unchanged when none waits.
    pub fn recheck_ci(&mut self) -> Result<Change, TransitionError> {
        let t = Transition::RecheckCi;
        let to = self.check(t)?;
        if !self.waits_for_ci() {
            return Ok(self.unchanged(t));
        }
        self.ci_wait = None;
        Ok(self.moved(t, to, false))
    }

    /// The CI gate failed before the deploy began: the op ends, `failed`, a report is owed.
    pub fn fail_ci_gate(
        &mut self,
        expected: u64,
        sha: &Sha,
        text: &str,
    ) -> Result<Change, TransitionError> {
        let t = Transition::FailCiGate;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        self.ci_wait = None;
        self.deploying = None;
        self.attempted = Some(sha.clone());
        self.last_error = Some(text.to_owned());
        self.last_log_tail = None;
        self.report_pending = true;
        Ok(self.moved(t, to, false))
    }

    /// The runner starts deploying `sha` (persisted before the provider is called). A restart
    /// of the live release owes no report.
    pub fn begin_deploy(
        &mut self,
        expected: u64,
        sha: &Sha,
        restart: bool,
    ) -> Result<Change, TransitionError> {
        let t = Transition::BeginDeploy;
        let to = self.check_gen(t, expected)?;
        match (&self.op, restart) {
            (Some(Op::Deploy { .. }), false) | (Some(Op::Restart { .. }), true) => {}
            _ => {
                return Err(IllegalTransition {
                    from: self.state,
                    transition: t,
                }
                .into());
            }
        }
        self.ci_wait = None;
        self.deploying = Some(sha.clone());
        self.attempted = Some(sha.clone());
        self.last_error = None;
        self.last_log_tail = None;
        if !restart {
            self.report_pending = true;
        }
        Ok(self.moved(t, to, false))
    }

    /// The deploy succeeded: release `n`, served at `url`, is live (committed with the release
    /// itself, see `Store::commit_release`). A report is owed.
    pub fn commit_live(
        &mut self,
        expected: u64,
        n: u32,
        url: &str,
    ) -> Result<Change, TransitionError> {
        let t = Transition::CommitLive;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        self.deploying = None;
        self.url = url.to_owned();
        self.last_error = None;
        self.seeded = true;
        self.restart_backoff = None;
        self.report_pending = true;
        self.releases = self.releases.max(n);
        self.current_release = Some(n);
        Ok(self.moved(t, to, false))
    }

    /// A restart of release `n` succeeded: live again, the backoff forgotten. Owes no report
    /// (one owed from before, `report_pending`, stays).
    pub fn restarted(&mut self, expected: u64, n: u32) -> Result<Change, TransitionError> {
        let t = Transition::Restarted;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        self.deploying = None;
        self.current_release = Some(n);
        self.seeded = true;
        self.restart_backoff = None;
        Ok(self.moved(t, to, false))
    }

    /// The deploy failed. A failed restart of release `n` (`restart_of`) backs off (see
    /// [`RestartBackoff::delay`]) and owes no report; a failed deploy owes one.
    pub fn fail(
        &mut self,
        expected: u64,
        failure: Failure,
        restart_of: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Change, TransitionError> {
        let t = Transition::Fail;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        self.deploying = None;
        self.last_error = Some(failure.message);
        self.last_log_tail = failure.log_tail;
        match restart_of {
            Some(n) => {
                let failures = self.restart_backoff.map_or(0, |b| b.failures) + 1;
                self.restart_backoff = Some(RestartBackoff {
                    failures,
                    next_at: now + RestartBackoff::delay(failures),
                });
                self.current_release = Some(n);
            }
            None => self.report_pending = true,
        }
        Ok(self.moved(t, to, false))
    }

    /// The op needs no work (the commit is already live, or the release to restart is gone).
    pub fn finish_op(&mut self, expected: u64) -> Result<Change, TransitionError> {
        let t = Transition::FinishOp;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        Ok(self.moved(t, to, false))
    }

    /// The live release's process is gone: start it again ([`EnvRecord::restartable`] says
    /// whether and which).
    pub fn request_restart(&mut self, now: DateTime<Utc>) -> Result<Change, TransitionError> {
        let t = Transition::RequestRestart;
        let to = self.check(t)?;
        let Some(release) = self.restartable(now) else {
            return Err(IllegalTransition {
                from: self.state,
                transition: t,
            }
            .into());
        };
        self.op = Some(Op::Restart { release });
        Ok(self.moved(t, to, true))
    }

    /// Ask for the teardown (replaces any op: a running deploy is cancelled).
    pub fn request_teardown(
        &mut self,
        reason: &str,
        by: &str,
        ack: Option<u64>,
    ) -> Result<Change, TransitionError> {
        let t = Transition::RequestTeardown;
        let to = self.check(t)?;
        if to != EnvState::Queued {
            self.queued_at = None;
        }
        self.op = Some(Op::Teardown {
            reason: reason.to_owned(),
            by: by.to_owned(),
            ack,
        });
        self.ci_wait = None;
        Ok(self.moved(t, to, true))
    }

    /// The runner starts the teardown.
    pub fn begin_teardown(&mut self, expected: u64) -> Result<Change, TransitionError> {
        let t = Transition::BeginTeardown;
        let to = self.check_gen(t, expected)?;
        if !matches!(self.op, Some(Op::Teardown { .. })) {
            return Err(IllegalTransition {
                from: self.state,
                transition: t,
            }
            .into());
        }
        Ok(self.moved(t, to, false))
    }

    /// A teardown attempt failed; the op stays and the runner tries again.
    pub fn teardown_failed(&mut self, message: String) -> Result<Change, TransitionError> {
        let t = Transition::TeardownFailed;
        let to = self.check(t)?;
        self.last_error = Some(message);
        Ok(self.moved(t, to, false))
    }

    /// The teardown is done. A report is owed.
    pub fn destroyed(&mut self, expected: u64) -> Result<Change, TransitionError> {
        let t = Transition::Destroyed;
        let to = self.check_gen(t, expected)?;
        self.op = None;
        self.deploying = None;
        self.expires_at = None;
        self.warned_at = None;
        self.seeded = false;
        self.report_pending = true;
        Ok(self.moved(t, to, false))
    }

    /// `/extend`: the expiry becomes `until`, never earlier than it is.
    pub fn extend(
        &mut self,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Change, TransitionError> {
        let t = Transition::Extend;
        let to = self.check(t)?;
        self.expires_at = Some(self.expires_at.map_or(until, |e| e.max(until)));
        self.warned_at = None;
        self.last_activity = now;
        Ok(self.moved(t, to, false))
    }

    /// A visit through the proxy at `at`: activity; the expiry moves to `until` when that is
    /// later (a warning already given no longer holds then).
    pub fn visit(
        &mut self,
        at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Change, TransitionError> {
        let t = Transition::Visit;
        let to = self.check(t)?;
        self.last_visit = Some(at);
        self.last_activity = self.last_activity.max(at);
        if let Some(until) = until
            && self.expires_at.is_some_and(|e| until > e)
        {
            self.expires_at = Some(until);
            self.warned_at = None;
        }
        Ok(self.moved(t, to, false))
    }

    /// The sweeper warned that the environment expires.
    pub fn warn_expiry(&mut self, now: DateTime<Utc>) -> Result<Change, TransitionError> {
        let t = Transition::WarnExpiry;
        let to = self.check(t)?;
        self.warned_at = Some(now);
        Ok(self.moved(t, to, false))
    }

    /// `stagebot recover`: a new record takes what GitHub's deployments say: `releases`
    /// releases, release `live` serving (with its expiry), or none (`destroyed`).
    pub fn recover(
        &mut self,
        releases: u32,
        live: Option<(u32, Option<DateTime<Utc>>)>,
    ) -> Result<Change, TransitionError> {
        let t = Transition::Recover;
        self.check(t)?;
        self.releases = releases;
        let to = match live {
            Some((n, expires)) => {
                self.current_release = Some(n);
                self.expires_at = expires;
                EnvState::Live
            }
            None => {
                self.expires_at = None;
                EnvState::Destroyed
            }
        };
        Ok(self.moved(t, to, false))
    }
}

/// Whole stories through the real transitions, for fixtures (benchmarks, tests that seed a
/// store): each is the sequence the runner would write.
impl EnvRecord {
    fn fixture_op(&self, sha: &Sha) -> Op {
        Op::Deploy {
            sha: sha.clone(),
            git_ref: self.branch.clone(),
            trigger: Trigger::PullRequest,
            by: "stagebot".into(),
            ack: None,
            force: true,
            gate: None,
            checks: None,
        }
    }

    /// `request_deploy` → `begin_deploy` → `commit_live`: release `n` of `sha` is live at
    /// the record's `url`.
    pub fn deployed(mut self, sha: &Sha, n: u32) -> Result<Self, TransitionError> {
        let g = self.request_deploy(self.fixture_op(sha))?.generation;
        self.begin_deploy(g, sha, false)?;
        let url = self.url.clone();
        self.commit_live(g, n, &url)?;
        Ok(self)
    }

    /// `request_deploy` → `begin_deploy` → `fail`: the deploy of `sha` failed.
    pub fn failed_deploy(mut self, sha: &Sha, message: &str) -> Result<Self, TransitionError> {
        let g = self.request_deploy(self.fixture_op(sha))?.generation;
        self.begin_deploy(g, sha, false)?;
        let failure = Failure {
            message: message.to_owned(),
            log_tail: None,
        };
        self.fail(g, failure, None, self.updated_at)?;
        Ok(self)
    }

    /// `request_teardown` → `begin_teardown` → `destroyed`.
    pub fn torn_down(mut self, reason: &str) -> Result<Self, TransitionError> {
        let g = self.request_teardown(reason, "stagebot", None)?.generation;
        self.begin_teardown(g)?;
        self.destroyed(g)?;
        Ok(self)
    }
}

/// Records in any state, for tests of code that reads them (the policy, the reporter). Not a
/// way to change a stored environment: only compiled for the crate's own tests.
/// What a transition written through the store did: `Some` when it was applied, `None` when
/// the environment is gone or the transition was refused (a newer op superseded the caller, or
/// the state no longer allows it), which is logged here and otherwise not an error: the newest
/// op wins.
pub(crate) fn applied(
    id: &EnvId,
    written: Option<(EnvRecord, Result<Change, TransitionError>)>,
) -> Option<Change> {
    match written {
        Some((_, Ok(change))) if change.unchanged => None,
        Some((_, Ok(change))) => {
            tracing::debug!(env = %id, transition = %change.transition, from = %change.from, to = %change.to, generation = change.generation, "transition");
            Some(change)
        }
        Some((_, Err(refused))) => {
            tracing::debug!(env = %id, reason = %refused, "transition refused");
            None
        }
        None => None,
    }
}

#[cfg(test)]
impl EnvRecord {
    pub(crate) fn with_state(mut self, state: EnvState) -> Self {
        self.state = state;
        self
    }
    pub(crate) fn set_state(&mut self, state: EnvState) {
        self.state = state;
    }
    pub(crate) fn set_op(&mut self, op: Option<Op>) {
        self.op = op;
    }
    pub(crate) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }
    pub(crate) fn set_current_release(&mut self, n: Option<u32>) {
        self.current_release = n;
        if let Some(n) = n {
            self.releases = self.releases.max(n);
        }
    }
    pub(crate) fn set_releases(&mut self, n: u32) {
        self.releases = n;
    }
    pub(crate) fn set_expires_at(&mut self, at: Option<DateTime<Utc>>) {
        self.expires_at = at;
    }
    pub(crate) fn set_warned_at(&mut self, at: Option<DateTime<Utc>>) {
        self.warned_at = at;
    }
    pub(crate) fn set_queued_at(&mut self, at: Option<DateTime<Utc>>) {
        self.queued_at = at;
    }
    pub(crate) fn set_ci_wait(&mut self, text: Option<String>) {
        self.ci_wait = text;
    }
    pub(crate) fn set_attempted(&mut self, sha: Option<Sha>) {
        self.attempted = sha;
    }
    pub(crate) fn set_seeded(&mut self, seeded: bool) {
        self.seeded = seeded;
    }
    pub(crate) fn set_deploying(&mut self, sha: Option<Sha>) {
        self.deploying = sha;
    }
}

#[cfg(test)]
#[path = "environment_tests.rs"]
mod tests;
