//! The runtime's layout: imports between its modules go one way only, and
//! so do imports between its folders (the rooms of its data path, listed
//! top to bottom in `lib.rs`). A circle would mean a change in a lower
//! room can break a higher one and back.

#[path = "../../../tests/layout/rules.rs"]
mod rules;

use std::path::Path;

/// The order of the rooms, top to bottom: a room may use only rooms
/// below it (`found` and `code` are side by side: neither uses the other).
const ROOMS: &[&str] = &["control", "plan", "found", "code", "record", "process"];

fn graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    rules::uses(&rules::modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    ))
}

#[test]
fn modules_import_each_other_one_way_only() {
    rules::assert_no_circles(&graph());
}

#[test]
fn rooms_use_only_the_rooms_below_them() {
    let checked = rules::assert_rooms_downward(&graph(), ROOMS, &[["found", "code"]]);
    assert!(checked > 20, "only {checked} imports between rooms found");
}
