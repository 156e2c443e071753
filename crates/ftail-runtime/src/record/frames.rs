//! The trace stack's frames: [`push`] opens a frame and writes its entry,
//! [`pop`] closes one (after the frame's return value, when it is
//! recorded: `values`), [`close_all_open`] closes what is open when a
//! thread or process ends. Used by the slow paths (`hooks`, `args`), the
//! stack bookkeeping (`stacks`) and a thread's end (`thread`).

use ftail_abi::trace::{EventKind, ADDR_MASK};

use crate::record::state::{written, StackEntry, ThreadState, BASE, STATUS_SWITCHED, TRIGGER};
use crate::record::write::{count_lost, rdtsc, write_event};

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
    if depth >= st.stack_cap && !crate::record::buffer::grow_stack(st) {
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
    if written(depth, word, st.max_depth) {
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
    if written(st.depth, t.word, st.max_depth) {
        if returned && t.word & crate::record::state::RETVAL != 0 {
            crate::record::values::write_ret(st, t.word);
        }
        write_event(st, kind, t.word & ADDR_MASK, now);
    }
    if t.word & TRIGGER != 0 && kind != EventKind::Suspended {
        crate::record::triggers::on_exit(st, t, returned, now);
    }
}

/// The entry address of the frame a trampoline just popped (it is still
/// in the trace stack's slot above the top).
pub(crate) fn popped(st: &ThreadState) -> u64 {
    if st.depth >= st.stack_cap {
        return 0;
    }
    // SAFETY: depth < stack_cap entries of the stack mapping.
    unsafe { (*(st.stack as *const StackEntry).add(st.depth as usize)).word & ADDR_MASK }
}

/// Closes every open entry of the calling thread as `Unwound` (process
/// exit: `main` and whatever called `exit` never return).
pub fn close_all_open() {
    let st = crate::record::state::current();
    // SAFETY: the current thread's own state.
    let st = unsafe { &mut *st };
    if !crate::record::state::recording(st.status) {
        return;
    }
    let now = rdtsc();
    while st.depth > 0 {
        pop(st, EventKind::Unwound, now);
    }
}
