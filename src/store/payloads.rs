//! Delivery payloads: in append-only segment files (`src/segments.rs`) with a reference in the
//! `payload_refs` tree, or in the `payloads` tree for the few kept in sled (dead letters,
//! restored backups). The store's delivery methods call these.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{DeliveryRecord, DeliveryStatus, Result, Store, StoreError, decode};
use crate::segments::{PayloadRef, SegmentError};

impl Store {
    /// Set the segments' window from the delivery retention (an eighth of it, 5 s to 1 h).
    pub fn set_payload_retention(&self, retention: std::time::Duration) {
        self.segments.set_window_for_retention(retention);
    }

    /// Segment `fdatasync`s done by group commits since this store was opened.
    pub fn segment_syncs(&self) -> u64 {
        self.segments.syncs()
    }

    /// Segment files on disk and the bytes they hold.
    pub fn segment_usage(&self) -> Result<(usize, u64)> {
        Ok((self.segments.list()?.len(), self.segments.disk_bytes()?))
    }

    pub(super) fn append_payload(&self, now: DateTime<Utc>, payload: &[u8]) -> Result<PayloadRef> {
        Ok(self.segments.append(now.timestamp(), payload)?)
    }

    fn payload_ref(&self, key: &[u8]) -> Result<Option<PayloadRef>> {
        match self.payload_refs.get(key)? {
            None => Ok(None),
            Some(b) => PayloadRef::decode(&b)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    tree: "payload_refs",
                    key: String::from_utf8_lossy(key).into_owned(),
                    source: <serde_json::Error as serde::de::Error>::custom(
                        "not a payload reference",
                    ),
                }),
        }
    }

    /// The payload of delivery `key`: kept in sled, or read back from its segment.
    pub(super) fn read_payload(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(r) = self.payload_ref(key)? {
            return Ok(Some(self.segments.read(&r)?));
        }
        Ok(self.payloads.get(key)?.map(|b| b.to_vec()))
    }

    pub(super) fn has_payload(&self, key: &[u8]) -> Result<bool> {
        Ok(self.payload_refs.contains_key(key)? || self.payloads.contains_key(key)?)
    }

    /// A dead letter keeps its payload in sled (bounded by `STAGEBOT_DEAD_LETTERS_MAX`), so its
    /// segment can be deleted with the retention. A payload that cannot be read any more stays
    /// where it is (the dead letter is kept; a replay answers the read error).
    pub(super) fn keep_payload_in_sled(&self, key: &[u8]) -> Result<()> {
        let Some(r) = self.payload_ref(key)? else {
            return Ok(());
        };
        match self.segments.read(&r) {
            Ok(body) => {
                (&self.payloads, &self.payload_refs)
                    .transaction(|(p, refs)| {
                        p.insert(key, body.as_slice())?;
                        refs.remove(key)?;
                        Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
                    })
                    .map_err(super::tx_err)?;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "a dead letter's payload is unreadable; kept as is");
                Ok(())
            }
        }
    }

    /// Delete the segments no delivery refers to any more whose window ended before `cutoff`.
    pub(super) fn remove_expired_segments(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let mut referenced = HashSet::new();
        for item in self.payload_refs.iter() {
            let (k, v) = item?;
            match PayloadRef::decode(&v) {
                Some(r) => {
                    referenced.insert(r.segment);
                }
                None => {
                    return Err(StoreError::Corrupt {
                        tree: "payload_refs",
                        key: String::from_utf8_lossy(&k).into_owned(),
                        source: <serde_json::Error as serde::de::Error>::custom(
                            "not a payload reference",
                        ),
                    });
                }
            }
        }
        let n = self
            .segments
            .remove_unreferenced(&referenced, cutoff.timestamp())?;
        if n > 0 {
            tracing::info!(segments = n, "deleted expired payload segments");
        }
        Ok(n)
    }

    /// A tree's entries as backups and dumps carry them: `payloads` holds every payload (the
    /// ones in segments read back), as in schema 1, so a backup restores into any version.
    pub(super) fn tree_entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        for item in self.db.open_tree(name)?.iter() {
            let (k, v) = item?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        if name == "payloads" {
            for item in self.payload_refs.iter() {
                let (k, _) = item?;
                match self.read_payload(&k) {
                    Ok(Some(body)) => entries.push((k.to_vec(), body)),
                    Ok(None) => {}
                    // Pruned (its segment deleted) while the backup ran: nothing to carry.
                    Err(StoreError::Segment(SegmentError::Torn { .. }))
                        if !self.has_record(&k)? => {}
                    Err(e) => return Err(e),
                }
            }
            entries.sort();
        }
        Ok(entries)
    }

    fn has_record(&self, key: &[u8]) -> Result<bool> {
        Ok(self.deliveries.contains_key(key)?)
    }

    /// Schema 2 → 3: the payloads of deliveries that are not dead letters move from the
    /// `payloads` tree into a segment (synced before sled is flushed).
    pub(super) fn migrate_payloads_to_segments(&self) -> Result<usize> {
        let now = Utc::now();
        let mut moved = Vec::new();
        for item in self.payloads.iter() {
            let (k, body) = item?;
            let dead = match self.deliveries.get(&k)? {
                Some(b) => {
                    decode::<DeliveryRecord>("deliveries", &k, &b)?.status == DeliveryStatus::Dead
                }
                None => false,
            };
            if !dead {
                moved.push((k, self.append_payload(now, &body)?));
            }
        }
        self.segments.sync()?;
        for (k, r) in &moved {
            (&self.payloads, &self.payload_refs)
                .transaction(|(p, refs)| {
                    refs.insert(k, &r.encode()[..])?;
                    p.remove(k)?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
                })
                .map_err(super::tx_err)?;
        }
        self.db.flush()?;
        if !moved.is_empty() {
            tracing::info!(
                payloads = moved.len(),
                "moved payloads from sled into segments"
            );
        }
        Ok(moved.len())
    }

    /// After a crash (a power loss: `kill -9` loses nothing written), a pending delivery whose
    /// payload is torn was never acknowledged (its segment was not synced, so its group commit
    /// had not ended): forget it entirely, so GitHub's redelivery is taken as new.
    pub(super) fn drop_torn_deliveries(&self) -> Result<usize> {
        // Only the newest two segments can hold unsynced bytes (the current one and the one
        // rolled over just before it); older ones were synced by the group commits after them.
        let newest: HashSet<u64> = self.segments.list()?.into_iter().rev().take(2).collect();
        let mut dropped = 0;
        for item in self.inbox.iter() {
            let (seq, key) = item?;
            let Some(r) = self.payload_ref(&key)? else {
                continue;
            };
            if !newest.contains(&r.segment) && self.segments.exists(r.segment) {
                continue;
            }
            match self.segments.read(&r) {
                Ok(_) => {}
                Err(SegmentError::Torn { .. }) => {
                    tracing::warn!(
                        delivery = %String::from_utf8_lossy(&key),
                        "a delivery whose payload was torn by a crash is dropped (it was never acknowledged)"
                    );
                    (&self.deliveries, &self.inbox, &self.payload_refs)
                        .transaction(|(d, i, p)| {
                            d.remove(&key)?;
                            i.remove(&seq)?;
                            p.remove(&key)?;
                            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
                        })
                        .map_err(super::tx_err)?;
                    dropped += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if dropped > 0 {
            self.db.flush()?;
        }
        Ok(dropped)
    }
}

use sled::Transactional as _;

#[cfg(test)]
mod tests {
    use super::super::{Inserted, SCHEMA_VERSION, encode};
    use super::*;
    use crate::types::DeliveryId;

    fn id(s: &str) -> DeliveryId {
        DeliveryId::new(s).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + secs, 0).unwrap()
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open_waiting(dir, std::time::Duration::from_secs(5)).unwrap()
    }

    /// sled holds only the reference; the payload is in a segment file and reads back whole.
    #[tokio::test]
    async fn payloads_live_in_segments_not_in_sled() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let body = vec![b'7'; 26_000];
        store
            .insert_delivery(&id("p"), "push", &body, t(0))
            .await
            .unwrap();
        assert!(store.payloads.is_empty(), "no payload bytes in sled");
        let r = store.payload_ref(b"p").unwrap().unwrap();
        assert_eq!(r.len, 26_000);
        assert_eq!(store.payload(&id("p")).unwrap().unwrap(), body);
        let (files, bytes) = store.segment_usage().unwrap();
        assert_eq!(files, 1);
        assert!(bytes >= 26_000);
        assert!(
            store.segment_syncs() >= 1,
            "the 202's flush synced the segment"
        );
    }

    /// A power loss tears the tail of the segment being written: the delivery whose payload is
    /// torn was never acknowledged, so it is forgotten on open (GitHub's redelivery is new),
    /// and the ones before it are intact.
    #[tokio::test]
    async fn a_torn_tail_is_ignored_and_its_delivery_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let store = open(dir.path());
            for n in 0..3 {
                let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(1000));
                store
                    .insert_delivery(&id(&format!("d{n}")), "push", body.as_bytes(), t(n))
                    .await
                    .unwrap();
            }
            store.payload_ref(b"d2").unwrap().unwrap()
        };
        // Cut the segment in the middle of the last payload, as a crash before its fdatasync.
        let path = dir
            .path()
            .join("payloads")
            .join(format!("{:020}.seg", last.segment));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(last.offset + 100).unwrap();
        drop(f);
        let store = open(dir.path());
        let pending: Vec<_> = store.pending().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(pending, vec![id("d0"), id("d1")]);
        assert!(store.delivery(&id("d2")).unwrap().is_none());
        assert!(
            store
                .payload(&id("d1"))
                .unwrap()
                .unwrap()
                .starts_with(b"{\"n\":1")
        );
        // The redelivery is new, not a duplicate, and reads back whole.
        assert_eq!(
            store
                .insert_delivery(&id("d2"), "push", b"{\"n\":2}", t(5))
                .await
                .unwrap(),
            Inserted::New
        );
        assert_eq!(store.payload(&id("d2")).unwrap().unwrap(), b"{\"n\":2}");
        // A flipped byte (not a torn tail) in an old segment is an error, never other bytes.
        let r = store.payload_ref(b"d0").unwrap().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"Z", r.offset + 14).unwrap();
        assert!(matches!(
            store.payload(&id("d0")),
            Err(StoreError::Segment(SegmentError::Torn { .. }))
        ));
    }

    /// Past the retention, a finished delivery costs no disk: its record goes and its segment
    /// is deleted whole; a dead letter's payload moved into sled and outlives its segment.
    #[tokio::test]
    async fn segments_are_deleted_whole_past_the_retention_and_dead_letters_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.set_payload_retention(std::time::Duration::from_secs(80)); // 10 s windows
        for (n, name) in ["done", "dead", "waiting"].iter().enumerate() {
            store
                .insert_delivery(&id(name), "push", b"{\"k\":1}", t(n as i64))
                .await
                .unwrap();
        }
        store
            .finish_delivery(&id("done"), DeliveryStatus::Processed, t(3))
            .unwrap();
        store
            .fail_delivery(&id("dead"), "boom", None, t(3))
            .unwrap();
        assert!(
            store.payloads.contains_key(b"dead").unwrap(),
            "dead letter kept in sled"
        );
        assert!(!store.payload_refs.contains_key(b"dead").unwrap());
        // A later delivery in a new window is the one being written.
        store
            .insert_delivery(&id("later"), "push", b"{}", t(500))
            .await
            .unwrap();
        assert_eq!(store.segment_usage().unwrap().0, 2);
        // `waiting` (still pending) holds its segment.
        assert_eq!(store.prune_deliveries(t(200)).unwrap(), 1);
        assert_eq!(store.segment_usage().unwrap().0, 2);
        store
            .finish_delivery(&id("waiting"), DeliveryStatus::Processed, t(201))
            .unwrap();
        assert_eq!(store.prune_deliveries(t(300)).unwrap(), 1);
        assert_eq!(
            store.segment_usage().unwrap().0,
            1,
            "the first segment went whole"
        );
        assert_eq!(store.payload(&id("dead")).unwrap().unwrap(), b"{\"k\":1}");
        assert_eq!(store.payload(&id("later")).unwrap().unwrap(), b"{}");
        store
            .finish_delivery(&id("later"), DeliveryStatus::Processed, t(301))
            .unwrap();
        store.replay_delivery(&id("dead")).unwrap();
        assert_eq!(
            store.next_ready(t(301)).unwrap().unwrap().payload,
            b"{\"k\":1}"
        );
    }

    /// A schema-1 store kept every payload in sled: opening it moves the pending and finished
    /// ones into a segment (dead letters stay), and they read back the same.
    #[tokio::test]
    async fn schema_1_payloads_move_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            for name in ["pending", "dead"] {
                store
                    .insert_delivery(&id(name), "push", b"{}", t(0))
                    .await
                    .unwrap();
            }
            store
                .fail_delivery(&id("dead"), "boom", None, t(1))
                .unwrap();
            // As schema 1 wrote it: the payload in the `payloads` tree, no reference.
            store.payload_refs.remove(b"pending").unwrap();
            store
                .payloads
                .insert(b"pending", &b"{\"v1\":true}"[..])
                .unwrap();
            store
                .meta
                .insert("schema_version", encode(&1u32).unwrap())
                .unwrap();
            std::fs::remove_dir_all(dir.path().join("payloads")).unwrap();
            store.db.flush().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(!store.payloads.contains_key(b"pending").unwrap());
        assert!(store.payload_refs.contains_key(b"pending").unwrap());
        assert_eq!(
            store.payload(&id("pending")).unwrap().unwrap(),
            b"{\"v1\":true}"
        );
        assert!(store.payloads.contains_key(b"dead").unwrap());
        assert_eq!(store.payload(&id("dead")).unwrap().unwrap(), b"{}");
    }

    /// A backup carries the payloads that are in segments (its `payloads` tree is as schema 1
    /// wrote it), and the restored store reads them without the segment files.
    #[tokio::test]
    async fn backups_carry_the_payloads_in_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("a"));
        store
            .insert_delivery(&id("x"), "push", b"{\"pending\":1}", t(0))
            .await
            .unwrap();
        let file = dir.path().join("backup.json");
        store.backup(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(&hex::encode(b"{\"pending\":1}")));
        assert!(!text.contains("payload_refs"));
        let other = open(&dir.path().join("b"));
        other.restore(&file, false).unwrap();
        assert_eq!(other.segment_usage().unwrap().0, 0);
        assert_eq!(
            other.payload(&id("x")).unwrap().unwrap(),
            b"{\"pending\":1}"
        );
        assert_eq!(
            other.next_ready(t(1)).unwrap().unwrap().payload,
            b"{\"pending\":1}"
        );
    }
}
