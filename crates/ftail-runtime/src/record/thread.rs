//! A thread's recording from its first event to its end: [`setup`] gives
//! it an event file (`buffer`), registers a ring for snapshots and, in a
//! forked child, writes the frames it inherited open; [`release`] closes
//! what is open and gives everything back. The end is noticed with a
//! pthread key destructor: glibc runs it after the thread's start routine
//! returned (or `pthread_exit`), while the thread's TLS is still valid.

use std::sync::atomic::{AtomicU32, Ordering};

use ftail_abi::trace::EventKind;

use crate::record::state::{StackEntry, ThreadState};
use crate::record::{buffer, session, snapshot, stacks, write};

/// Sets the calling thread up on its first event; false when it records
/// nothing (no event file could be made).
pub fn setup(st: &mut ThreadState) -> bool {
    if !buffer::setup_thread(st) {
        return false;
    }
    if st.ring != 0 {
        snapshot::register(st);
    }
    crate::record::triggers::thread_start(st);
    session::register(st);
    replay_open_frames(st);
    watch();
    crate::process::status::thread_recorded();
    true
}

/// The thread ends (or the process exits or execs): its open frames are
/// closed, its event file cut after its last event and unmapped with its
/// stacks (thousands of short-lived threads must not pile up mappings).
/// Later events of the thread (from other libraries' TLS destructors) are
/// not recorded.
pub fn release(st: &mut ThreadState) {
    session::close_all_open();
    st.status = crate::record::state::STATUS_OFF;
    session::unregister(st);
    if st.ring != 0 {
        snapshot::unregister(st);
    }
    buffer::release(st);
    stacks::release(st);
}

/// The key, plus one (0: not created).
static KEY: AtomicU32 = AtomicU32::new(0);

/// Creates the key; called once at start-up.
pub fn init() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: creating a key with a plain extern "C" destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) } == 0 {
        KEY.store(key + 1, Ordering::Relaxed);
    }
}

/// Arms the destructor for the calling thread (any non-null value does).
pub fn watch() {
    let k = KEY.load(Ordering::Relaxed);
    if k != 0 {
        // SAFETY: setting this thread's value of a valid key; for the
        // first keys glibc stores it in the thread descriptor, allocating
        // nothing.
        unsafe { libc::pthread_setspecific(k - 1, std::ptr::dangling::<libc::c_void>()) };
    }
}

extern "C" fn on_exit(_: *mut libc::c_void) {
    let st = crate::record::state::current();
    // SAFETY: the exiting thread's own state.
    let st = unsafe { &mut *st };
    if crate::record::state::recording(st.status) {
        release(st);
    }
}

/// In a forked child the trace stack holds the parent's open frames: write
/// them again as entries, so the child's file is balanced on its own.
fn replay_open_frames(st: &mut ThreadState) {
    // SAFETY: rdtsc has no memory effects.
    let now = unsafe { core::arch::x86_64::_rdtsc() };
    for i in 0..st.depth {
        // SAFETY: i < depth <= stack_cap entries of the stack mapping.
        let e = unsafe { *(st.stack as *const StackEntry).add(i as usize) };
        if crate::record::state::written(i, e.word, st.max_depth) {
            write::write_event(st, EventKind::Entry, e.word, now);
        }
    }
}
