//! The one module that owns sled (docs/architecture.md, "Store layout"): every tree, every key layout, every (de)serialization.
//! The rest of the code calls typed methods.
//!
//! Trees:
//! - `inbox`: arrival sequence (u64 BE) → delivery id, for deliveries not yet finished.
//! - `deliveries`: delivery id → [`DeliveryRecord`] (doubles as the "seen" set; pruned).
//! - `payloads`: delivery id → raw body, for the payloads kept in sled: dead letters, restored
//!   backups, stores of schema 1 (migrated to segments on open).
//! - `payload_refs`: delivery id → [`crate::segments::PayloadRef`]: where a payload is in the
//!   append-only segment files under `<data dir>/payloads/` (kept with its record, for replay;
//!   `src/store/payloads.rs`). Not part of backups: a backup's `payloads` carries every payload.
//! - `environments`: `owner/name \0 slug` → [`EnvRecord`], the environments something is
//!   still owed on (not destroyed, or a report pending).
//! - `environments_archive`: same keys → [`ArchivedEnv`]: destroyed environments, out of the
//!   hot path (`src/store/archive.rs`); pruned after the retention.
//! - `releases`: `owner/name \0 slug \0 n (u32 BE)` → [`Release`].
//! - `prs`: `owner/name \0 number (u64 BE)` → [`PrRecord`].
//! - `installations`: `i/<id>` → [`InstallationRecord`], `r/<owner/name>` → id.
//! - `attempts`: `owner/name \0 slug \0 attempt id (u64 BE)` → [`AttemptRecord`]: each deploy
//!   attempt's GitHub Deployment, written before the deployment is created.
//! - `meta`: `schema_version` → u32 (JSON); `incarnation` → u64 (JSON), bumped by every open.
//!
//! Values are JSON objects carrying `"v"`, the record version.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::environment::TransitionError;
use crate::environment::{EnvRecord, Release, Trigger};
use crate::types::{DeliveryId, EnvId, EnvKind, PrNumber, RepoName, Sha};

/// The schema this build writes. Older stores are migrated on open, one step per version:
/// 2: environment records keep their restart backoff as one `restart_backoff`;
/// 3: payloads in segment files (`payload_refs`), moved from the `payloads` tree;
/// 4: destroyed environments in `environments_archive`.
pub const SCHEMA_VERSION: u32 = 4;

const TREES: &[&str] = &[
    "inbox",
    "deliveries",
    "payloads",
    "environments",
    "releases",
    "prs",
    "installations",
    "attempts",
    "meta",
    archive::ARCHIVE_TREE,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key:?} in `{tree}` is unreadable: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not encode a value: {0}")]
    Encode(serde_json::Error),
    #[error(
        "the store has schema version {found}, newer than this build's {supported}: upgrade stagebot"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("backup file: {0}")]
    Backup(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Segment(#[from] crate::segments::SegmentError),
    /// A failure injected with [`Store::inject_fault`].
    #[error("injected fault: {access:?} of `{tree}`")]
    Injected { tree: &'static str, access: Access },
}

/// A kind of store access, for [`StoreFault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// An injected failure: after `skip` matching accesses that go through, the next `times`
/// accesses of kind `access` to `tree` fail with [`StoreError::Injected`] before touching sled. A seam for tests and failure drills (the fake
/// GitHub injects faults the same way); production code never injects any, and the check is one
/// uncontended lock per access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    pub tree: &'static str,
    pub access: Access,
    pub skip: u32,
    pub times: u32,
}

impl StoreFault {
    /// The next `times` accesses fail.
    pub fn new(tree: &'static str, access: Access, times: u32) -> Self {
        Self {
            tree,
            access,
            skip: 0,
            times,
        }
    }

    /// Let the first `n` matching accesses through.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

mod archive;
mod backup;
mod lock;
mod payloads;
mod rotate;

pub use archive::{ArchivedEnv, is_archived};
pub use rotate::{Compacted, RotationStep, dir_bytes};

pub use backup::{BackupSummary, StoreDump};

// ---------------------------------------------------------------------------------------------
// Records

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting in the inbox (maybe after a failed attempt, then `next_attempt_at` is set).
    Pending,
    Processed,
    Ignored {
        reason: String,
    },
    /// Gave up after the maximum attempts: kept for an operator to see and replay.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub v: u32,
    pub id: DeliveryId,
    pub event: String,
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The arrival sequence it was first received with (`seq` changes when it is replayed):
    /// what "received before" means for fork approval and edited comments.
    #[serde(default)]
    pub first_seq: Option<u64>,
    /// Redelivered by GitHub at the catch-up's request (`src/catchup.rs`): it had been lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

impl DeliveryRecord {
    /// The arrival sequence of its first reception.
    pub fn received_seq(&self) -> u64 {
        self.first_seq.unwrap_or(self.seq)
    }
    /// Failed at least once and not finished.
    pub fn is_failing(&self) -> bool {
        matches!(self.status, DeliveryStatus::Pending | DeliveryStatus::Dead)
            && self.last_error.is_some()
    }
}

/// A delivery as the worker needs it.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub record: DeliveryRecord,
    pub payload: Vec<u8>,
}

/// Result of recording an incoming delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Duplicate,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrRecord {
    pub v: u32,
    pub sticky_comment_id: Option<u64>,
    /// Fork PRs: the head commit a maintainer approved with `/stage`.
    pub approved_sha: Option<Sha>,
    /// The commands handled per comment id (so an edit without new commands does nothing).
    pub handled_comments: BTreeMap<u64, String>,
    pub closed: bool,
    /// A note shown in the sticky comment (draft, fork, on-demand, closed…).
    pub notice: Option<String>,
    /// The commit the PR was merged as (`merge_commit_sha` of the `closed` event): the sticky
    /// comment lists the shared environments (production) that deploy it.
    #[serde(default)]
    pub merge_sha: Option<Sha>,
    /// The PR's heads in the order stagebot received its `pull_request` events: (arrival
    /// sequence of the delivery, head commit), oldest first, the last [`MAX_HEADS`]. What "the
    /// head when a comment was written" means for fork approval (never judged by commit dates).
    #[serde(default)]
    pub heads: Vec<(u64, Sha)>,
    /// Arrival sequence of the delivery whose version of a comment was handled, per comment id
    /// (a retried delivery of an older version of an edited comment is stale).
    #[serde(default)]
    pub handled_seq: BTreeMap<u64, u64>,
    /// Comments whose commands are being run: per command, whether it ran and what it answered,
    /// and whether the combined reply was posted. Removed when the comment is handled.
    #[serde(default)]
    pub in_progress: BTreeMap<u64, CommentProgress>,
}

/// How many heads a [`PrRecord`] keeps.
pub const MAX_HEADS: usize = 100;
/// How many handled comments a [`PrRecord`] remembers.
pub const MAX_HANDLED_COMMENTS: usize = 200;
/// How many comments in progress a [`PrRecord`] keeps (a comment stays in progress only while
/// its delivery fails and is retried).
pub const MAX_IN_PROGRESS: usize = 50;

impl PrRecord {
    /// The head stagebot had recorded before the delivery with arrival sequence `before`
    /// (`None`: the newest recorded head).
    pub fn head_before(&self, before: Option<u64>) -> Option<&Sha> {
        self.heads
            .iter()
            .rev()
            .find(|(seq, _)| before.is_none_or(|b| *seq < b))
            .map(|(_, sha)| sha)
    }

    /// Record `sha` as the head announced by the delivery with arrival sequence `seq` (kept in
    /// arrival order; the same (seq, sha) twice is recorded once). Returns whether anything
    /// changed: the newest head announced again (a label, an edit, a review of the same commit)
    /// changes no answer of [`PrRecord::head_before`], so it is not recorded again.
    pub fn record_head(&mut self, seq: u64, sha: &Sha) -> bool {
        if self.heads.iter().any(|(s, h)| *s == seq && h == sha) {
            return false;
        }
        let at = self.heads.partition_point(|(s, _)| *s <= seq);
        if at == self.heads.len() && self.heads.last().is_some_and(|(_, h)| h == sha) {
            return false;
        }
        self.heads.insert(at, (seq, sha.clone()));
        if self.heads.len() > MAX_HEADS {
            self.heads.remove(0);
        }
        true
    }
}

/// What one command of a comment did, as far as the comment's reaction is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Refused or failed at once (😕).
    Refused,
    /// Done when its actions were applied (🚀).
    Done,
    /// Its work happens later (a deploy or teardown reacts when it ends).
    Deferred,
}

/// One command of a comment that has run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRun {
    pub outcome: CommandOutcome,
    /// Its part of the combined reply, if it answers anything.
    pub reply: Option<String>,
    /// It asks for the command list under the reply.
    #[serde(default)]
    pub help: bool,
}

/// One version of a command comment: where it is, its id, its command signature and the
/// arrival sequence of the delivery that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentVersion {
    pub pr: PrNumber,
    pub comment_id: u64,
    pub signature: String,
    pub seq: Option<u64>,
}

/// Progress through one version of a comment's commands (docs/architecture.md, "Idempotency").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentProgress {
    /// The command signature of the version being run.
    pub signature: String,
    /// Arrival sequence of the delivery that started this version.
    pub seq: Option<u64>,
    /// The commands that ran, by index in the comment.
    pub done: BTreeMap<usize, CommandRun>,
    /// A POST of the combined reply was started (it may have reached GitHub).
    pub reply_attempted: bool,
    /// The combined reply's comment id, once GitHub accepted it.
    pub reply_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRecord {
    pub v: u32,
    pub id: u64,
    pub account: String,
    pub suspended: bool,
    pub repos: Vec<RepoName>,
    pub updated_at: DateTime<Utc>,
}

/// One deploy attempt and its GitHub Deployment (docs/architecture.md, "Idempotency"). Written
/// (the **intent**) before the deployment is created on GitHub; `deployment_id` is filled in once
/// GitHub answered, or once an existing deployment carrying this attempt's key was adopted. An
/// intent without a `deployment_id` means a `POST` may have reached GitHub: the reporter looks
/// for the deployment before creating one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub v: u32,
    /// Unique for the store's lifetime, increasing (sled's id generator survives restarts).
    pub attempt: u64,
    pub env: EnvId,
    pub kind: EnvKind,
    /// The environment's generation the attempt belongs to: one attempt per deploy op, also when
    /// a crash makes the runner start the same op again.
    pub generation: u64,
    pub sha: Sha,
    pub git_ref: String,
    /// The release number a success records.
    pub release: u32,
    pub trigger: Trigger,
    pub actor: String,
    pub pr: Option<PrNumber>,
    /// The stagebot incarnation (see [`Store::incarnation`]) that started the attempt.
    pub incarnation: u64,
    pub created_at: DateTime<Utc>,
    /// The GitHub Deployment of this attempt, once known.
    pub deployment_id: Option<u64>,
    /// The newest state the deployment has on GitHub as far as stagebot knows (`in_progress`,
    /// `success`, `failure`, `inactive`), `None` before the first status.
    pub state: Option<String>,
}

impl AttemptRecord {
    /// Still shown as current on GitHub: neither ended (`failure`, `error`) nor `inactive`.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.state.as_deref(),
            Some("failure") | Some("error") | Some("inactive")
        )
    }
}

/// Attempts kept per environment; older ones whose deployment is closed are forgotten.
pub const ATTEMPTS_KEPT: usize = 50;

// ---------------------------------------------------------------------------------------------
// Keys

fn env_key(id: &EnvId) -> Vec<u8> {
    let mut k = id.repo.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(id.slug.as_str().as_bytes());
    k
}

fn release_prefix(id: &EnvId) -> Vec<u8> {
    let mut k = env_key(id);
    k.push(0);
    k
}

fn release_key(id: &EnvId, n: u32) -> Vec<u8> {
    let mut k = release_prefix(id);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn attempt_key(id: &EnvId, attempt: u64) -> Vec<u8> {
    let mut k = release_prefix(id);
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

fn pr_key(repo: &RepoName, pr: PrNumber) -> Vec<u8> {
    let mut k = repo.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(&pr.0.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(StoreError::Encode)
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

// ---------------------------------------------------------------------------------------------
// The store

/// Dead letters kept at most by default (`STAGEBOT_DEAD_LETTERS_MAX`).
pub const DEFAULT_DEAD_LETTERS_MAX: usize = 10_000;

/// sled's page cache by default (`STAGEBOT_STORE_CACHE`): sled's own default is 1 GiB, which
/// a burst of deliveries fills with payloads.
pub const DEFAULT_STORE_CACHE: u64 = 16 * 1024 * 1024;

/// Group commit: one flush makes every write durable that was done before it started, so
/// callers waiting together share one flush (docs/performance.md).
#[derive(Debug, Default)]
struct GroupCommit {
    /// Writes done so far (a ticket per write that must become durable).
    written: std::sync::atomic::AtomicU64,
    /// Every ticket up to this one is durable.
    durable: std::sync::atomic::AtomicU64,
    /// Held while a flush runs; the callers queued behind it are covered by the next one.
    flushing: tokio::sync::Mutex<()>,
    /// Flushes done (`stagebot_store_flushes_total`).
    flushes: std::sync::atomic::AtomicU64,
}

/// A handle on the sled database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    inbox: sled::Tree,
    deliveries: sled::Tree,
    payloads: sled::Tree,
    payload_refs: sled::Tree,
    segments: std::sync::Arc<crate::segments::Segments>,
    environments: sled::Tree,
    releases: sled::Tree,
    prs: sled::Tree,
    installations: sled::Tree,
    attempts: sled::Tree,
    meta: sled::Tree,
    /// The catch-up's state (`src/catchup.rs`); not part of backups.
    catchup: sled::Tree,
    /// Destroyed environments (`src/store/archive.rs`).
    archive: sled::Tree,
    /// Added to sled's ids (set by a store rotation, `src/store/rotate.rs`).
    id_base: u64,
    incarnation: u64,
    faults: std::sync::Arc<std::sync::Mutex<Vec<StoreFault>>>,
    group: std::sync::Arc<GroupCommit>,
    /// This process's hold on the data dir (src/store/lock.rs).
    _lock: std::sync::Arc<lock::DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub use crate::dirs::create_private_dir;

impl Store {
    /// Open (or create) the store in `dir`, migrating an older schema.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_waiting(dir, std::time::Duration::ZERO)
    }

    /// Like [`Store::open`], but while another handle (a previous process still exiting, or
    /// sled's own background flusher of a handle just dropped) holds the store's file lock,
    /// keep trying for up to `wait`.
    pub fn open_waiting(dir: &Path, wait: std::time::Duration) -> Result<Self> {
        Self::open_with_cache(dir, wait, DEFAULT_STORE_CACHE)
    }

    /// Like [`Store::open_waiting`], with sled's page cache capped at `cache` bytes
    /// (`STAGEBOT_STORE_CACHE`).
    pub fn open_with_cache(dir: &Path, wait: std::time::Duration, cache: u64) -> Result<Self> {
        create_private_dir(dir)?;
        // Before anything looks at the directories: no other process is in them (a rotation
        // holds this lock through its renames).
        let dir_lock = lock::DirLock::acquire(dir, wait)?;
        rotate::recover_rotation(dir)?;
        let deadline = std::time::Instant::now() + wait;
        let db = loop {
            match sled::Config::new()
                .path(dir.join("db"))
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(cache)
                .open()
            {
                Err(e) if Self::is_locked(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let mut store = Self {
            inbox: db.open_tree("inbox")?,
            deliveries: db.open_tree("deliveries")?,
            payloads: db.open_tree("payloads")?,
            payload_refs: db.open_tree("payload_refs")?,
            segments: std::sync::Arc::new(crate::segments::Segments::open(&dir.join("payloads"))?),
            environments: db.open_tree("environments")?,
            releases: db.open_tree("releases")?,
            prs: db.open_tree("prs")?,
            installations: db.open_tree("installations")?,
            attempts: db.open_tree("attempts")?,
            meta: db.open_tree("meta")?,
            catchup: db.open_tree("catchup")?,
            archive: db.open_tree(archive::ARCHIVE_TREE)?,
            id_base: Self::read_id_base(&db.open_tree("meta")?)?,
            db,
            incarnation: 0,
            faults: Default::default(),
            group: Default::default(),
            _lock: std::sync::Arc::new(dir_lock),
        };
        store.migrate()?;
        store.drop_torn_deliveries()?;
        store.init_catchup()?;
        store.incarnation = store.begin_incarnation()?;
        Ok(store)
    }

    /// Count this opening as a new incarnation of stagebot (durable before it is used).
    fn begin_incarnation(&self) -> Result<u64> {
        let previous: u64 = match self.meta.get("incarnation")? {
            Some(b) => decode("meta", b"incarnation", &b)?,
            None => 0,
        };
        let next = previous + 1;
        self.meta.insert("incarnation", encode(&next)?)?;
        self.db.flush()?;
        Ok(next)
    }

    /// Which opening of this store this handle is (1 for the first, +1 on every open): tells the
    /// deployments of one stagebot process from those of the process before a crash.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Make the next accesses described by `fault` fail (see [`StoreFault`]).
    pub fn inject_fault(&self, fault: StoreFault) {
        if fault.times > 0 {
            self.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fault);
        }
    }

    /// Drop every injected fault not used up yet.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Fail if an injected fault covers this access (and use it up).
    fn check(&self, tree: &'static str, access: Access) -> Result<()> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = faults
            .iter()
            .position(|f| f.tree == tree && f.access == access)
        else {
            return Ok(());
        };
        if faults[i].skip > 0 {
            faults[i].skip -= 1;
            return Ok(());
        }
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Err(StoreError::Injected { tree, access })
    }

    /// Is this the error sled gives when another handle holds the store's file lock?
    pub fn is_locked(e: &sled::Error) -> bool {
        // sled reports its file lock as an `Other` I/O error with this text.
        matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
    }

    fn migrate(&self) -> Result<()> {
        let found: Option<u32> = match self.meta.get("schema_version")? {
            Some(b) => Some(decode("meta", b"schema_version", &b)?),
            None => None,
        };
        match found {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::TooNew {
                found: v,
                supported: SCHEMA_VERSION,
            }),
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            // A fresh store (nothing to migrate), or an older schema. Each step upgrades one
            // version in place and records it: a crash leaves a whole schema behind, and the
            // next open goes on from there.
            found => {
                if found.unwrap_or(1) < 2 {
                    self.migrate_1_to_2()?;
                }
                if found.unwrap_or(1) < 3 {
                    self.migrate_payloads_to_segments()?;
                }
                if found.unwrap_or(1) < 4 {
                    self.migrate_archive()?;
                }
                self.meta
                    .insert("schema_version", encode(&SCHEMA_VERSION)?)?;
                self.db.flush()?;
                Ok(())
            }
        }
    }

    /// Schema 1 → 2: environment records (`v` 1 → 2) keep their restart backoff as one
    /// `restart_backoff` (`failures`, `next_at`) instead of `restart_failures` and
    /// `next_restart_at`. Records already at `v` 2 are left alone.
    fn migrate_1_to_2(&self) -> Result<()> {
        let mut rewritten = Vec::new();
        for item in self.environments.iter() {
            let (k, b) = item?;
            let mut value: serde_json::Value = decode("environments", &k, &b)?;
            if let Some(obj) = value.as_object_mut()
                && obj.get("v").and_then(serde_json::Value::as_u64) == Some(1)
            {
                let failures = obj
                    .remove("restart_failures")
                    .and_then(|f| f.as_u64())
                    .unwrap_or(0);
                let next = obj
                    .remove("next_restart_at")
                    .filter(|n| !n.is_null())
                    // Schema 1 restarted at once when no time was recorded.
                    .unwrap_or_else(|| serde_json::json!("1970-01-01T00:00:00Z"));
                if failures > 0 {
                    obj.insert(
                        "restart_backoff".into(),
                        serde_json::json!({ "failures": failures, "next_at": next }),
                    );
                }
                obj.insert("v".into(), serde_json::json!(2));
                // The new layout must read back, or the migration stops before writing.
                let rec: EnvRecord =
                    serde_json::from_value(value).map_err(|source| StoreError::Corrupt {
                        tree: "environments",
                        key: String::from_utf8_lossy(&k).into_owned(),
                        source,
                    })?;
                rewritten.push((k, encode(&rec)?));
            }
        }
        let version = encode(&2u32)?;
        (&self.environments, &self.meta)
            .transaction(|(e, m)| {
                for (k, v) in &rewritten {
                    e.insert(k.as_ref(), v.as_slice())?;
                }
                m.insert("schema_version", version.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        if !rewritten.is_empty() {
            tracing::info!(
                environments = rewritten.len(),
                "store migrated from schema 1 to 2"
            );
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32> {
        match self.meta.get("schema_version")? {
            Some(b) => decode("meta", b"schema_version", &b),
            None => Ok(0),
        }
    }

    /// Make everything written so far durable.
    ///
    /// Group commit: a caller that finds a flush running waits for it to end, then either finds
    /// its writes covered by a flush that started after them, or runs the next flush, which
    /// covers every caller queued meanwhile. So N concurrent deliveries cost about two flushes,
    /// not N, and each caller still returns only once its own writes are on disk.
    ///
    /// Not `flush_async`: in sled 0.34 several `flush_async` futures awaited at once deadlock
    /// sled's I/O thread pool (spacejam/sled#1308, fixed only on sled's unreleased main), which
    /// hung the webhook handler as soon as two deliveries arrived together. The blocking flush
    /// runs on tokio's blocking pool instead, so it never stalls the runtime's worker threads.
    pub async fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        // Everything this caller wrote is done: take a ticket behind it.
        let ticket = self.group.written.fetch_add(1, SeqCst) + 1;
        if self.group.durable.load(SeqCst) >= ticket {
            return Ok(());
        }
        let _turn = self.group.flushing.lock().await;
        if self.group.durable.load(SeqCst) >= ticket {
            // The flush we waited for started after our writes: it covered them.
            return Ok(());
        }
        // Every ticket taken so far belongs to a write that is done: this flush covers them all.
        let covers = self.group.written.load(SeqCst);
        let db = self.db.clone();
        let segments = self.segments.clone();
        // The payloads first: a delivery record made durable by this flush has its payload on
        // disk already.
        tokio::task::spawn_blocking(move || -> Result<()> {
            segments.sync()?;
            db.flush()?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        self.group.flushes.fetch_add(1, SeqCst);
        self.group.durable.fetch_max(covers, SeqCst);
        Ok(())
    }

    /// Mark everything written so far as wanting durability without waiting for it: the next
    /// group commit that starts covers it ([`Store::is_durable`]). For writes whose loss in a
    /// crash only means work done again (the worker's outcomes), so they ride along with the
    /// front door's flushes instead of paying for their own.
    pub fn ticket(&self) -> u64 {
        self.group
            .written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Is everything written before `ticket` was taken on disk?
    pub fn is_durable(&self, ticket: u64) -> bool {
        self.group.durable.load(std::sync::atomic::Ordering::SeqCst) >= ticket
    }

    /// Flushes done by [`Store::flush`] since this store was opened (group commits: one flush
    /// covers every caller that waited for it).
    pub fn flushes(&self) -> u64 {
        self.group
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Is the store's directory empty of data (no environments, no deliveries)?
    pub fn is_empty(&self) -> bool {
        self.environments.is_empty()
            && self.archive.is_empty()
            && self.deliveries.is_empty()
            && self.releases.is_empty()
            && self.installations.is_empty()
    }

    // -- deliveries ---------------------------------------------------------------------------

    /// Record a delivery in the inbox unless its id was seen before; durable when this returns.
    pub async fn insert_delivery(
        &self,
        id: &DeliveryId,
        event: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Inserted> {
        let seq = self.next_id()?;
        let record = DeliveryRecord {
            v: 1,
            id: id.clone(),
            event: event.to_owned(),
            seq,
            received_at: now,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            finished_at: None,
            first_seq: Some(seq),
            recovered: false,
        };
        let rec_bytes = encode(&record)?;
        let recovered_bytes = encode(&DeliveryRecord {
            recovered: true,
            ..record
        })?;
        let key = id.as_str().as_bytes();
        // A redelivery costs a read, not an append.
        if self.deliveries.get(key)?.is_some() {
            return Ok(Inserted::Duplicate);
        }
        // Written to its segment before the record exists (a concurrent duplicate leaves bytes
        // nobody refers to, deleted with their segment); synced by the flush below.
        let at = self.append_payload(now, payload)?.encode();
        let requested = catchup_requested_key(id);
        let recovered_key = format!("c/{}", id.as_str()).into_bytes();
        let outcome = (
            &self.deliveries,
            &self.inbox,
            &self.payload_refs,
            &self.catchup,
        )
            .transaction(|(d, i, p, c)| {
                if d.get(key)?.is_some() {
                    return Ok(Inserted::Duplicate);
                }
                // A redelivery the catch-up asked for: mark it and count it (one key per
                // delivery: concurrent inserts never read-modify-write a shared counter).
                if c.remove(requested.as_slice())?.is_some() {
                    c.insert(recovered_key.as_slice(), &[])?;
                    d.insert(key, recovered_bytes.as_slice())?;
                } else {
                    d.insert(key, rec_bytes.as_slice())?;
                }
                p.insert(key, &at[..])?;
                i.insert(&seq.to_be_bytes(), key)?;
                Ok(Inserted::New)
            })
            .map_err(|e: TransactionError<StoreError>| tx_err(e))?;
        if outcome == Inserted::New {
            self.flush().await?;
        }
        Ok(outcome)
    }

    pub fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        let key = id.as_str().as_bytes();
        self.deliveries
            .get(key)?
            .map(|b| decode("deliveries", key, &b))
            .transpose()
    }

    /// A delivery's payload, read back from its segment (or from sled for the payloads kept
    /// there); `None` once pruned. A torn or corrupt one is an error, never other bytes.
    pub fn payload(&self, id: &DeliveryId) -> Result<Option<Vec<u8>>> {
        self.read_payload(id.as_str().as_bytes())
    }

    /// Deliveries still in the inbox, in arrival order.
    pub fn pending(&self) -> Result<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for item in self.inbox.iter() {
            let (_, id) = item?;
            if let Some(b) = self.deliveries.get(&id)? {
                out.push(decode("deliveries", &id, &b)?);
            }
        }
        Ok(out)
    }

    /// The ids in the inbox, in arrival order, without reading their records (the worker's
    /// dispatcher reads a record only when its repository is not busy).
    pub fn inbox_ids(&self) -> Result<Vec<DeliveryId>> {
        let mut out = Vec::new();
        for item in self.inbox.iter() {
            let (_, id) = item?;
            let id = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| DeliveryId::new(s).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    tree: "inbox",
                    key: String::from_utf8_lossy(&id).into_owned(),
                    source: <serde_json::Error as serde::de::Error>::custom("not a delivery id"),
                })?;
            out.push(id);
        }
        Ok(out)
    }

    /// The first delivery in arrival order that may be attempted at `now`.
    pub fn next_ready(&self, now: DateTime<Utc>) -> Result<Option<PendingDelivery>> {
        for item in self.inbox.iter() {
            let (_, id) = item?;
            let Some(b) = self.deliveries.get(&id)? else {
                continue;
            };
            let record: DeliveryRecord = decode("deliveries", &id, &b)?;
            if record.next_attempt_at.is_some_and(|t| t > now) {
                continue;
            }
            let payload = self.read_payload(&id)?.unwrap_or_default();
            return Ok(Some(PendingDelivery { record, payload }));
        }
        Ok(None)
    }

    /// The earliest time a pending delivery becomes ready (for the worker's sleep).
    pub fn next_retry_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .pending()?
            .iter()
            .filter_map(|r| r.next_attempt_at)
            .min())
    }

    /// Finish a delivery: record its outcome and take it out of the inbox, atomically. Not
    /// flushed: the worker covers a batch of outcomes with one [`Store::flush`] (an outcome lost
    /// in a crash only means the delivery is processed again, which the engine's idempotency
    /// makes harmless; sled's log keeps writes in order, so a later flush covers it too).
    pub fn finish_delivery(
        &self,
        id: &DeliveryId,
        status: DeliveryStatus,
        now: DateTime<Utc>,
    ) -> Result<DeliveryRecord> {
        self.update_delivery(id, |r| {
            r.status = status.clone();
            r.finished_at = Some(now);
            r.next_attempt_at = None;
            true
        })
    }

    /// Record a failed attempt: stays in the inbox until `next_attempt_at`, or becomes dead
    /// (out of the inbox, kept, its payload copied into sled so its segment can go) when
    /// `retry_at` is `None`. Not flushed, like [`Store::finish_delivery`].
    pub fn fail_delivery(
        &self,
        id: &DeliveryId,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<DeliveryRecord> {
        if retry_at.is_none() {
            self.keep_payload_in_sled(id.as_str().as_bytes())?;
        }
        self.update_delivery(id, |r| {
            r.attempts += 1;
            r.last_error = Some(error.to_owned());
            r.next_attempt_at = retry_at;
            match retry_at {
                Some(_) => false,
                None => {
                    r.status = DeliveryStatus::Dead;
                    r.finished_at = Some(now);
                    true
                }
            }
        })
    }

    /// Put a finished (dead, processed or ignored) delivery back in the inbox.
    pub fn replay_delivery(&self, id: &DeliveryId) -> Result<DeliveryRecord> {
        let key = id.as_str().as_bytes();
        if !self.has_payload(key)? {
            return Err(StoreError::NotFound(format!(
                "delivery {id} (or its payload, pruned)"
            )));
        }
        let seq = self.next_id()?;
        (&self.deliveries, &self.inbox)
            .transaction(|(d, i)| {
                let Some(b) = d.get(key)? else {
                    return Err(abort(StoreError::NotFound(format!("delivery {id}"))));
                };
                let mut r: DeliveryRecord = decode("deliveries", key, &b).map_err(abort)?;
                if r.status == DeliveryStatus::Pending {
                    return Err(abort(StoreError::Conflict(format!(
                        "delivery {id} is already pending"
                    ))));
                }
                r.status = DeliveryStatus::Pending;
                r.next_attempt_at = None;
                r.finished_at = None;
                r.first_seq.get_or_insert(r.seq);
                r.seq = seq;
                d.insert(key, encode(&r).map_err(abort)?)?;
                i.insert(&seq.to_be_bytes(), key)?;
                Ok(r)
            })
            .map_err(tx_err)
            .and_then(|r| {
                self.db.flush()?;
                Ok(r)
            })
    }

    /// Apply `f` to a delivery; when it returns true the delivery leaves the inbox (same
    /// transaction).
    fn update_delivery(
        &self,
        id: &DeliveryId,
        f: impl Fn(&mut DeliveryRecord) -> bool,
    ) -> Result<DeliveryRecord> {
        let key = id.as_str().as_bytes();
        let r = (&self.deliveries, &self.inbox)
            .transaction(|(d, i)| {
                let Some(b) = d.get(key)? else {
                    return Err(abort(StoreError::NotFound(format!("delivery {id}"))));
                };
                let mut r: DeliveryRecord = decode("deliveries", key, &b).map_err(abort)?;
                let leave = f(&mut r);
                d.insert(key, encode(&r).map_err(abort)?)?;
                if leave {
                    i.remove(&r.seq.to_be_bytes())?;
                }
                Ok(r)
            })
            .map_err(tx_err)?;
        Ok(r)
    }

    /// All delivery records, newest first.
    pub fn deliveries(&self) -> Result<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for item in self.deliveries.iter() {
            let (k, b) = item?;
            out.push(decode::<DeliveryRecord>("deliveries", &k, &b)?);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(out)
    }

    /// Forget processed and ignored deliveries finished before `cutoff` (dead ones are kept).
    pub fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let mut n = 0;
        for r in self.deliveries()? {
            let done = matches!(
                r.status,
                DeliveryStatus::Processed | DeliveryStatus::Ignored { .. }
            );
            if done && r.finished_at.is_some_and(|t| t < cutoff) {
                let key = r.id.as_str().as_bytes();
                self.deliveries.remove(key)?;
                self.payloads.remove(key)?;
                self.payload_refs.remove(key)?;
                n += 1;
            }
        }
        self.remove_expired_segments(cutoff)?;
        Ok(n)
    }

    /// Forget dead letters that died before `cutoff`, then the oldest beyond `max` (the newest
    /// `max` are kept). Returns how many went.
    pub fn prune_dead_letters(&self, cutoff: DateTime<Utc>, max: usize) -> Result<usize> {
        let mut dead: Vec<DeliveryRecord> = self
            .deliveries()?
            .into_iter()
            .filter(|r| r.status == DeliveryStatus::Dead)
            .collect();
        // Newest first: by when they died, then by arrival.
        dead.sort_by_key(|r| std::cmp::Reverse((r.finished_at, r.seq)));
        let mut n = 0;
        for (i, r) in dead.iter().enumerate() {
            if i >= max || r.finished_at.is_some_and(|t| t < cutoff) {
                let key = r.id.as_str().as_bytes();
                self.deliveries.remove(key)?;
                self.payloads.remove(key)?;
                self.payload_refs.remove(key)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // -- catch-up (src/catchup.rs) --------------------------------------------------------------

    /// A store without catch-up state gets one whose horizon is now: nothing GitHub sent before
    /// this store existed (or before this build) is replayed.
    fn init_catchup(&self) -> Result<()> {
        if self.catchup.get(CATCHUP_STATE)?.is_none() {
            self.reset_catchup(Utc::now())?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Start the catch-up afresh at `horizon` (a new, recovered or restored store): no cursor,
    /// no backlog, no outstanding requests.
    pub fn reset_catchup(&self, horizon: DateTime<Utc>) -> Result<()> {
        for item in self.catchup.scan_prefix(b"r/") {
            self.catchup.remove(item?.0)?;
        }
        self.put_catchup(&CatchupState::new(horizon))
    }

    /// The catch-up's state.
    pub fn catchup(&self) -> Result<CatchupState> {
        match self.catchup.get(CATCHUP_STATE)? {
            Some(b) => decode("catchup", CATCHUP_STATE, &b),
            None => Ok(CatchupState::new(Utc::now())),
        }
    }

    /// Replace the catch-up's state (cursor and backlog together, so a pass is all or nothing).
    pub fn put_catchup(&self, state: &CatchupState) -> Result<()> {
        self.catchup.insert(CATCHUP_STATE, encode(state)?)?;
        Ok(())
    }

    /// How often the catch-up asked GitHub to redeliver `id` (that has not arrived since).
    pub fn catchup_requests(&self, id: &DeliveryId) -> Result<Option<CatchupRequest>> {
        let key = catchup_requested_key(id);
        self.catchup
            .get(&key)?
            .map(|b| decode("catchup", &key, &b))
            .transpose()
    }

    /// Remember that a redelivery of `id` was requested (its arrival is then marked recovered).
    pub async fn put_catchup_request(&self, id: &DeliveryId, req: &CatchupRequest) -> Result<()> {
        self.catchup
            .insert(catchup_requested_key(id), encode(req)?)?;
        self.flush().await
    }

    /// Put back what was known about requests for `id` before a request that failed (unless
    /// the delivery arrived meanwhile, which removed the marker).
    pub fn restore_catchup_request(
        &self,
        id: &DeliveryId,
        previous: Option<&CatchupRequest>,
    ) -> Result<()> {
        let key = catchup_requested_key(id);
        if self.catchup.get(&key)?.is_none() {
            return Ok(());
        }
        match previous {
            Some(req) => self.catchup.insert(key, encode(req)?)?,
            None => self.catchup.remove(key)?,
        };
        Ok(())
    }

    /// Forget requests made before `cutoff` whose redelivery never arrived.
    pub fn prune_catchup_requests(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let mut n = 0;
        for item in self.catchup.scan_prefix(b"r/") {
            let (k, b) = item?;
            let req: CatchupRequest = decode("catchup", &k, &b)?;
            if req.last_at < cutoff {
                self.catchup.remove(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deliveries recovered through the catch-up since this store was created.
    pub fn recovered_total(&self) -> Result<u64> {
        Ok(self.catchup.scan_prefix(b"c/").count() as u64)
    }

    // -- environments -------------------------------------------------------------------------

    /// Every live environment (not archived, `src/store/archive.rs`), ordered by repository
    /// and slug.
    pub fn envs(&self) -> Result<Vec<EnvRecord>> {
        let mut out = Vec::new();
        for item in self.environments.iter() {
            let (k, b) = item?;
            out.push(decode("environments", &k, &b)?);
        }
        Ok(out)
    }

    /// The live environments of `repo` (not archived).
    pub fn envs_of_repo(&self, repo: &RepoName) -> Result<Vec<EnvRecord>> {
        self.check("environments", Access::Read)?;
        let mut prefix = repo.to_string().into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.environments.scan_prefix(prefix) {
            let (k, b) = item?;
            out.push(decode("environments", &k, &b)?);
        }
        Ok(out)
    }

    /// Commit a successful deploy: append the release and apply `transition` (normally
    /// [`EnvRecord::commit_live`], which checks the generation) in one transaction. Nothing is
    /// written when the transition is refused; `None` when the environment does not exist.
    pub fn commit_release<T>(
        &self,
        id: &EnvId,
        release: &Release,
        transition: impl Fn(&mut EnvRecord) -> std::result::Result<T, TransitionError>,
    ) -> Result<Option<(EnvRecord, std::result::Result<T, TransitionError>)>> {
        let ekey = env_key(id);
        let rkey = release_key(id, release.n);
        let rbytes = encode(release)?;
        let out = (&self.environments, &self.releases)
            .transaction(|(e, r)| {
                let Some(b) = e.get(&ekey)? else {
                    return Ok(None);
                };
                let mut rec: EnvRecord = decode("environments", &ekey, &b).map_err(abort)?;
                match transition(&mut rec) {
                    Ok(out) => {
                        e.insert(ekey.as_slice(), encode(&rec).map_err(abort)?)?;
                        r.insert(rkey.as_slice(), rbytes.as_slice())?;
                        Ok(Some((rec, Ok(out))))
                    }
                    Err(refused) => {
                        let unchanged: EnvRecord =
                            decode("environments", &ekey, &b).map_err(abort)?;
                        Ok(Some((unchanged, Err(refused))))
                    }
                }
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(out)
    }

    /// Write a release as it is (recovery rebuilds releases from GitHub's deployments); the
    /// environment is not touched.
    pub fn put_release(&self, id: &EnvId, release: &Release) -> Result<()> {
        self.releases
            .insert(release_key(id, release.n), encode(release)?)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn releases(&self, id: &EnvId) -> Result<Vec<Release>> {
        let mut out = Vec::new();
        for item in self.releases.scan_prefix(release_prefix(id)) {
            let (k, b) = item?;
            out.push(decode("releases", &k, &b)?);
        }
        Ok(out)
    }

    pub fn release(&self, id: &EnvId, n: u32) -> Result<Option<Release>> {
        let key = release_key(id, n);
        self.releases
            .get(&key)?
            .map(|b| decode("releases", &key, &b))
            .transpose()
    }

    // -- pull requests ------------------------------------------------------------------------

    pub fn pr(&self, repo: &RepoName, pr: PrNumber) -> Result<PrRecord> {
        self.check("prs", Access::Read)?;
        let key = pr_key(repo, pr);
        Ok(self
            .prs
            .get(&key)?
            .map(|b| decode("prs", &key, &b))
            .transpose()?
            .unwrap_or(PrRecord {
                v: 1,
                ..PrRecord::default()
            }))
    }

    pub fn update_pr<T>(
        &self,
        repo: &RepoName,
        pr: PrNumber,
        f: impl FnOnce(&mut PrRecord) -> T,
    ) -> Result<T> {
        let mut rec = self.pr(repo, pr)?;
        let out = f(&mut rec);
        self.check("prs", Access::Write)?;
        self.prs.insert(pr_key(repo, pr), encode(&rec)?)?;
        self.db.flush()?;
        Ok(out)
    }

    /// The PRs of `repo` that were merged as `sha`.
    pub fn prs_merged_as(&self, repo: &RepoName, sha: &Sha) -> Result<Vec<PrNumber>> {
        self.check("prs", Access::Read)?;
        let mut prefix = repo.to_string().into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.prs.scan_prefix(&prefix) {
            let (k, b) = item?;
            let rec: PrRecord = decode("prs", &k, &b)?;
            let number = k
                .get(prefix.len()..)
                .and_then(|n| <[u8; 8]>::try_from(n).ok())
                .map(u64::from_be_bytes);
            if let (Some(n), true) = (number, rec.merge_sha.as_ref() == Some(sha)) {
                out.push(PrNumber(n));
            }
        }
        Ok(out)
    }

    // -- deploy attempts ----------------------------------------------------------------------

    /// A fresh attempt id: unique and increasing for the store's lifetime.
    pub fn new_attempt_id(&self) -> Result<u64> {
        self.next_id()
    }

    /// An environment's attempts, oldest first.
    pub fn attempts(&self, id: &EnvId) -> Result<Vec<AttemptRecord>> {
        self.check("attempts", Access::Read)?;
        let mut out = Vec::new();
        for item in self.attempts.scan_prefix(release_prefix(id)) {
            let (k, b) = item?;
            out.push(decode("attempts", &k, &b)?);
        }
        Ok(out)
    }

    /// Write an attempt (durable when this returns). Beyond [`ATTEMPTS_KEPT`] per environment,
    /// the oldest attempts whose deployment is closed are forgotten.
    pub fn put_attempt(&self, rec: &AttemptRecord) -> Result<()> {
        self.check("attempts", Access::Write)?;
        self.attempts
            .insert(attempt_key(&rec.env, rec.attempt), encode(rec)?)?;
        let all = self.attempts(&rec.env)?;
        let mut excess = all.len().saturating_sub(ATTEMPTS_KEPT);
        for old in all
            .iter()
            .filter(|a| !a.is_open() && a.attempt != rec.attempt)
        {
            if excess == 0 {
                break;
            }
            self.attempts.remove(attempt_key(&old.env, old.attempt))?;
            excess -= 1;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Record the head a `pull_request` delivery (arrival sequence `seq`) announced. Not
    /// flushed on its own: it is part of the delivery's processing, made durable with (or
    /// before, sled's log keeps order) the delivery's outcome; lost in a crash, the delivery is
    /// processed again and records it again.
    pub fn record_pr_head(&self, repo: &RepoName, pr: PrNumber, seq: u64, sha: &Sha) -> Result<()> {
        let mut rec = self.pr(repo, pr)?;
        if !rec.record_head(seq, sha) {
            return Ok(());
        }
        self.check("prs", Access::Write)?;
        self.prs.insert(pr_key(repo, pr), encode(&rec)?)?;
        Ok(())
    }

    /// Change the progress record of comment version `c` (a record of another version is
    /// replaced by a fresh one); durable when this returns.
    fn update_progress<T>(
        &self,
        repo: &RepoName,
        c: &CommentVersion,
        f: impl FnOnce(&mut CommentProgress) -> T,
    ) -> Result<T> {
        self.update_pr(repo, c.pr, |r| {
            let progress = r.in_progress.entry(c.comment_id).or_default();
            // Another version of the comment starts afresh; a redelivery of the same version
            // continues where the last attempt stopped.
            if progress.signature != c.signature {
                *progress = CommentProgress {
                    signature: c.signature.clone(),
                    seq: c.seq,
                    ..CommentProgress::default()
                };
            }
            let out = f(progress);
            while r.in_progress.len() > MAX_IN_PROGRESS {
                r.in_progress.pop_first();
            }
            out
        })
    }

    /// Command `index` of comment version `c` has run, answering `run`.
    pub fn command_ran(
        &self,
        repo: &RepoName,
        c: &CommentVersion,
        index: usize,
        run: CommandRun,
    ) -> Result<()> {
        self.update_progress(repo, c, |p| {
            p.done.insert(index, run);
        })
    }

    /// The combined reply to comment version `c` is about to be posted: after this, a retry
    /// looks on GitHub for it before posting again.
    pub fn reply_attempted(&self, repo: &RepoName, c: &CommentVersion) -> Result<()> {
        self.update_progress(repo, c, |p| p.reply_attempted = true)
    }

    /// GitHub accepted the combined reply to comment version `c` as comment `reply_id`.
    pub fn reply_posted(&self, repo: &RepoName, c: &CommentVersion, reply_id: u64) -> Result<()> {
        self.update_progress(repo, c, |p| p.reply_id = Some(reply_id))
    }

    /// Every command of comment version `c` is handled: remember its signature (and the
    /// arrival sequence of its delivery) and drop its progress record, in one write.
    pub fn comment_handled(&self, repo: &RepoName, c: &CommentVersion) -> Result<()> {
        self.update_pr(repo, c.pr, |r| {
            r.handled_comments.insert(c.comment_id, c.signature.clone());
            while r.handled_comments.len() > MAX_HANDLED_COMMENTS {
                r.handled_comments.pop_first();
            }
            if let Some(seq) = c.seq {
                let handled = r.handled_seq.entry(c.comment_id).or_insert(seq);
                *handled = (*handled).max(seq);
            }
            r.handled_seq
                .retain(|id, _| r.handled_comments.contains_key(id));
            r.in_progress.remove(&c.comment_id);
        })
    }

    // -- installations ------------------------------------------------------------------------

    pub fn put_installation(&self, rec: &InstallationRecord) -> Result<()> {
        let bytes = encode(rec)?;
        let id_bytes = encode(&rec.id)?;
        self.installations
            .transaction(|t| {
                t.insert(format!("i/{}", rec.id).as_bytes(), bytes.as_slice())?;
                for repo in &rec.repos {
                    t.insert(format!("r/{repo}").as_bytes(), id_bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every repository stagebot knows of: those of its installations and those with
    /// environments.
    pub fn known_repos(&self) -> Result<Vec<RepoName>> {
        let mut out: Vec<RepoName> = Vec::new();
        for item in self.installations.scan_prefix(b"r/") {
            let (k, _) = item?;
            if let Some(name) = std::str::from_utf8(&k[2..])
                .ok()
                .and_then(|n| n.parse::<RepoName>().ok())
            {
                out.push(name);
            }
        }
        out.extend(self.envs()?.into_iter().map(|e| e.id.repo));
        out.extend(self.archived_repos()?);
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub fn installation(&self, id: u64) -> Result<Option<InstallationRecord>> {
        let key = format!("i/{id}");
        self.installations
            .get(key.as_bytes())?
            .map(|b| decode("installations", key.as_bytes(), &b))
            .transpose()
    }

    pub fn remove_installation(&self, id: u64) -> Result<()> {
        if let Some(rec) = self.installation(id)? {
            for repo in &rec.repos {
                self.installations.remove(format!("r/{repo}").as_bytes())?;
            }
        }
        self.installations.remove(format!("i/{id}").as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn remove_repo_installation(&self, repo: &RepoName) -> Result<()> {
        self.installations.remove(format!("r/{repo}").as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn set_repo_installation(&self, repo: &RepoName, id: u64) -> Result<()> {
        self.installations
            .insert(format!("r/{repo}").as_bytes(), encode(&id)?)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn installation_of_repo(&self, repo: &RepoName) -> Result<Option<u64>> {
        let key = format!("r/{repo}");
        self.installations
            .get(key.as_bytes())?
            .map(|b| decode("installations", key.as_bytes(), &b))
            .transpose()
    }
}

const CATCHUP_STATE: &[u8] = b"state";

fn catchup_requested_key(id: &DeliveryId) -> Vec<u8> {
    format!("r/{}", id.as_str()).into_bytes()
}

/// Where the catch-up from GitHub's delivery log stands (tree `catchup`, key `state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchupState {
    pub v: u32,
    /// Deliveries GitHub made before this are never requested: when this store was created,
    /// recovered or restored.
    pub horizon: DateTime<Utc>,
    /// The newest delivery-log entry (GitHub's `id`) a completed pass has read; the next pass
    /// reads down to it and no further.
    pub cursor: Option<u64>,
    /// Deliveries found missing and not requested yet, oldest first.
    pub backlog: Vec<CatchupEntry>,
}

impl CatchupState {
    pub fn new(horizon: DateTime<Utc>) -> Self {
        Self {
            v: 1,
            horizon,
            cursor: None,
            backlog: Vec::new(),
        }
    }
}

/// A delivery the catch-up will ask GitHub to redeliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchupEntry {
    /// GitHub's id of the delivery-log entry (what `POST .../attempts` takes).
    pub hook_delivery_id: u64,
    /// The delivery's GUID (`X-GitHub-Delivery`), kept by every redelivery.
    pub guid: DeliveryId,
    pub event: String,
    pub action: Option<String>,
    pub delivered_at: DateTime<Utc>,
    /// GitHub's answer code then (0: no answer).
    pub status_code: u16,
}

/// A redelivery the catch-up requested (tree `catchup`, key `r/<guid>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchupRequest {
    /// How many times it was requested.
    pub requests: u32,
    pub last_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn id(s: &str) -> DeliveryId {
        DeliveryId::new(s).unwrap()
    }

    #[test]
    fn comment_progress_survives_reopening_and_ends_with_the_handled_record() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "acme/webapp".parse().unwrap();
        let pr = PrNumber(7);
        let v1 = CommentVersion {
            pr,
            comment_id: 55,
            signature: "Stage".into(),
            seq: Some(10),
        };
        let run = |reply: &str| CommandRun {
            outcome: CommandOutcome::Done,
            reply: Some(reply.into()),
            help: false,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.command_ran(&repo, &v1, 0, run("a")).unwrap();
            store.reply_attempted(&repo, &v1).unwrap();
            // A redelivery of the same version (another delivery) continues the same record.
            let again = CommentVersion {
                seq: Some(11),
                ..v1.clone()
            };
            store.command_ran(&repo, &again, 1, run("b")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let p = store.pr(&repo, pr).unwrap().in_progress[&55].clone();
        assert_eq!(p.done.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert!(p.reply_attempted && p.reply_id.is_none());
        assert_eq!(p.seq, Some(10));
        // Another version (an edit) starts afresh.
        let v2 = CommentVersion {
            signature: "Status".into(),
            seq: Some(12),
            ..v1.clone()
        };
        store.command_ran(&repo, &v2, 0, run("c")).unwrap();
        let p = store.pr(&repo, pr).unwrap().in_progress[&55].clone();
        assert_eq!((p.done.len(), p.reply_attempted), (1, false));
        store.reply_posted(&repo, &v2, 99).unwrap();
        store.comment_handled(&repo, &v2).unwrap();
        let r = store.pr(&repo, pr).unwrap();
        assert!(r.in_progress.is_empty());
        assert_eq!(r.handled_comments[&55], "Status");
        assert_eq!(r.handled_seq[&55], 12);
    }

    #[test]
    fn heads_are_kept_in_arrival_order() {
        let sha = |c: char| Sha::new(&c.to_string().repeat(40)).unwrap();
        let mut r = PrRecord::default();
        r.record_head(5, &sha('a'));
        r.record_head(9, &sha('c'));
        // A delivery processed late (a retry) is placed by its arrival, not its processing.
        r.record_head(7, &sha('b'));
        r.record_head(7, &sha('b'));
        assert_eq!(r.heads.len(), 3);
        assert_eq!(r.head_before(Some(8)), Some(&sha('b')));
        assert_eq!(r.head_before(Some(5)), None);
        assert_eq!(r.head_before(None), Some(&sha('c')));
        // The newest head announced again (a label storm) changes no answer: not recorded.
        assert!(r.record_head(10, &sha('d')));
        assert!(!r.record_head(11, &sha('d')));
        assert!(!r.record_head(12, &sha('d')));
        assert_eq!(r.heads.len(), 4);
        assert_eq!(r.head_before(Some(12)), Some(&sha('d')));
        assert_eq!(r.head_before(Some(10)), Some(&sha('c')));
        // Older than the newest: placed by arrival even when the sha repeats.
        assert!(r.record_head(8, &sha('c')));
        for n in 0..(MAX_HEADS as u64 + 10) {
            r.record_head(100 + n, &sha(if n % 2 == 0 { 'e' } else { 'f' }));
        }
        assert_eq!(r.heads.len(), MAX_HEADS);
    }

    #[tokio::test]
    async fn deliveries_are_deduplicated_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .insert_delivery(&id("b"), "push", b"{}", now())
                .await
                .unwrap(),
            Inserted::New
        );
        assert_eq!(
            store
                .insert_delivery(&id("a"), "push", b"{}", now())
                .await
                .unwrap(),
            Inserted::New
        );
        assert_eq!(
            store
                .insert_delivery(&id("b"), "push", b"{}", now())
                .await
                .unwrap(),
            Inserted::Duplicate
        );
        let pending: Vec<_> = store.pending().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(pending, vec![id("b"), id("a")]);
        store
            .finish_delivery(&id("b"), DeliveryStatus::Processed, now())
            .unwrap();
        let next = store.next_ready(now()).unwrap().unwrap();
        assert_eq!(next.record.id, id("a"));
        // finished deliveries still count as seen
        assert_eq!(
            store
                .insert_delivery(&id("b"), "push", b"{}", now())
                .await
                .unwrap(),
            Inserted::Duplicate
        );
    }

    /// Group commit: deliveries that arrive while a flush runs are all covered by the next
    /// one. The running flush is simulated by holding the flush turn until all 16 inserts have
    /// written and are waiting; then exactly one flush makes all 16 durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_flush_covers_every_delivery_that_waited_for_it() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = store.flushes();
        let written_before = store.group.written.load(SeqCst);
        let turn = store.group.flushing.lock().await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .insert_delivery(&id(&format!("g-{i}")), "push", b"{}", now())
                    .await
            }));
        }
        // Every insert has written its delivery and waits for a flush (bounded, not timed).
        for _ in 0..10_000 {
            if store.group.written.load(SeqCst) == written_before + 16 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(store.group.written.load(SeqCst), written_before + 16);
        assert_eq!(
            store.flushes(),
            before,
            "nobody flushed while the turn was held"
        );
        drop(turn);
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Inserted::New);
        }
        assert_eq!(
            store.flushes(),
            before + 1,
            "one flush covered all 16 deliveries"
        );
        assert_eq!(store.pending().unwrap().len(), 16);
        // A lone write still gets a flush of its own before it returns.
        store
            .insert_delivery(&id("alone"), "push", b"{}", now())
            .await
            .unwrap();
        assert_eq!(store.flushes(), before + 2);
    }

    /// sled 0.34's `flush_async` deadlocks when several flushes are awaited at once
    /// (spacejam/sled#1308): concurrent webhooks then never got their 202. Many deliveries
    /// inserted at the same time must all complete. Runs on its own thread and runtime, so a
    /// hang fails the test instead of hanging the suite.
    #[test]
    fn concurrent_inserts_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let inserting = store.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for t in 0..32 {
                    let store = inserting.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..20 {
                            let id = id(&format!("d-{t}-{i}"));
                            store
                                .insert_delivery(&id, "push", b"{}", now())
                                .await
                                .unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("concurrent inserts hung (sled flush_async deadlock)");
        assert_eq!(store.pending().unwrap().len(), 32 * 20);
    }

    #[tokio::test]
    async fn failures_retry_then_die_and_can_be_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_delivery(&id("x"), "push", b"{\"a\":1}", now())
            .await
            .unwrap();
        let later = now() + chrono::Duration::seconds(30);
        store
            .fail_delivery(&id("x"), "boom", Some(later), now())
            .unwrap();
        assert!(store.next_ready(now()).unwrap().is_none());
        assert!(store.next_ready(later).unwrap().is_some());
        let r = store
            .fail_delivery(&id("x"), "boom again", None, now())
            .unwrap();
        assert_eq!(r.status, DeliveryStatus::Dead);
        assert_eq!(r.attempts, 2);
        assert!(store.pending().unwrap().is_empty());
        let first = r.seq;
        assert_eq!(r.received_seq(), first);
        let r = store.replay_delivery(&id("x")).unwrap();
        assert_eq!(r.status, DeliveryStatus::Pending);
        // A replay goes to the back of the inbox but keeps the order it was received in.
        assert!(r.seq > first);
        assert_eq!(r.received_seq(), first);
        let next = store.next_ready(later).unwrap().unwrap();
        assert_eq!(next.payload, b"{\"a\":1}");
        assert!(store.replay_delivery(&id("x")).is_err(), "already pending");
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .insert_delivery(&id("x"), "push", b"{}", now())
                .await
                .unwrap();
        }
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn backup_round_trip_is_identical_and_restore_refuses_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a")).unwrap();
        store
            .insert_delivery(&id("x"), "push", b"{}", now())
            .await
            .unwrap();
        store
            .put_installation(&InstallationRecord {
                v: 1,
                id: 7,
                account: "octo".into(),
                suspended: false,
                repos: vec!["octo/web".parse().unwrap()],
                updated_at: now(),
            })
            .unwrap();
        let file = dir.path().join("backup.json");
        store.backup(&file).unwrap();
        let other = Store::open(&dir.path().join("b")).unwrap();
        other.restore(&file, false).unwrap();
        assert_eq!(store.dump().unwrap(), other.dump().unwrap());
        assert!(other.restore(&file, false).is_err());
        other.restore(&file, true).unwrap();
        assert_eq!(store.dump().unwrap(), other.dump().unwrap());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .meta
                .insert("schema_version", encode(&99u32).unwrap())
                .unwrap();
            store.db.flush().unwrap();
        }
        let reopened = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5));
        assert!(
            matches!(reopened, Err(StoreError::TooNew { .. })),
            "{reopened:?}"
        );
    }

    /// A store written by schema 1 (records frozen in fixtures/store/environments-v1.json, as
    /// the schema-1 code wrote them) is migrated on open and reads back whole.
    #[test]
    fn a_schema_1_store_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../fixtures/store/environments-v1.json")).unwrap();
        {
            // The previous version's store: its trees and records as raw bytes, schema 1.
            let db = sled::open(dir.path().join("db")).unwrap();
            let envs = db.open_tree("environments").unwrap();
            for v in &old {
                assert_eq!(v["v"], 1);
                assert!(v.get("restart_failures").is_some());
                let id: EnvId = serde_json::from_value(v["id"].clone()).unwrap();
                envs.insert(env_key(&id), serde_json::to_vec(v).unwrap())
                    .unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", b"1".to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let envs = store.envs().unwrap();
        assert_eq!(envs.len(), old.len());
        let by_slug = |s: &str| envs.iter().find(|e| e.id.slug.as_str() == s).unwrap();
        // Every field of the old layout reads back as it was.
        for (e, v) in [
            ("pr-7-login", &old[0]),
            ("staging", &old[1]),
            ("pr-8-pay", &old[2]),
        ] {
            let e = by_slug(e);
            assert_eq!(e.v, crate::environment::ENV_RECORD_VERSION);
            assert_eq!(e.state().as_str(), v["state"].as_str().unwrap());
            assert_eq!(e.generation(), v["generation"].as_u64().unwrap());
            assert_eq!(
                e.current_release().map(u64::from),
                v["current_release"].as_u64()
            );
            assert_eq!(u64::from(e.releases()), v["releases"].as_u64().unwrap());
            assert_eq!(e.seen_shas.len(), v["seen_shas"].as_array().unwrap().len());
            assert_eq!(e.report_pending, v["report_pending"].as_bool().unwrap());
            assert_eq!(e.private, v["private"].as_bool().unwrap());
            assert_eq!(e.pr.map(|p| p.0), v["pr"].as_u64());
        }
        let live = by_slug("pr-7-login");
        assert_eq!(
            live.deployments.values().copied().collect::<Vec<_>>(),
            vec![77]
        );
        assert!(live.seeded() && live.restart_backoff().is_none());
        assert_eq!(
            live.expires_at(),
            Some(DateTime::from_timestamp(1_700_086_400, 0).unwrap())
        );
        // The restart backoff moved into its new field.
        let staging = by_slug("staging");
        let backoff = staging.restart_backoff().unwrap();
        assert_eq!(backoff.failures, 2);
        assert_eq!(
            backoff.next_at,
            DateTime::from_timestamp(1_700_003_600, 0).unwrap()
        );
        assert_eq!(staging.restartable(backoff.next_at), Some(4));
        assert_eq!(
            staging.restartable(backoff.next_at - chrono::Duration::seconds(1)),
            None
        );
        let queued = by_slug("pr-8-pay");
        assert!(matches!(
            queued.op(),
            Some(crate::environment::Op::Deploy { .. })
        ));
        assert_eq!(
            queued.queued_at(),
            Some(DateTime::from_timestamp(1_700_000_020, 0).unwrap())
        );
        // Written in the new layout: the old fields are gone from the stored bytes.
        let raw = store
            .environments
            .get(env_key(&staging.id))
            .unwrap()
            .unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert!(raw.get("restart_failures").is_none() && raw.get("next_restart_at").is_none());
        assert_eq!(raw["v"], 2);
        assert_eq!(raw["restart_backoff"]["failures"], 2);
        drop(store);
        // Opening again changes nothing.
        let again = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(again.envs().unwrap(), envs);
    }
}
