//! The store of a thread's parked frames (see `stacks.rs`): frames alive
//! on stacks the thread switched away from, found by their stack.
//!
//! A hash table maps a stack — a registered coroutine stack `(lo, hi)`,
//! or `(0, 0)` for every stack on no region — to the chain of its parked
//! frames, outermost first, in nodes taken from a bounded arena. So
//! parking and resuming cost the same with ten coroutines suspended or
//! ten thousand. When the arena is full, the chain of another stack goes
//! (its frames are closed in the event file already).
//!
//! One mapping per thread, made on the first park and unmapped when the
//! thread exits: a header, the nodes, then the table's slots. Only the
//! thread itself touches it (`stacks.rs` keeps its signal handlers out
//! while it does: `ThreadState::busy`). No allocation, no locks.

use crate::record::state::{StackEntry, ThreadState};

/// A stack's key: its registered region, or `(0, 0)` for no region.
pub type Key = (u64, u64);

#[repr(C)]
#[derive(Clone, Copy)]
struct Header {
    /// Head of the free list of nodes, plus one (0: empty).
    free: u32,
    /// Nodes ever handed out: those above are fresh.
    high: u32,
    /// Nodes in the arena.
    nodes: u32,
    /// Slots in the table (a power of two, at least twice `nodes`).
    slots: u32,
    /// Where the next eviction looks.
    evict: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Node {
    entry: StackEntry,
    /// The next node of the chain, plus one (0: the last).
    next: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    /// First and last node of the chain, plus one (`head` 0: free slot).
    head: u32,
    tail: u32,
}

/// A view of the calling thread's store; its accessors copy in and out
/// (only this thread, outside its signal handlers, uses the mapping).
struct Store {
    header: *mut Header,
    nodes: *mut Node,
    slots: *mut Slot,
}

impl Store {
    fn of(st: &ThreadState) -> Option<Store> {
        if st.parked == 0 {
            return None;
        }
        let header = st.parked as *mut Header;
        // SAFETY: the mapping `map` laid out: header, nodes, slots.
        unsafe {
            let nodes = header.add(1) as *mut Node;
            let slots = nodes.add((*header).nodes as usize) as *mut Slot;
            Some(Store {
                header,
                nodes,
                slots,
            })
        }
    }

    fn h(&self) -> Header {
        // SAFETY: the header of this thread's mapping.
        unsafe { std::ptr::read(self.header) }
    }

    fn set_h(&self, h: Header) {
        // SAFETY: as above.
        unsafe { std::ptr::write(self.header, h) }
    }

    fn node(&self, i: u32) -> Node {
        debug_assert!(i >= 1 && i <= self.h().nodes);
        // SAFETY: 1 <= i <= nodes: a node of the arena.
        unsafe { std::ptr::read(self.nodes.add(i as usize - 1)) }
    }

    fn set_node(&self, i: u32, n: Node) {
        debug_assert!(i >= 1 && i <= self.h().nodes);
        // SAFETY: as above.
        unsafe { std::ptr::write(self.nodes.add(i as usize - 1), n) }
    }

    fn set_next(&self, i: u32, next: u32) {
        let n = self.node(i);
        self.set_node(i, Node { next, ..n });
    }

    fn slot(&self, i: u32) -> Slot {
        debug_assert!(i < self.h().slots);
        // SAFETY: i < slots (callers mask with slots - 1).
        unsafe { std::ptr::read(self.slots.add(i as usize)) }
    }

    fn set_slot(&self, i: u32, s: Slot) {
        debug_assert!(i < self.h().slots);
        // SAFETY: as above.
        unsafe { std::ptr::write(self.slots.add(i as usize), s) }
    }

    fn home(&self, key: Key) -> u32 {
        let mixed = (key.0 ^ key.1.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 32) as u32 & (self.h().slots - 1)
    }

    /// The slot holding `key`'s chain, if any.
    fn find(&self, key: Key) -> Option<u32> {
        let mask = self.h().slots - 1;
        let mut i = self.home(key);
        loop {
            let s = self.slot(i);
            if s.head == 0 {
                return None;
            }
            if s.key == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot for `key`'s chain (free when there is none yet).
    fn find_or_free(&self, key: Key) -> u32 {
        let mask = self.h().slots - 1;
        let mut i = self.home(key);
        loop {
            let s = self.slot(i);
            if s.head == 0 || s.key == key {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Empties slot `i` (linear probing: later slots of the run move back
    /// so that every chain stays reachable from its home).
    fn clear(&self, mut i: u32) {
        let mask = self.h().slots - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slot(j);
            if s.head == 0 {
                break;
            }
            let home = self.home(s.key);
            // Move it back unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.set_slot(i, s);
                i = j;
            }
        }
        self.set_slot(
            i,
            Slot {
                key: (0, 0),
                head: 0,
                tail: 0,
            },
        );
    }

    fn free_node(&self, st: &mut ThreadState, n: u32) {
        let mut h = self.h();
        self.set_next(n, h.free);
        h.free = n;
        self.set_h(h);
        st.parked_len -= 1;
    }

    fn free_chain(&self, st: &mut ThreadState, mut n: u32) {
        while n != 0 {
            let next = self.node(n).next;
            self.free_node(st, n);
            n = next;
        }
    }

    /// A free node, evicting another stack's chain when the arena is full
    /// (never `keep`'s).
    fn alloc(&self, st: &mut ThreadState, keep: Key) -> Option<u32> {
        let h = self.h();
        if h.free == 0 && h.high == h.nodes {
            for k in 0..h.slots {
                let i = (h.evict.wrapping_add(k)) & (h.slots - 1);
                let s = self.slot(i);
                if s.head != 0 && s.key != keep {
                    self.set_h(Header { evict: i + 1, ..h });
                    self.clear(i);
                    self.free_chain(st, s.head);
                    break;
                }
            }
        }
        let mut h = self.h();
        let n = if h.free != 0 {
            let n = h.free;
            h.free = self.node(n).next;
            n
        } else if h.high < h.nodes {
            h.high += 1;
            h.high
        } else {
            return None;
        };
        self.set_h(h);
        st.parked_len += 1;
        Some(n)
    }
}

/// Maps the thread's store, with room for as many frames as its trace
/// stack holds; false when it cannot.
fn map(st: &mut ThreadState) -> bool {
    let nodes = st.stack_cap.clamp(16, u32::MAX as u64 / 4) as u32;
    let slots = (2 * nodes).next_power_of_two();
    let bytes = bytes(nodes, slots);
    // SAFETY: an anonymous private mapping, no aliasing; zero-filled, so
    // every slot starts free.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: the mapping starts with the header.
    unsafe {
        *(p as *mut Header) = Header {
            free: 0,
            high: 0,
            nodes,
            slots,
            evict: 0,
            _pad: 0,
        };
    }
    st.parked = p as u64;
    st.parked_cap = nodes as u64;
    st.parked_len = 0;
    true
}

fn bytes(nodes: u32, slots: u32) -> usize {
    std::mem::size_of::<Header>()
        + nodes as usize * std::mem::size_of::<Node>()
        + slots as usize * std::mem::size_of::<Slot>()
}

/// Appends `entries`, innermost last, to the chain of stack `key`; false
/// when there is no store (it could not be mapped).
pub fn park(st: &mut ThreadState, key: Key, entries: impl Iterator<Item = StackEntry>) -> bool {
    if st.parked == 0 && !map(st) {
        return false;
    }
    let Some(s) = Store::of(st) else {
        return false;
    };
    for e in entries {
        let Some(n) = s.alloc(st, key) else { break };
        s.set_node(
            n,
            Node {
                entry: e,
                next: 0,
                _pad: 0,
            },
        );
        let i = s.find_or_free(key);
        let mut slot = s.slot(i);
        if slot.head == 0 {
            slot = Slot {
                key,
                head: n,
                tail: n,
            };
        } else {
            s.set_next(slot.tail, n);
            slot.tail = n;
        }
        s.set_slot(i, slot);
    }
    true
}

/// Visits the frames parked on stack `key`, outermost first; those `take`
/// returns true for leave the store.
pub fn take(
    st: &mut ThreadState,
    key: Key,
    mut take: impl FnMut(&mut ThreadState, StackEntry) -> bool,
) {
    let Some(s) = Store::of(st) else { return };
    let Some(i) = s.find(key) else { return };
    let mut n = s.slot(i).head;
    let (mut head, mut tail) = (0, 0);
    while n != 0 {
        let Node { entry, next, .. } = s.node(n);
        if take(st, entry) {
            s.free_node(st, n);
        } else {
            s.set_next(n, 0);
            if head == 0 {
                head = n;
            } else {
                s.set_next(tail, n);
            }
            tail = n;
        }
        n = next;
    }
    if head == 0 {
        s.clear(i);
    } else {
        s.set_slot(i, Slot { key, head, tail });
    }
}

/// Unmaps the thread's store (thread exit).
pub fn release(st: &mut ThreadState) {
    if let Some(s) = Store::of(st) {
        let size = bytes(s.h().nodes, s.h().slots);
        // SAFETY: the mapping `map` made for this thread.
        unsafe { libc::munmap(st.parked as *mut libc::c_void, size) };
    }
    st.parked = 0;
    st.parked_cap = 0;
    st.parked_len = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(cap: u64) -> Box<ThreadState> {
        // SAFETY: ThreadState is plain integers; all zero is a valid,
        // empty state.
        let mut st: Box<ThreadState> = Box::new(unsafe { std::mem::zeroed() });
        st.stack_cap = cap;
        st
    }

    fn e(cfa: u64) -> StackEntry {
        StackEntry { cfa, word: cfa + 1 }
    }

    fn all(st: &mut ThreadState, key: Key) -> Vec<u64> {
        let mut out = Vec::new();
        take(st, key, |_, e| {
            out.push(e.cfa);
            false
        });
        out
    }

    #[test]
    fn chains_are_kept_per_stack_in_order() {
        let mut st = thread(64);
        assert!(park(&mut st, (1, 2), [e(30), e(20)].into_iter()));
        assert!(park(&mut st, (0, 0), [e(90)].into_iter()));
        assert!(park(&mut st, (1, 2), [e(10)].into_iter()));
        assert_eq!(all(&mut st, (1, 2)), [30, 20, 10]);
        assert_eq!(all(&mut st, (0, 0)), [90]);
        assert_eq!(st.parked_len, 4);
        // Take the inner two, keep the outer one.
        take(&mut st, (1, 2), |_, e| e.cfa < 25);
        assert_eq!(all(&mut st, (1, 2)), [30]);
        take(&mut st, (1, 2), |_, _| true);
        assert_eq!(all(&mut st, (1, 2)), Vec::<u64>::new());
        assert_eq!(st.parked_len, 1);
        release(&mut st);
    }

    #[test]
    fn a_full_store_evicts_other_stacks() {
        let mut st = thread(16);
        for k in 0..40u64 {
            assert!(park(
                &mut st,
                (k + 1, k + 2),
                [e(k), e(k + 100)].into_iter()
            ));
            assert!(st.parked_len <= 16);
            // The stack just parked is whole.
            assert_eq!(all(&mut st, (k + 1, k + 2)), [k, k + 100]);
        }
        // Many keys, many collisions: every chain left is reachable.
        let mut found = 0;
        for k in 0..40u64 {
            found += all(&mut st, (k + 1, k + 2)).len() as u64;
        }
        assert_eq!(found, st.parked_len);
        release(&mut st);
    }
}
