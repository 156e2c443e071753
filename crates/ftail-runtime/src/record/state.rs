//! Per-thread state, reached from the trampolines with one `%fs`-relative
//! load.
//!
//! The runtime is preloaded, so its TLS lives in the static TLS block at the
//! same offset from the thread pointer in every thread. `init` computes that
//! offset once ([`TLS_OFFSET`]) and the trampolines add it to `%fs:0`: no
//! `__tls_get_addr` call on the hot path.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// Per-thread recording state. Field offsets are used by `tramp.rs`; the
/// `const` assertions below keep them in step.
#[repr(C)]
pub struct ThreadState {
    /// Address of the next event slot.
    pub cursor: u64,
    /// End of the part of the event area mapped ahead (see `limit`).
    pub end: u64,
    /// Number of open trace-stack entries.
    pub depth: u64,
    /// Base of the trace stack (`StackEntry` array).
    pub stack: u64,
    /// Capacity of the trace stack in entries.
    pub stack_cap: u64,
    /// [`STATUS_NEW`], [`STATUS_RECORDING`] or [`STATUS_OFF`].
    pub status: u64,
    /// Address of the event file's lost-event counter (0 when none).
    pub lost: u64,
    /// End of the buffer proper; `end` advances towards it a chunk at a
    /// time (`buffer::extend`) while the trace's budget allows, and the
    /// reserve follows it.
    pub limit: u64,
    /// Base of the side stack of converted tail calls (`SideEntry` array).
    pub side: u64,
    /// Number of entries on the side stack: the live ones and the dead
    /// ones ([`SIDE_DEAD`]) below the top live one.
    pub side_depth: u64,
    /// Capacity of the side stack in entries.
    pub side_cap: u64,
    /// End of the reserve after `end` that holds the closing events written
    /// when the buffer fills up; 0 once used.
    pub reserve_end: u64,
    /// Base of the store of parked frames (`parked.rs`, mapped on first
    /// use): frames alive on stacks the thread switched away from.
    pub parked: u64,
    /// Number of parked frames.
    pub parked_len: u64,
    /// Capacity of the parked store in frames (0 until mapped).
    pub parked_cap: u64,
    /// CFA the first function of a context made by `makecontext` has, set
    /// by a switch into such a fresh context until the next event; 0 when
    /// none is expected.
    pub fresh_base: u64,
    /// Nonzero while parked frames are being moved: a signal handler's
    /// slow path that interrupts it leaves them alone.
    pub busy: u64,
    /// CFA of the first function of a `makecontext` context that ended
    /// ([`BASE`]): the thread goes on at the context's `uc_link`, which
    /// the next slow path looks up; 0 when none. Written by `tramp.rs`.
    pub ended_base: u64,
    /// Top of the thread's spare stack for slow paths (0: none), mapped
    /// when the thread first runs on a registered coroutine stack.
    pub spare: u64,
    /// Bottom of the registered coroutine stack the thread last ran on
    /// (0: none): a slow path with less than [`FTAIL_SLOW_ROOM`] bytes
    /// left above it runs on the spare stack.
    pub coro_lo: u64,
    /// The frame pointer of the slow path running on the spare stack (0:
    /// the spare stack is free); set and cleared by `tramp.rs`.
    pub spare_busy: u64,
    /// Start of the event file's mapping (0: none). The mapping is the
    /// address space reserved for the file to grow into (`map_len`
    /// bytes); only its first `file_len` bytes are file.
    pub file_base: u64,
    /// Bytes of the event file's mapping.
    pub map_len: u64,
    /// Bytes of the event file, all taken from the trace's budget.
    pub file_len: u64,
    /// The event file's name: thread id, and in bits 32 and up the `~N`
    /// of a thread id that came back.
    pub file_id: u64,
    /// The event file's inode, checked when it is opened again to grow.
    pub file_ino: u64,
    /// Why the thread stops when `end` reaches `limit` (a
    /// `STOPPED_*` value).
    pub limit_why: u64,
    /// Bytes of events of the thread's ring (0: its buffer grows): when
    /// the cursor passes `end` it starts again after the header.
    pub ring: u64,
    /// Nonzero when the thread writes compact records (`FORMAT_COMPACT`).
    pub compact: u64,
    /// The compact stream's base of times: the time of its last time
    /// record ([`TIME_POISON`] while one is being written, [`NO_BASE`]
    /// before the first). Read by the compact trampolines.
    pub base: u64,
    /// The return value a slow path is closing frames with (`args.rs`):
    /// rax, the low half of xmm0, and whether they are set (1) or were
    /// written already for this tail chain (2); 0 otherwise.
    pub ret_rax: u64,
    /// See [`ThreadState::ret_rax`].
    pub ret_xmm0: u64,
    /// See [`ThreadState::ret_rax`].
    pub ret_state: u64,
    /// Trace-stack depth up to which events are written: `-D`, or what
    /// the triggers made of it (`triggers.rs`); deeper functions are
    /// still tracked but not recorded. Read by the trampolines.
    pub max_depth: u64,
    /// The depth the triggers' scopes allow (`depth=N`, `filter`,
    /// `notrace`); [`ThreadState::max_depth`] is this while the thread
    /// records, 0 while `trace_off` or `finish` stopped it.
    pub scope_max: u64,
    /// 0: the thread records; [`TRIG_OFF`]: `trace_off` stopped it;
    /// [`TRIG_FINISHED`]: `finish` did, for good.
    pub trig_off: u64,
    /// Number of open calls whose triggers act at their exit.
    pub trig_len: u64,
    /// Those calls, innermost last.
    pub trig: [TrigSave; MAX_TRIG],
    /// Bytes of the thread's drained ring (0: none, or the thread spilled
    /// and its file grows): `end` is then the end of the chunk being
    /// written (`buffer::next_chunk`).
    pub drain: u64,
    /// The number of the chunk being written in a drained ring.
    pub drain_chunk: u64,
    /// The end of the chunk written before it (0: none), whose last
    /// record a slow path interrupted by the change of chunk may still
    /// have to pad.
    pub drain_prev_end: u64,
    /// The tracing session the trace stack's frames belong to
    /// (`session.rs`).
    pub session: u64,
}

/// [`ThreadState::trig_off`]: stopped by `trace_off`.
pub const TRIG_OFF: u64 = 1;
/// [`ThreadState::trig_off`]: stopped by `finish`.
pub const TRIG_FINISHED: u64 = 2;
/// Most calls with exit actions open at once per thread; deeper ones
/// act only at their entry. Small, because the thread state lives in
/// static TLS, which a runtime loaded late (`ftail record -p`) must fit
/// into glibc's surplus (shared with every other library dlopened).
pub const MAX_TRIG: usize = 4;

/// An open call whose triggers act at its exit (`triggers.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrigSave {
    /// The call's CFA.
    pub cfa: u64,
    /// Its entry address (as in the trace-stack word).
    pub addr: u64,
    /// [`ThreadState::scope_max`] before the call.
    pub scope_before: u64,
    /// Time of its entry.
    pub entry_tsc: u64,
    /// Whether it ends the thread's recording (`finish`).
    pub finish: u64,
    /// Ticks after which its return takes a snapshot (0: none).
    pub snapshot_after: u64,
}

impl TrigSave {
    const EMPTY: TrigSave = TrigSave {
        cfa: 0,
        addr: 0,
        scope_before: 0,
        entry_tsc: 0,
        finish: 0,
        snapshot_after: 0,
    };
}

/// [`ThreadState::base`] while a time record is being written: any
/// offset from it is too large, so an event written meanwhile (a signal
/// handler's) takes the slow path, which gives it its own time.
pub const TIME_POISON: u64 = 1 << 63;

/// [`ThreadState::base`] before the first time record: any counter value
/// below 2^63 is at least 2^62 ticks from it, so the first event writes
/// a time record.
pub const NO_BASE: u64 = 3 << 62;

/// A return address a convert thunk took off the stack, and where it was.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SideEntry {
    /// The tail-calling function's return address.
    pub ret: u64,
    /// The stack slot it was taken from (the function's CFA − 8);
    /// [`SIDE_DEAD`] set once the entry is free.
    pub slot: u64,
    /// The caller's rbx, while rbx points at this entry.
    pub rbx: u64,
    /// The first entry of a chain of thunks on the same slot (this entry
    /// when it starts one); its `ret` and `rbx` are the chain caller's.
    pub base: u64,
}

/// Status: the thread has not recorded yet; the next event sets it up.
pub const STATUS_NEW: u64 = 0;
/// Status: recording.
pub const STATUS_RECORDING: u64 = 1;
/// Status: this thread records nothing (setup failed or runtime disabled).
pub const STATUS_OFF: u64 = 2;
/// Status: recording, but the thread switched stacks (a context switch
/// was seen, or the first function of a context ended): the next event
/// takes the slow path, which brings the trace stack in line first.
pub const STATUS_SWITCHED: u64 = 3;

/// Whether a thread with this status records.
pub fn recording(status: u64) -> bool {
    status == STATUS_RECORDING || status == STATUS_SWITCHED
}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(ThreadState, cursor) == 0);
    assert!(offset_of!(ThreadState, end) == 8);
    assert!(offset_of!(ThreadState, depth) == 16);
    assert!(offset_of!(ThreadState, stack) == 24);
    assert!(offset_of!(ThreadState, stack_cap) == 32);
    assert!(offset_of!(ThreadState, status) == 40);
    assert!(offset_of!(ThreadState, lost) == 48);
    assert!(offset_of!(ThreadState, limit) == 56);
    assert!(offset_of!(ThreadState, side) == 64);
    assert!(offset_of!(ThreadState, side_depth) == 72);
    assert!(offset_of!(ThreadState, side_cap) == 80);
    assert!(offset_of!(ThreadState, reserve_end) == 88);
    assert!(offset_of!(ThreadState, ended_base) == 136);
    assert!(offset_of!(ThreadState, spare) == 144);
    assert!(STATUS_RECORDING == 1 && STATUS_SWITCHED == 3);
    assert!(MARKED == 1 << 63 && CONVERTED == 1 << 62 && BASE == 1 << 61);
    assert!(RETVAL == 1 << 60 && RET_TY_SHIFT == 48);
    assert!(TRIGGER == 1 << 59 && HIDDEN == 1 << 58 && SHOWN == 1 << 57);
    assert!(std::mem::size_of::<SideEntry>() == 32);
    assert!(offset_of!(SideEntry, slot) == 8);
    assert!(offset_of!(SideEntry, rbx) == 16);
    assert!(offset_of!(SideEntry, base) == 24);
};

/// One open function on the trace stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackEntry {
    /// The function's CFA (stack pointer before its call pushed the return
    /// address, plus nothing: the address just above the return address).
    pub cfa: u64,
    /// Entry address (site + 5) in the low 48 bits; [`MARKED`] when the
    /// function has passed a tail site in `mark` mode, [`CONVERTED`] while
    /// its tail call runs through a convert thunk, [`BASE`] for the first
    /// function of a `makecontext` context.
    pub word: u64,
}

/// Bit of [`StackEntry::word`]: the function ended by a tail call.
pub const MARKED: u64 = 1 << 63;
/// Bit of [`StackEntry::word`]: the function's tail call runs through a
/// convert thunk, which will report its exit when the callee returns.
pub const CONVERTED: u64 = 1 << 62;
/// Bit of [`StackEntry::word`]: the first function of a context made by
/// `makecontext`. When it ends the context ends too, and the thread goes
/// on at the context's `uc_link` (through libc's internal `setcontext`,
/// which no wrapper sees) or exits: its exit takes the slow path, or its
/// tail callers' pop notes it, and the next event brings the trace stack
/// in line with the `uc_link` context ([`ThreadState::ended_base`],
/// [`STATUS_SWITCHED`]).
pub const BASE: u64 = 1 << 61;
/// Bit of [`StackEntry::word`]: the function's return value is recorded
/// (`args.rs`), with its type in the byte at [`RET_TY_SHIFT`]: its exits
/// and tail exits take the slow paths.
pub const RETVAL: u64 = 1 << 60;
/// Shift of the recorded return value's type in [`StackEntry::word`].
pub const RET_TY_SHIFT: u32 = 48;
/// Bit of [`StackEntry::word`]: the call's triggers act at its exit
/// (`triggers.rs`): its exits and tail exits take the slow paths.
pub const TRIGGER: u64 = 1 << 59;
/// Bit of [`StackEntry::word`]: the call's entry was not written although
/// its depth is now within the thread's [`ThreadState::max_depth`] (a
/// trigger raised it while the call ran): its close is not written
/// either. Its exits take the slow paths.
pub const HIDDEN: u64 = 1 << 58;
/// Bit of [`StackEntry::word`]: the call's entry was written although its
/// depth is now past the thread's [`ThreadState::max_depth`] (a trigger
/// lowered it while the call ran): its close is written too. Its exits
/// take the slow paths.
pub const SHOWN: u64 = 1 << 57;

/// Whether the close of the frame at trace-stack index `index` with
/// `word` is written, given the thread's `max_depth`: as the trampolines
/// decide (index below the depth), unless a trigger changed the depth
/// while the call ran ([`HIDDEN`], [`SHOWN`]).
pub fn written(index: u64, word: u64, max_depth: u64) -> bool {
    (index < max_depth && word & HIDDEN == 0) || word & SHOWN != 0
}

/// Bit of [`SideEntry::slot`]: the entry is free (its thunk has
/// returned, or it was left behind by a longjmp). Slots are 8-aligned.
pub const SIDE_DEAD: u64 = 1;

thread_local! {
    static STATE: UnsafeCell<ThreadState> = const {
        UnsafeCell::new(ThreadState {
            cursor: 0, end: 0, depth: 0, stack: 0, stack_cap: 0, status: STATUS_NEW,
            lost: 0, limit: 0, side: 0, side_depth: 0, side_cap: 0, reserve_end: 0,
            parked: 0, parked_len: 0, parked_cap: 0, fresh_base: 0, busy: 0, ended_base: 0,
            spare: 0, coro_lo: 0, spare_busy: 0, file_base: 0, map_len: 0, file_len: 0,
            file_id: 0, file_ino: 0, limit_why: 0, ring: 0, compact: 0, base: 0,
            ret_rax: 0, ret_xmm0: 0, ret_state: 0, max_depth: u64::MAX, scope_max: u64::MAX,
            trig_off: 0, trig_len: 0, trig: [TrigSave::EMPTY; MAX_TRIG],
            drain: 0, drain_chunk: 0, drain_prev_end: 0, session: 0,
        })
    };
}

/// Offset of the current thread's [`ThreadState`] from the thread pointer
/// (`%fs:0`); read by the trampolines.
pub static FTAIL_TLS_OFFSET: AtomicI64 = AtomicI64::new(0);

/// Trace-stack depth up to which events are written (`-D`); each thread
/// starts from it ([`ThreadState::max_depth`]).
pub static FTAIL_MAX_DEPTH: AtomicU64 = AtomicU64::new(u64::MAX);

/// Bytes of the XSAVE area the slow paths save, rounded up to 64; 0 when
/// the processor has no XSAVE (the slow paths then use fxsave). Set by
/// [`compute_xsave_size`]; read by the trampolines.
pub static FTAIL_XSAVE_SIZE: AtomicU64 = AtomicU64::new(0);

/// The state components the slow paths save with `xsave` (its EDX:EAX
/// mask): every user component the OS enabled but the AMX tiles, which
/// neither the runtime nor libc ever touch (8 KiB of the area on
/// processors that have them). Read by the trampolines.
pub static FTAIL_XSAVE_MASK: AtomicU64 = AtomicU64::new(0);

/// XSAVE components 17 and 18: AMX tile configuration and tile data.
const XSTATE_AMX: u64 = 3 << 17;

/// Bytes of stack a slow path may need beyond its XSAVE area: Rust frames,
/// a thread's set-up (which builds a path on the stack) included, with
/// room to spare.
const SLOW_FRAMES: u64 = 8 << 10;

/// A slow path that finds fewer bytes than this left on the coroutine
/// stack it runs on (see [`ThreadState::coro_lo`]) moves to the thread's
/// spare stack. Set by [`compute_xsave_size`]; read by the trampolines.
pub static FTAIL_SLOW_ROOM: AtomicU64 = AtomicU64::new(SLOW_FRAMES);

/// Bytes of a thread's spare stack for slow paths (a guard page below).
pub const SPARE_STACK: u64 = 64 << 10;

/// Sets [`FTAIL_XSAVE_SIZE`], [`FTAIL_XSAVE_MASK`] and [`FTAIL_SLOW_ROOM`]
/// from CPUID and XCR0.
pub fn compute_xsave_size() {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    use std::sync::atomic::Ordering::Relaxed;
    // Leaf 0xD is read only when leaf 1 reports XSAVE enabled by the OS
    // (OSXSAVE). In the standard format each component i has a fixed
    // offset (EBX of sub-leaf i) and size (EAX); the area ends with the
    // last component saved.
    let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
    let (size, mask) = if osxsave && __cpuid(0).eax >= 0xd {
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv with ECX = 0 reads XCR0, available when OSXSAVE
        // is set; it has no memory effects.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        let mask = ((u64::from(hi) << 32) | u64::from(lo)) & !XSTATE_AMX;
        // The legacy area and the XSAVE header: 576 bytes.
        let end = (2..63u32)
            .filter(|&i| mask & (1u64 << i) != 0)
            .map(|i| {
                let c = __cpuid_count(0xd, i);
                u64::from(c.ebx) + u64::from(c.eax)
            })
            .fold(576, u64::max);
        (end, mask)
    } else {
        (0, 0)
    };
    let size = (size + 63) & !63;
    FTAIL_XSAVE_SIZE.store(size, Relaxed);
    FTAIL_XSAVE_MASK.store(mask, Relaxed);
    FTAIL_SLOW_ROOM.store(size + 64 + SLOW_FRAMES, Relaxed);
}

/// Address of this thread's state: once [`FTAIL_TLS_OFFSET`] is known,
/// from the thread pointer, as the trampolines find it. A runtime loaded
/// into a running process (`attach`) has its TLS in the static block of
/// every thread, but threads that existed before have no dynamic thread
/// vector entry for it: the thread-local's own accessor would go through
/// `__tls_get_addr`'s slow path (a lock, maybe `malloc`), which a slow
/// path running in a signal handler must not.
pub fn current() -> *mut ThreadState {
    let offset = FTAIL_TLS_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    if offset == 0 {
        return STATE.with(|s| s.get());
    }
    (thread_pointer() as i64 + offset) as *mut ThreadState
}

fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reading %fs:0 (the TCB's self pointer, x86-64 TLS ABI) has
    // no side effects.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// Computes [`FTAIL_TLS_OFFSET`] from the current thread.
pub fn compute_tls_offset() -> i64 {
    // The anchor's initial-exec reference is what keeps the runtime's TLS
    // in the static block when it is loaded late; reading it also keeps
    // the linker from dropping it.
    std::hint::black_box(static_tls_anchor());
    STATE.with(|s| s.get()) as i64 - thread_pointer() as i64
}

// An initial-exec TLS access (R_X86_64_GOTTPOFF) makes the linker mark
// the library DF_STATIC_TLS: `dlopen` then places its whole TLS block in
// the static TLS surplus of every thread, existing ones included (glibc
// initialises theirs), at one offset from each thread pointer — which is
// what the trampolines' `%fs:0 + FTAIL_TLS_OFFSET` needs. Preloaded, the
// block is static anyway.
std::arch::global_asm!(
    ".pushsection .tbss.ftail_static_tls_anchor,\"awT\",@nobits",
    ".p2align 3",
    "ftail_static_tls_anchor:",
    ".zero 8",
    ".popsection",
    ".pushsection .text.ftail_static_tls_offset,\"ax\",@progbits",
    ".p2align 4",
    ".hidden ftail_static_tls_offset",
    ".globl ftail_static_tls_offset",
    ".type ftail_static_tls_offset, @function",
    "ftail_static_tls_offset:",
    "movq ftail_static_tls_anchor@gottpoff(%rip), %rax",
    "ret",
    ".size ftail_static_tls_offset, .-ftail_static_tls_offset",
    ".popsection",
    options(att_syntax),
);

extern "C" {
    fn ftail_static_tls_offset() -> i64;
}

/// The anchor's offset from the thread pointer.
fn static_tls_anchor() -> i64 {
    // SAFETY: the function above only loads a GOT word into rax.
    unsafe { ftail_static_tls_offset() }
}
