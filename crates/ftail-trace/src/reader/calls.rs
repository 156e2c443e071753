//! A thread's events paired into calls: each entry opens a frame, each
//! other event closes the innermost one. The open frames are the only
//! state (one small entry per frame), so memory follows call depth, not
//! trace size.

use ftail_abi::trace::{Event, EventKind, KIND_SHIFT};

/// One step of a thread, with the pairing done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }

    /// The frames open now (entry address, entry time), outermost first.
    pub fn open(&self) -> &[(u64, u64)] {
        &self.stack
    }

    /// Exits seen with no frame open.
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    fn leave(&mut self, end: u64, how: EventKind) -> Option<Step> {
        let (addr, start) = self.stack.pop()?;
        Some(Step::Leave {
            addr,
            start,
            end,
            depth: self.stack.len() as u32,
            how,
        })
    }
}

impl<I: Iterator<Item = Event>> Iterator for Calls<I> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        loop {
            let Some(e) = self.events.next() else {
                if self.close_at_end {
                    return self.leave(self.last, EventKind::Truncated);
                }
                return None;
            };
            self.last = e.tsc;
            match EventKind::from_u8((e.word >> KIND_SHIFT) as u8) {
                Some(kind) if kind.opens() => {
                    let depth = self.stack.len() as u32;
                    self.stack.push((e.addr(), e.tsc));
                    return Some(Step::Enter {
                        addr: e.addr(),
                        tsc: e.tsc,
                        depth,
                        resumed: kind != EventKind::Entry,
                        earlier: kind == EventKind::Earlier,
                    });
                }
                Some(how) => match self.leave(e.tsc, how) {
                    Some(step) => return Some(step),
                    None => self.unmatched += 1,
                },
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
                    earlier: false
                },
                Step::Enter {
                    addr: 0x20,
                    tsc: 2,
                    depth: 1,
                    resumed: false,
                    earlier: false
                },
                Step::Leave {
                    addr: 0x20,
                    start: 2,
                    end: 3,
                    depth: 1,
                    how: EventKind::TailExit
                },
                Step::Leave {
                    addr: 0x10,
                    start: 1,
                    end: 4,
                    depth: 0,
                    how: EventKind::Exit
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
