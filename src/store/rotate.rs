//! Store-file rotation (issue 13, `stagebot store compact`): sled 0.34 reuses the space of
//! removed records only partly, so its files keep growing under a steady stream of deliveries
//! that are pruned after the retention (docs/performance.md §0, round 3). The rotation copies
//! every tree into a fresh sled directory and swaps it in; the payload segments
//! (`<data dir>/payloads`) are not touched.
//!
//! Steps, each durable before the next, so that a crash at any point leaves one whole store
//! that [`recover_rotation`] (run by every open) settles:
//!
//! 1. copy every tree of `db/` into `db.compact/` (an interrupted copy is deleted);
//! 2. flush it, then create the marker `db.compact.done` and sync the directory (a complete
//!    copy not swapped in yet is deleted: the old store is still the store);
//! 3. rename `db/` to `db.old/` (with the marker present and no `db/`, the copy is renamed in);
//! 4. rename `db.compact/` to `db/`, delete the marker and `db.old/`.
//!
//! sled's id generator is not part of its trees: the new store counts from 0. Every id the
//! store hands out is `id_base` (in `meta`) plus sled's id, and the rotation sets the new
//! `id_base` beyond every id the old store gave, so arrival sequences and attempt ids keep
//! increasing.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

const DB: &str = "db";
const NEW: &str = "db.compact";
const OLD: &str = "db.old";
const DONE: &str = "db.compact.done";
/// The key in `meta` of the base added to sled's ids.
pub(super) const ID_BASE: &str = "id_base";

/// A point to stop after, for the tests that interrupt a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotationStep {
    /// The copy is written (not marked complete).
    Copied,
    /// The copy is flushed and marked complete.
    Marked,
    /// The old store is renamed aside.
    OldAside,
    /// The copy is in place (the old one not deleted yet).
    Swapped,
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub entries: usize,
    /// Bytes of `db/` before and after.
    pub before: u64,
    pub after: u64,
    pub took: Duration,
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `fsync` `dir` and every directory below it (their entries durable).
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// Settle what an interrupted rotation left in `dir` (see the module docs); a no-op otherwise.
pub(super) fn recover_rotation(dir: &Path) -> std::io::Result<()> {
    let (db, new, old, done) = (dir.join(DB), dir.join(NEW), dir.join(OLD), dir.join(DONE));
    if !db.exists() && new.exists() && done.exists() {
        // Stopped between the two renames: the complete copy becomes the store.
        std::fs::rename(&new, &db)?;
        sync_dir(dir)?;
        tracing::warn!(dir = %dir.display(), "finished an interrupted store rotation");
    }
    if !db.exists() && old.exists() {
        // Cannot happen by the steps' order (the old store goes aside only once the copy is
        // complete), but never leave the store missing: put it back.
        std::fs::rename(&old, &db)?;
        sync_dir(dir)?;
    }
    if new.exists() {
        // An interrupted or never swapped copy: the store in `db/` is whole.
        std::fs::remove_dir_all(&new)?;
    }
    if done.exists() {
        std::fs::remove_file(&done)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if new.exists() || done.exists() || old.exists() {
        return Err(std::io::Error::other(
            "could not settle an interrupted rotation",
        ));
    }
    sync_dir(dir).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })
}

fn open_sled(path: &Path, cache: u64) -> Result<sled::Db> {
    Ok(sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(cache)
        .open()?)
}

impl Store {
    /// Rotate the store file of the data dir `dir` (the server must be stopped: sled's lock
    /// says so). See the module docs.
    pub fn compact(dir: &Path) -> Result<Compacted> {
        Self::compact_until(dir, None)
    }

    /// [`Store::compact`], stopping after `stop` (as a crash there would) when given.
    pub fn compact_until(dir: &Path, stop: Option<RotationStep>) -> Result<Compacted> {
        let started = Instant::now();
        // Held through every step: no other process opens (or creates) a store while the
        // directories are swapped (src/store/lock.rs).
        let _lock = super::lock::DirLock::acquire(dir, Duration::ZERO)?;
        recover_rotation(dir)?;
        let (db_dir, new_dir) = (dir.join(DB), dir.join(NEW));
        if !db_dir.exists() {
            return Err(StoreError::NotFound(format!(
                "no store in {}",
                dir.display()
            )));
        }
        let before = dir_bytes(&db_dir);
        let cache = DEFAULT_STORE_CACHE;
        let old = open_sled(&db_dir, cache)?;
        let meta = old.open_tree("meta")?;
        let base: u64 = match meta.get(ID_BASE)? {
            Some(b) => decode("meta", ID_BASE.as_bytes(), &b)?,
            None => 0,
        };
        // Every id the old store handed out is below this.
        let next_base = base
            .checked_add(old.generate_id()?)
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| StoreError::Conflict("the store's ids are exhausted".into()))?;
        let new = open_sled(&new_dir, cache)?;
        let mut entries = 0;
        for name in old.tree_names() {
            let (from, to) = if name == old.name() {
                // sled's default tree (unused by stagebot, copied all the same).
                ((*old).clone(), (*new).clone())
            } else {
                (old.open_tree(&name)?, new.open_tree(&name)?)
            };
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for item in from.iter() {
                let (k, v) = item?;
                batch.insert(k, v);
                in_batch += 1;
                entries += 1;
                if in_batch == 10_000 {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            to.apply_batch(batch)?;
        }
        new.open_tree("meta")?
            .insert(ID_BASE, encode(&next_base)?)?;
        new.flush()?;
        drop((new, old, meta));
        if stop == Some(RotationStep::Copied) {
            return Ok(Self::compacted(entries, before, 0, started));
        }
        // The copy's own directory entries (sled's files in it) are durable before it is marked
        // complete.
        sync_tree(&new_dir)?;
        std::fs::File::create(dir.join(DONE))?.sync_all()?;
        sync_dir(dir)?;
        if stop == Some(RotationStep::Marked) {
            return Ok(Self::compacted(entries, before, 0, started));
        }
        // sled's flusher thread lets go of the old directory shortly after the drop; a rename
        // does not mind open files.
        std::fs::rename(&db_dir, dir.join(OLD))?;
        sync_dir(dir)?;
        if stop == Some(RotationStep::OldAside) {
            return Ok(Self::compacted(entries, before, 0, started));
        }
        std::fs::rename(&new_dir, &db_dir)?;
        sync_dir(dir)?;
        let after = dir_bytes(&db_dir);
        if stop == Some(RotationStep::Swapped) {
            return Ok(Self::compacted(entries, before, after, started));
        }
        recover_rotation(dir)?;
        tracing::info!(entries, before, after, "store file rotated");
        Ok(Self::compacted(entries, before, after, started))
    }

    fn compacted(entries: usize, before: u64, after: u64, started: Instant) -> Compacted {
        Compacted {
            entries,
            before,
            after,
            took: started.elapsed(),
        }
    }

    /// The base added to sled's ids (`id_base` in `meta`, set by a rotation).
    pub(super) fn read_id_base(meta: &sled::Tree) -> Result<u64> {
        match meta.get(ID_BASE)? {
            Some(b) => decode("meta", ID_BASE.as_bytes(), &b),
            None => Ok(0),
        }
    }

    /// A fresh id, unique and increasing for the store's lifetime, rotations included.
    pub(super) fn next_id(&self) -> Result<u64> {
        Ok(self.id_base + self.db.generate_id()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    /// A store with deliveries (most pruned), an environment and an attempt id handed out.
    async fn filled(dir: &Path) -> (StoreDump, u64) {
        let store = Store::open(dir).unwrap();
        for i in 0..300 {
            let id = DeliveryId::new(&format!("d-{i}")).unwrap();
            store
                .insert_delivery(&id, "push", &[b'x'; 2048], now())
                .await
                .unwrap();
            if i < 250 {
                store
                    .finish_delivery(&id, DeliveryStatus::Processed, now())
                    .unwrap();
            }
        }
        store
            .prune_deliveries(now() + chrono::Duration::seconds(1))
            .unwrap();
        let last = store.new_attempt_id().unwrap();
        store.db.flush().unwrap();
        let dump = store.dump().unwrap();
        (dump, last)
    }

    fn reopen(dir: &Path) -> Store {
        Store::open_waiting(dir, Duration::from_secs(10)).unwrap()
    }

    /// No rotation while a store is open on the data dir (and no open while one runs: both hold
    /// `store.lock` from before they look at the directories; found by review).
    #[tokio::test]
    async fn no_rotation_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        match Store::compact(dir.path()) {
            Err(StoreError::Sled(e)) => assert!(Store::is_locked(&e), "{e}"),
            other => panic!("rotated an open store: {other:?}"),
        }
        assert!(!dir.path().join(NEW).exists() && !dir.path().join(OLD).exists());
        store.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_rotation_keeps_every_entry_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let (dump, last) = filled(dir.path()).await;
        // sled's lock is let go of shortly after the drop.
        let done = (0..500)
            .find_map(|_| match Store::compact(dir.path()) {
                Err(StoreError::Sled(e)) if Store::is_locked(&e) => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
                other => Some(other),
            })
            .unwrap()
            .unwrap();
        assert!(done.entries > 0);
        assert!(done.after > 0);
        assert!(!dir.path().join(OLD).exists() && !dir.path().join(NEW).exists());
        let store = reopen(dir.path());
        let mut after = store.dump().unwrap();
        // The incarnation counts this opening; everything else is as it was.
        let mut before = dump;
        for d in [&mut before, &mut after] {
            if let Some(meta) = d.get_mut("meta") {
                meta.retain(|(k, _)| {
                    k.as_slice() != b"incarnation" && k.as_slice() != ID_BASE.as_bytes()
                });
            }
        }
        assert_eq!(before, after);
        assert_eq!(store.pending().unwrap().len(), 50);
        assert!(store.new_attempt_id().unwrap() > last);
        let seq_before = store
            .pending()
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .max()
            .unwrap();
        store
            .insert_delivery(&DeliveryId::new("after").unwrap(), "push", b"{}", now())
            .await
            .unwrap();
        let newest = store.pending().unwrap().last().unwrap().clone();
        assert_eq!(newest.id.as_str(), "after");
        assert!(
            newest.seq > seq_before,
            "arrival order survives the rotation"
        );
    }

    /// A rotation interrupted after any step (as a crash there would leave it) leaves a store
    /// that opens whole, and the next rotation works.
    #[tokio::test]
    async fn a_rotation_stopped_after_any_step_leaves_a_usable_store() {
        for stop in [
            RotationStep::Copied,
            RotationStep::Marked,
            RotationStep::OldAside,
            RotationStep::Swapped,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (dump, last) = filled(dir.path()).await;
            let stopped = (0..500)
                .find_map(|_| match Store::compact_until(dir.path(), Some(stop)) {
                    Err(StoreError::Sled(e)) if Store::is_locked(&e) => {
                        std::thread::sleep(Duration::from_millis(20));
                        None
                    }
                    other => Some(other),
                })
                .unwrap();
            assert!(stopped.is_ok(), "{stop:?}: {stopped:?}");
            std::thread::sleep(Duration::from_millis(100));
            let store = reopen(dir.path());
            for name in ["deliveries", "inbox", "payloads"] {
                assert_eq!(
                    store.dump().unwrap()[name],
                    dump[name],
                    "{stop:?}: tree {name}"
                );
            }
            assert_eq!(store.pending().unwrap().len(), 50, "{stop:?}");
            assert!(store.new_attempt_id().unwrap() > last, "{stop:?}");
            assert!(
                !dir.path().join(OLD).exists()
                    && !dir.path().join(NEW).exists()
                    && !dir.path().join(DONE).exists(),
                "{stop:?}: settled"
            );
            drop(store);
            std::thread::sleep(Duration::from_millis(100));
            let again = (0..500).find_map(|_| match Store::compact(dir.path()) {
                Err(StoreError::Sled(e)) if Store::is_locked(&e) => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
                other => Some(other),
            });
            assert!(matches!(again, Some(Ok(_))), "{stop:?}: {again:?}");
        }
    }
}
