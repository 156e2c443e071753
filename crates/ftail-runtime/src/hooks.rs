//! The slow paths of the trampolines, in Rust: first event of a thread,
//! every case where the trace stack does not match the current stack
//! (tail-call chains, frames left by longjmp or exceptions, stack
//! switches), and the convert thunks' side stack when it holds entries of
//! several stacks.
//!
//! Before an event is recorded, `stacks::sync` brings the trace stack in
//! line with the event's CFA: frames on other stacks the thread switched
//! away from are parked, frames of this stack that are gone are closed,
//! and parked frames of this stack are reopened (see `stacks.rs`).

use ftail_abi::trace::{compact, EventKind, ADDR_MASK, KIND_SHIFT};

use crate::stacks::{self, Rule};
use crate::state::{
    SideEntry, StackEntry, ThreadState, BASE, FTAIL_MAX_DEPTH, MARKED, SIDE_DEAD, STATUS_NEW,
    STATUS_OFF, STATUS_RECORDING, STATUS_SWITCHED, TIME_POISON,
};

/// Keeps the program's errno across a slow path: the system calls made
/// there (setting a thread up, mapping more buffer) may fail and set it.
pub(crate) struct KeepErrno(i32);

impl KeepErrno {
    pub(crate) fn save() -> KeepErrno {
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

pub(crate) fn rdtsc() -> u64 {
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
    let base = std::mem::take(&mut st.fresh_base);
    stacks::sync(st, cfa, now, Rule::Entering);
    let word = (addr & ADDR_MASK) | if cfa == base { BASE } else { 0 };
    push(st, cfa, word, EventKind::Entry, now);
}

/// Slow path of `ftail_exit`.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
/// `area` is the saved SSE state and rax is at `cfa - 24`: the return
/// value, when the function's is recorded (`args.rs`).
pub unsafe extern "C" fn ftail_slow_exit(
    st: *mut ThreadState,
    cfa: u64,
    _addr: u64,
    _rcx: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    // SAFETY: FTAIL_SLOW's frame and area.
    unsafe { crate::args::capture_ret(st, cfa - 24, area) };
    slow_exit(st, cfa);
    st.ret_state = 0;
}

fn slow_exit(st: &mut ThreadState, cfa: u64) {
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    st.fresh_base = 0;
    stacks::sync(st, cfa, now, Rule::Exiting);
    let Some(open) = top(st) else { return };
    if open.cfa != cfa {
        // The exiting function's entry was never recorded (it was entered
        // before tracing started, or the trace stack was full).
        return;
    }
    pop(st, EventKind::Exit, now);
    pop_tail_callers(st, cfa, now);
}

/// Slow path of `ftail_convert_enter` when the thread is not recording
/// plainly: sets it up, or brings the trace stack in line after a stack
/// switch (the tail-calling function, at `cfa`, is still running).
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
pub unsafe extern "C" fn ftail_slow_setup(st: *mut ThreadState, cfa: u64, _addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    if ready(st) {
        st.fresh_base = 0;
        stacks::sync(st, cfa, rdtsc(), Rule::Exiting);
    }
}

/// Slow path of `ftail_tail_mark` when the thread is not plainly
/// recording: sets it up, or after a stack switch brings the trace stack
/// in line; then marks the tail-calling function's entry.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
pub unsafe extern "C" fn ftail_slow_tail_mark(st: *mut ThreadState, cfa: u64, _addr: u64) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    if !ready(st) {
        return;
    }
    st.fresh_base = 0;
    stacks::sync(st, cfa, rdtsc(), Rule::Exiting);
    if top(st).is_some_and(|t| t.cfa == cfa) {
        // SAFETY: depth > 0 entries of the stack mapping.
        unsafe { (*(st.stack as *mut StackEntry).add(st.depth as usize - 1)).word |= MARKED };
    }
}

/// Slow path of `ftail_convert_leave`: the tail-calling function's entry is
/// not on top of the trace stack.
///
/// # Safety
///
/// As for [`ftail_slow_entry`].
/// In the compact format `area` is the saved SSE state and rax is at
/// `cfa - 16` (the return value, see `args.rs`).
pub unsafe extern "C" fn ftail_slow_tail_return(
    st: *mut ThreadState,
    cfa: u64,
    _addr: u64,
    _rcx: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    // SAFETY: the frame and area of ftail_convert_leave_c (only compact
    // threads capture).
    unsafe { crate::args::capture_ret(st, cfa - 16, area) };
    slow_tail_return(st, cfa);
    st.ret_state = 0;
}

fn slow_tail_return(st: &mut ThreadState, cfa: u64) {
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    st.fresh_base = 0;
    stacks::sync(st, cfa, now, Rule::Exiting);
    if top(st).is_some_and(|t| t.cfa == cfa) {
        pop(st, EventKind::TailExit, now);
        pop_tail_callers(st, cfa, now);
    }
}

/// Slow path of `ftail_convert_enter`: the side stack's top entry is at a
/// slot below the tail caller's `slot`. Entries of this stack below
/// `slot` were left behind (a longjmp past a thunk) and are freed; entries
/// of other stacks (coroutines switched out inside a converted tail call)
/// stay where they are: their thunks' rbx points at them. Writes the new
/// entry — into the lowest free one, so that a stack switching back and
/// forth does not grow the side stack — and stores its address in
/// `out[0]`, or 0 when the side stack is full (the thunk then takes the
/// original jump).
///
/// # Safety
///
/// `st` is the calling thread's state, `slot` the tail caller's return
/// address slot, `rbx` the caller's rbx, `out` two writable words; called
/// only from the trampoline.
pub unsafe extern "C" fn ftail_slow_side_enter(
    st: *mut ThreadState,
    slot: u64,
    rbx: u64,
    out: *mut [u64; 2],
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state and a frame slot.
    let (st, out) = unsafe { (&mut *st, &mut *out) };
    out[0] = 0;
    free_left_behind(st, slot);
    let side = st.side as *mut SideEntry;
    let depth = st.side_depth as usize;
    // SAFETY: i < side_depth <= side_cap entries of the side mapping.
    let hole = (0..depth).find(|&i| unsafe { (*side.add(i)).slot } & SIDE_DEAD != 0);
    let at = match hole {
        Some(i) => i,
        None if st.side_depth < st.side_cap => depth,
        None => return,
    };
    // SAFETY: at < side_cap.
    let e = unsafe { side.add(at) };
    // A thunk on the slot of a tail callee of another thunk (whose entry
    // rbx still points at) forms a chain with it (see FTAIL_SIDE_ENTRY).
    let base = match side_index(st, rbx) {
        // SAFETY: a live index.
        Some(i) if unsafe { (*side.add(i)).slot } == slot => unsafe { (*side.add(i)).base },
        _ => e as u64,
    };
    let entry = SideEntry {
        // SAFETY: `slot` holds the tail caller's return address.
        ret: unsafe { *(slot as *const u64) },
        slot,
        rbx,
        base,
    };
    // Written, taken, written again: a signal handler's thunk that runs
    // in between may take the same entry, but it is done with it before
    // the handler returns (as in FTAIL_SIDE_ENTRY).
    let write = |e: *mut SideEntry, v: SideEntry| {
        // SAFETY: `e` lies in the side mapping.
        unsafe { std::ptr::write_volatile(e, v) };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    };
    if at == depth {
        write(e, entry);
        st.side_depth += 1;
    } else {
        write(
            e,
            SideEntry {
                slot: slot | SIDE_DEAD,
                ..entry
            },
        );
        // SAFETY: as above; one aligned store takes the entry.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*e).slot), slot) };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
    write(e, entry);
    out[0] = e as u64;
}

/// Slow path of `ftail_convert_leave`: the thunk's entry (rbx points at
/// it: the callee kept rbx) is not on top of the side stack, because
/// entries of other stacks lie above it, or entries this thunk's callee
/// left behind. Stores the return address and the caller's rbx in `out`
/// (0, 0 when the entry is lost: the thunk cannot return) and frees the
/// entry and those left behind.
///
/// # Safety
///
/// As for [`ftail_slow_side_enter`]; `slot` is the thunk's return slot.
pub unsafe extern "C" fn ftail_slow_side_leave(
    st: *mut ThreadState,
    slot: u64,
    rbx: u64,
    out: *mut [u64; 2],
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let (st, out) = unsafe { (&mut *st, &mut *out) };
    *out = [0, 0];
    let side = st.side as *mut SideEntry;
    // SAFETY: indices below side_depth lie in the side mapping.
    let slot_of = |i: usize| unsafe { (*side.add(i)).slot };
    // The entry rbx points at; else, as a last resort, the innermost live
    // one for this slot.
    let found = side_index(st, rbx)
        .filter(|&i| slot_of(i) & !SIDE_DEAD == slot)
        .or_else(|| {
            (0..st.side_depth as usize)
                .rev()
                .find(|&i| slot_of(i) == slot)
        });
    let Some(i) = found else { return };
    // SAFETY: i < side_depth.
    let e = unsafe { *side.add(i) };
    *out = [e.ret, e.rbx];
    // SAFETY: as above.
    unsafe { (*side.add(i)).slot |= SIDE_DEAD };
    free_left_behind(st, slot);
}

/// The index of the side-stack entry at address `p`, if it is one below
/// the side stack's depth.
fn side_index(st: &ThreadState, p: u64) -> Option<usize> {
    let size = std::mem::size_of::<SideEntry>() as u64;
    let off = p.wrapping_sub(st.side);
    (p >= st.side && off.is_multiple_of(size) && off / size < st.side_depth)
        .then_some((off / size) as usize)
}

/// Frees the live side-stack entries of this stack at slots below `slot`
/// (frames gone: a longjmp or an exception left their thunks), then trims
/// free entries off the top.
fn free_left_behind(st: &mut ThreadState, slot: u64) {
    let side = st.side as *mut SideEntry;
    for i in 0..st.side_depth as usize {
        // SAFETY: i < side_depth entries of the side mapping.
        let e = unsafe { &mut *side.add(i) };
        if e.slot & SIDE_DEAD == 0 && e.slot < slot && stacks::same_stack(e.slot + 8, slot + 8) {
            e.slot |= SIDE_DEAD;
        }
    }
    while st.side_depth > 0 {
        // SAFETY: side_depth - 1 < side_cap.
        let top = unsafe { (*side.add(st.side_depth as usize - 1)).slot };
        if top & SIDE_DEAD == 0 {
            break;
        }
        st.side_depth -= 1;
    }
}

/// Pops the entries that handed their frame at `cfa` to the function that
/// just ended (tail callers marked by a tail site): they end with it.
pub(crate) fn pop_tail_callers(st: &mut ThreadState, cfa: u64, now: u64) {
    while let Some(t) = top(st) {
        if t.cfa != cfa || t.word & MARKED == 0 {
            break;
        }
        pop(st, EventKind::TailExit, now);
    }
}

/// Sets the thread up on its first event; false when it records nothing.
/// After a stack switch ([`STATUS_SWITCHED`]) the thread records plainly
/// again: the caller brings the trace stack in line (`stacks::sync`).
pub(crate) fn ready(st: &mut ThreadState) -> bool {
    if st.status == STATUS_NEW {
        st.status = STATUS_OFF;
        if setup(st) {
            st.status = STATUS_RECORDING;
        }
    }
    if st.status == STATUS_SWITCHED {
        st.status = STATUS_RECORDING;
    }
    st.status == STATUS_RECORDING
}

/// Sets a thread up, in a frame of its own: it builds a path on the
/// stack, and every slow path calls `ready`, which must stay small (the
/// program may run on a coroutine's small stack).
#[cold]
#[inline(never)]
fn setup(st: &mut ThreadState) -> bool {
    crate::buffer::setup_thread(st)
}

/// The innermost open frame.
pub(crate) fn top(st: &ThreadState) -> Option<StackEntry> {
    if st.depth == 0 {
        return None;
    }
    // SAFETY: depth <= stack_cap and the stack mapping holds stack_cap
    // entries (buffer::setup_thread).
    Some(unsafe { *(st.stack as *const StackEntry).add(st.depth as usize - 1) })
}

/// Opens a frame: an entry, or a suspended frame resumed.
pub(crate) fn push(st: &mut ThreadState, cfa: u64, word: u64, kind: EventKind, now: u64) {
    let depth = st.depth;
    if depth >= st.stack_cap {
        count_lost(st);
        return;
    }
    use std::sync::atomic::{compiler_fence, Ordering::SeqCst};
    // Written, reserved, written again (as in ftail_entry): a signal
    // handler whose events run between the first write and the increment
    // takes the same entry, but is done with it when it returns, and the
    // entry is whole again after the second write (its two words written
    // once each could mix the handler's CFA with this word).
    let entry = StackEntry { cfa, word };
    // SAFETY: depth < stack_cap entries of the stack mapping; `depth` is
    // this thread's.
    unsafe {
        let e = (st.stack as *mut StackEntry).add(depth as usize);
        std::ptr::write_volatile(e, entry);
        compiler_fence(SeqCst);
        std::ptr::write_volatile(std::ptr::addr_of_mut!(st.depth), depth + 1);
        compiler_fence(SeqCst);
        std::ptr::write_volatile(e, entry);
    }
    if depth < FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed) {
        write_event(st, kind, word, now);
    }
}

/// Closes the innermost open frame. When it is the first function of a
/// `makecontext` context and it returned (not switched out, not left by a
/// longjmp), the thread is about to go on at the context's `uc_link`,
/// unseen: the next event takes the slow path, which switches to it
/// (`stacks::sync`).
///
/// The event carries the frame's entry address.
pub(crate) fn pop(st: &mut ThreadState, kind: EventKind, now: u64) {
    let returned = matches!(kind, EventKind::Exit | EventKind::TailExit);
    let Some(t) = top(st) else { return };
    if t.word & BASE != 0 && returned {
        st.ended_base = t.cfa;
        st.status = STATUS_SWITCHED;
    }
    st.depth -= 1;
    if st.depth < FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed) {
        if returned && t.word & crate::state::RETVAL != 0 {
            crate::args::write_ret(st, t.word);
        }
        write_event(st, kind, t.word & ADDR_MASK, now);
    }
}

/// The entry address of the frame a trampoline just popped (it is still
/// in the trace stack's slot above the top).
fn popped(st: &ThreadState) -> u64 {
    if st.depth >= st.stack_cap {
        return 0;
    }
    // SAFETY: depth < stack_cap entries of the stack mapping.
    unsafe { (*(st.stack as *const StackEntry).add(st.depth as usize)).word & ADDR_MASK }
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
    _addr: u64,
    slot: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    on_full(st, EventKind::Exit, popped(st), slot);
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
    let st = unsafe { &mut *st };
    on_full(st, EventKind::TailExit, popped(st), slot);
}

/// Maps more of the buffer and writes the event into its slot; when the
/// buffer is full, closes what is open instead.
fn on_full(st: &mut ThreadState, kind: EventKind, addr: u64, slot: u64) {
    if st.ring != 0 {
        // A ring never fills: its first slot again.
        store(crate::buffer::ring_slot(st), kind, addr, rdtsc());
        return;
    }
    if st.compact != 0 {
        give_up_slot(st, kind, slot);
        if slot + compact_size(kind) <= st.end {
            write_event(st, kind, addr, rdtsc());
        }
        return;
    }
    while slot + 16 > st.end && crate::buffer::extend(st) {}
    if slot + 16 <= st.end {
        store(slot, kind, addr, rdtsc());
    } else {
        close_on_full(st, kind == EventKind::Entry);
    }
}

/// Bytes of the compact record the trampolines reserve for `kind`.
fn compact_size(kind: EventKind) -> u64 {
    if kind == EventKind::Entry {
        compact::ENTRY_SIZE
    } else {
        compact::CLOSE_SIZE
    }
}

/// A compact trampoline reserved `slot` for a `kind` record but could not
/// write it there: fills it with padding where the buffer reaches it
/// (mapping more when it can), so the stream has no hole. When the
/// buffer cannot reach it, the buffer is full: closes what is open (the
/// first time) or counts the event as lost.
fn give_up_slot(st: &mut ThreadState, kind: EventKind, slot: u64) {
    let size = compact_size(kind);
    while slot + size > st.end && crate::buffer::extend(st) {}
    if slot + size <= st.end {
        pad(slot, size);
    } else if st.reserve_end != 0 {
        close_on_full(st, kind == EventKind::Entry);
    } else {
        count_lost(st);
    }
}

/// Slow path of the compact trampolines: the event's time does not fit
/// the base (`slot` 0: nothing reserved yet), or a signal handler wrote
/// a time record between the trampoline's reading of the base and its
/// reservation of `slot` (given up: padded). Writes the event as
/// [`write_event`] does.
///
/// # Safety
///
/// As for [`ftail_slow_entry`]; `kind` is an [`EventKind`] byte.
pub unsafe extern "C" fn ftail_slow_compact(
    st: *mut ThreadState,
    _cfa: u64,
    addr: u64,
    slot: u64,
    kind: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    let kind = EventKind::from_u8(kind as u8).unwrap_or(EventKind::Exit);
    if slot != 0 {
        let full = slot + compact_size(kind) > st.end;
        give_up_slot(st, kind, slot);
        if full && slot + compact_size(kind) > st.end {
            return;
        }
    }
    write_event(st, kind, addr, rdtsc());
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
    crate::buffer::set_stopped(st, st.limit_why);
    let (cursor, end) = (st.cursor, st.end);
    st.cursor = st.end;
    // On a full filesystem only the reserve's pages that can still be had
    // are written; the reader closes what did not fit.
    let want = open.min(max) * 16;
    st.end = end + crate::buffer::closing_room(st, end, want.min(st.reserve_end - end));
    st.reserve_end = 0;
    let now = rdtsc();
    // The frames still open, innermost first: below the top when the
    // entry was lost, from the one just popped when an exit was.
    for i in (0..open.min(max)).rev() {
        let addr = if i < st.stack_cap {
            // SAFETY: i < stack_cap entries of the stack mapping.
            unsafe { (*(st.stack as *const StackEntry).add(i as usize)).word & ADDR_MASK }
        } else {
            0
        };
        write_event(st, EventKind::Truncated, addr, now);
    }
    st.cursor = cursor.max(end + 16);
    st.end = end;
}

/// Appends one event, reserving its slot first (see `tramp.rs`).
pub(crate) fn write_event(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    if st.compact != 0 {
        write_compact(st, kind, addr, tsc);
        return;
    }
    // One instruction reserves the slot, as the trampolines' xadd does: a
    // signal handler's event cannot take it too.
    // SAFETY: `cursor` is this thread's, aligned, and only ever accessed
    // by it (and its signal handlers, which run to completion on it).
    let cursor = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.cursor) };
    let mut slot = cursor.fetch_add(16, std::sync::atomic::Ordering::Relaxed);
    if slot + 16 > st.end && st.ring != 0 {
        slot = crate::buffer::ring_slot(st);
    }
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

/// Reserves `size` bytes of the buffer, mapping more as needed: the
/// slot, or `None` when the buffer is full (what is open is then closed,
/// the first time, else the event counted as lost).
pub(crate) fn reserve(st: &mut ThreadState, size: u64, kind: EventKind) -> Option<u64> {
    // SAFETY: as in write_event.
    let cursor = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.cursor) };
    let slot = cursor.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
    while slot + size > st.end && crate::buffer::extend(st) {}
    if slot + size > st.end {
        if st.reserve_end != 0 {
            close_on_full(st, kind == EventKind::Entry);
        } else {
            count_lost(st);
        }
        return None;
    }
    Some(slot)
}

/// The thread's compact base, read or changed with single instructions
/// (a signal handler may change it between any two).
fn base_cell(st: &mut ThreadState) -> &'static std::sync::atomic::AtomicU64 {
    // SAFETY: `base` is this thread's, aligned, and accessed only by it
    // and its signal handlers, which run to completion on it.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.base) }
}

/// Writes one event as a compact record (`ftail_abi::trace::compact`):
/// an entry or close with its time as an offset from the base, after a
/// time record that moves the base when the offset would not fit; an
/// event record with its own time for a resumed frame, or while a time
/// record is being written (the base poisoned: this is a signal
/// handler's event). Exact whatever handlers interleave: a record whose
/// base changed between reading it and reserving the slot gives the slot
/// up (padding) and is written again.
fn write_compact(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(tag) = compact::close_tag(kind).or((kind == EventKind::Entry).then_some(0)) else {
        write_timed(st, kind, addr, tsc);
        return;
    };
    let span = if tag == 0 {
        compact::ENTRY_SPAN
    } else {
        compact::CLOSE_SPAN
    };
    loop {
        let base = base_cell(st).load(Relaxed);
        if base == TIME_POISON {
            write_timed(st, kind, addr, tsc);
            return;
        }
        let offset = tsc.wrapping_sub(base);
        if offset >= span {
            if !write_time(st, tsc, kind) {
                return;
            }
            continue;
        }
        let size = if tag == 0 {
            compact::ENTRY_SIZE
        } else {
            compact::CLOSE_SIZE
        };
        let Some(slot) = reserve(st, size, kind) else {
            return;
        };
        if base_cell(st).load(Relaxed) != base {
            pad(slot, size);
            continue;
        }
        // SAFETY: [slot, slot + size) lies in the mapping, below `end`;
        // one store writes the whole record.
        unsafe {
            if tag == 0 {
                std::ptr::write_volatile(slot as *mut u64, compact::entry(offset, addr));
            } else {
                std::ptr::write_volatile(slot as *mut u32, compact::close(tag, offset));
            }
        }
        return;
    }
}

/// Writes a time record for `tsc` and makes it the base; false when the
/// buffer is full. The base is poisoned while the record is written, and
/// set only if nobody set another base meanwhile (a handler's time record,
/// which then lies after this one in the stream and stays the base).
fn write_time(st: &mut ThreadState, tsc: u64, kind: EventKind) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let old = base_cell(st).swap(TIME_POISON, Relaxed);
    let Some(slot) = reserve(st, compact::TIME_SIZE, kind) else {
        let _ = base_cell(st).compare_exchange(TIME_POISON, old, Relaxed, Relaxed);
        return false;
    };
    // SAFETY: [slot, slot + 12) lies in the mapping; the head is written
    // last, so a reader never sees a time record without its time.
    unsafe {
        std::ptr::write_unaligned((slot + 4) as *mut u64, tsc);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::write_volatile(slot as *mut u32, compact::ext_head(compact::SUB_TIME, 3, 0));
    }
    let _ = base_cell(st).compare_exchange(TIME_POISON, tsc, Relaxed, Relaxed);
    true
}

/// Writes an event record that carries its own time (and, for a kind
/// that opens a frame, its address).
fn write_timed(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    let words: u32 = if kind.opens() { 5 } else { 3 };
    let Some(slot) = reserve(st, u64::from(words) * 4, kind) else {
        return;
    };
    // SAFETY: [slot, slot + 4 * words) lies in the mapping; the head is
    // written last.
    unsafe {
        std::ptr::write_unaligned((slot + 4) as *mut u64, tsc);
        if kind.opens() {
            std::ptr::write_unaligned((slot + 12) as *mut u64, addr & ADDR_MASK);
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::write_volatile(
            slot as *mut u32,
            compact::ext_head(compact::SUB_EVENT, words, kind as u32),
        );
    }
}

/// Fills a reserved slot of `size` bytes with a pad record.
fn pad(slot: u64, size: u64) {
    // SAFETY: the caller's slot lies in the mapping, below `end`.
    unsafe {
        std::ptr::write_volatile(
            slot as *mut u32,
            compact::ext_head(compact::SUB_PAD, (size / 4) as u32, 0),
        )
    };
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
    if !crate::state::recording(st.status) {
        return;
    }
    let now = rdtsc();
    while st.depth > 0 {
        pop(st, EventKind::Unwound, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::trace::compact::{Decoder, Record, CLOSE_SPAN, ENTRY_SPAN};

    /// A thread state writing compact records into `buf` (no file: the
    /// buffer never grows).
    fn state(buf: &mut [u64]) -> Box<ThreadState> {
        // SAFETY: ThreadState is plain u64 fields; all zero is valid.
        let mut st: Box<ThreadState> = Box::new(unsafe { std::mem::zeroed() });
        let start = buf.as_mut_ptr() as u64;
        let end = start + (buf.len() * 8) as u64;
        st.cursor = start;
        st.end = end;
        st.limit = end;
        st.reserve_end = end;
        st.compact = 1;
        st.base = crate::state::NO_BASE;
        st
    }

    fn decode(bytes: &[u8]) -> Vec<(EventKind, u64, u64)> {
        let mut d = Decoder::default();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match d.next(&bytes[at..]) {
                (Record::Event(e), n) => {
                    out.push((e.kind().unwrap(), e.tsc, e.addr()));
                    at += n;
                }
                (Record::Other, n) => at += n,
                (Record::End, _) => return out,
                (r, _) => panic!("{r:?} at {at}"),
            }
        }
    }

    /// Every kind of event, gaps that do and do not fit an offset, a
    /// clock that goes backwards, and events written while a time record
    /// is (a poisoned base) decode to exactly what was written.
    #[test]
    fn compact_records_decode_exactly() {
        let mut buf = vec![0u64; 4096];
        let mut st = state(&mut buf);
        let t0 = 1_000_000_000_000u64;
        let mut want = Vec::new();
        let mut put = |st: &mut ThreadState, kind: EventKind, tsc: u64, addr: u64| {
            write_event(st, kind, addr, tsc);
            let addr = if kind.opens() { addr } else { 0 };
            want.push((kind, tsc, addr));
        };
        put(&mut st, EventKind::Entry, t0, 0x5555_0000_1005);
        put(&mut st, EventKind::Exit, t0 + 100, 0);
        put(
            &mut st,
            EventKind::Entry,
            t0 + ENTRY_SPAN - 1,
            0x7fff_ffff_fff5,
        );
        put(&mut st, EventKind::Entry, t0 + ENTRY_SPAN, 0x1005);
        put(
            &mut st,
            EventKind::TailExit,
            t0 + ENTRY_SPAN + CLOSE_SPAN - 1,
            0,
        );
        put(&mut st, EventKind::Unwound, t0 + ENTRY_SPAN + CLOSE_SPAN, 0);
        put(&mut st, EventKind::Resumed, t0 + 5 * CLOSE_SPAN, 0x2005);
        put(&mut st, EventKind::Suspended, t0 + 5 * CLOSE_SPAN + 7, 0);
        // The counter went backwards (a resynchronised clock).
        put(&mut st, EventKind::Entry, t0 - 5_000, 0x3005);
        put(&mut st, EventKind::Truncated, t0 - 4_000, 0);
        // A signal handler's events while a time record is written.
        let base = st.base;
        st.base = TIME_POISON;
        put(&mut st, EventKind::Entry, t0 + 1, 0x4005);
        put(&mut st, EventKind::Exit, t0 + 2, 0);
        st.base = base;
        put(&mut st, EventKind::Exit, t0 - 3_000, 0);
        let used = (st.cursor - buf.as_ptr() as u64) as usize;
        // SAFETY: viewing the u64 buffer as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 8) };
        assert_eq!(decode(&bytes[..used + 4]), want);
        // Entries 8 bytes, closes 4, time records 12, timed events 12/20.
        assert_eq!(used, 4 * 8 + 6 * 4 + 5 * 12 + 20 + 20 + 12);
    }

    /// A slot a trampoline gave up (the base moved under it) becomes
    /// padding that a reader skips.
    #[test]
    fn given_up_slots_are_padding() {
        let mut buf = vec![0u64; 64];
        let mut st = state(&mut buf);
        write_event(&mut st, EventKind::Entry, 0x1005, 5_000);
        let slot = st.cursor;
        st.cursor += 8;
        give_up_slot(&mut st, EventKind::Entry, slot);
        write_event(&mut st, EventKind::Exit, 0, 5_010);
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), 64 * 8) };
        assert_eq!(
            decode(bytes),
            [
                (EventKind::Entry, 5_000, 0x1005),
                (EventKind::Exit, 5_010, 0)
            ]
        );
    }
}
