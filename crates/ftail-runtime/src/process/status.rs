//! `KEY.status`: counters of what this process image did not record and
//! why (a thread whose event file could not be created, a full disk, a
//! module left untraced, the control agent's state), in a file-backed
//! shared mapping so they survive a crash, read by `ftail record`'s
//! end-of-run summary and by the trace reader.
//!
//! Updated with atomic operations from any thread, including slow paths
//! in signal handlers; nothing here allocates or locks. The mapping is
//! made at start-up and again in a forked child (for the child's own file);
//! no descriptor stays open.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ftail_abi::trace::{ProcessStatus, EXIT_RECORDED, STATUS_MAGIC, TRACE_VERSION};

use crate::process::files;

/// The mapped status of this process image (null when it could not be
/// made: then nothing is counted).
static STATUS: AtomicPtr<ProcessStatus> = AtomicPtr::new(std::ptr::null_mut());

const SIZE: usize = std::mem::size_of::<ProcessStatus>();

/// Fills and maps `KEY.status` (`fd`, just created for the current key:
/// at start-up, and in a forked child, whose inherited mapping is the
/// parent's file); closes `fd`.
pub fn create(fd: i32) {
    let old = STATUS.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: unmapping the (parent's) mapping made below; nothing
        // else holds a reference to it (counters are updated through
        // STATUS, now null or soon the new mapping).
        unsafe { libc::munmap(old.cast(), SIZE) };
    }
    let header = ProcessStatus {
        magic: STATUS_MAGIC,
        version: TRACE_VERSION,
        size: SIZE as u32,
        ..ProcessStatus::default()
    };
    // SAFETY: viewing a plain-old-data struct as bytes to write it.
    let bytes =
        unsafe { std::slice::from_raw_parts((&header as *const ProcessStatus).cast(), SIZE) };
    let written = files::write_all(fd, bytes);
    // SAFETY: mapping the file just written, SIZE bytes, shared.
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
    if written && p != libc::MAP_FAILED {
        STATUS.store(p.cast(), Ordering::Release);
    }
}

/// The counter at `offset` (an `offset_of!` of a `u64` field) of the
/// mapped status, or `None` when there is none.
fn counter(offset: usize) -> Option<&'static AtomicU64> {
    let p = STATUS.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the mapping lives as long as the process image (it is only
    // replaced in a single-threaded fork child); `offset` is that of an
    // aligned u64 field inside it, only ever accessed atomically.
    Some(unsafe { AtomicU64::from_ptr(p.cast::<u8>().add(offset).cast()) })
}

macro_rules! offset {
    ($field:ident) => {
        std::mem::offset_of!(ProcessStatus, $field)
    };
}

fn add(offset: usize, n: u64) {
    if let Some(c) = counter(offset) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A thread created its event file.
pub fn thread_recorded() {
    add(offset!(threads_recorded), 1);
}

/// Thread `tid` could not create its event file (`errno`).
pub fn thread_failed(tid: u32, errno: i32) {
    add(offset!(threads_failed), 1);
    if let Some(c) = counter(offset!(first_failure)) {
        let first = (u64::from(errno as u32) << 32) | u64::from(tid);
        let _ = c.compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A thread stopped recording: its filesystem is full.
pub fn thread_disk_full() {
    add(offset!(threads_disk_full), 1);
}

/// A thread stopped recording: the trace reached its maximum size.
pub fn thread_max_size() {
    add(offset!(threads_max_size), 1);
}

/// A snapshot was not taken: the trace had no room left for it.
pub fn snapshot_refused() {
    add(offset!(snapshots_refused), 1);
}

/// A module found after start-up was left untraced, or some of its sites.
pub fn skipped(modules: u64, sites: u64) {
    add(offset!(modules_skipped), modules);
    add(offset!(sites_skipped), sites);
}

/// The control agent's state (`AGENT_*` with an errno in bits 8 and up).
pub fn agent(state: u64) {
    if let Some(c) = counter(offset!(agent)) {
        c.store(state, Ordering::Relaxed);
    }
}

/// The process image ends with `exit(code)` or `_exit(code)`: notes the
/// status and what the process used. Async-signal-safe (`_exit` may be
/// called from a handler): one `getrusage` and plain stores.
pub fn exiting(code: i32) {
    let Some(exit) = counter(offset!(exit)) else {
        return;
    };
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the rusage it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        for (field, value) in [
            (offset!(cpu_user_us), us(usage.ru_utime)),
            (offset!(cpu_system_us), us(usage.ru_stime)),
            (offset!(max_rss_kib), usage.ru_maxrss as u64),
        ] {
            if let Some(c) = counter(field) {
                c.store(value, Ordering::Relaxed);
            }
        }
    }
    // As `waitpid` would give it: the low byte of the code, shifted.
    let status = ((code as u32) & 0xff) << 8;
    exit.store(EXIT_RECORDED | u64::from(status), Ordering::Release);
}
