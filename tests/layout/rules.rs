//! The layout rules of a crate that gives its modules folders, the rooms
//! of its data path: imports between its modules go one way only, and so
//! do imports between its rooms (listed top to bottom). A circle would
//! mean a change in a lower room can break a higher one and back. Each
//! crate's `tests/layout.rs` includes this file with its rooms.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate (`record::write`), with its source, tests
/// left out (a test may look anywhere).
pub fn modules(src: &Path) -> BTreeMap<String, String> {
    let src = src.to_path_buf();
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if name == "lib" {
                continue;
            }
            if let Some(folder) = name.strip_suffix("::mod") {
                name = folder.to_string();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_string();
            out.insert(name, code);
        }
    }
    out
}

/// What each module uses: the longest module path after every `crate::`,
/// and the names inside `use crate::a::{b, c}` groups.
pub fn uses(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    mods.iter()
        .map(|(name, code)| {
            let used = crate_paths(code)
                .into_iter()
                .filter_map(|p| {
                    (1..=p.len())
                        .rev()
                        .map(|k| p[..k].join("::"))
                        .find(|m| mods.contains_key(m))
                })
                .filter(|m| m != name)
                .collect();
            (name.clone(), used)
        })
        .collect()
}

/// The paths named after `crate::`, each as its segments; a `{…}` group
/// adds one path per name in it.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let mut segs: Vec<String> = Vec::new();
        let mut s = rest;
        loop {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if end == 0 {
                break;
            }
            segs.push(s[..end].to_string());
            s = &s[end..];
            if let Some(next) = s.strip_prefix("::") {
                if let Some(group) = next.strip_prefix('{') {
                    let inner = &group[..group.find('}').unwrap_or(group.len())];
                    for item in inner.split(',') {
                        let first = item.trim().split([':', ' ']).next().unwrap_or("");
                        if !first.is_empty() {
                            let mut p = segs.clone();
                            p.push(first.to_string());
                            out.push(p);
                        }
                    }
                    break;
                }
                s = next;
            } else {
                break;
            }
        }
        out.push(segs);
    }
    out
}

/// Panics naming a module that reaches itself through its imports.
pub fn assert_no_circles(graph: &BTreeMap<String, BTreeSet<String>>) {
    // A module is in a circle when it can reach itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = graph[start].iter().collect();
        while let Some(m) = todo.pop() {
            assert!(
                m != start,
                "{start} reaches itself through its imports: {:?}",
                graph[start]
            );
            if seen.insert(m.clone()) {
                todo.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
}

/// Panics naming an import from a room to one not below it in `rooms`
/// (top to bottom), or between two rooms `side_by_side`; returns how many
/// imports between rooms it checked.
pub fn assert_rooms_downward(
    graph: &BTreeMap<String, BTreeSet<String>>,
    rooms: &[&str],
    side_by_side: &[[&str; 2]],
) -> usize {
    let room = |m: &str| m.split("::").next().unwrap().to_string();
    let rank = |r: &str| rooms.iter().position(|x| *x == r);
    let mut checked = 0;
    for (m, used) in graph {
        let from = room(m);
        let Some(from_rank) = rank(&from) else {
            panic!("module {m} is in no room of {rooms:?}");
        };
        for u in used {
            let to = room(u);
            if to == from {
                continue;
            }
            let to_rank = rank(&to).unwrap();
            let beside = side_by_side
                .iter()
                .any(|p| *p == [from.as_str(), to.as_str()] || *p == [to.as_str(), from.as_str()]);
            assert!(
                to_rank > from_rank && !beside,
                "{m} (room {from}) uses {u} (room {to}), which is not below it"
            );
            checked += 1;
        }
    }
    checked
}
