//! Delivery payloads out of sled: append-only segment files, one per fixed time window, under
//! `<data dir>/payloads/` (docs/performance.md §0). The webhook appends the raw body to the
//! current segment with one `write`; the store's group commit (`Store::flush`) `fdatasync`s
//! every segment written since the last one **before** it flushes sled, so a delivery record
//! that is durable has a durable payload, and every `202` is answered after both. sled keeps
//! only a [`PayloadRef`] (segment, offset, length, CRC-32) per delivery; the worker reads the
//! payload back once. A segment is deleted whole once no delivery refers to it any more and its
//! window ended before the retention cutoff (`Store::prune_deliveries`).
//!
//! Record layout: `SBP1` magic, payload length (u32 LE), CRC-32 of the payload (u32 LE), then
//! the payload. A record whose header or CRC does not match what sled holds (a torn tail after
//! a power loss: the segment was not yet synced, so the delivery was never acknowledged) is
//! never handed out: [`Segments::read`] answers [`SegmentError::Torn`].

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const MAGIC: &[u8; 4] = b"SBP1";
const HEADER: usize = 12;
const EXT: &str = "seg";

/// The window of one segment unless [`Segments::set_window_for_retention`] says otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("payload segment I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes at the reference are missing or are not the payload it describes.
    #[error("payload in segment {segment} at {offset} is torn or corrupt ({why})")]
    Torn {
        segment: u64,
        offset: u64,
        why: &'static str,
    },
    #[error("a payload of {0} bytes does not fit a segment record")]
    TooLarge(usize),
}

/// Where a payload is: the segment (its window's start, Unix seconds), the record's offset,
/// the payload's length and CRC-32. Stored in sled as 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

impl PayloadRef {
    pub const ENCODED_LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..20].copy_from_slice(&self.len.to_be_bytes());
        out[20..].copy_from_slice(&self.crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let (segment, rest) = bytes.split_at(8);
        let (offset, rest) = rest.split_at(8);
        let (len, crc) = rest.split_at(4);
        Some(Self {
            segment: u64::from_be_bytes(segment.try_into().ok()?),
            offset: u64::from_be_bytes(offset.try_into().ok()?),
            len: u32::from_be_bytes(len.try_into().ok()?),
            crc: u32::from_be_bytes(crc.try_into().ok()?),
        })
    }
}

/// The segment being appended to.
#[derive(Debug)]
struct Current {
    start: u64,
    file: Arc<File>,
    len: u64,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Writer {
    current: Option<Current>,
    /// Segments rolled over before their last writes were synced.
    unsynced: Vec<Arc<File>>,
}

/// The segment files of one store; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    window_secs: AtomicU64,
    writer: Mutex<Writer>,
    syncs: AtomicU64,
}

impl Segments {
    /// Open (or create, 0700) the segment directory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        crate::dirs::create_private_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            window_secs: AtomicU64::new(DEFAULT_WINDOW.as_secs()),
            writer: Mutex::new(Writer::default()),
            syncs: AtomicU64::new(0),
        })
    }

    /// One segment per eighth of the retention (at least 5 s, at most an hour): a segment is
    /// deleted at most an eighth of the retention after its last delivery expired.
    pub fn set_window_for_retention(&self, retention: Duration) {
        let secs = (retention.as_secs() / 8).clamp(5, DEFAULT_WINDOW.as_secs());
        self.window_secs.store(secs, Ordering::Relaxed);
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.load(Ordering::Relaxed))
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:020}.{EXT}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append `payload` to the segment of the window holding `now` (Unix seconds). Written,
    /// not synced: [`Segments::sync`] (the group commit) makes it durable.
    pub fn append(&self, now: i64, payload: &[u8]) -> Result<PayloadRef, SegmentError> {
        let len =
            u32::try_from(payload.len()).map_err(|_| SegmentError::TooLarge(payload.len()))?;
        let crc = crc32(payload);
        let window = self.window_secs.load(Ordering::Relaxed).max(1);
        let start = u64::try_from(now).unwrap_or(0) / window * window;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc.to_le_bytes());
        record.extend_from_slice(payload);

        let mut w = self.lock();
        if w.current.as_ref().is_none_or(|c| c.start != start) {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(start))?;
            // A new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            let len = file.metadata()?.len();
            let next = Current {
                start,
                file: Arc::new(file),
                len,
                dirty: false,
            };
            if let Some(old) = w.current.replace(next)
                && old.dirty
            {
                w.unsynced.push(old.file);
            }
        }
        let Some(cur) = w.current.as_mut() else {
            return Err(SegmentError::Io(std::io::Error::other(
                "no current segment",
            )));
        };
        let offset = cur.len;
        cur.dirty = true;
        if let Err(e) = (&*cur.file).write_all(&record) {
            // Where the file ends is unknown now: reopen (and measure) on the next append.
            if let Some(c) = w.current.take() {
                w.unsynced.push(c.file);
            }
            return Err(e.into());
        }
        cur.len += record.len() as u64;
        Ok(PayloadRef {
            segment: start,
            offset,
            len,
            crc,
        })
    }

    /// `fdatasync` every segment written since the last sync. Called by the group commit before
    /// sled's flush.
    pub fn sync(&self) -> std::io::Result<()> {
        let files = {
            let mut w = self.lock();
            let mut files = std::mem::take(&mut w.unsynced);
            if let Some(c) = w.current.as_mut()
                && c.dirty
            {
                c.dirty = false;
                files.push(c.file.clone());
            }
            files
        };
        for (i, f) in files.iter().enumerate() {
            if let Err(e) = f.sync_data() {
                // Not durable: the next sync tries again.
                self.lock().unsynced.extend(files[i..].iter().cloned());
                return Err(e);
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Segment `fdatasync`s done (each group commit syncs the one or two segments written).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Read the payload `r` points at, checking the record's header and CRC.
    pub fn read(&self, r: &PayloadRef) -> Result<Vec<u8>, SegmentError> {
        let torn = |why| SegmentError::Torn {
            segment: r.segment,
            offset: r.offset,
            why,
        };
        let file = match File::open(self.path(r.segment)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(torn("no segment")),
            Err(e) => return Err(e.into()),
        };
        let mut header = [0u8; HEADER];
        read_exact_at(&file, &mut header, r.offset).map_err(|e| eof_is_torn(e, torn("short")))?;
        let (magic, rest) = header.split_at(4);
        let (len, crc) = rest.split_at(4);
        if magic != MAGIC {
            return Err(torn("bad magic"));
        }
        let le = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
        if le(len) != r.len || le(crc) != r.crc {
            return Err(torn("header differs"));
        }
        let mut payload = vec![0u8; r.len as usize];
        read_exact_at(&file, &mut payload, r.offset + HEADER as u64)
            .map_err(|e| eof_is_torn(e, torn("short")))?;
        if crc32(&payload) != r.crc {
            return Err(torn("crc mismatch"));
        }
        Ok(payload)
    }

    /// The segments on disk (their windows' starts), oldest first.
    pub fn list(&self) -> std::io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(start) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{EXT}")))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(start);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Delete every segment not in `referenced` whose window ended before `cutoff` (Unix
    /// seconds), except the one being appended to. Returns how many went.
    pub fn remove_unreferenced(
        &self,
        referenced: &std::collections::HashSet<u64>,
        cutoff: i64,
    ) -> std::io::Result<usize> {
        let window = self.window_secs.load(Ordering::Relaxed);
        let cutoff = u64::try_from(cutoff).unwrap_or(0);
        let current = self.lock().current.as_ref().map(|c| c.start);
        let mut n = 0;
        for start in self.list()? {
            if referenced.contains(&start)
                || Some(start) == current
                || start.saturating_add(window) > cutoff
            {
                continue;
            }
            match std::fs::remove_file(self.path(start)) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Is segment `start` on disk?
    pub fn exists(&self, start: u64) -> bool {
        self.path(start).exists()
    }

    /// Bytes held by segment files.
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        let mut total = 0;
        for start in self.list()? {
            if let Ok(m) = std::fs::metadata(self.path(start)) {
                total += m.len();
            }
        }
        Ok(total)
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
}

fn eof_is_torn(e: std::io::Error, torn: SegmentError) -> SegmentError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        torn
    } else {
        SegmentError::Io(e)
    }
}

/// CRC-32 (IEEE 802.3, as zlib's). `crc32fast` (already sled's) uses the CPU's carry-less
/// multiply: a table-driven loop cost ~55 µs per 26 KB payload, twice per delivery (append and
/// read), 15% of the intake's CPU under load (docs/performance.md, round 3).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn refs_round_trip_and_bad_lengths_are_refused() {
        let r = PayloadRef {
            segment: 1_764_000_000,
            offset: 123_456,
            len: 26_307,
            crc: 0xDEAD_BEEF,
        };
        assert_eq!(PayloadRef::decode(&r.encode()), Some(r));
        assert_eq!(PayloadRef::decode(&r.encode()[..23]), None);
        assert_eq!(PayloadRef::decode(b""), None);
    }

    #[test]
    fn appended_payloads_read_back_and_a_torn_tail_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(&dir.path().join("payloads")).unwrap();
        let a = segs.append(1_000_000, b"{\"a\":1}").unwrap();
        let b = segs.append(1_000_001, &[b'x'; 5000]).unwrap();
        segs.sync().unwrap();
        assert_eq!(a.segment, b.segment, "same window, same segment");
        assert_eq!(segs.read(&a).unwrap(), b"{\"a\":1}");
        assert_eq!(segs.read(&b).unwrap(), vec![b'x'; 5000]);
        // The tail cut in the middle of b's payload: a still reads, b is torn.
        let path = segs.path(b.segment);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(b.offset + HEADER as u64 + 100).unwrap();
        assert_eq!(segs.read(&a).unwrap(), b"{\"a\":1}");
        assert!(matches!(segs.read(&b), Err(SegmentError::Torn { .. })));
        // A flipped byte inside a's payload: the CRC catches it.
        f.write_at(b"X", a.offset + HEADER as u64 + 2).unwrap();
        assert!(matches!(segs.read(&a), Err(SegmentError::Torn { .. })));
        // A reference past the end, or into a missing segment, is torn, not a panic.
        let past = PayloadRef {
            offset: 1 << 40,
            ..a
        };
        assert!(matches!(segs.read(&past), Err(SegmentError::Torn { .. })));
        let missing = PayloadRef { segment: 7, ..a };
        assert!(matches!(
            segs.read(&missing),
            Err(SegmentError::Torn { .. })
        ));
    }

    #[test]
    fn a_new_window_rolls_over_and_old_unreferenced_segments_are_deleted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(&dir.path().join("payloads")).unwrap();
        segs.set_window_for_retention(Duration::from_secs(80)); // 10 s windows
        assert_eq!(segs.window(), Duration::from_secs(10));
        let old = segs.append(1_000, b"{}").unwrap();
        let kept = segs.append(1_010, b"{}").unwrap();
        let current = segs.append(1_020, b"{}").unwrap();
        assert_eq!(segs.list().unwrap(), vec![1_000, 1_010, 1_020]);
        segs.sync().unwrap();
        assert!(
            segs.syncs() >= 2,
            "the rolled-over segments were synced too"
        );
        let referenced = std::iter::once(kept.segment).collect();
        // Windows ending after the cutoff stay, referenced or not.
        assert_eq!(segs.remove_unreferenced(&referenced, 1_009).unwrap(), 0);
        assert_eq!(segs.remove_unreferenced(&referenced, 10_000).unwrap(), 1);
        assert_eq!(segs.list().unwrap(), vec![1_010, 1_020]);
        assert!(segs.read(&old).is_err());
        assert_eq!(segs.read(&kept).unwrap(), b"{}");
        assert_eq!(segs.read(&current).unwrap(), b"{}");
    }
}
