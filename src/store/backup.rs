//! Backup and restore of the whole store: a consistent export of every tree into one JSON file
//! (hex keys and values, with the schema version), its verification, and the restore into an
//! empty (or, forced, a non-empty) store.

use super::*;

impl Store {
    /// Write a consistent export of every tree to `path` (safe while the server runs: sled's
    /// export iterates a snapshot of each tree). Written to a temporary file, then renamed.
    pub fn backup(&self, path: &Path) -> Result<BackupSummary> {
        let mut trees = BTreeMap::new();
        let mut summary = BackupSummary::default();
        for name in TREES {
            let mut entries = Vec::new();
            for (k, v) in self.tree_entries(name)? {
                entries.push((hex::encode(&k), hex::encode(&v)));
            }
            summary.entries += entries.len();
            trees.insert((*name).to_owned(), entries);
        }
        let file = BackupFile {
            format: "stagebot-backup".into(),
            schema_version: self.schema_version()?,
            trees,
        };
        let tmp = path.with_extension("partial");
        let bytes = serde_json::to_vec(&file).map_err(StoreError::Encode)?;
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        summary.bytes = bytes.len();
        Ok(summary)
    }

    /// Read a backup file back without loading it: its format, schema version and every key
    /// and value must decode. Returns what it holds (used by the scheduled backups).
    pub fn verify_backup(path: &Path) -> Result<BackupSummary> {
        let bytes = std::fs::read(path)?;
        let file: BackupFile = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Backup(format!("{} is not a stagebot backup: {e}", path.display()))
        })?;
        if file.format != "stagebot-backup" || file.schema_version > SCHEMA_VERSION {
            return Err(StoreError::Backup(format!(
                "{} is not a stagebot backup this version can restore (format {:?}, schema {})",
                path.display(),
                file.format,
                file.schema_version
            )));
        }
        let mut summary = BackupSummary {
            entries: 0,
            bytes: bytes.len(),
        };
        for (name, entries) in &file.trees {
            for (k, v) in entries {
                if hex::decode(k).is_err() || hex::decode(v).is_err() {
                    return Err(StoreError::Backup(format!(
                        "{}: a bad entry in {name}",
                        path.display()
                    )));
                }
                summary.entries += 1;
            }
        }
        Ok(summary)
    }

    /// Load a backup into this store. Refuses a store holding data unless `force`, in which
    /// case every tree is cleared first.
    pub fn restore(&self, path: &Path, force: bool) -> Result<BackupSummary> {
        let bytes = std::fs::read(path)?;
        let file: BackupFile = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Backup(format!("{} is not a stagebot backup: {e}", path.display()))
        })?;
        if file.format != "stagebot-backup" {
            return Err(StoreError::Backup(format!(
                "{} is not a stagebot backup (format {:?})",
                path.display(),
                file.format
            )));
        }
        if file.schema_version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: file.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if !self.is_empty() && !force {
            return Err(StoreError::Backup(
                "the data dir already holds data: restore into an empty one, or pass --force to replace it".into(),
            ));
        }
        let mut summary = BackupSummary::default();
        // A backup's `payloads` carries every payload: restored into sled, none in segments.
        self.payload_refs.clear()?;
        for name in TREES {
            let tree = self.db.open_tree(name)?;
            tree.clear()?;
            if let Some(entries) = file.trees.get(*name) {
                let mut batch = sled::Batch::default();
                for (k, v) in entries {
                    let k = hex::decode(k)
                        .map_err(|e| StoreError::Backup(format!("bad key in {name}: {e}")))?;
                    let v = hex::decode(v)
                        .map_err(|e| StoreError::Backup(format!("bad value in {name}: {e}")))?;
                    batch.insert(k, v);
                    summary.entries += 1;
                }
                tree.apply_batch(batch)?;
            }
        }
        summary.bytes = bytes.len();
        // What GitHub sent between the backup and now is not replayed (issue 14's horizon rule).
        self.reset_catchup(Utc::now())?;
        self.db.flush()?;
        self.migrate()?;
        Ok(summary)
    }

    /// Every tree's content, for comparing two stores (tests, restore checks).
    pub fn dump(&self) -> Result<StoreDump> {
        let mut out = BTreeMap::new();
        for name in TREES {
            out.insert((*name).to_owned(), self.tree_entries(name)?);
        }
        Ok(out)
    }
}

/// Every tree's raw entries, by tree name.
pub type StoreDump = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupSummary {
    pub entries: usize,
    pub bytes: usize,
}

#[derive(Serialize, Deserialize)]
struct BackupFile {
    format: String,
    schema_version: u32,
    /// tree name → (hex key, hex value) pairs
    trees: BTreeMap<String, Vec<(String, String)>>,
}
