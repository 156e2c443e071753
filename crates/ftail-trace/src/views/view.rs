//! What a user asked to see of a thread: its calls ([`Step`]s), filtered
//! the way uftrace's `replay` filters them, streamed.
//!
//! * `-F GLOB`: only calls under (and including) a function matching GLOB,
//!   indented from it; `-N GLOB`: not a matching function nor anything
//!   under it; `-H GLOB`: not a matching function, its callees one level
//!   up in its place; `-D N`: at most N levels of what is shown, counted
//!   again from each `-F` match (as uftrace does: `-F a -F c -D 1` shows
//!   `c` under `a` however deep it is called);
//! * `-C GLOB`: only the calls on a path from the thread's root to a call
//!   of a matching function, and that call without its callees; entries
//!   wait on a stack (the call depth) until a match or their exit decides;
//! * `--time-range`: calls that start inside the range;
//! * `-T GLOB@ACTIONS`: the triggers `ftail record -T` takes, applied to
//!   what is shown as the runtime applies them to what is recorded, per
//!   thread: `trace_on`/`trace_off` (from this call on), `depth=N` (this
//!   call and N − 1 levels below), `filter` (only inside such calls),
//!   `notrace` (not this call nor below it), `finish` (nothing once it
//!   returns);
//! * `-t TIME`: not calls that ran shorter than TIME (nor, then, their
//!   callees). Views that count a call at its exit decide there
//!   ([`Filters::long_enough`]); views that show an entry before its exit
//!   hold it back until it is decided ([`Threshold`]), which holds at most
//!   the open frames.
//!
//! Patterns ([`Pattern`]: globs, or regular expressions with
//! `--match=regex`) match a function's demangled name (`ns::Klass::*`) or
//! its symbol (`_ZN2ns*`). Memory is the call depth.

use crate::values::Values;
use std::collections::VecDeque;

use ftail_abi::trace::EventKind;
use ftail_abi::trigger::Actions;

use crate::reader::calls::Step;
use crate::symbols::names::{FuncId, Names};

/// Whether `pattern` (a shell-style glob: `*`, `?`, `[a-z]`) matches
/// `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    crate::symbols::Glob::new(pattern).is_match(text)
}

/// How the patterns of the filters are read (`--match`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatchKind {
    /// Shell-style globs, matching the whole name (ftail's default).
    #[default]
    Glob,
    /// Regular expressions as uftrace reads them: a pattern with no
    /// special character is a whole name; any other matches anywhere in
    /// the name unless anchored (`^`, `$`).
    Regex,
}

impl MatchKind {
    /// `glob` or `regex`, as `--match` spells it.
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::Glob => "glob",
            MatchKind::Regex => "regex",
        }
    }
}

/// A compiled filter pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A glob.
    Glob(crate::symbols::Glob),
    /// A whole name (a regex without special characters).
    Exact(String),
    /// A regular expression, found anywhere in the name.
    Regex(regex::Regex),
}

impl Pattern {
    /// Compiles `text` as `kind` says.
    ///
    /// # Errors
    ///
    /// A regular expression that does not parse: the reason.
    pub fn new(text: &str, kind: MatchKind) -> Result<Pattern, String> {
        match kind {
            MatchKind::Glob => Ok(Pattern::Glob(crate::symbols::Glob::new(text))),
            MatchKind::Regex if regex::escape(text) == text => Ok(Pattern::Exact(text.to_string())),
            MatchKind::Regex => regex::Regex::new(text).map(Pattern::Regex).map_err(|e| {
                // The parser's message spans lines (the pattern, a
                // caret); its last line says what is wrong.
                let e = e.to_string();
                let why = e.lines().last().unwrap_or("").trim_start_matches("error: ");
                format!("{text:?} is not a regular expression: {why}")
            }),
        }
    }

    /// Whether `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Glob(g) => g.is_match(text),
            Pattern::Exact(e) => e == text,
            Pattern::Regex(r) => r.is_match(text),
        }
    }

    /// Whether the function matches: its name, signature or symbol.
    pub fn matches(&self, f: &crate::symbols::names::Function) -> bool {
        self.is_match(&f.name) || self.is_match(&f.signature) || self.is_match(&f.mangled)
    }
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// How the patterns below are read.
    pub kind: MatchKind,
    /// `-F`: show only calls under a function matching one of these.
    pub include: Vec<String>,
    /// `-N`: hide a matching function and everything under it.
    pub exclude: Vec<String>,
    /// `-H`: hide a matching function, its callees in its place.
    pub hide: Vec<String>,
    /// `-C`: show only the paths to calls of a matching function.
    pub callers: Vec<String>,
    /// `-D`: show at most this many levels.
    pub depth: Option<u32>,
    /// `-t`: hide calls shorter than this many ticks.
    pub min_ticks: u64,
    /// `--time-range`: show calls starting in [from, to] (ticks).
    pub range: Option<(u64, u64)>,
    /// `-T`: each trigger's pattern and what it does.
    pub triggers: Vec<(String, Actions)>,
}

impl Filters {
    /// Whether the filters can leave out a call (all calls are shown
    /// otherwise).
    pub fn select(&self) -> bool {
        !self.include.is_empty()
            || !self.exclude.is_empty()
            || !self.hide.is_empty()
            || !self.callers.is_empty()
            || self.depth.is_some()
            || self.min_ticks > 0
            || self.range.is_some()
            || !self.triggers.is_empty()
    }

    /// Each pattern with the option that gave it (`-F`, `-N`, `-H`, `-C`).
    pub fn patterns(&self) -> Vec<(&'static str, &str)> {
        let lists = [
            ("-F", &self.include),
            ("-N", &self.exclude),
            ("-H", &self.hide),
            ("-C", &self.callers),
        ];
        lists
            .into_iter()
            .flat_map(|(flag, list)| list.iter().map(move |p| (flag, p.as_str())))
            .chain(self.triggers.iter().map(|(p, _)| ("-T", p.as_str())))
            .collect()
    }
}

/// Per function of an image: which of `-F`, `-N`, `-H` and `-C` match it.
#[derive(Debug, Clone, Default)]
pub struct Matches {
    include: Vec<bool>,
    exclude: Vec<bool>,
    hide: Vec<bool>,
    callers: Vec<bool>,
    /// Per `-T` rule: the functions it matches, and its actions.
    triggers: Vec<(Vec<bool>, Actions)>,
}

impl Matches {
    /// Matches every function of `names` against the filters' patterns
    /// once. A pattern that does not compile matches nothing (commands
    /// refuse it before, with the reason).
    pub fn new(filters: &Filters, names: &Names) -> Matches {
        let any = |texts: &[String]| -> Vec<bool> {
            if texts.is_empty() {
                return Vec::new();
            }
            let patterns: Vec<Pattern> = texts
                .iter()
                .filter_map(|p| Pattern::new(p, filters.kind).ok())
                .collect();
            // Once per module, for all the images that share it.
            let key = format!("{:?}\0{}", filters.kind, texts.join("\0"));
            names.matching(&key, &|f| patterns.iter().any(|p| p.matches(f)))
        };
        let triggers = filters
            .triggers
            .iter()
            .map(|(p, a)| (any(std::slice::from_ref(p)), *a))
            .collect();
        Matches {
            include: any(&filters.include),
            exclude: any(&filters.exclude),
            hide: any(&filters.hide),
            callers: any(&filters.callers),
            triggers,
        }
    }

    /// What the `-T` rules matching `f` do (all of them together).
    fn actions(&self, f: Option<FuncId>) -> Option<Actions> {
        let mut hit = self.triggers.iter().filter(|(set, _)| Self::hit(set, f));
        let mut all = hit.next()?.1;
        for (_, a) in hit {
            all.trace_on |= a.trace_on;
            all.trace_off |= a.trace_off;
            all.finish |= a.finish;
            all.filter |= a.filter;
            all.notrace |= a.notrace;
            if all.depth == 0 {
                all.depth = a.depth;
            }
        }
        Some(all)
    }

    fn hit(set: &[bool], f: Option<FuncId>) -> bool {
        f.is_some_and(|f| set.get(f.0 as usize).copied().unwrap_or(false))
    }

    fn included(&self, f: Option<FuncId>) -> bool {
        Self::hit(&self.include, f)
    }

    fn excluded(&self, f: Option<FuncId>) -> bool {
        Self::hit(&self.exclude, f)
    }

    fn hidden(&self, f: Option<FuncId>) -> bool {
        Self::hit(&self.hide, f)
    }

    fn called(&self, f: Option<FuncId>) -> bool {
        Self::hit(&self.callers, f)
    }
}

/// A step that is shown, with the function it is about and its depth
/// among what is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A call begins (its exit comes later), or resumes.
    Enter {
        /// Entry address, as recorded.
        addr: u64,
        /// The function, when known.
        func: Option<FuncId>,
        /// When.
        tsc: u64,
        /// Shown frames around it.
        depth: u32,
        /// A new slice of a suspended call, not a new call.
        resumed: bool,
        /// The call began before a ring's window (also `resumed`).
        earlier: bool,
        /// Its arguments, when recorded.
        args: Option<Values>,
    },
    /// A call ends.
    Leave {
        /// Entry address.
        addr: u64,
        /// The function.
        func: Option<FuncId>,
        /// When it began, and when it ended.
        start: u64,
        /// When it ended.
        end: u64,
        /// Shown frames around it.
        depth: u32,
        /// How it ended.
        how: EventKind,
        /// The call began before a ring's window or before tracing.
        earlier: bool,
        /// Its return value, when recorded.
        ret: Option<Values>,
    },
    /// A call with nothing shown inside, on one line.
    Leaf {
        /// Entry address.
        addr: u64,
        /// The function.
        func: Option<FuncId>,
        /// When it began.
        start: u64,
        /// When it ended.
        end: u64,
        /// Shown frames around it.
        depth: u32,
        /// How it ended.
        how: EventKind,
        /// Its arguments, when recorded.
        args: Option<Values>,
        /// Its return value, when recorded.
        ret: Option<Values>,
    },
}

impl Shown {
    /// The time the item is placed at (a leaf: its start).
    pub fn tsc(&self) -> u64 {
        match *self {
            Shown::Enter { tsc, .. } => tsc,
            Shown::Leave { end, .. } => end,
            Shown::Leaf { start, .. } => start,
        }
    }
}

/// An open frame, as the filters see it.
#[derive(Clone, Copy)]
struct Frame {
    func: Option<FuncId>,
    shown: bool,
    /// Nothing under it is shown (`-N`, or a `-C` match).
    hides_below: bool,
    /// Under an `-F` function (or no `-F` given).
    in_scope: bool,
    /// Shown frames up to and including this one.
    shown_depth: u32,
    /// Levels that count for `-D`: shown frames since the innermost `-F`
    /// match, it included.
    level: u32,
    /// Its entry waits for a `-C` match under it (or is not shown).
    held: bool,
    /// The call began before the events (a ring's window, or tracing).
    earlier: bool,
    /// `-T`: what this call's triggers do at its exit.
    trigger: Option<TriggerExit>,
    /// Inside a call with a `depth=N` trigger: its depth, not `-D`'s,
    /// bounds what is shown (as when recording).
    trigger_depth: bool,
}

/// What a `-T` trigger puts back when its call ends.
#[derive(Clone, Copy)]
struct TriggerExit {
    /// The thread's scope before the call.
    scope_before: u32,
    /// `finish`: nothing more is shown once the call returns.
    finish: bool,
}

/// The `-T` state of a thread, as the runtime keeps it while recording.
#[derive(Clone, Copy)]
struct TriggerState {
    /// `trace_off` was met (and no `trace_on` since).
    off: bool,
    /// A `finish` call returned.
    finished: bool,
    /// Calls at this stack index or deeper are not shown (`depth=N`,
    /// `filter`, `notrace`).
    scope_max: u32,
}

/// The steps of a thread that the filters (except `-t`) let through.
pub struct Visible<'a, I> {
    steps: I,
    names: &'a Names,
    matches: &'a Matches,
    filters: &'a Filters,
    stack: Vec<Frame>,
    /// `-C`: the entries of the shown frames on the stack that no match
    /// has let out yet, outermost first.
    held: Vec<Shown>,
    /// Items let out, waiting to be returned.
    out: VecDeque<Shown>,
    /// No filter can leave a call out here (`-t` is another reader's).
    plain: bool,
    /// `-T`.
    triggered: TriggerState,
    resolved: crate::symbols::names::ResolveCache,
}

impl<'a, I: Iterator<Item = Step>> Visible<'a, I> {
    /// Filters `steps`.
    pub fn new(steps: I, names: &'a Names, matches: &'a Matches, filters: &'a Filters) -> Self {
        Visible {
            steps,
            names,
            matches,
            filters,
            stack: Vec::new(),
            held: Vec::new(),
            out: VecDeque::new(),
            plain: filters.include.is_empty()
                && filters.exclude.is_empty()
                && filters.hide.is_empty()
                && filters.callers.is_empty()
                && filters.depth.is_none()
                && filters.range.is_none()
                && filters.triggers.is_empty(),
            triggered: TriggerState {
                off: false,
                finished: false,
                // With a `filter` rule, nothing outside its calls.
                scope_max: if filters.triggers.iter().any(|(_, a)| a.filter) {
                    0
                } else {
                    u32::MAX
                },
            },
            resolved: Default::default(),
        }
    }

    fn enter(&mut self, func: Option<FuncId>, tsc: u64) -> Frame {
        let parent = self.stack.last().copied();
        if self.plain {
            // What the filters below decide when none is given.
            let (above, level) = parent.map_or((0, 0), |p| (p.shown_depth, p.level));
            return Frame {
                func,
                shown: true,
                hides_below: false,
                in_scope: true,
                shown_depth: above + 1,
                level: level + 1,
                held: false,
                earlier: false,
                trigger: None,
                trigger_depth: false,
            };
        }
        let (trigger, allowed, sets_depth) = self.trigger_entry(func);
        let trigger_depth = sets_depth || parent.is_some_and(|p| p.trigger_depth);
        let above = parent.map_or(0, |p| p.shown_depth);
        let hidden_above = parent.is_some_and(|p| p.hides_below);
        let excluded = self.matches.excluded(func);
        let included = self.matches.included(func);
        let in_scope =
            self.filters.include.is_empty() || parent.is_some_and(|p| p.in_scope) || included;
        // `-D` counts again from each `-F` match.
        let base = if included {
            0
        } else {
            parent.map_or(0, |p| p.level)
        };
        let too_deep = !trigger_depth && self.filters.depth.is_some_and(|d| base >= d);
        let in_range = self
            .filters
            .range
            .is_none_or(|(from, to)| from <= tsc && tsc <= to);
        let shown = !hidden_above
            && !excluded
            && !self.matches.hidden(func)
            && in_scope
            && !too_deep
            && in_range
            && allowed;
        let target = shown && self.matches.called(func);
        Frame {
            func,
            shown,
            hides_below: hidden_above || excluded || target,
            in_scope,
            shown_depth: above + u32::from(shown),
            level: base + u32::from(shown),
            held: !self.filters.callers.is_empty() && !target,
            earlier: false,
            trigger,
            trigger_depth,
        }
    }

    /// Applies the `-T` rules of a call of `func` about to be pushed (as
    /// the runtime's `on_entry` does): what its exit puts back, whether
    /// the triggers let it be shown, and whether it sets a depth.
    fn trigger_entry(&mut self, func: Option<FuncId>) -> (Option<TriggerExit>, bool, bool) {
        let index = self.stack.len() as u32;
        let t = &mut self.triggered;
        let mut exit = None;
        let mut sets_depth = false;
        if let Some(a) = self.matches.actions(func) {
            if !t.finished {
                if a.trace_on {
                    t.off = false;
                }
                if a.trace_off {
                    t.off = true;
                }
            }
            if a.notrace || a.depth != 0 || a.filter || a.finish {
                exit = Some(TriggerExit {
                    scope_before: t.scope_max,
                    finish: a.finish,
                });
                if a.notrace {
                    t.scope_max = index;
                } else if a.depth != 0 {
                    t.scope_max = index.saturating_add(a.depth);
                    sets_depth = true;
                } else if a.filter {
                    t.scope_max = u32::MAX;
                }
            }
        }
        let allowed = !t.finished && !t.off && index < t.scope_max;
        (exit, allowed, sets_depth)
    }

    /// The `-T` rules of a call that ends put back what they changed.
    fn trigger_exit(&mut self, f: &Frame) {
        if let Some(e) = f.trigger {
            self.triggered.scope_max = e.scope_before;
            self.triggered.finished |= e.finish;
        }
    }

    /// An entry of frame `f`: returned, held until a `-C` match, or
    /// (a match) returned after the held entries around it.
    fn let_enter(&mut self, f: Frame, item: Shown) -> Option<Shown> {
        if self.filters.callers.is_empty() {
            return Some(item);
        }
        if f.held {
            self.held.push(item);
            return None;
        }
        for s in self.stack.iter_mut() {
            s.held = false;
        }
        self.out.extend(self.held.drain(..));
        self.out.push_back(item);
        self.out.pop_front()
    }

    /// A leave of frame `f`: returned unless its entry was held (it led
    /// to no `-C` match).
    fn let_leave(&mut self, f: Frame, item: Shown) -> Option<Shown> {
        if f.held {
            self.held.pop();
            return None;
        }
        Some(item)
    }
}

impl<I: Iterator<Item = Step>> Iterator for Visible<'_, I> {
    type Item = Shown;

    fn next(&mut self) -> Option<Shown> {
        if let Some(item) = self.out.pop_front() {
            return Some(item);
        }
        loop {
            match self.steps.next()? {
                Step::Enter {
                    addr,
                    tsc,
                    resumed,
                    earlier,
                    args,
                    ..
                } => {
                    let func = self.resolved.resolve(self.names, addr, tsc);
                    let mut f = self.enter(func, tsc);
                    f.held &= f.shown;
                    f.earlier = earlier;
                    if f.shown {
                        let item = Shown::Enter {
                            addr,
                            func,
                            tsc,
                            depth: f.shown_depth - 1,
                            resumed,
                            earlier,
                            args,
                        };
                        // The frame goes on the stack first: a match lets
                        // out every held entry on it.
                        self.stack.push(f);
                        if let Some(item) = self.let_enter(f, item) {
                            return Some(item);
                        }
                    } else {
                        self.stack.push(f);
                    }
                }
                Step::Leave {
                    addr,
                    start,
                    end,
                    how,
                    ret,
                    ..
                } => {
                    let Some(f) = self.stack.pop() else { continue };
                    self.trigger_exit(&f);
                    if f.shown {
                        let item = Shown::Leave {
                            addr,
                            func: f.func,
                            start,
                            end,
                            depth: f.shown_depth - 1,
                            how,
                            earlier: f.earlier,
                            ret,
                        };
                        if let Some(item) = self.let_leave(f, item) {
                            return Some(item);
                        }
                    }
                }
            }
        }
    }
}

impl Filters {
    /// `-t` for a view that counts each call at its exit (`report`,
    /// `flame`, `report --task`): whether a call that ran from `start` to
    /// `end` is long enough. Its callees are never longer, so a call
    /// kept has every caller kept, and one left out leaves out all it
    /// called.
    pub fn long_enough(&self, start: u64, end: u64) -> bool {
        end.saturating_sub(start) >= self.min_ticks
    }
}

/// `-t` for views that show calls in order (`replay`, `dump`, `graph`,
/// the exports): drops the calls shorter than `min` ticks (and what is
/// inside them), though an entry is shown before its exit is known.
///
/// One pass: an entry waits, with what follows it, until it is decided:
/// long enough at its exit, or once `min` has passed since it began (an
/// item that late is inside it or after it); short at its exit, when it
/// and all inside it are dropped. A call long enough decides every call
/// around it that began earlier, so what waits is the open frames begun
/// less than `min` ago: memory is the call depth at any threshold, and
/// each item is read once (linear time). Entries still open when the
/// items end are long enough.
pub struct Threshold<I> {
    items: I,
    min: u64,
    /// Items read and not yet let out, each entry with whether it is
    /// still undecided.
    waiting: VecDeque<(Shown, bool)>,
    /// Items let out so far (`waiting`'s first item's number).
    out: u64,
    /// The open entries: their number and start, outermost first.
    open: Vec<(u64, u64)>,
    /// `open[decided..]` are undecided (the innermost ones).
    decided: usize,
    /// The items have ended.
    done: bool,
}

impl<I: Iterator<Item = Shown>> Threshold<I> {
    /// Applies `-t min` (ticks; 0 lets everything through) to `items`.
    pub fn new(items: I, min: u64) -> Self {
        Threshold {
            items,
            min,
            waiting: VecDeque::new(),
            out: 0,
            open: Vec::new(),
            decided: 0,
            done: false,
        }
    }

    /// Reads one item into `waiting`, deciding what it decides.
    fn read(&mut self, item: Shown) {
        let now = item.tsc();
        let number = self.out + self.waiting.len() as u64;
        match item {
            Shown::Enter { tsc, .. } => {
                self.open.push((number, tsc));
                self.waiting.push_back((item, true));
            }
            Shown::Leave { start, end, .. } => match self.open.pop() {
                Some(_) if self.decided > self.open.len() => {
                    // Decided already (long enough): nothing waits on it.
                    self.decided = self.open.len();
                    self.waiting.push_back((item, false));
                }
                Some((entry, _)) => {
                    let at = (entry - self.out) as usize;
                    if end.saturating_sub(start) >= self.min {
                        self.waiting[at].1 = false;
                        self.waiting.push_back((item, false));
                    } else {
                        self.waiting.truncate(at);
                    }
                }
                None => self.waiting.push_back((item, false)),
            },
            Shown::Leaf { .. } => self.waiting.push_back((item, false)),
        }
        while let Some(&(entry, start)) = self.open.get(self.decided) {
            if now < start.saturating_add(self.min) {
                break;
            }
            self.waiting[(entry - self.out) as usize].1 = false;
            self.decided += 1;
        }
    }
}

impl<I: Iterator<Item = Shown>> Iterator for Threshold<I> {
    type Item = Shown;

    fn next(&mut self) -> Option<Shown> {
        if self.min == 0 {
            return self.items.next();
        }
        loop {
            if let Some((_, false)) = self.waiting.front() {
                self.out += 1;
                return self.waiting.pop_front().map(|w| w.0);
            }
            if self.done {
                // Entries never decided (still open at the end) are kept.
                self.out += 1;
                return self.waiting.pop_front().map(|w| w.0);
            }
            match self.items.next() {
                Some(item) => self.read(item),
                None => self.done = true,
            }
        }
    }
}

/// Puts a call with nothing shown inside on one line: an entry directly
/// followed by its own return, or by its end in a tail call (into code
/// that is not traced), becomes a [`Shown::Leaf`]. A call that ended
/// otherwise (unwound, switched out) keeps its closing line, which says
/// how.
pub struct Leaves<I: Iterator> {
    items: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Shown>> Leaves<I> {
    /// Merges leaves of `items`.
    pub fn new(items: I) -> Self {
        Leaves {
            items: items.peekable(),
        }
    }
}

impl<I: Iterator<Item = Shown>> Iterator for Leaves<I> {
    type Item = Shown;

    fn next(&mut self) -> Option<Shown> {
        let item = self.items.next()?;
        let Shown::Enter {
            tsc,
            depth,
            resumed: false,
            ..
        } = item
        else {
            return Some(item);
        };
        match self.items.peek() {
            Some(&Shown::Leave {
                start,
                depth: d,
                how,
                ..
            }) if start == tsc
                && d == depth
                && matches!(how, EventKind::Exit | EventKind::TailExit) =>
            {
                let Some(Shown::Leave {
                    addr,
                    func,
                    start,
                    end,
                    how,
                    ret,
                    ..
                }) = self.items.next()
                else {
                    return Some(item);
                };
                let Shown::Enter { args, .. } = item else {
                    return None;
                };
                Some(Shown::Leaf {
                    addr,
                    func,
                    start,
                    end,
                    depth,
                    how,
                    args,
                    ret,
                })
            }
            _ => Some(item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enter(tsc: u64, depth: u32) -> Shown {
        Shown::Enter {
            addr: 0x10 + u64::from(depth),
            func: None,
            tsc,
            depth,
            resumed: false,
            earlier: false,
            args: None,
        }
    }

    fn leave(start: u64, end: u64, depth: u32) -> Shown {
        Shown::Leave {
            addr: 0x10 + u64::from(depth),
            func: None,
            start,
            end,
            depth,
            how: EventKind::Exit,
            earlier: false,
            ret: None,
        }
    }

    #[test]
    fn threshold_drops_short_calls_and_keeps_long_ones_in_order() {
        // outer [0, 100] { short [1, 3] { inner [2, 2] } long [10, 60] }
        let items = vec![
            enter(0, 0),
            enter(1, 1),
            enter(2, 2),
            leave(2, 2, 2),
            leave(1, 3, 1),
            enter(10, 1),
            leave(10, 60, 1),
            leave(0, 100, 0),
        ];
        let kept: Vec<Shown> = Threshold::new(items.clone().into_iter(), 20).collect();
        assert_eq!(
            kept,
            [
                enter(0, 0),
                enter(10, 1),
                leave(10, 60, 1),
                leave(0, 100, 0)
            ]
        );
        let all: Vec<Shown> = Threshold::new(items.into_iter(), 0).collect();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn threshold_keeps_a_call_that_never_ends() {
        // outer [0, never ends] { short [1, 3] }
        let items = vec![enter(0, 0), enter(1, 1), leave(1, 3, 1)];
        let kept: Vec<Shown> = Threshold::new(items.into_iter(), 20).collect();
        assert_eq!(kept, [enter(0, 0)]);
    }

    #[test]
    fn threshold_holds_back_only_the_open_frames() {
        // outer [0, 1000] holds 300 short calls [i, i + 1] before it is
        // decided: each is dropped at its exit, not held.
        let mut items = vec![enter(0, 0)];
        for i in 1..300 {
            items.push(enter(i, 1));
            items.push(leave(i, i + 1, 1));
        }
        items.push(leave(0, 1000, 0));
        let mut t = Threshold::new(items.into_iter(), 500);
        let mut most = 0;
        while !t.done {
            match t.items.next() {
                Some(item) => t.read(item),
                None => t.done = true,
            }
            most = most.max(t.waiting.len());
        }
        assert!(most <= 2, "held {most} items");
        assert_eq!(t.collect::<Vec<_>>(), [enter(0, 0), leave(0, 1000, 0)]);
    }

    #[test]
    fn leaves_fold_an_entry_and_its_own_exit() {
        let items = vec![enter(0, 0), enter(1, 1), leave(1, 2, 1), leave(0, 3, 0)];
        let out: Vec<Shown> = Leaves::new(items.into_iter()).collect();
        assert_eq!(out.len(), 3);
        assert!(matches!(
            out[1],
            Shown::Leaf {
                start: 1,
                end: 2,
                depth: 1,
                ..
            }
        ));
    }
}
