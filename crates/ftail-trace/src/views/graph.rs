//! `ftail graph`: the aggregated call tree of each process image, like
//! `uftrace graph` — every distinct call path once, with how often it was
//! taken and its total time; for one function, the tree of what it calls
//! (`graph FUNC`) or of what calls it (`graph --callers FUNC`).
//!
//! Each thread's calls are streamed into the tree; memory is the number
//! of distinct paths, not the trace's size.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::reader::calls::Calls;
use crate::reader::dir::{Image, ThreadFile, TraceDir};
use crate::reader::events::Events;
use crate::symbols::names::Names;
use crate::views::view::{Filters, Matches, Pattern, Shown, Threshold, Visible};
use crate::views::Until;

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

/// A column of the tree (`-f`), named as uftrace's `graph -f` names
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Total time of the path's calls (`total`).
    Total,
    /// Their time less their callees' shown here (`self`).
    SelfTime,
    /// How many calls took the path (`call`).
    Calls,
    /// The function's address, its first byte (`addr`).
    Addr,
}

impl Field {
    /// The columns shown by default.
    pub const DEFAULT: [Field; 2] = [Field::Total, Field::Calls];

    /// Parses a `-f` list: the columns in the order given; `none` alone
    /// for none.
    ///
    /// # Errors
    ///
    /// Names the field it does not know.
    pub fn parse_list(list: &str) -> Result<Vec<Field>, String> {
        let mut out = Vec::new();
        for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            out.push(match f {
                "none" => continue,
                "total" => Field::Total,
                "self" => Field::SelfTime,
                "call" | "calls" => Field::Calls,
                "addr" => Field::Addr,
                other => {
                    return Err(format!(
                        "unknown graph field {other:?} (known: total, self, call, addr; or none)"
                    ))
                }
            });
        }
        Ok(out)
    }

    fn title(self) -> &'static str {
        match self {
            Field::Total => "TOTAL TIME",
            Field::SelfTime => "SELF TIME",
            Field::Calls => "CALLS",
            Field::Addr => "ADDRESS",
        }
    }

    /// Calls take 10 columns, the rest 12.
    fn width(self) -> usize {
        match self {
            Field::Calls => 10,
            _ => 12,
        }
    }
}

/// One node: a function reached by one path.
#[derive(Debug, Clone)]
struct Node {
    name: Arc<str>,
    /// The function's first byte (or its site's, when not known).
    addr: u64,
    calls: u64,
    ticks: u64,
    children: Vec<usize>,
    /// While building an inverted tree: the open calls counted on this
    /// node (only the outermost of them adds its time).
    open: u32,
}

/// What a viewer reads of one node of a [`Tree`].
#[derive(Debug, Clone, Copy)]
pub struct NodeStats<'a> {
    /// The function's name.
    pub name: &'a str,
    /// How many calls took the path.
    pub calls: u64,
    /// Their total time, in ticks.
    pub ticks: u64,
    /// Their time less their callees', in ticks.
    pub self_ticks: u64,
}

/// A call tree (node 0 is an unnamed root).
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    index: FxHashMap<(usize, Arc<str>), usize>,
    hz: f64,
    /// With `--srcline`: where each function named is, when known.
    srclines: FxHashMap<Arc<str>, Option<Box<str>>>,
}

/// An open shown call, as a tree is built: its name, its node (`None`
/// outside the part of the tree asked for), whether a new call (not a
/// resumed slice), whether a call of the function of an inverted tree.
struct Open {
    name: Arc<str>,
    addr: u64,
    node: Option<usize>,
    new_call: bool,
    target: bool,
}

impl Tree {
    fn new(hz: f64) -> Tree {
        Tree {
            nodes: vec![Node {
                name: "".into(),
                addr: 0,
                calls: 0,
                ticks: 0,
                children: Vec::new(),
                open: 0,
            }],
            index: FxHashMap::default(),
            hz,
            srclines: FxHashMap::default(),
        }
    }

    fn child(&mut self, parent: usize, name: &Arc<str>, addr: u64) -> usize {
        // A function's calls share its name: the first few children are
        // found by pointer before the name is hashed.
        let children = &self.nodes[parent].children;
        if let Some(&i) = children[..children.len().min(4)]
            .iter()
            .find(|&&c| Arc::ptr_eq(&self.nodes[c].name, name))
        {
            return i;
        }
        if let Some(&i) = self.index.get(&(parent, name.clone())) {
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(Node {
            name: name.clone(),
            addr,
            calls: 0,
            ticks: 0,
            children: Vec::new(),
            open: 0,
        });
        self.nodes[parent].children.push(i);
        self.index.insert((parent, name.clone()), i);
        i
    }

    /// The node of a call entered under `parent`: each open call holds its
    /// node, so a call costs one lookup whatever the depth. `start` says
    /// whether a call outside the tree begins it (`graph FUNC`).
    fn enter_down(
        &mut self,
        parent: Option<&Open>,
        name: &Arc<str>,
        addr: u64,
        start: bool,
    ) -> Option<usize> {
        match parent.and_then(|p| p.node) {
            Some(p) => Some(self.child(p, name, addr)),
            None if start => Some(self.child(0, name, addr)),
            None => None,
        }
    }

    /// The nodes of the inverted tree a call of the function asked
    /// counts on: the call itself, then each caller, innermost first
    /// (`stack` ends with the call).
    fn callers_path(&mut self, stack: &[Open], mut each: impl FnMut(&mut Node)) {
        let mut at = 0;
        for f in stack.iter().rev() {
            at = self.child(at, &f.name, f.addr);
            each(&mut self.nodes[at]);
        }
    }

    /// Adds `other`'s paths and counts: its new paths after this tree's,
    /// in the order `other` first took them (node numbers grow in that
    /// order, a parent before its children).
    fn merge(&mut self, other: &Tree) {
        let mut parent = vec![0; other.nodes.len()];
        for (id, n) in other.nodes.iter().enumerate() {
            for &c in &n.children {
                parent[c] = id;
            }
        }
        // Each node of `other`'s number here.
        let mut here = vec![0; other.nodes.len()];
        for (id, n) in other.nodes.iter().enumerate().skip(1) {
            let at = self.child(here[parent[id]], &n.name, n.addr);
            self.nodes[at].calls += n.calls;
            self.nodes[at].ticks += n.ticks;
            here[id] = at;
        }
        for (name, src) in &other.srclines {
            self.srclines
                .entry(name.clone())
                .or_insert_with(|| src.clone());
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The outermost calls' nodes (node 0 is the unnamed root), in the
    /// order they were first called.
    pub fn roots(&self) -> &[usize] {
        &self.nodes[0].children
    }

    /// Node `id`'s children, in the order they were first called.
    pub fn children(&self, id: usize) -> &[usize] {
        self.nodes.get(id).map_or(&[], |n| &n.children)
    }

    /// Node `id`'s function name, calls, total ticks and self ticks (its
    /// total less its children's), for viewers that lay the tree out
    /// themselves.
    pub fn node(&self, id: usize) -> Option<NodeStats<'_>> {
        let n = self.nodes.get(id)?;
        let callees: u64 = n.children.iter().map(|&c| self.nodes[c].ticks).sum();
        Some(NodeStats {
            name: &n.name,
            calls: n.calls,
            ticks: n.ticks,
            self_ticks: n.ticks.saturating_sub(callees),
        })
    }

    /// Ticks per second of the tree's times.
    pub fn hz(&self) -> f64 {
        self.hz
    }

    /// The tree as text; siblings in the order they were first called,
    /// as uftrace shows them. Levels past [`crate::views::replay::MAX_INDENT`]
    /// show their depth as a number instead of more indentation, so a
    /// line stays short however deep the tree.
    pub fn render(&self, out: &mut String, fields: &[Field]) {
        out.push('#');
        for f in fields {
            let _ = write!(out, " {:>w$} ", f.title(), w = f.width());
        }
        out.push_str(" FUNCTION");
        if !self.srclines.is_empty() {
            out.push_str(" [SOURCE]");
        }
        out.push('\n');
        // Depth first with a stack of its own (a deep recursion is as deep
        // a tree): per level, the node's children and the next to show.
        let mut prefix = String::new();
        let mut stack: Vec<(&[usize], usize)> = vec![(&self.nodes[0].children, 0)];
        while let Some(&mut (kids, ref mut next)) = stack.last_mut() {
            let Some(&id) = kids.get(*next) else {
                stack.pop();
                // Back to the siblings of the node whose children these
                // were: their prefix (one segment per level above the
                // first, up to the cap).
                let level = stack.len().saturating_sub(1);
                prefix.truncate(
                    2 * level
                        .saturating_sub(1)
                        .min(crate::views::replay::MAX_INDENT as usize),
                );
                continue;
            };
            *next += 1;
            let last = *next == kids.len();
            // Level 0 (the outermost calls) has no branch.
            let level = stack.len() - 1;
            self.render_line(out, fields, id, &prefix, level, last);
            if level >= 1 && level <= crate::views::replay::MAX_INDENT as usize {
                prefix.push_str(if last { "  " } else { "| " });
            }
            stack.push((&self.nodes[id].children, 0));
        }
    }

    fn render_line(
        &self,
        out: &mut String,
        fields: &[Field],
        id: usize,
        prefix: &str,
        level: usize,
        last: bool,
    ) {
        let n = &self.nodes[id];
        let branch = match (level, last) {
            (0, _) => "",
            (_, true) => "`-",
            (_, false) => "+-",
        };
        out.push(' ');
        for f in fields {
            let _ = write!(out, " {:>w$} ", self.value(*f, n), w = f.width());
        }
        let _ = write!(out, " {prefix}");
        if level > crate::views::replay::MAX_INDENT as usize {
            let _ = write!(out, "[{level}] ");
        }
        let _ = write!(out, "{branch}{}", n.name);
        if let Some(Some(src)) = self.srclines.get(&n.name) {
            let _ = write!(out, " [{src}]");
        }
        out.push('\n');
    }
}

impl Tree {
    fn value(&self, field: Field, n: &Node) -> String {
        let ns = |ticks: u64| crate::views::replay::format_ns(ticks as f64 * 1e9 / self.hz);
        match field {
            Field::Total => ns(n.ticks),
            Field::SelfTime => {
                let callees: u64 = n.children.iter().map(|&c| self.nodes[c].ticks).sum();
                ns(n.ticks.saturating_sub(callees))
            }
            Field::Calls => n.calls.to_string(),
            Field::Addr => format!("{:x}", n.addr),
        }
    }
}

/// Builds `kind`'s tree for `image` from its selected threads (`tids`
/// empty: all), through `filters`. Time and memory are linear in the
/// events and the call depth: each open call holds its node. An inverted
/// tree (`--callers`) walks the callers of each call of its function.
pub fn build(image: &Image, names: &Names, kind: &Kind, filters: &Filters, tids: &[u32]) -> Tree {
    build_with(image, names, kind, filters, tids, false)
}

/// [`build`], with each function's source line when `srcline`.
pub fn build_with(
    image: &Image,
    names: &Names,
    kind: &Kind,
    filters: &Filters,
    tids: &[u32],
    srcline: bool,
) -> Tree {
    build_until(
        image,
        names,
        kind,
        filters,
        tids,
        srcline,
        &AtomicBool::new(false),
    )
}

/// [`build_with`], ending early (with the calls read so far) once `stop`
/// is set: for a tree nobody waits for any more.
pub fn build_until(
    image: &Image,
    names: &Names,
    kind: &Kind,
    filters: &Filters,
    tids: &[u32],
    srcline: bool,
    stop: &AtomicBool,
) -> Tree {
    let matches = Matches::new(filters, names);
    let threads: Vec<&ThreadFile> = image
        .threads
        .iter()
        .filter(|t| tids.is_empty() || tids.contains(&t.tid))
        .collect();
    let hz = image.tsc_hz().max(1) as f64;
    // Each thread on its own core; merged in the threads' order, so the
    // tree is the one a single reader would build.
    let trees: Vec<Tree> = threads
        .par_iter()
        .map(|t| {
            let mut tree = Tree::new(hz);
            let tree_of = Thread {
                file: t,
                names,
                matches: &matches,
                kind,
                filters,
                srcline,
            };
            add_thread(&mut tree, &tree_of, stop);
            tree
        })
        .collect();
    let mut tree = Tree::new(hz);
    for t in &trees {
        tree.merge(t);
    }
    tree
}

/// A thread to add to a tree, and how.
struct Thread<'a> {
    file: &'a ThreadFile,
    names: &'a Names,
    matches: &'a Matches,
    kind: &'a Kind,
    filters: &'a Filters,
    srcline: bool,
}

/// Adds the shown calls of thread `t` to `tree`, until `stop`.
fn add_thread(tree: &mut Tree, t: &Thread, stop: &AtomicBool) {
    let Thread {
        file: t,
        names,
        matches,
        kind,
        filters,
        srcline,
    } = *t;
    // FUNC is read as the filters' patterns are (`--match`).
    let pattern = match kind {
        Kind::Callees(g) | Kind::Callers(g) => Pattern::new(g, filters.kind).ok(),
        Kind::Whole => None,
    };
    let target = |func: Option<crate::symbols::names::FuncId>, name: &str| {
        pattern
            .as_ref()
            .is_some_and(|p| p.is_match(name) || func.is_some_and(|f| p.matches(names.function(f))))
    };
    let Ok((header, events)) = Events::open(&t.path) else {
        return;
    };
    let events = Until::new(events, stop);
    let visible = Visible::new(Calls::new(events, header.stopped), names, matches, filters);
    let mut stack: Vec<Open> = Vec::new();
    for item in Threshold::new(visible, filters.min_ticks) {
        match item {
            Shown::Enter {
                addr,
                func,
                tsc,
                resumed,
                ..
            } => {
                let func = func.or_else(|| names.resolve(addr, tsc));
                let name = match func {
                    Some(f) => names.function(f).name.clone(),
                    None => names.name(addr, tsc),
                };
                let first = match func {
                    Some(f) => names.start(f),
                    None => addr.saturating_sub(5),
                };
                if srcline && !tree.srclines.contains_key(&name) {
                    let src = func.and_then(|f| names.srcline(f));
                    let src = src.map(|s| s.to_string().into_boxed_str());
                    tree.srclines.insert(name.clone(), src);
                }
                let (node, is_target) = match kind {
                    Kind::Whole => (tree.enter_down(stack.last(), &name, first, true), false),
                    Kind::Callees(_) => {
                        let start = target(func, &name);
                        (tree.enter_down(stack.last(), &name, first, start), false)
                    }
                    Kind::Callers(_) => (None, target(func, &name)),
                };
                stack.push(Open {
                    name,
                    addr: first,
                    node,
                    new_call: !resumed,
                    target: is_target,
                });
                if is_target {
                    tree.callers_path(&stack, |n| n.open += 1);
                }
            }
            Shown::Leave { start, end, .. } => {
                let ticks = end.saturating_sub(start);
                let Some(f) = stack.last() else { continue };
                let new_call = u64::from(f.new_call);
                if let Some(n) = f.node {
                    tree.nodes[n].calls += new_call;
                    tree.nodes[n].ticks += ticks;
                }
                if f.target {
                    // Each node counts the time of the outermost of
                    // the open calls it counts (a recursive call is
                    // inside one already).
                    tree.callers_path(&stack, |n| {
                        n.open -= 1;
                        n.calls += new_call;
                        if n.open == 0 {
                            n.ticks += ticks;
                        }
                    });
                }
                stack.pop();
            }
            // Never produced here (no leaf folding).
            Shown::Leaf { .. } => {}
        }
    }
}

/// Renders `kind`'s tree for every image of `trace` that has one, with
/// the default columns.
pub fn render(
    trace: &TraceDir,
    names: &[Names],
    kind: &Kind,
    filters: &Filters,
    tids: &[u32],
) -> String {
    render_fields(trace, names, kind, filters, tids, &Field::DEFAULT, false)
}

/// Renders `kind`'s tree for every image of `trace` that has one, with
/// `fields` (`-f`) in their order.
pub fn render_fields(
    trace: &TraceDir,
    names: &[Names],
    kind: &Kind,
    filters: &Filters,
    tids: &[u32],
    fields: &[Field],
    srcline: bool,
) -> String {
    let mut out = String::new();
    for (image, n) in trace.images.iter().zip(names) {
        let tree = build_with(image, n, kind, filters, tids, srcline);
        if tree.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# process {}: {}", image.key, image.command_line());
        if let Kind::Callers(g) = kind {
            let _ = writeln!(out, "# callers of {g}, the calls of it first");
        }
        tree.render(&mut out, fields);
        out.push('\n');
    }
    out
}
