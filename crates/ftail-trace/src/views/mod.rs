//! What a user sees of a trace: the filters (`view`), and the text
//! analyses on top of them (`replay`, `report`, `graph`, `tasks`, `dump`,
//! `info`, `losses`).

pub mod dump;
pub mod graph;
pub mod info;
pub mod losses;
pub mod replay;
pub mod report;
pub mod tasks;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};

/// Events until `stop` is set (looked at every 4096 events): a view
/// counted in the background ends early once nobody waits for it.
pub(crate) struct Until<'a, I> {
    events: I,
    stop: &'a AtomicBool,
    n: u32,
}

impl<'a, I> Until<'a, I> {
    pub(crate) fn new(events: I, stop: &'a AtomicBool) -> Until<'a, I> {
        Until { events, stop, n: 0 }
    }
}

impl<I: Iterator> Iterator for Until<'_, I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.n = self.n.wrapping_add(1);
        if self.n.is_multiple_of(4096) && self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.events.next()
    }
}
