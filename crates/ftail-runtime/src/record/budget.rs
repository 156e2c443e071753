//! The trace's size budget (`--max-size`): how many bytes of event files
//! and snapshots every process of the trace may still take, together.
//!
//! `ftail record` creates the budget file ([`BUDGET_FILE`]) before the
//! program starts. Each process image reads its maximum at start-up, and
//! takes the room for each part of a file it grows by reading and
//! writing the file's count under a record lock (`fcntl`), so the limit
//! holds across processes and the count survives a crash.
//!
//! The file is never mapped: anyone may truncate it (the program, a
//! cleanup script, a forked child), and a truncated mapping would kill
//! every process that touched it with SIGBUS. Read and written through a
//! descriptor, a truncated, removed or replaced budget file is only an
//! error: the count is then lost ([`lost`]), nothing more is taken, and
//! the threads that needed room stop recording with that reason.
//!
//! Without a budget file at start-up (the runtime started some other
//! way) the process keeps its own count against `FTAIL_MAX_SIZE`.
//!
//! Called from slow paths, possibly in signal handlers: only
//! async-signal-safe system calls, with every signal blocked while the
//! count is held, so a handler never waits for the code it interrupted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ftail_abi::trace::{TraceBudget, BUDGET_FILE, BUDGET_MAGIC, TRACE_VERSION};

use crate::process::files::{self, NameBuf};
use crate::process::sync::SlowLock;

/// Whether the trace has a budget file (else [`LOCAL_USED`] counts).
static SHARED: AtomicBool = AtomicBool::new(false);
/// Whether the budget file was found truncated or replaced.
static LOST: AtomicBool = AtomicBool::new(false);
/// This process's count when there is no budget file.
static LOCAL_USED: AtomicU64 = AtomicU64::new(0);
/// The trace's maximum size (the budget file's, or `FTAIL_MAX_SIZE`).
static MAX: AtomicU64 = AtomicU64::new(u64::MAX);
/// Keeps this process's threads apart while one holds the count: record
/// locks do not.
static HOLD: SlowLock = SlowLock::new();

const SIZE: usize = std::mem::size_of::<TraceBudget>();
const USED_AT: usize = std::mem::offset_of!(TraceBudget, used_bytes);
const PAGE: u64 = 4096;

/// Reads the trace's budget file, or falls back to a count of this
/// process's own against `max` (`FTAIL_MAX_SIZE`). Called once per
/// process image, at start-up.
pub fn init(max: u64) {
    MAX.store(max, Ordering::Relaxed);
    let Ok((fd, _)) = open() else { return };
    if let Ok(b) = read(fd) {
        MAX.store(b.1, Ordering::Relaxed);
        SHARED.store(true, Ordering::Release);
    }
    files::close(fd);
}

fn open() -> Result<(i32, libc::stat), i32> {
    let mut name = NameBuf::new();
    name.push(BUDGET_FILE.as_bytes());
    files::open_rw(&mut name)
}

/// The count and the maximum of the budget file open at `fd`; Err when
/// it is not a whole budget file of this version.
fn read(fd: i32) -> Result<(u64, u64), i32> {
    let mut b = [0u8; SIZE];
    // SAFETY: reading at most SIZE bytes into a local array.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), SIZE, 0) };
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_le_bytes(b[8..12].try_into().unwrap_or([0; 4]));
    if n != SIZE as isize || b[..8] != BUDGET_MAGIC || version != TRACE_VERSION {
        return Err(libc::EIO);
    }
    let max = word(std::mem::offset_of!(TraceBudget, max_bytes));
    Ok((word(USED_AT), max))
}

/// Runs `f(used, max)`, which returns the new count and a result, on the
/// trace's count; `None` when the count is lost.
fn update<R>(f: impl Fn(u64, u64) -> (u64, R)) -> Option<R> {
    if !SHARED.load(Ordering::Acquire) {
        let max = MAX.load(Ordering::Relaxed);
        let mut out = None;
        let _ = LOCAL_USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
            let (now, r) = f(u, max);
            out = Some(r);
            Some(now)
        });
        return out;
    }
    if LOST.load(Ordering::Relaxed) {
        return None;
    }
    let r = HOLD.with(|| update_file(&f));
    if r.is_none() {
        LOST.store(true, Ordering::Relaxed);
    }
    r
}

/// [`update`] on the budget file, under a record lock that keeps the
/// other processes out (released when the descriptor is closed, or the
/// process dies).
fn update_file<R>(f: &impl Fn(u64, u64) -> (u64, R)) -> Option<R> {
    let (fd, _) = open().ok()?;
    // SAFETY: a zeroed flock is valid; the fields are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_len = SIZE as libc::off_t;
    let r = loop {
        // SAFETY: F_SETLKW with a valid flock on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETLKW, &lock) } == 0 {
            break Some(());
        }
        if files::errno() != libc::EINTR {
            break None;
        }
    }
    .and_then(|()| {
        let (used, max) = read(fd).ok()?;
        let (now, r) = f(used, max);
        let bytes = now.to_le_bytes();
        // SAFETY: writing 8 bytes from a local array into our file.
        let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), 8, USED_AT as libc::off_t) };
        (n == 8).then_some(r)
    });
    files::close(fd);
    r
}

/// Takes up to `want` bytes (rounded up to pages) from the budget: all of
/// them, what is left (whole pages), or 0 when the trace has reached its
/// maximum size or the count is lost.
pub fn take(want: u64) -> u64 {
    let want = want.div_ceil(PAGE) * PAGE;
    update(|u, max| {
        let grant = want.min(max.saturating_sub(u)) & !(PAGE - 1);
        (u + grant, grant)
    })
    .unwrap_or(0)
}

/// Takes exactly `n` bytes (rounded up to pages), or nothing: false when
/// they are not all left.
pub fn take_all(n: u64) -> bool {
    let n = n.div_ceil(PAGE) * PAGE;
    update(|u, max| {
        let fits = max.saturating_sub(u) >= n;
        (if fits { u + n } else { u }, fits)
    })
    .unwrap_or(false)
}

/// Takes `n` bytes whatever is left: the room to close a stopped
/// thread's open frames, a few bytes per frame, may go past the maximum.
pub fn force(n: u64) {
    let _ = update(|u, _| (u.saturating_add(n), ()));
}

/// Gives back `n` bytes taken before (a thread's file trimmed at its end,
/// or removed).
pub fn give_back(n: u64) {
    let _ = update(|u, _| (u.saturating_sub(n), ()));
}

/// The trace's maximum size in bytes (`u64::MAX`: none).
pub fn max() -> u64 {
    MAX.load(Ordering::Relaxed)
}

/// Whether the budget file was found truncated, removed or replaced: no
/// room can be taken any more.
pub fn lost() -> bool {
    LOST.load(Ordering::Relaxed)
}

/// Why a thread that was refused room stops: the budget is spent, or its
/// count is lost (`STOPPED_*`).
pub fn refusal() -> u64 {
    if lost() {
        ftail_abi::trace::STOPPED_BUDGET_LOST
    } else {
        ftail_abi::trace::STOPPED_MAX_SIZE
    }
}
