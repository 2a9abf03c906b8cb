//! Destroyed environments out of the hot path (issue 13): the `environments` tree holds the
//! environments something is still owed on, the `environments_archive` tree the others.
//!
//! An environment is **archived** when it is `destroyed` and GitHub has been told
//! (`report_pending` is false): nothing runs for it, nothing is owed, no sweep or reconcile pass
//! has anything to do with it. Every write of an environment puts the record in the tree its
//! state says, in the same sled transaction as the write (a destroyed environment whose report
//! is still pending stays in `environments`, where the reconciler retries the report, and moves
//! with the write that clears `report_pending`). A destroyed environment asked to deploy again (a
//! reopened PR, a new push to a swept branch) moves back with that write, keeping its release
//! numbers, generation, deployments and seen commits: [`Store::env`] reads both trees.
//!
//! So [`Store::envs`], [`Store::envs_of_repo`] (every delivery's policy state) and the start-up
//! and reconcile passes decode only live environments; history (the dashboard's environment
//! page, the API and CLI listings, backups) reads the archive too. Archived environments
//! destroyed longer ago than `STAGEBOT_DELIVERY_RETENTION` are forgotten with their releases
//! and deploy attempts ([`Store::prune_archive`]).
//!
//! Values in the archive: [`ArchivedEnv`] (the record and when it was archived), keyed like
//! `environments` (`owner/name \0 slug`).

use super::*;

use crate::environment::EnvState;

/// The tree of archived environments.
pub(super) const ARCHIVE_TREE: &str = "environments_archive";

/// An archived environment: its record as it was when archived, and when that was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedEnv {
    pub v: u32,
    pub archived_at: DateTime<Utc>,
    pub env: EnvRecord,
}

/// Does `rec` belong in the archive: destroyed, and nothing owed to GitHub?
pub fn is_archived(rec: &EnvRecord) -> bool {
    rec.state() == EnvState::Destroyed && !rec.report_pending
}

/// Where an environment record is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Live,
    Archive,
}

impl Place {
    fn of(rec: &EnvRecord) -> Self {
        if is_archived(rec) {
            Place::Archive
        } else {
            Place::Live
        }
    }
}

fn decode_archived(key: &[u8], bytes: &[u8]) -> Result<ArchivedEnv> {
    decode(ARCHIVE_TREE, key, bytes)
}

fn repo_prefix(repo: &RepoName) -> Vec<u8> {
    let mut prefix = repo.to_string().into_bytes();
    prefix.push(0);
    prefix
}

impl Store {
    /// The stored bytes of `rec` for `place` (`archived_at` of an archived one kept when it
    /// was archived already: `previous`).
    fn env_bytes(
        rec: &EnvRecord,
        place: Place,
        previous: Option<DateTime<Utc>>,
    ) -> Result<Vec<u8>> {
        match place {
            Place::Live => encode(rec),
            Place::Archive => encode(&ArchivedEnv {
                v: 1,
                archived_at: previous.unwrap_or_else(Utc::now),
                env: rec.clone(),
            }),
        }
    }

    fn place_tree(&self, place: Place) -> &sled::Tree {
        match place {
            Place::Live => &self.environments,
            Place::Archive => &self.archive,
        }
    }

    /// The stored record of `key` and where it is (live first; a record moved between the two
    /// reads is found by reading the live tree once more).
    fn env_entry(&self, key: &[u8]) -> Result<Option<(Place, sled::IVec, EnvRecord)>> {
        for attempt in 0..2 {
            if let Some(b) = self.environments.get(key)? {
                let rec = decode("environments", key, &b)?;
                return Ok(Some((Place::Live, b, rec)));
            }
            if attempt == 0
                && let Some(b) = self.archive.get(key)?
            {
                let rec = decode_archived(key, &b)?.env;
                return Ok(Some((Place::Archive, b, rec)));
            }
        }
        Ok(None)
    }

    /// An environment, live or archived.
    pub fn env(&self, id: &EnvId) -> Result<Option<EnvRecord>> {
        self.check("environments", Access::Read)?;
        Ok(self.env_entry(&env_key(id))?.map(|(_, _, rec)| rec))
    }

    /// Write an environment as it is, into the tree its state says (and out of the other), in
    /// one transaction; durable when this returns.
    pub fn put_env(&self, rec: &EnvRecord) -> Result<()> {
        let key = env_key(&rec.id);
        let place = Place::of(rec);
        let previous = match (place, self.archive.get(&key)?) {
            (Place::Archive, Some(b)) => Some(decode_archived(&key, &b)?.archived_at),
            _ => None,
        };
        let bytes = Self::env_bytes(rec, place, previous)?;
        (&self.environments, &self.archive)
            .transaction(|(e, a)| {
                let (to, other) = match place {
                    Place::Live => (e, a),
                    Place::Archive => (a, e),
                };
                to.insert(key.as_slice(), bytes.as_slice())?;
                other.remove(key.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    /// Read-modify-write an environment atomically (compare-and-swap loop), live or archived.
    /// `f` returns what the caller wants back; the record is written only when `f` changed it,
    /// into the tree its new state says (a move between the trees is one transaction).
    pub fn update_env<T>(
        &self,
        id: &EnvId,
        mut f: impl FnMut(&mut EnvRecord) -> T,
    ) -> Result<Option<(EnvRecord, T)>> {
        let key = env_key(id);
        loop {
            let Some((from, old, mut rec)) = self.env_entry(&key)? else {
                return Ok(None);
            };
            let before = rec.clone();
            let out = f(&mut rec);
            if rec == before {
                return Ok(Some((rec, out)));
            }
            let to = Place::of(&rec);
            let archived_at = match from {
                Place::Archive => Some(decode_archived(&key, &old)?.archived_at),
                Place::Live => None,
            };
            let new = Self::env_bytes(&rec, to, archived_at)?;
            self.check("environments", Access::Write)?;
            let written = if from == to {
                self.place_tree(to)
                    .compare_and_swap(&key, Some(old), Some(new))?
                    .is_ok()
            } else {
                (&self.environments, &self.archive)
                    .transaction(|(e, a)| {
                        let (src, dst) = match from {
                            Place::Live => (e, a),
                            Place::Archive => (a, e),
                        };
                        if src.get(key.as_slice())?.as_ref() != Some(&old) {
                            return Ok(false);
                        }
                        src.remove(key.as_slice())?;
                        dst.insert(key.as_slice(), new.as_slice())?;
                        Ok::<_, ConflictableTransactionError<StoreError>>(true)
                    })
                    .map_err(tx_err)?
            };
            if written {
                self.db.flush()?;
                return Ok(Some((rec, out)));
            }
        }
    }

    /// An archived environment (`None` when it is live or unknown).
    pub fn archived_env(&self, id: &EnvId) -> Result<Option<ArchivedEnv>> {
        let key = env_key(id);
        self.archive
            .get(&key)?
            .map(|b| decode_archived(&key, &b))
            .transpose()
    }

    /// Every archived environment, ordered by repository and slug.
    pub fn archived_envs(&self) -> Result<Vec<ArchivedEnv>> {
        let mut out = Vec::new();
        for item in self.archive.iter() {
            let (k, b) = item?;
            out.push(decode_archived(&k, &b)?);
        }
        Ok(out)
    }

    /// The archived environments of `repo`.
    pub fn archived_envs_of_repo(&self, repo: &RepoName) -> Result<Vec<EnvRecord>> {
        let mut out = Vec::new();
        for item in self.archive.scan_prefix(repo_prefix(repo)) {
            let (k, b) = item?;
            out.push(decode_archived(&k, &b)?.env);
        }
        Ok(out)
    }

    /// Every environment, live and archived (history: listings, not the hot path), ordered by
    /// repository and slug.
    pub fn all_envs(&self) -> Result<Vec<EnvRecord>> {
        let mut out = self.envs()?;
        out.extend(self.archived_envs()?.into_iter().map(|a| a.env));
        out.sort_by_key(|e| env_key(&e.id));
        Ok(out)
    }

    /// Every environment of `repo`, live and archived, ordered by slug.
    pub fn all_envs_of_repo(&self, repo: &RepoName) -> Result<Vec<EnvRecord>> {
        let mut out = self.envs_of_repo(repo)?;
        out.extend(self.archived_envs_of_repo(repo)?);
        out.sort_by(|a, b| a.id.slug.cmp(&b.id.slug));
        Ok(out)
    }

    /// `live` (the live environments of `repo`) with the archived ones among `slugs` added:
    /// what a decision that names those environments needs, in point reads.
    pub fn with_archived(
        &self,
        mut live: Vec<EnvRecord>,
        repo: &RepoName,
        slugs: &[crate::types::Slug],
    ) -> Result<Vec<EnvRecord>> {
        for slug in slugs {
            if live.iter().any(|e| &e.id.slug == slug) {
                continue;
            }
            let id = EnvId {
                repo: repo.clone(),
                slug: slug.clone(),
            };
            if let Some(a) = self.archived_env(&id)? {
                live.push(a.env);
            }
        }
        Ok(live)
    }

    /// The live environments of `repo` and the archived ones a pull request's sticky comment
    /// shows: PR `pr`'s previews (their slugs start with `pr-<n>`, `slug::preview_slug`) and
    /// the shared ones (staging, production).
    pub fn envs_of_repo_for_pr(&self, repo: &RepoName, pr: PrNumber) -> Result<Vec<EnvRecord>> {
        let mut out = self.envs_of_repo(repo)?;
        let mut prefix = repo_prefix(repo);
        prefix.extend_from_slice(format!("pr-{}", pr.0).as_bytes());
        for item in self.archive.scan_prefix(prefix) {
            let (k, b) = item?;
            let env = decode_archived(&k, &b)?.env;
            if env.pr == Some(pr) {
                out.push(env);
            }
        }
        let shared = [
            crate::types::Slug::staging(),
            crate::types::Slug::production(),
        ];
        let mut out = self.with_archived(out, repo, &shared)?;
        out.sort_by(|a, b| a.id.slug.cmp(&b.id.slug));
        Ok(out)
    }

    /// The repositories of archived environments.
    pub(super) fn archived_repos(&self) -> Result<Vec<RepoName>> {
        let mut out: Vec<RepoName> = Vec::new();
        for item in self.archive.iter() {
            let (k, _) = item?;
            let repo = k
                .split(|b| *b == 0)
                .next()
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.parse::<RepoName>().ok());
            if let Some(repo) = repo
                && out.last() != Some(&repo)
            {
                out.push(repo);
            }
        }
        Ok(out)
    }

    /// The ids of the archived environments, from their keys (nothing decoded).
    pub fn archived_ids(&self) -> Result<std::collections::BTreeSet<EnvId>> {
        let mut out = std::collections::BTreeSet::new();
        for item in self.archive.iter() {
            let (k, _) = item?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let repo = parts
                .next()
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.parse::<RepoName>().ok());
            let slug = parts
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| crate::types::Slug::new(s).ok());
            if let (Some(repo), Some(slug)) = (repo, slug) {
                out.insert(EnvId { repo, slug });
            }
        }
        Ok(out)
    }

    /// Forget the environments archived before `cutoff` with their releases and deploy
    /// attempts (`STAGEBOT_DELIVERY_RETENTION`). Returns the ids forgotten (their directories
    /// under the data dir go too, `src/prune.rs`). A record that moved back to the live tree
    /// meanwhile is left alone.
    pub fn prune_archive(&self, cutoff: DateTime<Utc>) -> Result<Vec<EnvId>> {
        let mut gone = Vec::new();
        for item in self.archive.iter() {
            let (k, b) = item?;
            let a = decode_archived(&k, &b)?;
            if a.archived_at >= cutoff {
                continue;
            }
            let prefix = release_prefix(&a.env.id);
            let mut batch_releases = sled::Batch::default();
            for r in self.releases.scan_prefix(&prefix) {
                batch_releases.remove(r?.0);
            }
            let mut batch_attempts = sled::Batch::default();
            for r in self.attempts.scan_prefix(&prefix) {
                batch_attempts.remove(r?.0);
            }
            let removed = (&self.archive, &self.releases, &self.attempts)
                .transaction(|(arch, rel, att)| {
                    if arch.get(k.as_ref())?.as_ref() != Some(&b) {
                        return Ok(false);
                    }
                    arch.remove(k.as_ref())?;
                    rel.apply_batch(&batch_releases)?;
                    att.apply_batch(&batch_attempts)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(true)
                })
                .map_err(tx_err)?;
            if removed {
                gone.push(a.env.id);
            }
        }
        if !gone.is_empty() {
            self.db.flush()?;
        }
        Ok(gone)
    }

    /// Schema 3 → 4: destroyed environments nothing is owed on move from `environments` to
    /// the archive (archived now), in one transaction with the new schema version.
    pub(super) fn migrate_archive(&self) -> Result<usize> {
        let now = Utc::now();
        let mut moved = Vec::new();
        for item in self.environments.iter() {
            let (k, b) = item?;
            let rec: EnvRecord = decode("environments", &k, &b)?;
            if is_archived(&rec) {
                moved.push((
                    k,
                    encode(&ArchivedEnv {
                        v: 1,
                        archived_at: now,
                        env: rec,
                    })?,
                ));
            }
        }
        let version = encode(&4u32)?;
        (&self.environments, &self.archive, &self.meta)
            .transaction(|(e, a, m)| {
                for (k, v) in &moved {
                    e.remove(k.as_ref())?;
                    a.insert(k.as_ref(), v.as_slice())?;
                }
                m.insert("schema_version", version.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        if !moved.is_empty() {
            tracing::info!(
                environments = moved.len(),
                "store migrated from schema 3 to 4: destroyed environments archived"
            );
        }
        Ok(moved.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EnvKind, Sha, Slug};

    fn repo() -> RepoName {
        "acme/webapp".parse().unwrap()
    }

    fn sha(c: char) -> Sha {
        Sha::new(&c.to_string().repeat(40)).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn preview(pr: u64, branch: &str) -> EnvRecord {
        let id = EnvId {
            repo: repo(),
            slug: crate::slug::preview_slug(Some(PrNumber(pr)), branch),
        };
        let mut e = EnvRecord::new(id, EnvKind::Preview, branch, now());
        e.pr = Some(PrNumber(pr));
        e
    }

    /// Live, then destroyed with its report owed, then reported: in `environments` until the
    /// write that clears `report_pending`, then in the archive only.
    fn destroyed_and_reported(store: &Store, rec: EnvRecord) -> EnvRecord {
        let rec = rec.deployed(&sha('a'), 1).unwrap();
        store.put_env(&rec).unwrap();
        let (rec, _) = store
            .update_env(&rec.id, |r| {
                *r = r.clone().torn_down("closed").unwrap();
            })
            .unwrap()
            .unwrap();
        assert!(rec.report_pending);
        assert!(
            store.envs().unwrap().contains(&rec),
            "owed a report: still live"
        );
        assert!(store.archived_env(&rec.id).unwrap().is_none());
        let (rec, _) = store
            .update_env(&rec.id, |r| r.report_pending = false)
            .unwrap()
            .unwrap();
        rec
    }

    #[test]
    fn a_destroyed_environment_leaves_the_hot_path_and_comes_back_when_deployed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let other = preview(8, "pay").deployed(&sha('c'), 1).unwrap();
        store.put_env(&other).unwrap();
        let rec = destroyed_and_reported(&store, preview(7, "login"));
        // Out of every scan of live environments…
        assert_eq!(store.envs().unwrap(), vec![other.clone()]);
        assert_eq!(store.envs_of_repo(&repo()).unwrap(), vec![other.clone()]);
        assert!(store.environments.get(env_key(&rec.id)).unwrap().is_none());
        // …still readable by id and in the history.
        assert_eq!(store.env(&rec.id).unwrap(), Some(rec.clone()));
        assert_eq!(store.archived_env(&rec.id).unwrap().unwrap().env, rec);
        assert_eq!(store.all_envs().unwrap(), vec![rec.clone(), other.clone()]);
        assert_eq!(store.all_envs_of_repo(&repo()).unwrap().len(), 2);
        assert_eq!(store.known_repos().unwrap(), vec![repo()]);
        // A write that keeps it destroyed stays in the archive, archived when it was.
        let archived_at = store.archived_env(&rec.id).unwrap().unwrap().archived_at;
        store
            .update_env(&rec.id, |r| r.remember(&sha('b')))
            .unwrap()
            .unwrap();
        let again = store.archived_env(&rec.id).unwrap().unwrap();
        assert_eq!(again.archived_at, archived_at);
        assert!(again.env.seen_shas.contains(&sha('b')));
        assert_eq!(store.envs().unwrap().len(), 1);
        // Deployed again (a reopened PR): back in `environments`, numbering on from release 1.
        let (back, change) = store
            .update_env(&rec.id, |r| {
                r.request_deploy(crate::environment::Op::Deploy {
                    sha: sha('d'),
                    git_ref: "login".into(),
                    trigger: crate::environment::Trigger::PullRequest,
                    by: "alice".into(),
                    ack: None,
                    force: false,
                    gate: None,
                    checks: None,
                })
            })
            .unwrap()
            .unwrap();
        assert!(change.unwrap().new_op);
        assert_eq!(back.state(), EnvState::Pending);
        assert_eq!(back.releases(), 1);
        assert_eq!(back.generation(), rec.generation() + 1);
        assert!(store.archived_env(&rec.id).unwrap().is_none());
        assert_eq!(
            store.envs_of_repo(&repo()).unwrap(),
            vec![back.clone(), other]
        );
        // `put_env` places a record too (and takes it out of the other tree).
        let mut gone = back.clone();
        gone = gone.torn_down("closed").unwrap();
        gone.report_pending = false;
        store.put_env(&gone).unwrap();
        assert_eq!(store.envs().unwrap().len(), 1);
        assert_eq!(store.env(&gone.id).unwrap(), Some(gone));
        drop(store);
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(store.envs().unwrap().len(), 1);
        assert_eq!(store.archived_envs().unwrap().len(), 1);
    }

    #[test]
    fn the_sticky_comment_finds_the_prs_archived_previews_and_the_shared_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mine = destroyed_and_reported(&store, preview(7, "login"));
        // A branch name long enough to be cut and hashed keeps the `pr-7` prefix.
        let long = destroyed_and_reported(&store, preview(7, &"very-long-name/".repeat(9)));
        assert!(long.id.slug.as_str().starts_with("pr-7-"));
        let theirs = destroyed_and_reported(&store, preview(70, "login"));
        let production = {
            let id = EnvId {
                repo: repo(),
                slug: Slug::production(),
            };
            destroyed_and_reported(
                &store,
                EnvRecord::new(id, EnvKind::Production, "main", now()),
            )
        };
        let slugs: Vec<String> = store
            .envs_of_repo_for_pr(&repo(), PrNumber(7))
            .unwrap()
            .into_iter()
            .map(|e| e.id.slug.to_string())
            .collect();
        let mut want = vec![
            mine.id.slug.to_string(),
            long.id.slug.to_string(),
            production.id.slug.to_string(),
        ];
        want.sort();
        assert_eq!(slugs, want);
        assert!(!slugs.contains(&theirs.id.slug.to_string()));
        // The policy's point reads: only the slugs asked for.
        let named = store
            .with_archived(Vec::new(), &repo(), std::slice::from_ref(&theirs.id.slug))
            .unwrap();
        assert_eq!(named, vec![theirs]);
    }

    #[test]
    fn archived_environments_are_forgotten_after_the_retention_with_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = destroyed_and_reported(&store, preview(7, "login"));
        let live = preview(8, "pay").deployed(&sha('c'), 1).unwrap();
        store.put_env(&live).unwrap();
        for rec in [&old, &live] {
            let release = Release {
                v: 1,
                n: 1,
                sha: sha('a'),
                git_ref: rec.branch.clone(),
                by: "alice".into(),
                trigger: crate::environment::Trigger::PullRequest,
                at: now(),
                url: String::new(),
                log: String::new(),
                pr: rec.pr,
                checks: None,
                artifact: None,
            };
            store.put_release(&rec.id, &release).unwrap();
            store
                .put_attempt(&AttemptRecord {
                    v: 1,
                    attempt: store.new_attempt_id().unwrap(),
                    env: rec.id.clone(),
                    kind: rec.kind,
                    generation: 1,
                    sha: sha('a'),
                    git_ref: rec.branch.clone(),
                    release: 1,
                    trigger: crate::environment::Trigger::PullRequest,
                    actor: "alice".into(),
                    pr: rec.pr,
                    incarnation: 1,
                    created_at: now(),
                    deployment_id: Some(5),
                    state: Some("inactive".into()),
                })
                .unwrap();
        }
        let archived_at = store.archived_env(&old.id).unwrap().unwrap().archived_at;
        // Inside the retention: kept.
        assert!(store.prune_archive(archived_at).unwrap().is_empty());
        assert!(store.env(&old.id).unwrap().is_some());
        // Past it: the record, its releases and attempts go; the live one keeps everything.
        let cutoff = archived_at + chrono::Duration::seconds(1);
        assert_eq!(store.prune_archive(cutoff).unwrap(), vec![old.id.clone()]);
        assert!(store.env(&old.id).unwrap().is_none());
        assert!(store.releases(&old.id).unwrap().is_empty());
        assert!(store.attempts(&old.id).unwrap().is_empty());
        assert_eq!(store.env(&live.id).unwrap(), Some(live.clone()));
        assert_eq!(store.releases(&live.id).unwrap().len(), 1);
        assert_eq!(store.attempts(&live.id).unwrap().len(), 1);
        assert!(store.prune_archive(cutoff).unwrap().is_empty());
    }

    /// A store written by schema 3 (records frozen in fixtures/store/environments-v3.json, as
    /// the schema-3 code wrote them): on open, the destroyed environment nothing is owed on
    /// moves to the archive; the live one and the destroyed one whose report is pending stay.
    #[test]
    fn a_schema_3_store_archives_its_destroyed_environments_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../fixtures/store/environments-v3.json"))
                .unwrap();
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let envs = db.open_tree("environments").unwrap();
            for v in &old {
                let id: EnvId = serde_json::from_value(v["id"].clone()).unwrap();
                envs.insert(env_key(&id), serde_json::to_vec(v).unwrap())
                    .unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", b"3".to_vec())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let slugs = |envs: Vec<EnvRecord>| {
            envs.into_iter()
                .map(|e| e.id.slug.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            slugs(store.envs().unwrap()),
            vec!["pr-8-pay", "pr-9-owed", "staging"]
        );
        let archived = store.archived_envs().unwrap();
        assert_eq!(archived.len(), 1);
        let gone = &archived[0].env;
        assert_eq!(gone.id.slug.as_str(), "pr-7-login");
        // Every field reads back as it was written.
        let raw = old
            .iter()
            .find(|v| v["id"]["slug"] == "pr-7-login")
            .unwrap();
        assert_eq!(&serde_json::to_value(gone).unwrap(), raw);
        assert_eq!(store.env(&gone.id).unwrap().as_ref(), Some(gone));
        drop(store);
        // Opening again changes nothing.
        let again = Store::open_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(again.archived_envs().unwrap(), archived);
        assert_eq!(again.envs().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn backups_carry_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a")).unwrap();
        let rec = destroyed_and_reported(&store, preview(7, "login"));
        let file = dir.path().join("backup.json");
        store.backup(&file).unwrap();
        let other = Store::open(&dir.path().join("b")).unwrap();
        other.restore(&file, false).unwrap();
        assert_eq!(other.env(&rec.id).unwrap(), Some(rec));
        assert!(other.envs().unwrap().is_empty());
        assert_eq!(store.dump().unwrap(), other.dump().unwrap());
    }
}
