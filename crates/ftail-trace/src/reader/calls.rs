//! A thread's events paired into calls: each entry opens a frame, each
//! other event closes the innermost one. The open frames are the only
//! state (one small entry per frame), so memory follows call depth, not
//! trace size.

use std::sync::Arc;

use ftail_abi::trace::{Event, EventKind, KIND_SHIFT};

use super::events::ValueFeed;
use crate::values::Values;

/// One step of a thread, with the pairing done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A function was entered, or a suspended one resumed.
    Enter {
        /// Its entry address (site + 5, as recorded).
        addr: u64,
        /// When.
        tsc: u64,
        /// Frames open around it (0 for the outermost).
        depth: u32,
        /// A new slice of a call suspended on a stack the thread had
        /// switched away from, or (with `earlier`) of a call already
        /// running when a ring's window began: not a new call.
        resumed: bool,
        /// The call began before the window of a ring (flight recorder):
        /// shown open at its start.
        earlier: bool,
        /// Its arguments, when recorded (`ftail record -A/-a`).
        args: Option<Values>,
    },
    /// The innermost open function ended.
    Leave {
        /// Its entry address.
        addr: u64,
        /// When it was entered.
        start: u64,
        /// When it ended.
        end: u64,
        /// Frames open around it.
        depth: u32,
        /// How it ended: `Exit`, `TailExit`, `Unwound`, `Truncated`, or
        /// `Suspended` (its stack was switched away from: it may resume).
        how: EventKind,
        /// Its return value, when recorded (`ftail record -R/-a`): for
        /// the frames a tail chain ends, the chain's.
        ret: Option<Values>,
    },
}

impl Step {
    /// The step's time.
    pub fn tsc(&self) -> u64 {
        match *self {
            Step::Enter { tsc, .. } => tsc,
            Step::Leave { end, .. } => end,
        }
    }
}

/// Pairs a thread's events (an iterator of [`Step`]s). A thread that
/// stopped recording early (`stopped` in its header) has its frames still
/// open at the end closed as `Truncated` at its last event's time; frames
/// open at the end of any other thread (a process killed) stay open
/// ([`Calls::open`] lists them).
pub struct Calls<I> {
    events: I,
    /// Open frames: entry address and time.
    stack: Vec<(u64, u64)>,
    /// Close what is open at the end (the thread stopped early).
    close_at_end: bool,
    last: u64,
    /// Exits that found nothing open.
    unmatched: u64,
    /// Where the events' values come from, if they are wanted.
    values: Option<Arc<ValueFeed>>,
    /// Events read.
    index: u64,
    /// The return value of the close just read, for the tail exits that
    /// follow it (they end the same chain).
    chain: Option<Values>,
}

impl<I: Iterator<Item = Event>> Calls<I> {
    /// Pairs `events`; `stopped` is the thread header's field.
    pub fn new(events: I, stopped: u64) -> Calls<I> {
        Calls {
            events,
            stack: Vec::new(),
            close_at_end: stopped != 0,
            last: 0,
            unmatched: 0,
            values: None,
            index: 0,
            chain: None,
        }
    }

    /// Attaches the values recorded with the events ([`Step::Enter::args`],
    /// [`Step::Leave::ret`]), from their [`super::events::Events::values`].
    pub fn values(mut self, feed: Arc<ValueFeed>) -> Calls<I> {
        self.values = Some(feed);
        self
    }

    /// The frames open now (entry address, entry time), outermost first.
    pub fn open(&self) -> &[(u64, u64)] {
        &self.stack
    }

    /// Exits seen with no frame open.
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    fn leave(&mut self, end: u64, how: EventKind, ret: Option<Values>) -> Option<Step> {
        let (addr, start) = self.stack.pop()?;
        Some(Step::Leave {
            addr,
            start,
            end,
            depth: self.stack.len() as u32,
            how,
            ret,
        })
    }
}

impl<I: Iterator<Item = Event>> Iterator for Calls<I> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        loop {
            let Some(e) = self.events.next() else {
                if self.close_at_end {
                    return self.leave(self.last, EventKind::Truncated, None);
                }
                return None;
            };
            self.last = e.tsc;
            let values = self.values.as_ref().and_then(|f| f.take(self.index));
            self.index += 1;
            let kind = EventKind::from_u8((e.word >> KIND_SHIFT) as u8);
            let chain = self.chain.take();
            match kind {
                Some(kind) if kind.opens() => {
                    let depth = self.stack.len() as u32;
                    self.stack.push((e.addr(), e.tsc));
                    return Some(Step::Enter {
                        addr: e.addr(),
                        tsc: e.tsc,
                        depth,
                        resumed: kind != EventKind::Entry,
                        earlier: kind == EventKind::Earlier,
                        args: values.filter(|_| kind == EventKind::Entry),
                    });
                }
                Some(how) => {
                    let ret = match how {
                        EventKind::Exit => values,
                        EventKind::TailExit => values.or(chain),
                        _ => None,
                    };
                    self.chain.clone_from(&ret);
                    match self.leave(e.tsc, how, ret) {
                        Some(step) => return Some(step),
                        None => self.unmatched += 1,
                    }
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tsc: u64, kind: EventKind, addr: u64) -> Event {
        Event {
            tsc,
            word: ((kind as u64) << KIND_SHIFT) | addr,
        }
    }

    #[test]
    fn pairs_entries_with_the_events_that_close_them() {
        let events = vec![
            ev(1, EventKind::Entry, 0x10),
            ev(2, EventKind::Entry, 0x20),
            ev(3, EventKind::TailExit, 0),
            ev(4, EventKind::Exit, 0x19),
            ev(5, EventKind::Exit, 0x99),
        ];
        let mut calls = Calls::new(events.into_iter(), 0);
        let steps: Vec<Step> = calls.by_ref().collect();
        assert_eq!(
            steps,
            [
                Step::Enter {
                    addr: 0x10,
                    tsc: 1,
                    depth: 0,
                    resumed: false,
                    earlier: false,
                    args: None
                },
                Step::Enter {
                    addr: 0x20,
                    tsc: 2,
                    depth: 1,
                    resumed: false,
                    earlier: false,
                    args: None
                },
                Step::Leave {
                    addr: 0x20,
                    start: 2,
                    end: 3,
                    depth: 1,
                    how: EventKind::TailExit,
                    ret: None
                },
                Step::Leave {
                    addr: 0x10,
                    start: 1,
                    end: 4,
                    depth: 0,
                    how: EventKind::Exit,
                    ret: None
                },
            ]
        );
        assert_eq!(calls.unmatched(), 1);
    }

    #[test]
    fn a_thread_that_stopped_early_closes_what_is_open() {
        let events = vec![ev(1, EventKind::Entry, 0x10), ev(7, EventKind::Entry, 0x20)];
        let steps: Vec<Step> = Calls::new(events.clone().into_iter(), 1).collect();
        assert_eq!(steps.len(), 4);
        assert!(matches!(
            steps[3],
            Step::Leave {
                addr: 0x10,
                end: 7,
                how: EventKind::Truncated,
                ..
            }
        ));
        let mut open = Calls::new(events.into_iter(), 0);
        assert_eq!(open.by_ref().count(), 2);
        assert_eq!(open.open(), &[(0x10, 1), (0x20, 7)]);
    }
}
