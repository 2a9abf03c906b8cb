//! Giving freed heap back to the kernel after a burst (docs/performance.md §0). glibc keeps
//! what a burst of deliveries freed in its arenas, so the resident size stays at the burst's
//! peak; `malloc_trim(0)` returns the free pages of every arena. Other allocators: nothing.

/// Return freed heap to the kernel; true when glibc released memory.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only walks glibc's own arenas under their locks; it takes no
        // pointer of ours and is safe to call at any time from any thread.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims at most once per `every`, and only when there was work since the last one.
#[derive(Debug)]
pub struct Trimmer {
    every: std::time::Duration,
    last: std::time::Instant,
    worked: bool,
    trims: u64,
}

impl Trimmer {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: std::time::Instant::now(),
            worked: false,
            trims: 0,
        }
    }

    /// Something was allocated and freed (a drain that processed deliveries).
    pub fn worked(&mut self) {
        self.worked = true;
    }

    /// Trim if there was work and the last trim is `every` ago; returns whether it trimmed.
    pub fn maybe_trim(&mut self) -> bool {
        if !self.worked || self.last.elapsed() < self.every {
            return false;
        }
        trim();
        self.worked = false;
        self.last = std::time::Instant::now();
        self.trims += 1;
        true
    }

    /// How long until a trim is due (`None`: nothing to give back).
    pub fn due_in(&self) -> Option<std::time::Duration> {
        self.worked
            .then(|| self.every.saturating_sub(self.last.elapsed()))
    }

    pub fn trims(&self) -> u64 {
        self.trims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_work_and_at_most_once_per_interval() {
        let mut t = Trimmer::new(std::time::Duration::ZERO);
        assert!(!t.maybe_trim(), "no work, nothing to give back");
        assert_eq!(t.due_in(), None);
        t.worked();
        assert!(t.maybe_trim());
        assert!(!t.maybe_trim(), "once per burst");
        let mut slow = Trimmer::new(std::time::Duration::from_secs(3600));
        slow.worked();
        assert!(!slow.maybe_trim(), "not before the interval");
        assert!(slow.due_in().is_some());
        assert_eq!(t.trims() + slow.trims(), 1);
    }

    /// A burst's freed heap is given back: allocate and free 64 MiB in small blocks (which
    /// glibc keeps in its arena, below the mmap threshold), trim, and the resident size falls.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_gives_a_bursts_freed_heap_back() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        // On a thread of its own: its own arena, not shared with the other tests' threads.
        std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![(i % 251) as u8; 4096]).collect();
            let peak = rss_kib();
            // Keep the last block so the arena's top is not free (trim must find the holes).
            let last = blocks.last().cloned();
            drop(blocks);
            trim();
            let after = rss_kib();
            assert!(last.is_some());
            assert!(
                after + 32 * 1024 < peak,
                "64 MiB freed, RSS {peak} KiB -> {after} KiB after malloc_trim"
            );
        })
        .join()
        .unwrap();
    }
}
