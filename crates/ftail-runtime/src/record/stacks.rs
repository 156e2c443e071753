//! Stacks: which stack a frame lives on, and the frames alive on stacks
//! a thread switched away from (`swapcontext`, coroutine libraries, green
//! threads).
//!
//! **The model.** A thread's trace stack is one list of open frames, but
//! they may live on several stacks: a coroutine's first function nests
//! under the function that switched to it, like a call. When the thread
//! goes back to a stack with frames further down the trace stack while
//! frames of another stack are still open above them, those frames are
//! not gone, only switched out: they are *parked* — closed in the event
//! file with `Suspended`, kept in a per-thread store — and *resumed* —
//! reopened with `Resumed`, nested where execution is then — when their
//! stack runs again. Frames of the current stack below the current CFA
//! are gone (longjmp, exceptions): closed as `Unwound` (or `TailExit`
//! when a tail site marked them). Parked frames below the position their
//! stack resumes at are gone too and are dropped, and so is everything
//! parked on a stack `makecontext` sets up again. So every thread's event
//! file stays properly nested.
//!
//! **Which stack.** The `makecontext` wrapper registers each coroutine
//! stack (`uc_stack`) and its context's `uc_link` in a sorted table read
//! without locks (a binary search: a switch among thousands of
//! coroutines stays cheap); a frame is on the innermost registered stack
//! holding its return address. Frames on no registered stack (the
//! thread's own, `sigaltstack`, stacks nobody registered) are taken to be
//! on one stack when their CFAs are less than [`SAME_STACK`] apart.
//!
//! **When.** The `swapcontext` and `setcontext` wrappers (`tramp.rs`) know
//! both ends of a switch — the caller's stack pointer and the target
//! context's saved one — and park and resume at the switch itself, with
//! its time. The first function of a context started by `makecontext` is
//! flagged on entry ([`BASE`](crate::record::state::BASE)); when it returns, libc
//! switches to `uc_link` internally, unseen, so the next event does that
//! switch first, from the `uc_link` context's saved stack pointer. After a
//! switch the next event takes the slow path ([`STATUS_SWITCHED`]), and
//! every slow-path event brings the trace stack in line with its CFA
//! ([`sync`]): this also repairs a signal handler that ran between a
//! wrapper and its switch, and catches switches nothing announced.
//!
//! **Exact and heuristic.** Exact: switches through `swapcontext` and
//! `setcontext` and returns through `uc_link`, between stacks that
//! `makecontext` registered or that lie far apart, in every tail mode (a
//! tail call to `swapcontext` ends when its context is resumed).
//! Heuristic: stacks nobody registered are told apart by distance only,
//! and a switch nothing announced (a `siglongjmp` between stacks, an
//! assembly switcher such as boost.context's) is seen only when its next
//! event reaches a slow path: an entry above the innermost open frame's
//! CFA is taken for a nested call. Parked frames that never run again (a
//! coroutine abandoned, or left by `setcontext` for good) end as
//! `(switched out)`; so does a context's first function that ends by a
//! tail call into untraced code under `--tail=mark` (its end is not seen,
//! the known limit of marking). Parked frames belong to their thread: a
//! coroutine resumed on another thread starts afresh there. The table
//! holds [`MAX_REGIONS`] stacks (one more evicts another), the parked
//! store (`parked.rs`, by stack) as many frames as the trace stack
//! (another stack's go). A traced switch and back costs about 0.3 µs more
//! than an untraced one (0.35 µs) with 10 coroutines, about 1 µs more
//! with 4000 (on the test machine).
//!
//! **Stack space.** Coroutine stacks are often small (8–64 KiB). A fast
//! path uses 40 bytes below the traced function's stack pointer (the
//! call and four pushes). A slow path saves the XSAVE area — its size
//! comes from CPUID: 2432 bytes on an AVX-512 machine; the AMX tiles,
//! which neither the runtime nor libc touch, are left out, 8 KiB less
//! where they exist — and runs about 0.5 KiB of Rust frames, 4 KiB more
//! when it sets a thread up; a wrapper's bookkeeping takes about 0.5 KiB.
//! So a slow path or a wrapper that finds less than
//! [`FTAIL_SLOW_ROOM`](crate::record::state::FTAIL_SLOW_ROOM) (the area plus
//! 8 KiB) left on a registered coroutine stack moves to the thread's
//! spare stack (64 KiB, mapped on the first switch to such a stack): the
//! coroutine stack then sees only the few words pushed before the move
//! (about 100 bytes more than an untraced run, `tests/stacks.rs`). A
//! stack nobody registered gets no such care: it needs the amounts above
//! free below its deepest point.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use ftail_abi::trace::EventKind;

use crate::record::frames::{pop, push, top};
use crate::record::parked;
use crate::record::state::{
    recording, StackEntry, ThreadState, CONVERTED, MARKED, SPARE_STACK, STATUS_OFF,
    STATUS_RECORDING, STATUS_SWITCHED,
};
use crate::record::write::{rdtsc, KeepErrno};

/// Two CFAs on no registered region further apart than this are on
/// different stacks.
const SAME_STACK: u64 = 256 << 20;

/// Most coroutine stacks known at once; one more evicts another.
const MAX_REGIONS: usize = 8192;

/// The coroutine stacks `makecontext` was given, `[lo, hi)`, with the
/// `uc_link` of the context made on each, sorted by `lo` (and by `hi`
/// downwards: an outer stack before one nested in it). Registration
/// removes partial overlaps, so stacks are disjoint or nested.
///
/// Two copies, read without locks: the one writer (holding `writer`)
/// changes the inactive copy, makes it the active one, then changes the
/// other the same way. Each copy has a sequence number, odd while it
/// changes; a reader that sees its copy change reads the active one
/// again. So a reader never waits for a writer, not even a signal
/// handler that interrupted the writer on its own thread: one copy is
/// always whole.
struct Regions {
    active: AtomicUsize,
    writer: AtomicBool,
    /// Where the next eviction happens when the table is full.
    evict: AtomicUsize,
    copies: [Table; 2],
}

/// One copy of [`Regions`].
struct Table {
    seq: AtomicU64,
    len: AtomicUsize,
    /// Whether some stack lies inside another.
    nested: AtomicBool,
    lo: [AtomicU64; MAX_REGIONS],
    hi: [AtomicU64; MAX_REGIONS],
    link: [AtomicU64; MAX_REGIONS],
}

static REGIONS: Regions = Regions::new();

impl Regions {
    const fn new() -> Regions {
        Regions {
            active: AtomicUsize::new(0),
            writer: AtomicBool::new(false),
            evict: AtomicUsize::new(0),
            copies: [const { Table::new() }; 2],
        }
    }

    /// The innermost stack holding `addr`, as `(lo, hi, link)`, and
    /// whether stacks nest at all.
    fn find(&self, addr: u64) -> (Option<(u64, u64, u64)>, bool) {
        for _ in 0..16 {
            let t = &self.copies[self.active.load(Ordering::Acquire) & 1];
            let s1 = t.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                continue;
            }
            let found = t.search(addr);
            fence(Ordering::Acquire);
            if t.seq.load(Ordering::Relaxed) == s1 {
                return found;
            }
        }
        // The writer kept changing both copies under this reader.
        (None, false)
    }

    /// Records the stack `[lo, hi)` of a context whose successor is
    /// `link`. Stacks it overlaps are gone (their memory is this stack
    /// now), except stacks containing it whole: a coroutine may place
    /// another one's stack in its own frame.
    fn register(&self, lo: u64, hi: u64, link: u64) {
        // Another thread may be registering: wait a little for it. A
        // signal handler that interrupted this very thread while it
        // registers would wait for good, so after a while this stack is
        // left unknown (the distance heuristic).
        let mut tries = 0;
        while self
            .writer
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            tries += 1;
            if tries > 2000 {
                return;
            }
            if tries % 100 == 0 {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            std::hint::spin_loop();
        }
        let victim = self.evict.fetch_add(1, Ordering::Relaxed);
        let a = self.active.load(Ordering::Relaxed) & 1;
        self.copies[1 - a].insert(lo, hi, link, victim);
        self.active.store(1 - a, Ordering::Release);
        self.copies[a].insert(lo, hi, link, victim);
        self.writer.store(false, Ordering::Release);
    }
}

impl Table {
    const fn new() -> Table {
        Table {
            seq: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            nested: AtomicBool::new(false),
            lo: [const { AtomicU64::new(0) }; MAX_REGIONS],
            hi: [const { AtomicU64::new(0) }; MAX_REGIONS],
            link: [const { AtomicU64::new(0) }; MAX_REGIONS],
        }
    }

    fn get(&self, i: usize) -> (u64, u64, u64) {
        (
            self.lo[i].load(Ordering::Relaxed),
            self.hi[i].load(Ordering::Relaxed),
            self.link[i].load(Ordering::Relaxed),
        )
    }

    fn set(&self, i: usize, (lo, hi, link): (u64, u64, u64)) {
        self.lo[i].store(lo, Ordering::Relaxed);
        self.hi[i].store(hi, Ordering::Relaxed);
        self.link[i].store(link, Ordering::Relaxed);
    }

    /// [`Regions::find`] in this copy: a binary search for the last stack
    /// starting at or below `addr`, then, when stacks nest, a walk back
    /// to the innermost one containing it.
    fn search(&self, addr: u64) -> (Option<(u64, u64, u64)>, bool) {
        let n = self.len.load(Ordering::Relaxed).min(MAX_REGIONS);
        let mut a = self.lower_bound(addr.saturating_add(1), n);
        let nested = self.nested.load(Ordering::Relaxed);
        while a > 0 {
            a -= 1;
            let r = self.get(a);
            if addr < r.1 {
                return (Some(r), nested);
            }
            if !nested {
                break;
            }
        }
        (None, nested)
    }

    /// The first stack starting at or above `addr`, among the first `n`.
    fn lower_bound(&self, addr: u64, n: usize) -> usize {
        let (mut a, mut b) = (0, n);
        while a < b {
            let m = (a + b) / 2;
            if self.lo[m].load(Ordering::Relaxed) < addr {
                a = m + 1;
            } else {
                b = m;
            }
        }
        a
    }

    /// Removes the stacks at `[from, to)`, of `n`.
    fn remove(&self, from: usize, to: usize, n: usize) {
        for i in to..n {
            self.set(from + i - to, self.get(i));
        }
    }

    /// [`Regions::register`] in this copy, inside its sequence number;
    /// `victim` picks the stack evicted when the table is full.
    /// Logarithmic while no stack nests in another (and constant for a
    /// stack made again, as pools do), apart from moving the stacks above
    /// the new one.
    fn insert(&self, lo: u64, hi: u64, link: u64, victim: usize) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.change(lo, hi, link, victim);
        self.seq.store(s + 2, Ordering::Release);
    }

    fn change(&self, lo: u64, hi: u64, link: u64, victim: usize) {
        let mut n = self.len.load(Ordering::Relaxed);
        let mut nested = self.nested.load(Ordering::Relaxed);
        let p = self.lower_bound(lo, n);
        let contains = |r: (u64, u64, u64)| r.0 <= lo && hi <= r.1 && (r.0, r.1) != (lo, hi);
        if !nested {
            if p < n && self.get(p).0 == lo && self.get(p).1 == hi {
                // The same stack again: only its successor may differ.
                self.link[p].store(link, Ordering::Relaxed);
                return;
            }
            // Disjoint stacks: only the one below `p` and those starting
            // inside [lo, hi) can overlap it.
            let mut from = p;
            if p > 0 {
                let below = self.get(p - 1);
                if below.1 > lo && !contains(below) {
                    from = p - 1;
                }
            }
            let mut to = p;
            while to < n && self.lo[to].load(Ordering::Relaxed) < hi {
                to += 1;
            }
            if from == p && to > p && contains(self.get(p)) {
                from = p + 1;
            }
            if to > from {
                self.remove(from, to, n);
                n -= to - from;
            }
        } else {
            let mut kept = 0;
            for i in 0..n {
                let r = self.get(i);
                if !(r.0 < hi && lo < r.1) || contains(r) {
                    self.set(kept, r);
                    kept += 1;
                }
            }
            n = kept;
        }
        if n == MAX_REGIONS {
            // Full: one goes, round the table.
            let at = victim % n;
            self.remove(at, at + 1, n);
            n -= 1;
        }
        // After the stacks starting below it, and after those starting
        // with it that contain it.
        let mut at = self.lower_bound(lo, n);
        while at < n
            && self.lo[at].load(Ordering::Relaxed) == lo
            && self.hi[at].load(Ordering::Relaxed) > hi
        {
            at += 1;
        }
        for i in (at..n).rev() {
            self.set(i + 1, self.get(i));
        }
        self.set(at, (lo, hi, link));
        n += 1;
        let hi_at = |i: usize| self.hi[i].load(Ordering::Relaxed);
        let lo_at = |i: usize| self.lo[i].load(Ordering::Relaxed);
        nested = if nested {
            (1..n).any(|i| hi_at(i - 1) > lo_at(i))
        } else {
            (at > 0 && hi_at(at - 1) > lo) || (at + 1 < n && hi > lo_at(at + 1))
        };
        self.nested.store(nested, Ordering::Relaxed);
        self.len.store(n, Ordering::Relaxed);
    }
}

/// The stack a CFA (or stack slot) lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StackId {
    /// The innermost registered coroutine stack containing it.
    Region(u64, u64),
    /// No registered stack.
    Other,
}

/// The stack holding the frame whose CFA is `cfa`: its last word, the
/// return address, is at `cfa - 8` (a function whose CFA is the bottom
/// of a coroutine stack placed in its caller's frame is not on it).
fn stack_of(cfa: u64) -> StackId {
    region_of(cfa).map_or(StackId::Other, |(lo, hi, _)| StackId::Region(lo, hi))
}

/// The innermost registered region holding the frame whose CFA is `cfa`.
fn region_of(cfa: u64) -> Option<(u64, u64, u64)> {
    REGIONS.find(cfa.wrapping_sub(8)).0
}

/// A place on a stack: a CFA (or a stack pointer, taken as the CFA of
/// what returns there) and the stack it is on, computed once.
#[derive(Clone, Copy)]
struct Place {
    addr: u64,
    id: StackId,
    /// Whether registered stacks nested when `id` was found.
    nested: bool,
}

impl Place {
    fn of(cfa: u64) -> Place {
        let (r, nested) = REGIONS.find(cfa.wrapping_sub(8));
        Place {
            addr: cfa,
            id: r.map_or(StackId::Other, |(lo, hi, _)| StackId::Region(lo, hi)),
            nested,
        }
    }

    /// Whether the frame whose CFA is `cfa` is on the same stack.
    fn holds(&self, cfa: u64) -> bool {
        match self.id {
            StackId::Other if self.addr.abs_diff(cfa) >= SAME_STACK => false,
            StackId::Region(lo, hi) if cfa <= lo || cfa > hi => false,
            // Inside the region, and no region nests in another.
            StackId::Region(..) if !self.nested => true,
            _ => stack_of(cfa) == self.id,
        }
    }
}

impl StackId {
    /// The key of the stack's parked frames.
    fn key(self) -> parked::Key {
        match self {
            StackId::Region(lo, hi) => (lo, hi),
            StackId::Other => (0, 0),
        }
    }
}

/// Whether the frames whose CFAs are `a` and `b` are on the same stack.
pub fn same_stack(a: u64, b: u64) -> bool {
    Place::of(a).holds(b)
}

/// How [`sync`] judges the frames of the event's own stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A function is entering at the CFA: frames below it are gone, and so
    /// is one at exactly the CFA unless a tail site marked it or a convert
    /// thunk runs its tail call (the entering function is its tail
    /// callee).
    Entering,
    /// A function is running, or leaving, at the CFA: frames below it are
    /// gone.
    Exiting,
    /// Execution goes on with the stack pointer at this address after a
    /// context switch (a context saved by `swapcontext` returns from it
    /// there): frames below are gone, and so is one at exactly it — it
    /// returned — unless its tail call runs through a convert thunk, which
    /// reports its end when the callee returns. A marked one ends with its
    /// tail callee (`swapcontext`, returning now).
    Switch,
}

/// Brings the trace stack in line with execution at `cfa` (see the
/// module docs); returns whether the stack there has no frames at all,
/// open or parked (a fresh stack: what runs there nests where it is).
pub(crate) fn sync(st: &mut ThreadState, cfa: u64, now: u64, rule: Rule) -> bool {
    let ended = std::mem::take(&mut st.ended_base);
    let link = if ended != 0 {
        region_of(ended).map_or(0, |r| r.2)
    } else {
        0
    };
    if link != 0 {
        // The first function of a context ended, and libc switched to its
        // uc_link: execution went on where that context's stack pointer
        // is (it was saved by the switch away from it, or made fresh).
        // SAFETY: makecontext's contract: uc_link is a valid context for
        // as long as the context made with it runs.
        let to = unsafe {
            (*(link as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize]
        };
        align(st, to as u64, now, Rule::Switch);
    }
    align(st, cfa, now, rule)
}

/// [`sync`] without the pending `uc_link` switch.
fn align(st: &mut ThreadState, cfa: u64, now: u64, rule: Rule) -> bool {
    let here = Place::of(cfa);
    running_on(st, here.id);
    let mut found = top(st).is_some_and(|t| here.holds(t.cfa));
    if !found && st.depth > 0 {
        // Execution is on another stack than the innermost open frame:
        // frames of other stacks above this stack's innermost one were
        // switched out.
        // SAFETY: depth <= stack_cap entries of the stack mapping.
        let entries =
            unsafe { std::slice::from_raw_parts(st.stack as *const StackEntry, st.depth as usize) };
        if let Some(k) = entries.iter().rposition(|e| here.holds(e.cfa)) {
            found = true;
            if st.busy == 0 {
                park_above(st, k as u64 + 1, now);
            }
        }
    }
    close_gone(st, here, now, rule);
    if top(st).is_some_and(|t| here.holds(t.cfa)) || st.busy != 0 || st.parked_len == 0 {
        return !found;
    }
    let resumed = resume(st, here, now);
    close_gone(st, here, now, rule);
    !found && resumed == 0
}

/// Closes the innermost frames that are on the stack at `here` and gone
/// by `rule`.
fn close_gone(st: &mut ThreadState, here: Place, now: u64, rule: Rule) {
    while let Some(t) = top(st) {
        if !here.holds(t.cfa) {
            break;
        }
        let gone = t.cfa < here.addr
            || t.cfa == here.addr
                && match rule {
                    Rule::Entering => t.word & (MARKED | CONVERTED) == 0,
                    Rule::Exiting => false,
                    Rule::Switch => t.word & CONVERTED == 0,
                };
        if !gone {
            break;
        }
        let kind = if t.word & MARKED != 0 {
            EventKind::TailExit
        } else {
            EventKind::Unwound
        };
        pop(st, kind, now);
    }
}

/// Parks the open frames from index `from` up: their running slices end
/// (`Suspended`) and they wait in the store until their stack runs again.
fn park_above(st: &mut ThreadState, from: u64, now: u64) {
    st.busy = 1;
    let stack = st.stack as *const StackEntry;
    // SAFETY: indices below depth lie in the stack mapping.
    let entry = move |i: u64| unsafe { *stack.add(i as usize) };
    let mut i = from;
    while i < st.depth {
        // A run of frames on one stack, outermost first: what was parked
        // of that stack at or below its outermost frame is gone, and the
        // run goes after what stays. (Without a store they are closed all
        // the same, and later events of their stack find nothing open.)
        let at = Place::of(entry(i).cfa);
        let mut j = i + 1;
        while j < st.depth && at.holds(entry(j).cfa) {
            j += 1;
        }
        let outermost = entry(i).cfa;
        parked::take(st, at.id.key(), |_, p| {
            at.holds(p.cfa) && p.cfa <= outermost
        });
        parked::park(st, at.id.key(), (i..j).map(entry));
        i = j;
    }
    while st.depth > from {
        pop(st, EventKind::Suspended, now);
    }
    st.busy = 0;
}

/// Reopens the parked frames of the stack at `here` that are alive (at or
/// above it), outermost first; drops the others. Returns how many.
fn resume(st: &mut ThreadState, here: Place, now: u64) -> u64 {
    st.busy = 1;
    let (mut resumed, mut last) = (0, u64::MAX);
    parked::take(st, here.id.key(), |st, e| {
        if !here.holds(e.cfa) {
            // Another stack on no region.
            return false;
        }
        if e.cfa >= here.addr && e.cfa <= last {
            push(st, e.cfa, e.word, EventKind::Resumed, now);
            last = e.cfa;
            resumed += 1;
        }
        true
    });
    st.busy = 0;
    resumed
}

/// Notes the coroutine stack the thread runs on, for the trampolines:
/// their slow paths move to the thread's spare stack (mapped here, the
/// first time) when little room is left on it.
fn running_on(st: &mut ThreadState, id: StackId) {
    st.coro_lo = match id {
        StackId::Region(lo, _) => lo,
        StackId::Other => 0,
    };
    if st.coro_lo != 0 && st.spare == 0 {
        map_spare(st);
    }
}

/// The guard page below a spare stack.
const GUARD: u64 = 4096;

/// Maps the thread's spare stack, [`SPARE_STACK`] bytes above a guard
/// page; leaves `spare` 0 when it cannot (the slow paths then stay where
/// they are).
fn map_spare(st: &mut ThreadState) {
    let bytes = (SPARE_STACK + GUARD) as usize;
    // SAFETY: an anonymous private mapping, no aliasing; its lowest page
    // becomes inaccessible, so an overflow faults instead of writing
    // whatever lies below.
    let p = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            libc::mprotect(p, GUARD as usize, libc::PROT_NONE);
        }
        p
    };
    if p != libc::MAP_FAILED {
        st.spare = p as u64 + GUARD + SPARE_STACK;
    }
}

/// Unmaps the thread's parked store and spare stack (thread exit, never
/// inside a slow path).
pub fn release(st: &mut ThreadState) {
    if st.spare != 0 {
        let base = st.spare - SPARE_STACK - GUARD;
        // SAFETY: the mapping map_spare made for this thread; no slow
        // path runs on it now.
        unsafe { libc::munmap(base as *mut libc::c_void, (SPARE_STACK + GUARD) as usize) };
    }
    st.spare = 0;
    st.coro_lo = 0;
    parked::release(st);
}

/// libc's `swapcontext`, `setcontext` and `makecontext`, found once.
static REAL: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
const SWAP: usize = 0;
const SET: usize = 1;
const MAKE: usize = 2;

/// The real function `which`, from the next object in the lookup order.
fn real(which: usize) -> usize {
    let f = REAL[which].load(Ordering::Relaxed);
    if f != 0 {
        return f;
    }
    let name = [c"swapcontext", c"setcontext", c"makecontext"][which];
    let f = crate::next_symbol(name) as usize;
    let f = match (f, which) {
        (0, MAKE) => make_unavailable as *const () as usize,
        (0, _) => switch_unavailable as *const () as usize,
        _ => f,
    };
    REAL[which].store(f, Ordering::Relaxed);
    f
}

extern "C" fn switch_unavailable() -> i32 {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

extern "C" fn make_unavailable() {}

/// Finds libc's functions at start-up, before any signal handler could
/// need them (`dlsym` is not async-signal-safe).
pub fn init() {
    for which in [SWAP, SET, MAKE] {
        real(which);
    }
}

/// Called by the `swapcontext` wrapper (`tramp.rs`) with the caller's
/// stack pointer after the call (`sp`) and the context switched to;
/// returns libc's `swapcontext`.
pub(crate) extern "C" fn before_swapcontext(sp: u64, ucp: *const libc::ucontext_t) -> usize {
    let mut args = (sp, ucp, false);
    with_room(sp, &mut args);
    real(SWAP)
}

/// The same for `setcontext`.
pub(crate) extern "C" fn before_setcontext(sp: u64, ucp: *const libc::ucontext_t) -> usize {
    let mut args = (sp, ucp, true);
    with_room(sp, &mut args);
    real(SET)
}

type SwitchArgs = (u64, *const libc::ucontext_t, bool);

extern "C" fn switch_with(args: *mut SwitchArgs) {
    // SAFETY: `args` points at the caller's tuple, alive across the call.
    let (sp, ucp, setting) = unsafe { *args };
    switch_to(sp, ucp, setting);
}

/// Runs the bookkeeping of a switch whose caller's stack pointer is `sp`;
/// on the thread's spare stack when `sp` is on a coroutine stack with
/// little room left, as the trampolines' slow paths do
/// (`FTAIL_SAVE_EXTENDED`).
fn with_room(sp: u64, args: &mut SwitchArgs) {
    let st = crate::record::state::current();
    // SAFETY: the calling thread's own state.
    let (spare, lo, busy) = unsafe { ((*st).spare, (*st).coro_lo, (*st).spare_busy) };
    let room = crate::record::state::FTAIL_SLOW_ROOM.load(Ordering::Relaxed);
    if spare == 0 || busy != 0 || sp.wrapping_sub(lo) >= room {
        switch_with(args);
        return;
    }
    // SAFETY: the spare stack is this thread's and free (busy == 0); it is
    // taken for the call and given back after it (a signal handler's slow
    // path in between leaves it alone). The call switches rsp to its
    // 16-byte aligned top, calls a plain extern "C" function there and
    // comes back with rsp restored from r12 (callee-saved, so the callee
    // keeps it); clobber_abi covers the registers the call may change.
    unsafe {
        (*st).spare_busy = sp;
        std::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {f}",
            "mov rsp, r12",
            top = in(reg) spare,
            f = sym switch_with,
            in("rdi") args as *mut SwitchArgs,
            out("r12") _,
            clobber_abi("C"),
        );
        (*st).spare_busy = 0;
    }
}

/// Called by the `makecontext` wrapper: records the context's stack;
/// returns libc's `makecontext`.
pub(crate) extern "C" fn before_makecontext(ucp: *const libc::ucontext_t) -> usize {
    let _errno = KeepErrno::save();
    if !ucp.is_null() {
        // SAFETY: makecontext's contract: ucp is a context with uc_stack
        // set.
        let (lo, size, link) = unsafe {
            let uc = &*ucp;
            (
                uc.uc_stack.ss_sp as u64,
                uc.uc_stack.ss_size as u64,
                uc.uc_link as u64,
            )
        };
        if lo != 0 && size != 0 {
            let hi = lo.saturating_add(size);
            REGIONS.register(lo, hi, link);
            // The stack starts afresh: what this thread parked on it is
            // gone.
            // SAFETY: the calling thread's own state.
            let st = unsafe { &mut *crate::record::state::current() };
            if st.busy == 0 && st.parked_len > 0 {
                parked::take(st, (lo, hi), |_, _| true);
                parked::take(st, (0, 0), |_, p| lo < p.cfa && p.cfa <= hi);
            }
        }
    }
    real(MAKE)
}

/// The bookkeeping of a switch from the caller of `swapcontext` or
/// `setcontext` (`setting`), whose stack pointer after the call is `sp`,
/// to the context `ucp`: first as for an entry at `sp`, then as for
/// execution going on at the context's stack pointer. The next event
/// takes the slow path, which also catches a signal handler that ran
/// between this and the switch itself.
fn switch_to(sp: u64, ucp: *const libc::ucontext_t, setting: bool) {
    let _errno = KeepErrno::save();
    // SAFETY: the calling thread's own state.
    let st = unsafe { &mut *crate::record::state::current() };
    if ucp.is_null() {
        return;
    }
    // SAFETY: the contract of swapcontext/setcontext: ucp is a valid
    // context.
    let to = unsafe { (*ucp).uc_mcontext.gregs[libc::REG_RSP as usize] } as u64;
    // Even before the thread's first event (its set-up may happen on the
    // coroutine's stack); not for a thread that records nothing (nothing
    // would unmap its spare stack).
    if st.status != STATUS_OFF {
        running_on(st, stack_of(to));
    }
    if !recording(st.status) {
        return;
    }
    st.status = STATUS_RECORDING;
    st.fresh_base = 0;
    let now = rdtsc();
    sync(st, sp, now, Rule::Entering);
    if setting {
        // setcontext does not return: the functions that tail-called it
        // end here.
        while top(st).is_some_and(|t| t.cfa == sp && t.word & (MARKED | CONVERTED) != 0) {
            pop(st, EventKind::TailExit, now);
        }
    }
    let fresh = align(st, to, now, Rule::Switch);
    if fresh && matches!(stack_of(to), StackId::Region(..)) {
        // A context made by makecontext starts its function with the
        // stack pointer at `to`: its CFA is one word above.
        st.fresh_base = to + 8;
    }
    st.status = STATUS_SWITCHED;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The active copy's stacks, after checking the other copy agrees.
    fn all(r: &Regions) -> Vec<(u64, u64)> {
        let copy = |t: &Table| -> Vec<(u64, u64, u64)> {
            (0..t.len.load(Ordering::Relaxed))
                .map(|i| t.get(i))
                .collect()
        };
        let a = r.active.load(Ordering::Relaxed);
        assert_eq!(copy(&r.copies[a]), copy(&r.copies[1 - a]));
        copy(&r.copies[a])
            .iter()
            .map(|&(lo, hi, _)| (lo, hi))
            .collect()
    }

    fn nested(r: &Regions) -> bool {
        r.find(0).1
    }

    #[test]
    fn coroutine_stacks_are_found_innermost_first() {
        let r = Box::new(Regions::new());
        r.register(0x3000, 0x4000, 1);
        r.register(0x1000, 0x2000, 2);
        r.register(0x5000, 0x6000, 3);
        let three = [(0x1000, 0x2000), (0x3000, 0x4000), (0x5000, 0x6000)];
        assert_eq!(all(&r), three);
        assert_eq!(r.find(0x1fff).0, Some((0x1000, 0x2000, 2)));
        assert_eq!(r.find(0x2000).0, None);
        assert_eq!(r.find(0x3000).0, Some((0x3000, 0x4000, 1)));
        // The same stack made again: only its link changes.
        r.register(0x3000, 0x4000, 9);
        assert_eq!(r.find(0x3800).0, Some((0x3000, 0x4000, 9)));
        assert!(!nested(&r));
        // A stack inside another (a coroutine's stack in a coroutine's
        // frame) nests; the outer one stays.
        r.register(0x3400, 0x3800, 4);
        assert!(nested(&r));
        assert_eq!(r.find(0x3500).0, Some((0x3400, 0x3800, 4)));
        assert_eq!(r.find(0x3900).0, Some((0x3000, 0x4000, 9)));
        assert_eq!(r.find(0x3100).0, Some((0x3000, 0x4000, 9)));
        // A stack overlapping others partly replaces them (the one nested
        // in a replaced one but clear of the new one stays).
        r.register(0x1800, 0x3200, 5);
        let now = [(0x1800, 0x3200), (0x3400, 0x3800), (0x5000, 0x6000)];
        assert_eq!(all(&r), now);
        assert!(!nested(&r));
        r.register(0x5800, 0x7000, 6);
        r.register(0x1000, 0x1900, 7);
        let now = [(0x1000, 0x1900), (0x3400, 0x3800), (0x5800, 0x7000)];
        assert_eq!(all(&r), now);
    }

    #[test]
    fn a_full_table_evicts_one_stack_for_the_next() {
        let r = Box::new(Regions::new());
        let n = MAX_REGIONS as u64 + 3;
        for i in 0..n {
            // Downwards, as mmap places them.
            let lo = (1 << 40) - (i + 1) * 0x10000;
            r.register(lo, lo + 0x8000, i);
        }
        let a = all(&r);
        assert_eq!(a.len(), MAX_REGIONS);
        assert!(a.windows(2).all(|w| w[0].1 <= w[1].0), "sorted, disjoint");
        let last = (1 << 40) - n * 0x10000;
        assert_eq!(r.find(last + 8).0, Some((last, last + 0x8000, n - 1)));
    }
}
