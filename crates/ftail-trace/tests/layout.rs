//! `ftail-trace`'s layout: imports between its modules go one way only,
//! and so do imports between its folders (the rooms of its data path,
//! listed top to bottom in `lib.rs`). A circle would mean a change in a
//! lower room can break a higher one and back.

#[path = "../../../tests/layout/rules.rs"]
mod rules;

use std::path::Path;

/// The order of the rooms, top to bottom: a room may use only rooms
/// below it.
const ROOMS: &[&str] = &[
    "views",
    "trace",
    "symbols",
    "reader",
    "values",
    "sites",
    "untrusted",
];

/// The short paths `lib.rs` re-exports for other crates.
const ALIASES: &[&str] = &[
    "names",
    "files",
    "printable",
    "autoargs",
    "dump",
    "graph",
    "info",
    "losses",
    "replay",
    "report",
    "tasks",
    "view",
];

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    rules::uses(&rules::modules(&src()))
}

#[test]
fn modules_import_each_other_one_way_only() {
    rules::assert_no_circles(&graph());
}

#[test]
fn rooms_use_only_the_rooms_below_them() {
    let checked = rules::assert_rooms_downward(&graph(), ROOMS, &[]);
    assert!(checked > 20, "only {checked} imports between rooms found");
}

/// Inside the crate a module is named by its room (`crate::views::replay`,
/// never the short path kept for other crates), so that the rules above
/// see every import.
#[test]
fn modules_are_named_by_their_rooms() {
    for (m, code) in rules::modules(&src()) {
        for alias in ALIASES {
            let short = format!("crate::{alias}::");
            assert!(!code.contains(&short), "{m} names {short}");
        }
    }
}
