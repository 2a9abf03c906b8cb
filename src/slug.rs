//! Environment slugs and preview hosts (docs/architecture.md, "The environment state machine").
//!
//! A slug is a DNS label: lowercase `[a-z0-9-]`, at most 63 characters, no leading or trailing
//! `-`. A preview's slug is `pr-<number>-<branch>` (`br-<branch>` without a pull request), the
//! branch lowercased with every run of other characters turned into one `-`.
//!
//! Slugs are storage keys, so they must be stable and distinct. When the readable form would
//! lose information or not fit, a short hash of the *original* input is appended
//! (`-` and the first 6 hex digits of its SHA-256):
//!
//! - the branch is not already in slug form (`Feature/Login`, `feature/login`, `a--b`, `🚀`),
//! - the result would be longer than 63 characters (the readable part is cut to fit),
//! - the readable form itself ends in `-` and six hex digits (`fix-decade`), so that a readable
//!   slug can never equal a hashed one.
//!
//! So two different branches get the same slug only if their hashes collide on 24 bits *and*
//! their readable parts agree. Preview slugs start with `pr-` or `br-`, so they never equal
//! `staging` or `production`.

use sha2::{Digest, Sha256};

use crate::types::{PrNumber, RepoName, Slug};

/// The longest DNS label.
const MAX_LABEL: usize = 63;
/// Hex digits of the hash suffix.
const HASH_LEN: usize = 6;

/// The slug of a preview environment: `pr-42-new-cool-page`, or `br-<branch>` without a pull
/// request. Deterministic; see the module docs for when a hash suffix is added.
pub fn preview_slug(pr: Option<PrNumber>, branch: &str) -> Slug {
    let prefix = match pr {
        Some(n) => format!("pr-{n}"),
        None => "br".to_owned(),
    };
    let clean = sanitize(branch);
    let lossy = clean != branch;
    let readable = if clean.is_empty() {
        prefix
    } else {
        format!("{prefix}-{clean}")
    };
    into_slug(fit(readable, lossy, branch))
}

/// The host label of an environment: `<slug>--<repository name>` (docs/architecture.md, "The environment state machine"), e.g.
/// `pr-42-new-cool-page--webapp`, to be followed by the preview domain.
///
/// The repository name is lowercased (GitHub names are case-insensitive) and its `.` and `_`
/// become `-`; a hash of the slug and the full repository name is appended under the same rules
/// as for slugs (lossy name, over 63 characters, or a readable form that looks hashed).
///
/// The owner is not part of the readable form, as the design asks: `alice/webapp` and
/// `bob/webapp` get the same host for the same slug unless the label is hashed.
pub fn host_label(slug: &Slug, repo: &RepoName) -> String {
    let name = repo.name().to_ascii_lowercase();
    let clean = sanitize(&name);
    let lossy = clean != name;
    let readable = if clean.is_empty() {
        slug.to_string()
    } else {
        format!("{slug}--{clean}")
    };
    let hash_input = format!("{slug}\n{}", repo.to_string().to_ascii_lowercase());
    fit(readable, lossy, &hash_input)
}

/// `s` lowercased, with every run of characters outside `[a-z0-9]` turned into one `-`, and no
/// `-` at either end.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(256));
    let mut separator = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        } else {
            separator = true;
        }
    }
    out
}

/// `readable` when it can stand for the input alone, else its first part and a hash of `original`.
fn fit(readable: String, lossy: bool, original: &str) -> String {
    if !lossy && readable.len() <= MAX_LABEL && !looks_hashed(&readable) {
        return readable;
    }
    let hash = short_hash(original);
    // `readable` is ASCII, so characters are bytes.
    let stem: String = readable.chars().take(MAX_LABEL - HASH_LEN - 1).collect();
    let stem = stem.trim_end_matches('-');
    if stem.is_empty() {
        hash
    } else {
        format!("{stem}-{hash}")
    }
}

/// Ends in `-` and six lowercase hex digits, like a hash suffix.
fn looks_hashed(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() > HASH_LEN
        && bytes[bytes.len() - HASH_LEN - 1] == b'-'
        && bytes[bytes.len() - HASH_LEN..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn short_hash(s: &str) -> String {
    let digest = hex::encode(Sha256::digest(s.as_bytes()));
    digest.chars().take(HASH_LEN).collect()
}

fn into_slug(label: String) -> Slug {
    match Slug::new(&label) {
        Ok(slug) => slug,
        // Unreachable: `label` comes from `fit`, which yields 1 to 63 characters of
        // `[a-z0-9-]` without a `-` at either end (the property tests check it on arbitrary
        // input). `Slug` has no unchecked constructor to say so in the types.
        Err(e) => unreachable!("slug construction broke its invariant: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn slug(pr: Option<u64>, branch: &str) -> String {
        preview_slug(pr.map(PrNumber), branch).to_string()
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn preview_slugs() {
        let h = |s: &str| short_hash(s);
        let long = "a".repeat(100);
        let cases: Vec<(Option<u64>, &str, String)> = vec![
            (Some(42), "new-cool-page", "pr-42-new-cool-page".into()),
            (None, "main", "br-main".into()),
            (Some(7), "feature-login", "pr-7-feature-login".into()),
            (
                Some(7),
                "Feature/Login",
                format!("pr-7-feature-login-{}", h("Feature/Login")),
            ),
            (
                Some(7),
                "feature/login",
                format!("pr-7-feature-login-{}", h("feature/login")),
            ),
            (
                Some(7),
                "feature--login",
                format!("pr-7-feature-login-{}", h("feature--login")),
            ),
            (
                Some(7),
                "-feature-",
                format!("pr-7-feature-{}", h("-feature-")),
            ),
            (Some(1), "🚀🚀", format!("pr-1-{}", h("🚀🚀"))),
            (None, "///", format!("br-{}", h("///"))),
            (None, "", "br".into()),
            (Some(1), "", "pr-1".into()),
            (
                Some(1),
                "fix-decade",
                format!("pr-1-fix-decade-{}", h("fix-decade")),
            ),
            (Some(1), "fix-decades", "pr-1-fix-decades".into()),
            (Some(1), "release-2024", "pr-1-release-2024".into()),
            (
                Some(3),
                "Ünïcödé-brånch",
                format!("pr-3-n-c-d-br-nch-{}", h("Ünïcödé-brånch")),
            ),
            (
                Some(1),
                &long,
                format!("pr-1-{}-{}", "a".repeat(51), h(&long)),
            ),
            (Some(u64::MAX), "x", format!("pr-{}-x", u64::MAX)),
        ];
        for (pr, branch, want) in cases {
            let got = slug(pr, branch);
            assert_eq!(got, want, "{pr:?} {branch:?}");
            assert!(got.len() <= 63);
        }
    }

    /// Slugs are storage keys: their exact form must never change between versions (values
    /// computed independently: `sha256sum` of the original input).
    #[test]
    fn slugs_are_stable() {
        assert_eq!(slug(Some(7), "Feature/Login"), "pr-7-feature-login-1ce277");
        assert_eq!(
            host_label(
                &preview_slug(Some(PrNumber(7)), "Feature/Login"),
                &repo("octo-org/Web.App")
            ),
            "pr-7-feature-login-1ce277--web-app-b5b719"
        );
    }

    #[test]
    fn host_labels() {
        let s = |b: &str| preview_slug(Some(PrNumber(42)), b);
        assert_eq!(
            host_label(&s("new-cool-page"), &repo("octo-org/webapp")),
            "pr-42-new-cool-page--webapp"
        );
        assert_eq!(
            host_label(&Slug::staging(), &repo("Octo-Org/WebApp")),
            "staging--webapp"
        );
        assert_eq!(
            host_label(&Slug::production(), &repo("o/web-app")),
            "production--web-app"
        );
        // `.` and `_` are lossy: `web.app` and `web-app` may both exist.
        let dotted = host_label(&Slug::staging(), &repo("o/web.app"));
        assert!(
            dotted.starts_with("staging--web-app-") && dotted.len() == 23,
            "{dotted}"
        );
        let underscore = host_label(&Slug::staging(), &repo("o/web_app"));
        assert_ne!(dotted, underscore);
        // Too long: cut and hashed, still one label.
        let long = host_label(
            &s(&"x".repeat(60)),
            &repo(&format!("o/{}", "y".repeat(100))),
        );
        assert_eq!(long.len(), 63);
        assert!(Slug::new(&long).is_ok());
        // A name with no letters or digits.
        let symbols = host_label(&Slug::staging(), &repo("o/___"));
        assert!(
            symbols.starts_with("staging-") && Slug::new(&symbols).is_ok(),
            "{symbols}"
        );
    }

    /// Branch names built from few characters, so their readable forms collide often.
    fn tricky_branch() -> impl Strategy<Value = String> {
        prop_oneof![
            "[aA/_.-]{0,8}",
            "[ab-]{55,70}",
            "[a-f0-9-]{0,12}",
            "\\PC{0,80}",
            any::<String>(),
        ]
    }

    fn repo_name() -> impl Strategy<Value = RepoName> {
        ("[a-c]{1,3}", "[A-Za-z0-9._-]{1,100}")
            .prop_filter_map("`.` and `..` are not names", |(o, n)| {
                RepoName::new(&o, &n).ok()
            })
    }

    fn any_slug() -> impl Strategy<Value = Slug> {
        prop_oneof![
            (prop::option::of(0u64..200), tricky_branch())
                .prop_map(|(pr, b)| preview_slug(pr.map(PrNumber), &b)),
            Just(Slug::staging()),
            Just(Slug::production()),
        ]
    }

    /// Found by proptest: a branch that sanitizes to nothing must not share the empty branch's slug.
    #[test]
    fn an_all_symbol_branch_differs_from_the_empty_one() {
        assert_ne!(
            preview_slug(Some(PrNumber(0)), ""),
            preview_slug(Some(PrNumber(0)), "\u{1e01b}")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn preview_slug_is_always_valid(pr in prop::option::of(any::<u64>()), branch in tricky_branch()) {
            let a = preview_slug(pr.map(PrNumber), &branch);
            prop_assert!(Slug::new(a.as_str()).is_ok(), "{:?}", a);
            prop_assert!(a.as_str().len() <= 63);
            prop_assert_eq!(&a, &preview_slug(pr.map(PrNumber), &branch));
            prop_assert!(a != Slug::staging() && a != Slug::production());
        }

        #[test]
        fn distinct_branches_get_distinct_slugs(
            pr in prop::option::of(0u64..3),
            a in tricky_branch(),
            b in tricky_branch(),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(preview_slug(pr.map(PrNumber), &a), preview_slug(pr.map(PrNumber), &b));
        }

        #[test]
        fn host_label_is_always_valid(slug in any_slug(), repo in repo_name()) {
            let label = host_label(&slug, &repo);
            prop_assert!(Slug::new(&label).is_ok(), "{}", label);
            prop_assert!(label.len() <= 63);
            prop_assert_eq!(&label, &host_label(&slug, &repo));
        }

        #[test]
        fn distinct_environments_get_distinct_hosts(
            (slug_a, repo_a) in (any_slug(), repo_name()),
            (slug_b, repo_b) in (any_slug(), repo_name()),
        ) {
            // Same owner (the readable form leaves it out); names compare case-insensitively.
            let repo_b = RepoName::new(repo_a.owner(), repo_b.name()).unwrap();
            prop_assume!(slug_a != slug_b || !repo_a.name().eq_ignore_ascii_case(repo_b.name()));
            prop_assert_ne!(host_label(&slug_a, &repo_a), host_label(&slug_b, &repo_b));
        }
    }

    /// Many near-identical branches at once: no two share a slug.
    #[test]
    fn a_crowd_of_similar_branches() {
        let mut seen: HashMap<String, String> = HashMap::new();
        let parts = ["feature", "Feature", "FEATURE", "feat", ""];
        let seps = ["/", "-", "_", ".", "--", " ", "/-", "ü"];
        let ends = ["login", "Login", "login-page", "login/page", ""];
        for p in parts {
            for s in seps {
                for e in ends {
                    for tail in ["", "-", "/", "-abcdef", "x".repeat(60).as_str()] {
                        let branch = format!("{p}{s}{e}{tail}");
                        let got = slug(Some(1), &branch);
                        if let Some(other) = seen.insert(got.clone(), branch.clone()) {
                            assert_eq!(other, branch, "{other:?} and {branch:?} share {got}");
                        }
                    }
                }
            }
        }
        assert!(seen.len() > 500, "{}", seen.len());
    }
}
