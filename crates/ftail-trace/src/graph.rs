//! `ftail graph`: the aggregated call tree of each process image, like
//! `uftrace graph` — every distinct call path once, with how often it was
//! taken and its total time; for one function, the tree of what it calls
//! (`graph FUNC`) or of what calls it (`graph --callers FUNC`).
//!
//! Each thread's calls are streamed into the tree; memory is the number
//! of distinct paths, not the trace's size.

use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::names::Names;
use crate::reader::calls::Calls;
use crate::reader::dir::{Image, TraceDir};
use crate::reader::events::Events;
use crate::view::{glob, Filters, Matches, Shown, Threshold, Visible};

/// Which tree to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Every path from the threads' outermost calls.
    Whole,
    /// What the functions matching this glob call, merged over their calls.
    Callees(String),
    /// What calls the functions matching this glob, up to the outermost
    /// calls (the inverted tree).
    Callers(String),
}

/// One node: a function reached by one path.
#[derive(Debug, Clone)]
struct Node {
    name: Arc<str>,
    calls: u64,
    ticks: u64,
    children: Vec<usize>,
}

/// A call tree (node 0 is an unnamed root).
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    index: FxHashMap<(usize, Arc<str>), usize>,
    hz: f64,
}

impl Tree {
    fn new(hz: f64) -> Tree {
        Tree {
            nodes: vec![Node {
                name: "".into(),
                calls: 0,
                ticks: 0,
                children: Vec::new(),
            }],
            index: FxHashMap::default(),
            hz,
        }
    }

    fn child(&mut self, parent: usize, name: &Arc<str>) -> usize {
        if let Some(&i) = self.index.get(&(parent, name.clone())) {
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(Node {
            name: name.clone(),
            calls: 0,
            ticks: 0,
            children: Vec::new(),
        });
        self.nodes[parent].children.push(i);
        self.index.insert((parent, name.clone()), i);
        i
    }

    /// Adds one call (or, `new_call` false, a resumed slice's time) at
    /// the end of `path` (names, outermost first); with `every_node`,
    /// counts it on every node of the path (the inverted tree: each caller
    /// path carries the calls made through it).
    fn add(&mut self, path: &[Arc<str>], ticks: u64, every_node: bool, new_call: bool) {
        let mut at = 0;
        for (i, name) in path.iter().enumerate() {
            at = self.child(at, name);
            if every_node || i + 1 == path.len() {
                self.nodes[at].calls += u64::from(new_call);
                self.nodes[at].ticks += ticks;
            }
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The tree as text; siblings in the order they were first called,
    /// as uftrace shows them.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# {:>12}  {:>10}  FUNCTION", "TOTAL TIME", "CALLS");
        for &r in &self.nodes[0].children {
            self.render_node(out, r, "", None);
        }
    }

    fn render_node(&self, out: &mut String, id: usize, prefix: &str, last: Option<bool>) {
        let n = &self.nodes[id];
        let ns = n.ticks as f64 * 1e9 / self.hz;
        let branch = match last {
            None => "",
            Some(true) => "`-",
            Some(false) => "+-",
        };
        let _ = writeln!(
            out,
            "  {:>12}  {:>10}  {prefix}{branch}{}",
            crate::replay::format_ns(ns),
            n.calls,
            n.name
        );
        let kids = &n.children;
        let child_prefix = match last {
            None => prefix.to_string(),
            Some(true) => format!("{prefix}  "),
            Some(false) => format!("{prefix}| "),
        };
        let count = kids.len();
        for (k, &c) in kids.iter().enumerate() {
            self.render_node(out, c, &child_prefix, Some(k + 1 == count));
        }
    }
}

/// Builds `kind`'s tree for `image` from its selected threads (`tids`
/// empty: all), through `filters`.
pub fn build(image: &Image, names: &Names, kind: &Kind, filters: &Filters, tids: &[u32]) -> Tree {
    let mut tree = Tree::new(image.tsc_hz().max(1) as f64);
    let matches = Matches::new(filters, names);
    let target = |name: &str, mangled: Option<&str>, g: &str| {
        glob(g, name) || mangled.is_some_and(|m| glob(g, m))
    };
    for t in &image.threads {
        if !tids.is_empty() && !tids.contains(&t.tid) {
            continue;
        }
        let Ok((header, events)) = Events::open(&t.path) else {
            continue;
        };
        let visible = Visible::new(Calls::new(events, header.stopped), names, &matches, filters);
        // The open calls' names (outermost first); for callee trees, the
        // index in it of the outermost open call of the function asked.
        let mut path: Vec<Arc<str>> = Vec::new();
        let mut new_calls: Vec<bool> = Vec::new();
        let mut anchors: Vec<usize> = Vec::new();
        for item in Threshold::new(visible, filters.min_ticks) {
            match item {
                Shown::Enter {
                    addr, func, tsc, ..
                } => {
                    let name = names.name(addr, tsc);
                    if let Kind::Callees(g) = kind {
                        let mangled = func.map(|f| names.function(f).mangled.clone());
                        if anchors.is_empty() && target(&name, mangled.as_deref(), g) {
                            anchors.push(path.len());
                        }
                    }
                    path.push(name);
                }
                Shown::Leave {
                    func, start, end, ..
                }
                | Shown::Leaf {
                    func, start, end, ..
                } => {
                    let ticks = end.saturating_sub(start);
                    if matches!(item, Shown::Leaf { .. }) {
                        // Never produced here (no leaf folding), but a leaf
                        // is an entry and its leave.
                        continue;
                    }
                    let new_call = new_calls.pop().unwrap_or(true);
                    match kind {
                        Kind::Whole => tree.add(&path, ticks, false, new_call),
                        Kind::Callees(_) => {
                            if let Some(&a) = anchors.first() {
                                tree.add(&path[a..], ticks, false, new_call);
                                if path.len() - 1 == a {
                                    anchors.clear();
                                }
                            }
                        }
                        Kind::Callers(g) => {
                            let name = path.last().cloned().unwrap_or_default();
                            let mangled = func.map(|f| names.function(f).mangled.clone());
                            if target(&name, mangled.as_deref(), g) {
                                let up: Vec<Arc<str>> = path.iter().rev().cloned().collect();
                                tree.add(&up, ticks, true, new_call);
                            }
                        }
                    }
                    path.pop();
                }
            }
        }
    }
    tree
}

/// Renders `kind`'s tree for every image of `trace` that has one.
pub fn render(
    trace: &TraceDir,
    names: &[Names],
    kind: &Kind,
    filters: &Filters,
    tids: &[u32],
) -> String {
    let mut out = String::new();
    for (image, n) in trace.images.iter().zip(names) {
        let tree = build(image, n, kind, filters, tids);
        if tree.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# process {}: {}", image.key, image.args().join(" "));
        if let Kind::Callers(g) = kind {
            let _ = writeln!(out, "# callers of {g}, the calls of it first");
        }
        tree.render(&mut out);
        out.push('\n');
    }
    out
}
