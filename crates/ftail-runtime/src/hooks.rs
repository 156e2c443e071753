//! The slow paths of the trampolines, in Rust: first event of a thread,
//! and every case where the trace stack does not match the current stack
//! (tail-call chains, frames left by longjmp or exceptions).
//!
//! Resynchronisation compares CFAs: stacks grow down, so an open entry
//! whose CFA is below the current one belongs to a frame that is gone.
//! It is closed as `TailExit` when a tail site marked it, as `Unwound`
//! otherwise, at the time it is detected. Entries on another stack (a
//! signal handler on `sigaltstack`, a coroutine) are never dropped: an
//! entry is considered on the same stack only within [`SAME_STACK`] bytes.

use ftail_abi::trace::{EventKind, ADDR_MASK, KIND_SHIFT};

use crate::state::{
    StackEntry, ThreadState, CONVERTED, FTAIL_MAX_DEPTH, MARKED, STATUS_NEW, STATUS_OFF,
    STATUS_RECORDING,
};

/// Two CFAs further apart than this are on different stacks.
const SAME_STACK: u64 = 256 << 20;

fn same_stack(a: u64, b: u64) -> bool {
    a.abs_diff(b) < SAME_STACK
}

/// Keeps the program's errno across a slow path: the system calls made
/// there (setting a thread up, mapping more buffer) may fail and set it.
struct KeepErrno(i32);

impl KeepErrno {
    fn save() -> KeepErrno {
        // SAFETY: errno is this thread's.
        KeepErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects and is available on every
    // x86-64 processor.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Slow path of `ftail_entry`.
///
/// # Safety
///
/// `st` is the calling thread's state; called only from the trampoline.
pub unsafe extern "C" fn ftail_slow_entry(st: *mut ThreadState, cfa: u64, addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state; no other thread
    // touches it.
    let st = unsafe { &mut *st };
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    close_gone_frames(st, cfa, now, true);
    push(st, cfa, addr, now);
}

/// Slow path of `ftail_exit`.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
pub unsafe extern "C" fn ftail_slow_exit(st: *mut ThreadState, cfa: u64, addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    close_gone_frames(st, cfa, now, false);
    let Some(open) = top(st) else { return };
    if open.cfa != cfa {
        // The exiting function's entry was never recorded (it was entered
        // before tracing started, or the trace stack was full).
        return;
    }
    pop(st, EventKind::Exit, addr, now);
    pop_tail_callers(st, cfa, now);
}

/// Slow path of `ftail_convert_enter`: sets the thread up.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
pub unsafe extern "C" fn ftail_slow_setup(st: *mut ThreadState, _cfa: u64, _addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    ready(unsafe { &mut *st });
}

/// Slow path of `ftail_convert_leave`: the tail-calling function's entry is
/// not on top of the trace stack.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
pub unsafe extern "C" fn ftail_slow_tail_return(st: *mut ThreadState, cfa: u64, _addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    close_gone_frames(st, cfa, now, false);
    if top(st).is_some_and(|t| t.cfa == cfa) {
        pop(st, EventKind::TailExit, 0, now);
        pop_tail_callers(st, cfa, now);
    }
}

/// Pops the entries that handed their frame at `cfa` to the function that
/// just ended (tail callers marked by a tail site): they end with it.
fn pop_tail_callers(st: &mut ThreadState, cfa: u64, now: u64) {
    while let Some(t) = top(st) {
        if t.cfa != cfa || t.word & MARKED == 0 {
            break;
        }
        pop(st, EventKind::TailExit, 0, now);
    }
}

/// Sets the thread up on its first event; false when it records nothing.
fn ready(st: &mut ThreadState) -> bool {
    if st.status == STATUS_NEW {
        st.status = STATUS_OFF;
        if crate::buffer::setup_thread(st) {
            st.status = STATUS_RECORDING;
        }
    }
    st.status == STATUS_RECORDING
}

fn top(st: &ThreadState) -> Option<StackEntry> {
    if st.depth == 0 {
        return None;
    }
    // SAFETY: depth <= stack_cap and the stack mapping holds stack_cap
    // entries (buffer::setup_thread).
    Some(unsafe { *(st.stack as *const StackEntry).add(st.depth as usize - 1) })
}

/// Closes open entries whose frames are gone: below `cfa` on this stack,
/// and, when a function is entering, an unmarked entry at exactly `cfa`
/// (the same call site ran again after a longjmp or exception).
///
/// An entry marked by a tail site at exactly `cfa` stays open on entry:
/// the function entering is taken to be its tail callee (when the callee
/// was untraced and a later call from the same depth enters instead, this
/// is the known imprecision of `mark`; see DESIGN.md).
fn close_gone_frames(st: &mut ThreadState, cfa: u64, now: u64, entering: bool) {
    while let Some(t) = top(st) {
        let marked = t.word & MARKED != 0;
        let below = t.cfa < cfa && same_stack(t.cfa, cfa);
        let replaced = entering && t.cfa == cfa && t.word & (MARKED | CONVERTED) == 0;
        if !(below || replaced) {
            break;
        }
        let kind = if marked {
            EventKind::TailExit
        } else {
            EventKind::Unwound
        };
        pop(st, kind, 0, now);
    }
}

fn push(st: &mut ThreadState, cfa: u64, addr: u64, now: u64) {
    let depth = st.depth;
    if depth >= st.stack_cap {
        count_lost(st);
        return;
    }
    // SAFETY: depth < stack_cap entries of the stack mapping.
    unsafe {
        *(st.stack as *mut StackEntry).add(depth as usize) = StackEntry {
            cfa,
            word: addr & ADDR_MASK,
        };
    }
    st.depth = depth + 1;
    if depth < FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed) {
        write_event(st, EventKind::Entry, addr, now);
    }
}

fn pop(st: &mut ThreadState, kind: EventKind, addr: u64, now: u64) {
    st.depth -= 1;
    if st.depth < FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed) {
        write_event(st, kind, addr, now);
    }
}

/// An entry's reserved slot lies past the mapped-ahead part of the buffer:
/// its frame is on the trace stack, its event not yet written.
///
/// # Safety
///
/// As for [`ftail_slow_entry`]; `slot` is the slot the trampoline reserved.
pub unsafe extern "C" fn ftail_slow_full_entry(
    st: *mut ThreadState,
    _cfa: u64,
    addr: u64,
    slot: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    on_full(unsafe { &mut *st }, EventKind::Entry, addr, slot);
}

/// An exit's reserved slot lies past the mapped-ahead part of the buffer:
/// its frame is already popped, its event not yet written.
///
/// # Safety
///
/// As for [`ftail_slow_full_entry`].
pub unsafe extern "C" fn ftail_slow_full_exit(
    st: *mut ThreadState,
    _cfa: u64,
    addr: u64,
    slot: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    on_full(unsafe { &mut *st }, EventKind::Exit, addr, slot);
}

/// The same for the tail exit a convert thunk writes.
///
/// # Safety
///
/// As for [`ftail_slow_full_entry`].
pub unsafe extern "C" fn ftail_slow_full_tail(
    st: *mut ThreadState,
    _cfa: u64,
    _addr: u64,
    slot: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    on_full(unsafe { &mut *st }, EventKind::TailExit, 0, slot);
}

/// Maps more of the buffer and writes the event into its slot; when the
/// buffer is full, closes what is open instead.
fn on_full(st: &mut ThreadState, kind: EventKind, addr: u64, slot: u64) {
    while slot + 16 > st.end && crate::buffer::extend(st) {}
    if slot + 16 <= st.end {
        store(slot, kind, addr, rdtsc());
    } else {
        close_on_full(st, kind == EventKind::Entry);
    }
}

/// The first time a thread's buffer is full: counts the event that did not
/// fit, and writes a `Truncated` exit for every frame whose entry is in
/// the file into the reserve kept at the end of the buffer, so the file
/// stays balanced. Later events are only counted as lost.
fn close_on_full(st: &mut ThreadState, entry_lost: bool) {
    count_lost(st);
    if st.reserve_end == 0 {
        return;
    }
    let max = FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed);
    let open = if entry_lost {
        st.depth.saturating_sub(1)
    } else {
        st.depth + 1
    };
    crate::buffer::set_stopped(st, ftail_abi::trace::STOPPED_BUFFER_FULL);
    let (cursor, end) = (st.cursor, st.end);
    st.cursor = st.end;
    // On a full filesystem only the reserve's pages that can still be had
    // are written; the reader closes what did not fit.
    let want = open.min(max) * 16;
    st.end = end + crate::buffer::writable_room(end, want.min(st.reserve_end - end));
    st.reserve_end = 0;
    let now = rdtsc();
    for _ in 0..open.min(max) {
        write_event(st, EventKind::Truncated, 0, now);
    }
    st.cursor = cursor.max(end + 16);
    st.end = end;
}

/// Appends one event, reserving its slot first (see `tramp.rs`).
pub(crate) fn write_event(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    let slot = st.cursor;
    st.cursor += 16;
    while slot + 16 > st.end && crate::buffer::extend(st) {}
    if slot + 16 > st.end {
        if st.reserve_end != 0 {
            close_on_full(st, kind == EventKind::Entry);
        } else {
            count_lost(st);
        }
        return;
    }
    store(slot, kind, addr, tsc);
}

/// Writes one event into a slot below `end`.
fn store(slot: u64, kind: EventKind, addr: u64, tsc: u64) {
    let word = ((kind as u64) << KIND_SHIFT) | (addr & ADDR_MASK);
    // SAFETY: [slot, slot + 16) lies in this thread's event mapping (the
    // callers check it against `end`); the time is stored last so a reader
    // never sees a half-written event as valid.
    unsafe {
        std::ptr::write_volatile((slot + 8) as *mut u64, word);
        std::ptr::write_volatile(slot as *mut u64, tsc.max(1));
    }
}

fn count_lost(st: &mut ThreadState) {
    if st.lost != 0 {
        // SAFETY: `lost` points at the event file header's counter, mapped
        // for the thread's lifetime.
        unsafe { *(st.lost as *mut u64) += 1 };
    }
}

/// Closes every open entry of the calling thread as `Unwound` (process
/// exit: `main` and whatever called `exit` never return).
pub fn close_all_open() {
    let st = crate::state::current();
    // SAFETY: the current thread's own state.
    let st = unsafe { &mut *st };
    if st.status != STATUS_RECORDING {
        return;
    }
    let now = rdtsc();
    while st.depth > 0 {
        pop(st, EventKind::Unwound, 0, now);
    }
}
