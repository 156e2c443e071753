//! `vfork`: the child borrows its parent's memory and thread pointer
//! until it calls `execve` or `_exit`, so whatever it records would land
//! in the parent thread's state — its event buffer, trace stack and the
//! side stack of library calls — and the parent would find them changed
//! when it goes on.
//!
//! The runtime's `vfork` (interposing libc's) saves the calling thread's
//! status and the top of its side stack before the system call and sets
//! the status to "off": the child records nothing, its library calls go
//! straight to the library, and an `exec` in it closes no frames. The
//! child does leave through the library thunk of the `vfork` call itself
//! (which pops the side stack, records nothing), so once the child is done
//! the parent puts back the side stack's top and its status, and the
//! thunk then closes the `vfork` call in the parent, with its duration.
//! An `exec`ed child starts a trace of its own (`children.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::record::state::{SideEntry, ThreadState, STATUS_OFF, STATUS_RECORDING, STATUS_SWITCHED};

/// What a thread inside `vfork` put aside.
struct Saved {
    /// The thread's state (0: the slot is free).
    owner: AtomicU64,
    status: AtomicU64,
    side_depth: AtomicU64,
    /// The top side entry's four words.
    top: [AtomicU64; 4],
}

/// Threads inside `vfork` at once; past them, a child records as before.
const SLOTS: usize = 256;

static SAVED: [Saved; SLOTS] = [const {
    Saved {
        owner: AtomicU64::new(0),
        status: AtomicU64::new(0),
        side_depth: AtomicU64::new(0),
        top: [const { AtomicU64::new(0) }; 4],
    }
}; SLOTS];

/// The top side entry of `st`, if it has one.
fn top(st: &ThreadState) -> Option<*mut [u64; 4]> {
    (st.side_depth > 0 && st.side_depth <= st.side_cap).then(|| {
        (st.side as *mut SideEntry).wrapping_add(st.side_depth as usize - 1) as *mut [u64; 4]
    })
}

/// Before the system call: puts the thread's status and side-stack top
/// aside, and stops it recording (the child runs with it).
extern "C" fn before() {
    let st = crate::record::state::current();
    let me = st as u64;
    let Some(s) = SAVED.iter().find(|s| {
        s.owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) else {
        return;
    };
    // SAFETY: the calling thread's own state.
    let st = unsafe { &mut *st };
    s.status.store(st.status, Ordering::Relaxed);
    s.side_depth.store(st.side_depth, Ordering::Relaxed);
    if let Some(top) = top(st) {
        // SAFETY: an entry below side_depth <= side_cap of the side mapping.
        let words = unsafe { std::ptr::read_volatile(top) };
        for (w, v) in s.top.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
    }
    st.status = STATUS_OFF;
}

/// In the parent, once the child is done: puts back what [`before`] put
/// aside.
extern "C" fn after() {
    let st = crate::record::state::current();
    let me = st as u64;
    let Some(s) = SAVED.iter().find(|s| s.owner.load(Ordering::Acquire) == me) else {
        return;
    };
    // SAFETY: the calling thread's own state.
    let st = unsafe { &mut *st };
    st.side_depth = s.side_depth.load(Ordering::Relaxed);
    if let Some(top) = top(st) {
        let words = s.top.each_ref().map(|w| w.load(Ordering::Relaxed));
        // SAFETY: as in `before`: the same entry, put back.
        unsafe { std::ptr::write_volatile(top, words) };
    }
    // A recording thread goes on through its slow path once: a session
    // begun while it was "off" (`ftail ctl on`) passed it by.
    st.status = match s.status.load(Ordering::Relaxed) {
        STATUS_RECORDING => STATUS_SWITCHED,
        other => other,
    };
    s.owner.store(0, Ordering::Release);
}

/// Sets errno from a failed system call's result and puts the thread's
/// state back; returns -1.
extern "C" fn failed(result: i64) -> i64 {
    after();
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = (-result) as i32 };
    -1
}

/// `vfork()`, as glibc makes it (the return address kept in `rdi`, which
/// the child cannot clobber as it can the shared stack; with a shadow
/// stack in use, the child leaves without popping it, as glibc's does),
/// with the thread's recording state put aside around it (see the
/// module's text). rsp is 16-byte aligned for the calls: 8 at entry, then
/// one word.
macro_rules! vfork_wrapper {
    ($name:ident) => {
        /// The program's `vfork`, with the child kept out of the parent
        /// thread's trace.
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name() -> libc::pid_t {
            std::arch::naked_asm!(
                "sub $8, %rsp",
                "call {before}",
                "add $8, %rsp",
                "pop %rdi",
                "mov ${nr}, %eax",
                "syscall",
                "push %rdi",
                "cmp $-4095, %rax",
                "jae 2f",
                "test %eax, %eax",
                "jz 3f",
                "push %rax",
                "call {after}",
                "pop %rax",
                "ret",
                "2:",
                "push %rax",
                "mov %rax, %rdi",
                "call {failed}",
                "pop %rdi",
                "ret",
                "3:",
                "xor %esi, %esi",
                "rdsspq %rsi",
                "test %rsi, %rsi",
                "jz 4f",
                "pop %rdi",
                "jmp *%rdi",
                "4:",
                "ret",
                nr = const libc::SYS_vfork,
                before = sym before,
                after = sym after,
                failed = sym failed,
                options(att_syntax)
            )
        }
    };
}

vfork_wrapper!(vfork);
vfork_wrapper!(__vfork);
