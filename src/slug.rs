use crate::types::{PrNumber, RepoName, Slug};
pub fn preview_slug(pr: Option<PrNumber>, branch: &str) -> Slug {
    let s: String = branch.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = match pr { Some(p) => format!("pr-{p}-{s}"), None => format!("br-{s}") };
    Slug::new(s.trim_matches('-')).unwrap_or_else(|_| Slug::staging())
}
pub fn host_label(slug: &Slug, repo: &RepoName) -> String {
    format!("{}--{}", slug, repo.name().to_ascii_lowercase())
}
