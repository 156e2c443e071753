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

use ftail_abi::trace::{EventKind, ADDR_MASK};

use crate::record::frames::{pop, popped, push, top};
use crate::record::stacks::{self, Rule};
use crate::record::state::{
    SideEntry, StackEntry, ThreadState, BASE, MARKED, SIDE_DEAD, STATUS_NEW, STATUS_OFF,
    STATUS_RECORDING, STATUS_SWITCHED,
};
use crate::record::values::capture_ret;
use crate::record::write::{close_on_full, give_up_slot, rdtsc, store, write_event, KeepErrno};

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
/// value, when the function's is recorded (`values`).
pub unsafe extern "C" fn ftail_slow_exit(
    st: *mut ThreadState,
    cfa: u64,
    addr: u64,
    _rcx: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let st = unsafe { &mut *st };
    // SAFETY: FTAIL_SLOW's frame and area.
    unsafe { capture_ret(st, cfa - 24, area) };
    slow_exit(st, cfa, addr);
    st.ret_state = 0;
}

/// `from`: where the exit trampoline returns to, in the exit's stub.
fn slow_exit(st: &mut ThreadState, cfa: u64, from: u64) {
    if !ready(st) {
        return;
    }
    let now = rdtsc();
    st.fresh_base = 0;
    stacks::sync(st, cfa, now, Rule::Exiting);
    let Some(open) = top(st) else {
        // Nothing open: the function was entered before tracing started.
        crate::record::before::exit(st, from, now);
        return;
    };
    if open.cfa != cfa {
        // The exiting function's entry was never recorded (the trace
        // stack was full).
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
/// `cfa - 16` (the return value, see `values`).
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
    unsafe { capture_ret(st, cfa - 16, area) };
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
        crate::record::session::catch_up(st);
    }
    st.status == STATUS_RECORDING
}

/// Sets a thread up, in a frame of its own: it builds a path on the
/// stack, and every slow path calls `ready`, which must stay small (the
/// program may run on a coroutine's small stack).
#[cold]
#[inline(never)]
fn setup(st: &mut ThreadState) -> bool {
    crate::record::thread::setup(st)
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
pub(crate) fn on_full(st: &mut ThreadState, kind: EventKind, addr: u64, slot: u64) {
    if st.ring != 0 {
        // A ring never fills: its first slot again.
        store(crate::record::buffer::ring_slot(st), kind, addr, rdtsc());
        return;
    }
    if st.compact != 0 {
        if give_up_slot(st, kind, slot) {
            write_event(st, kind, addr, rdtsc());
        }
        return;
    }
    while slot + 16 > st.end && crate::record::buffer::extend(st) {}
    if slot + 16 <= st.end {
        store(slot, kind, addr, rdtsc());
    } else {
        close_on_full(st, kind == EventKind::Entry);
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
    compact_slow(unsafe { &mut *st }, addr, slot, kind);
}

/// What [`ftail_slow_compact`] does, for the trampoline that knows the
/// function's address another way (`args::ftail_slow_compact_spec`).
pub(crate) fn compact_slow(st: &mut ThreadState, addr: u64, slot: u64, kind: u64) {
    let kind = EventKind::from_u8(kind as u8).unwrap_or(EventKind::Exit);
    if slot != 0 && !give_up_slot(st, kind, slot) {
        return;
    }
    write_event(st, kind, addr, rdtsc());
}
