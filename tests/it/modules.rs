//! The library's import graph (docs/architecture.md, "The parts"): no cycle goes through `app`,
//! and the only cycle left is the documented one of the rules and their records. Read with
//! `scripts/module-graph.py`, the script a reader runs.

use std::collections::BTreeSet;
use std::process::Command;

/// The modules of the one cycle docs/architecture.md names (the rules and their records).
const KNOWN_CYCLE: [&str; 6] = [
    "command",
    "environment",
    "messages",
    "policy",
    "repo_config",
    "store",
];

/// The cycles `scripts/module-graph.py` prints, each as its set of modules.
fn cycles() -> Vec<BTreeSet<String>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/scripts/module-graph.py"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (apt-get install python3): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "module-graph.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<BTreeSet<String>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("cycle: "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    // Exit status 1 exactly when a cycle is printed.
    assert_eq!(out.status.code() == Some(1), !found.is_empty(), "{stdout}");
    found
}

#[test]
fn no_import_cycle_goes_through_app_and_only_the_documented_one_is_left() {
    let known: BTreeSet<String> = KNOWN_CYCLE.iter().map(|m| (*m).to_owned()).collect();
    for cycle in cycles() {
        assert!(!cycle.contains("app"), "a cycle through app: {cycle:?}");
        assert!(
            cycle.is_subset(&known),
            "a cycle docs/architecture.md does not name: {cycle:?}"
        );
    }
}
