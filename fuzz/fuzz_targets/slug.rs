//! The slug functions on any branch and repository name: never panic, always yield a DNS
//! label (`[a-z0-9-]`, 1 to 63 characters, no `-` at either end), deterministically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stagebot::slug::{host_label, preview_slug};
use stagebot::types::{PrNumber, RepoName, Slug};

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    // Layout: 8 bytes PR number (0 = none), then `branch \n owner \n name`.
    if data.len() < 8 {
        return;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let pr = match u64::from_le_bytes(n) {
        0 => None,
        n => Some(PrNumber(n)),
    };
    let text = String::from_utf8_lossy(&data[8..]);
    let mut parts = text.splitn(3, '\n');
    let branch = parts.next().unwrap_or("");
    let slug = preview_slug(pr, branch);
    assert!(is_label(slug.as_str()), "bad slug {slug:?} for {branch:?}");
    assert_eq!(slug, preview_slug(pr, branch), "slug not deterministic");
    assert!(Slug::new(slug.as_str()).is_ok());
    let owner = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    if let Ok(repo) = RepoName::new(owner, name) {
        let host = host_label(&slug, &repo);
        assert!(is_label(&host), "bad host label {host:?} for {slug:?} {repo:?}");
    }
});
