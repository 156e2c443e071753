//! Folded stacks, the text flame graphs are drawn from
//! (`flamegraph.pl`, `inferno`): one line per call path,
//! `outer;middle;leaf WEIGHT`, the weight being the time spent in the
//! path's last function itself (self time, in ns; the default) or the
//! calls it made (`--weight calls`).
//!
//! Self time, not call counts, by default: a function called a million
//! times for a nanosecond is not where the time went. A path's self time
//! is its calls' durations less their shown callees', as `ftail report`
//! counts it, so the lines ending in a function add up to its `report`
//! self time; with `-F`, paths start at the matching function.
//!
//! Each thread is folded into a tree of call paths per process image (one
//! node per distinct path, which bounds memory; each open call holds its
//! node, so a call costs the same at any depth), then the paths are
//! spelled out, merged across images and sorted.
//!
//! Paths are at most [`MAX_DEPTH`] functions long: a line's length is
//! its depth, so the lines of a recursion N deep would add up to N²/2
//! names (gigabytes for 60,000 levels, and a graph no viewer draws).
//! A call deeper than that counts, with its time and calls, in its
//! caller at that depth, and a note says so.

use std::collections::BTreeMap;
use std::io::{self, Write};

use rustc_hash::FxHashMap;

use crate::{Input, Notes};
use ftail_trace::view::Shown;

/// The longest call path spelled out.
pub const MAX_DEPTH: u32 = 1024;

/// What a flame graph's widths measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weight {
    /// Time spent in the function itself, in nanoseconds.
    #[default]
    SelfTime,
    /// Calls (a resumed slice is not a new call).
    Calls,
}

impl Weight {
    /// The unit the flame graph counts in.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::SelfTime => "ns",
            Weight::Calls => "calls",
        }
    }
}

/// A node of the call-path tree: a function under a parent path.
struct Node {
    parent: u32,
    /// The function's id, or its entry address with the top bit set.
    key: u64,
    self_ticks: u64,
    calls: u64,
}

/// The call paths of one process image.
struct Tree {
    nodes: Vec<Node>,
    children: FxHashMap<(u32, u64), u32>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            nodes: vec![Node {
                parent: 0,
                key: 0,
                self_ticks: 0,
                calls: 0,
            }],
            children: FxHashMap::default(),
        }
    }

    fn child(&mut self, parent: u32, key: u64) -> u32 {
        let next = self.nodes.len() as u32;
        let id = *self.children.entry((parent, key)).or_insert(next);
        if id == next {
            self.nodes.push(Node {
                parent,
                key,
                self_ticks: 0,
                calls: 0,
            });
        }
        id
    }
}

/// Folds every selected thread of `input`: stack line (without weight)
/// to weight, sorted by stack; lines of weight 0 are left out.
pub fn fold(input: &Input, weight: Weight) -> (BTreeMap<String, u64>, Notes) {
    let mut notes = crate::name_notes(input);
    let matches = crate::matches(input);
    let mut trees: Vec<Tree> = input.trace.images.iter().map(|_| Tree::new()).collect();
    let mut deepest = 0u32;
    // `-t` is decided at each exit (no call waits for it), so the stream
    // is read without it.
    let untimed = ftail_trace::view::Filters {
        min_ticks: 0,
        ..input.filters.clone()
    };
    let stream = crate::Input {
        filters: &untimed,
        ..*input
    };
    for (i, file) in crate::selected(input) {
        let tree = &mut trees[i];
        let _ = crate::stream_thread(&stream, i, &matches[i], file, &mut notes, |_, items| {
            // Per open shown call: its node, its callees' ticks, whether a
            // new call, its depth (1 for the outermost).
            let mut stack: Vec<(u32, u64, bool, u32)> = Vec::new();
            for item in items {
                match item {
                    Shown::Enter {
                        addr,
                        func,
                        resumed,
                        ..
                    } => {
                        let (parent, depth) = stack.last().map_or((0, 0), |s| (s.0, s.3));
                        let node = if depth >= MAX_DEPTH {
                            parent
                        } else {
                            let key = func.map_or(addr | 1 << 63, |f| u64::from(f.0));
                            tree.child(parent, key)
                        };
                        stack.push((node, 0, !resumed, depth + 1));
                    }
                    Shown::Leave { start, end, .. } | Shown::Leaf { start, end, .. } => {
                        let Some((node, callees, new_call, depth)) = stack.pop() else {
                            continue;
                        };
                        if !input.filters.long_enough(start, end) {
                            continue;
                        }
                        if depth > MAX_DEPTH {
                            deepest = deepest.max(depth);
                        }
                        let ticks = end.saturating_sub(start);
                        let n = &mut tree.nodes[node as usize];
                        n.self_ticks += ticks.saturating_sub(callees);
                        n.calls += u64::from(new_call);
                        if let Some(parent) = stack.last_mut() {
                            parent.1 += ticks;
                        }
                    }
                }
            }
            // Calls that never ended are long enough.
            if let Some(&(_, _, _, depth)) = stack.last() {
                if depth > MAX_DEPTH {
                    deepest = deepest.max(depth);
                }
            }
            Ok::<(), std::convert::Infallible>(())
        });
    }
    if deepest > 0 {
        notes.push(format!(
            "calls nest {deepest} levels deep: those deeper than {MAX_DEPTH} levels \
             count in their caller at level {MAX_DEPTH}"
        ));
    }
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    let mut path: Vec<u32> = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        let image = &input.trace.images[i];
        let clock = crate::Clock::new(input.trace, image);
        let names = &input.names[i];
        let name = |n: &Node| {
            if n.key & 1 << 63 != 0 {
                format!("{:#x}", (n.key & !(1 << 63)).saturating_sub(5))
            } else {
                frame(&names.functions()[n.key as usize].name)
            }
        };
        for (id, n) in tree.nodes.iter().enumerate().skip(1) {
            let w = match weight {
                Weight::SelfTime => clock.span(n.self_ticks).round() as u64,
                Weight::Calls => n.calls,
            };
            if w == 0 {
                continue;
            }
            // The node's path, from its parents (at most MAX_DEPTH).
            path.clear();
            let mut at = id as u32;
            while at != 0 {
                path.push(at);
                at = tree.nodes[at as usize].parent;
            }
            let mut line = String::new();
            for (k, &p) in path.iter().rev().enumerate() {
                if k > 0 {
                    line.push(';');
                }
                line.push_str(&name(&tree.nodes[p as usize]));
            }
            *lines.entry(line).or_default() += w;
        }
    }
    (lines, notes)
}

/// A function's name as a frame of a folded line, which no name can
/// forge: names are printable already (no newline), a `;` would split the
/// frame (it becomes `,`), and a name ending in a space and a number would
/// pass that number for the line's weight (or, before the weight, for the
/// first run's in a differential graph): that space becomes `_`.
fn frame(name: &str) -> String {
    let mut f = name.replace(';', ",");
    if let Some(space) = f.rfind(char::is_whitespace) {
        let tail = &f[space..].trim_start();
        let number = !tail.is_empty()
            && tail.chars().filter(|&c| c == '.').count() <= 1
            && tail.chars().all(|c| c.is_ascii_digit() || c == '.');
        if number {
            let width = f[space..].chars().next().map_or(1, char::len_utf8);
            f.replace_range(space..space + width, "_");
        }
    }
    f
}

/// Writes `input`'s folded stacks to `out`; returns notes on what could
/// not be read.
///
/// # Errors
///
/// Only the writer's.
pub fn write<W: Write + ?Sized>(input: &Input, weight: Weight, out: &mut W) -> io::Result<Notes> {
    let (lines, notes) = fold(input, weight);
    for (stack, w) in &lines {
        writeln!(out, "{stack} {w}")?;
    }
    out.flush()?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn no_name_forges_a_frame_or_a_weight() {
        assert_eq!(frame("ns::f<int, char>"), "ns::f<int, char>");
        assert_eq!(frame("a;b"), "a,b");
        assert_eq!(frame("evil\\n1;fake 99999"), "evil\\n1,fake_99999");
        assert_eq!(frame("f 1.5"), "f_1.5");
        assert_eq!(frame("operator new"), "operator new");
        assert_eq!(frame("v 1.2.3"), "v 1.2.3");
    }
}
