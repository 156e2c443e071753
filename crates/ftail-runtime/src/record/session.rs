//! Tracing switched off and on again (`ftail record -p` detaching and
//! attaching again, `ftail ctl off` and `on`): a thread's trace stack
//! must not carry frames across the gap. While tracing is off no event is
//! seen, so the frames open at `off` may have returned, and a frame of the
//! same function at the same CFA later would take their place: the first
//! exit of the next session would close an entry of the previous one.
//!
//! Each `on` begins a new session ([`begin`]): it bumps [`SESSION`] and
//! sends every registered thread to its slow path (status
//! [`STATUS_SWITCHED`], as a stack switch does). There, [`catch_up`]
//! closes the frames the thread kept from an earlier session as
//! `Truncated` at the time tracing was switched off (the reader says the
//! tracer detached), and starts the new session with an empty trace
//! stack: frames open at the attach then close as "began before tracing",
//! as on a first attach. The side stack of in-flight library calls is
//! left alone: its thunks still need their return addresses.
//!
//! The registry holds every recording thread's state from its set-up to
//! its end ([`register`], [`unregister`]); its lock keeps a thread's state
//! alive while [`begin`] writes its status (a thread ends only after
//! taking itself out).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ftail_abi::trace::{EventFileHeader, EventKind, STOPPED_DETACHED};

use crate::process::sync::RawLock;
use crate::record::state::{ThreadState, STATUS_RECORDING, STATUS_SWITCHED};

/// The current session: bumped by every `on`.
static SESSION: AtomicU64 = AtomicU64::new(0);
/// When tracing was last switched off (0: never).
static OFF_AT: AtomicU64 = AtomicU64::new(0);
/// Whether tracing is off after having been on.
static OFF: AtomicBool = AtomicBool::new(false);
/// Threads reached at [`begin`]. One set up while this many record is
/// not registered: it is caught up only when a stack switch sends it to
/// its slow path, and otherwise keeps its frames across the gap.
const MAX_THREADS: usize = 4096;
static THREADS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static LOCK: RawLock = RawLock::new();

/// The registry's lock, for the fork handlers.
pub fn lock() -> &'static RawLock {
    &LOCK
}

/// Adds the calling thread (just set up) to the registry, in the current
/// session.
pub fn register(st: &mut ThreadState) {
    st.session = SESSION.load(Ordering::Acquire);
    let me = st as *const ThreadState as u64;
    for slot in &THREADS {
        if slot
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// In a forked child: forgets the parent's threads, whose files are not
/// the child's to mark (the child's thread registers again when it sets
/// itself up).
pub fn forget_all() {
    for slot in &THREADS {
        slot.store(0, Ordering::Relaxed);
    }
}

/// Takes the calling thread out of the registry (it ends).
pub fn unregister(st: &ThreadState) {
    let me = st as *const ThreadState as u64;
    LOCK.lock();
    for slot in &THREADS {
        let _ = slot.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
    LOCK.unlock();
}

/// Tracing is switched off now (`tsc`): every registered thread's event
/// file says so ([`STOPPED_DETACHED`]), so that a reader closes the
/// frames open at its end as left by the detach.
pub fn end(tsc: u64) {
    OFF_AT.store(tsc, Ordering::Release);
    OFF.store(true, Ordering::Release);
    each_thread(|st| {
        let _ = word(st, std::mem::offset_of!(ThreadState, file_base)).map(|base| {
            let stopped = word_at(base, std::mem::offset_of!(EventFileHeader, stopped));
            stopped.compare_exchange(0, STOPPED_DETACHED, Ordering::AcqRel, Ordering::Relaxed)
        });
    });
}

/// Whether tracing was switched off (and not on again since).
pub fn is_off() -> bool {
    OFF.load(Ordering::Acquire)
}

/// Tracing is switched on: a new session begins, and every registered
/// thread takes its slow path at its next event; their files are no
/// longer stopped by the detach.
pub fn begin() {
    SESSION.fetch_add(1, Ordering::AcqRel);
    OFF.store(false, Ordering::Release);
    each_thread(|st| {
        // Only a recording status is changed: one the thread changes
        // meanwhile stays as it set it.
        let status = word_at(st, std::mem::offset_of!(ThreadState, status));
        let _ = status.compare_exchange(
            STATUS_RECORDING,
            STATUS_SWITCHED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        let _ = word(st, std::mem::offset_of!(ThreadState, file_base)).map(|base| {
            let stopped = word_at(base, std::mem::offset_of!(EventFileHeader, stopped));
            stopped.compare_exchange(STOPPED_DETACHED, 0, Ordering::AcqRel, Ordering::Relaxed)
        });
    });
}

/// Runs `f` on the address of every registered thread's state, with the
/// registry locked: none of them ends meanwhile.
fn each_thread(mut f: impl FnMut(u64)) {
    LOCK.lock();
    for slot in &THREADS {
        let st = slot.load(Ordering::Acquire);
        if st != 0 {
            f(st);
        }
    }
    LOCK.unlock();
}

/// The 8-byte word at `offset` in a registered thread's state or event
/// file header (at `base`).
fn word_at(base: u64, offset: usize) -> &'static AtomicU64 {
    // SAFETY: `base` is a registered thread's state, or the start of its
    // event file's mapping, both alive until the thread takes itself out
    // of the registry, which waits for the lock its caller holds; every
    // field used is an 8-byte aligned word.
    unsafe { AtomicU64::from_ptr((base + offset as u64) as *mut u64) }
}

/// The nonzero word at `offset` in a registered thread's state.
fn word(st: u64, offset: usize) -> Option<u64> {
    Some(word_at(st, offset).load(Ordering::Acquire)).filter(|&w| w != 0)
}

/// In a slow path: when the thread's frames belong to an earlier session,
/// closes them at the time tracing was switched off and joins the current
/// one with an empty trace stack.
pub(crate) fn catch_up(st: &mut ThreadState) {
    let now = SESSION.load(Ordering::Acquire);
    if st.session == now {
        return;
    }
    st.session = now;
    let off = match OFF_AT.load(Ordering::Acquire) {
        0 => crate::record::write::rdtsc(),
        t => t,
    };
    while st.depth > 0 {
        crate::record::frames::pop(st, EventKind::Truncated, off);
    }
    crate::record::triggers::thread_start(st);
    crate::record::buffer::note_rejoined(st);
}

/// Closes every open frame of the calling thread as `Unwound` (its end,
/// the process's, an `exec`), those kept from an earlier session first
/// ([`catch_up`]). While tracing is off nothing is written: the frames
/// may have returned unseen, and the reader closes those open at the end
/// of a detached file.
pub fn close_all_open() {
    let st = crate::record::state::current();
    // SAFETY: the current thread's own state.
    let st = unsafe { &mut *st };
    if !crate::record::state::recording(st.status) || is_off() {
        return;
    }
    catch_up(st);
    crate::record::frames::close_all_open();
}
