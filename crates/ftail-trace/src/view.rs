//! What a user asked to see of a thread: its calls ([`Step`]s), filtered
//! the way uftrace's `replay` filters them, streamed.
//!
//! * `-F GLOB`: only calls under (and including) a function matching GLOB,
//!   indented from it; `-N GLOB`: not a matching function nor anything
//!   under it; `-D N`: at most N levels of what is shown;
//! * `--time-range`: calls that start inside the range;
//! * `-t TIME`: not calls that ran shorter than TIME (nor, then, their
//!   callees). This needs to know a call's duration when it starts: the
//!   steps after an undecided entry wait in a queue until its exit comes
//!   or TIME has passed, so the queue holds at most TIME's worth of steps.
//!
//! Globs match a function's demangled name (`ns::Klass::*`) or its symbol
//! (`_ZN2ns*`). Memory is the call depth plus that queue.

use crate::values::Values;
use std::collections::VecDeque;

use ftail_abi::trace::EventKind;

use crate::names::{FuncId, Names};
use crate::reader::calls::Step;

/// Whether `pattern` (a shell-style glob: `*`, `?`, `[a-z]`) matches
/// `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    crate::symbols::Glob::new(pattern).is_match(text)
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `-F`: show only calls under a function matching one of these.
    pub include: Vec<String>,
    /// `-N`: hide a matching function and everything under it.
    pub exclude: Vec<String>,
    /// `-D`: show at most this many levels.
    pub depth: Option<u32>,
    /// `-t`: hide calls shorter than this many ticks.
    pub min_ticks: u64,
    /// `--time-range`: show calls starting in [from, to] (ticks).
    pub range: Option<(u64, u64)>,
}

/// Per function of an image: whether `-F` and `-N` match it.
#[derive(Debug, Clone, Default)]
pub struct Matches {
    include: Vec<bool>,
    exclude: Vec<bool>,
}

impl Matches {
    /// Matches every function of `names` against the filters' globs
    /// (once per module, for all the images that share it).
    pub fn new(filters: &Filters, names: &Names) -> Matches {
        Matches {
            include: names.matching(&filters.include),
            exclude: names.matching(&filters.exclude),
        }
    }

    fn included(&self, f: Option<FuncId>) -> bool {
        f.is_some_and(|f| self.include[f.0 as usize])
    }

    fn excluded(&self, f: Option<FuncId>) -> bool {
        f.is_some_and(|f| self.exclude[f.0 as usize])
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
    /// Nothing under it is shown (`-N`, `-D`).
    hides_below: bool,
    /// Under an `-F` function (or no `-F` given).
    in_scope: bool,
    /// Shown frames up to and including this one.
    shown_depth: u32,
}

/// The steps of a thread that the filters (except `-t`) let through.
pub struct Visible<'a, I> {
    steps: I,
    names: &'a Names,
    matches: &'a Matches,
    filters: &'a Filters,
    stack: Vec<Frame>,
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
        }
    }

    fn enter(&mut self, func: Option<FuncId>, tsc: u64) -> Frame {
        let parent = self.stack.last().copied();
        let above = parent.map_or(0, |p| p.shown_depth);
        let hidden_above = parent.is_some_and(|p| p.hides_below);
        let excluded = self.matches.excluded(func);
        let in_scope = self.filters.include.is_empty()
            || parent.is_some_and(|p| p.in_scope)
            || self.matches.included(func);
        let too_deep = self.filters.depth.is_some_and(|d| above >= d);
        let in_range = self
            .filters
            .range
            .is_none_or(|(from, to)| from <= tsc && tsc <= to);
        let shown = !hidden_above && !excluded && in_scope && !too_deep && in_range;
        Frame {
            func,
            shown,
            hides_below: hidden_above || excluded || too_deep,
            in_scope,
            shown_depth: above + u32::from(shown),
        }
    }
}

impl<I: Iterator<Item = Step>> Iterator for Visible<'_, I> {
    type Item = Shown;

    fn next(&mut self) -> Option<Shown> {
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
                    let func = self.names.resolve(addr, tsc);
                    let f = self.enter(func, tsc);
                    self.stack.push(f);
                    if f.shown {
                        return Some(Shown::Enter {
                            addr,
                            func,
                            tsc,
                            depth: f.shown_depth - 1,
                            resumed,
                            earlier,
                            args,
                        });
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
                    if f.shown {
                        return Some(Shown::Leave {
                            addr,
                            func: f.func,
                            start,
                            end,
                            depth: f.shown_depth - 1,
                            how,
                            ret,
                        });
                    }
                }
            }
        }
    }
}

/// `-t`: drops the calls shorter than `min` ticks (and what is inside
/// them), deciding each when its exit comes or `min` has passed.
pub struct Threshold<I> {
    items: I,
    min: u64,
    /// Items waiting for a decision, each entry with its decision.
    queue: VecDeque<(Shown, Option<bool>)>,
    done: bool,
}

impl<I: Iterator<Item = Shown>> Threshold<I> {
    /// Applies `-t min` (ticks; 0 lets everything through).
    pub fn new(items: I, min: u64) -> Self {
        Threshold {
            items,
            min,
            queue: VecDeque::new(),
            done: false,
        }
    }

    /// Decides the entries whose fate is known at time `now`, and the one
    /// a leave closes.
    fn decide(&mut self, now: u64, leave: Option<u64>) {
        // The innermost undecided entry is the one a leave closes.
        if let Some(start) = leave {
            if let Some(slot) = self
                .queue
                .iter_mut()
                .rev()
                .find(|(s, d)| matches!(s, Shown::Enter { .. }) && d.is_none())
            {
                if let Shown::Enter { tsc, .. } = slot.0 {
                    if tsc == start {
                        slot.1 = Some(now - start >= self.min);
                    }
                }
            }
        }
        for (s, d) in &mut self.queue {
            if let (Shown::Enter { tsc, .. }, None) = (s, &d) {
                if now >= *tsc + self.min {
                    *d = Some(true);
                }
            }
        }
    }

    /// The next item that can leave the queue.
    fn pop_decided(&mut self) -> Option<Shown> {
        loop {
            let (item, decision) = self.queue.front()?;
            match (item, decision) {
                (Shown::Enter { .. }, None) if !self.done => return None,
                (Shown::Enter { .. }, Some(false)) => self.drop_subtree(),
                _ => return self.queue.pop_front().map(|(item, _)| item),
            }
        }
    }

    /// Drops the entry at the front and everything up to its leave.
    fn drop_subtree(&mut self) {
        let mut open = 0u32;
        while let Some((item, _)) = self.queue.pop_front() {
            match item {
                Shown::Enter { .. } => open += 1,
                Shown::Leave { .. } => open -= 1,
                Shown::Leaf { .. } => {}
            }
            if open == 0 {
                return;
            }
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
            if let Some(item) = self.pop_decided() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.items.next() {
                None => {
                    self.done = true;
                    // Entries still undecided never ended: long enough.
                    for (_, d) in &mut self.queue {
                        d.get_or_insert(true);
                    }
                }
                Some(item) => {
                    let leave = match item {
                        Shown::Leave { start, .. } => Some(start),
                        _ => None,
                    };
                    let at = item.tsc();
                    self.queue.push_back((item, None));
                    self.decide(at, leave);
                }
            }
        }
    }
}

/// Puts a call with nothing shown inside on one line: an entry directly
/// followed by its own plain return becomes a [`Shown::Leaf`]. A call
/// that ended otherwise (a tail call, unwound) keeps its closing line,
/// which says how.
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
            }) if start == tsc && d == depth && how == EventKind::Exit => {
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
