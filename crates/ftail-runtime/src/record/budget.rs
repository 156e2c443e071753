//! The trace's size budget (`--max-size`): how many bytes of event files
//! every process of the trace may still take, together.
//!
//! `ftail record` creates the budget file ([`BUDGET_FILE`]) before the
//! program starts; each process image maps it shared at start-up (a
//! forked child keeps its parent's mapping) and takes the room for each
//! part of an event file before it makes the file longer, with a
//! compare-and-swap, so the limit holds across processes without a lock
//! and the count survives a crash. Without a budget file (the runtime
//! started some other way) the process keeps its own count against
//! `FTAIL_MAX_SIZE`.
//!
//! Called from slow paths, possibly in signal handlers: atomics only.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ftail_abi::trace::{TraceBudget, BUDGET_FILE, BUDGET_MAGIC, TRACE_VERSION};

use crate::process::files::{self, NameBuf};

/// The mapped budget file (null: none, [`LOCAL_USED`] counts instead).
static SHARED: AtomicPtr<TraceBudget> = AtomicPtr::new(std::ptr::null_mut());
/// This process's count when there is no budget file.
static LOCAL_USED: AtomicU64 = AtomicU64::new(0);
/// This process's limit when there is no budget file.
static LOCAL_MAX: AtomicU64 = AtomicU64::new(u64::MAX);

const SIZE: usize = std::mem::size_of::<TraceBudget>();
const PAGE: u64 = 4096;

/// Maps the trace's budget file, or falls back to a count of this
/// process's own against `max` (`FTAIL_MAX_SIZE`). Called once per process
/// image, at start-up.
pub fn init(max: u64) {
    LOCAL_MAX.store(max, Ordering::Relaxed);
    let mut name = NameBuf::new();
    name.push(BUDGET_FILE.as_bytes());
    let Ok((fd, st)) = files::open_rw(&mut name) else {
        return;
    };
    if st.st_size < SIZE as i64 {
        files::close(fd);
        return;
    }
    // SAFETY: mapping SIZE bytes of a regular file at least that long.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    files::close(fd);
    if p == libc::MAP_FAILED {
        return;
    }
    let b = p.cast::<TraceBudget>();
    // SAFETY: the mapping holds a TraceBudget-sized, page-aligned region.
    let ok = unsafe { (*b).magic == BUDGET_MAGIC && (*b).version == TRACE_VERSION };
    if ok {
        SHARED.store(b, Ordering::Release);
    } else {
        // SAFETY: unmapping what was just mapped.
        unsafe { libc::munmap(p, SIZE) };
    }
}

/// The counter of bytes taken and the limit.
fn counter() -> (&'static AtomicU64, u64) {
    let p = SHARED.load(Ordering::Acquire);
    if p.is_null() {
        return (&LOCAL_USED, LOCAL_MAX.load(Ordering::Relaxed));
    }
    // SAFETY: the mapping lives as long as the process image; `used_bytes`
    // is an aligned u64 only ever accessed atomically, and `max_bytes` is
    // written only by `ftail record` before the program starts.
    unsafe {
        (
            AtomicU64::from_ptr(std::ptr::addr_of_mut!((*p).used_bytes)),
            std::ptr::addr_of!((*p).max_bytes).read_volatile(),
        )
    }
}

/// Takes up to `want` bytes (rounded up to pages) from the budget: all of
/// them, what is left (whole pages), or 0 when the trace has reached its
/// maximum size.
pub fn take(want: u64) -> u64 {
    let want = want.div_ceil(PAGE) * PAGE;
    let (used, max) = counter();
    let mut u = used.load(Ordering::Relaxed);
    loop {
        let grant = want.min(max.saturating_sub(u)) & !(PAGE - 1);
        if grant == 0 {
            return 0;
        }
        match used.compare_exchange_weak(u, u + grant, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return grant,
            Err(now) => u = now,
        }
    }
}

/// Takes `n` bytes whatever is left: the room to close a stopped
/// thread's open frames, a few bytes per frame, may go past the maximum.
pub fn force(n: u64) {
    counter().0.fetch_add(n, Ordering::Relaxed);
}

/// Gives back `n` bytes taken before (a thread's file trimmed at its end).
pub fn give_back(n: u64) {
    let (used, _) = counter();
    let _ = used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
        Some(u.saturating_sub(n))
    });
}

/// The trace's maximum size in bytes (`u64::MAX`: none).
pub fn max() -> u64 {
    counter().1
}
