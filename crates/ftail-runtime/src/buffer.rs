//! Per-thread event files: file-backed shared mappings in the trace
//! directory, so that what a thread recorded survives `_exit`, `exec`, a
//! crash or SIGKILL.
//!
//! Set up on a thread's first event, possibly inside a signal handler, so
//! this uses only async-signal-safe system calls and no allocation: the
//! path is built in a stack buffer.

use std::sync::atomic::Ordering;

use ftail_abi::trace::{EventFileHeader, EventKind, EVENTS_MAGIC, TRACE_VERSION};

use crate::state::{StackEntry, ThreadState};

const HEADER: u64 = std::mem::size_of::<EventFileHeader>() as u64;

/// Maps a new event file for the calling thread; false on any failure (the
/// thread then records nothing).
pub fn setup_thread(st: &mut ThreadState) -> bool {
    let Some(cfg) = crate::CONFIG.get() else {
        return false;
    };
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as i32) };
    let mut path = PathBuf::new();
    path.push(cfg.dir.as_os_str().as_encoded_bytes());
    path.push(b"/");
    path.push(crate::key::get());
    path.push(b"-");
    path.push_num(tid as u64);
    path.push(b".events\0");
    if path.overflowed {
        return false;
    }
    let size = file_size(cfg);
    let reserve = cfg.stack_entries * 16;
    // SAFETY: `path` is NUL-terminated; the flags create a private file.
    let fd = unsafe {
        libc::open(
            path.buf.as_ptr().cast(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is a regular file we own; the mapping covers it exactly.
    let base = unsafe {
        let ok = libc::ftruncate(fd, size as libc::off_t) == 0;
        let p = if ok {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        } else {
            libc::MAP_FAILED
        };
        libc::close(fd);
        p
    };
    if base == libc::MAP_FAILED {
        return false;
    }
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let header = EventFileHeader {
        magic: EVENTS_MAGIC,
        version: TRACE_VERSION,
        header_size: HEADER as u32,
        pid: pid as u32,
        tid: tid as u32,
        capacity: cfg.buffer_events,
        lost: 0,
        name,
        reserved: [0; 3],
    };
    // SAFETY: the mapping is at least HEADER bytes and page-aligned.
    unsafe { std::ptr::write(base.cast::<EventFileHeader>(), header) };
    let base = base as u64;
    if st.stack == 0 && !map_stack(st, cfg.stack_entries) {
        return false;
    }
    if st.side == 0 {
        match map_anon(cfg.stack_entries * std::mem::size_of::<crate::state::SideEntry>() as u64) {
            Some(p) => {
                st.side = p;
                st.side_cap = cfg.stack_entries;
            }
            None => return false,
        }
    }
    st.cursor = base + HEADER;
    st.end = base + HEADER;
    st.limit = base + size - reserve;
    st.reserve_end = base + size;
    st.lost = base + std::mem::offset_of!(EventFileHeader, lost) as u64;
    extend(st);
    replay_open_frames(st);
    crate::thread_exit::watch();
    true
}

/// Smallest and largest step of [`extend`].
const FIRST_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 2 << 20;

/// Makes the next part of the buffer usable: `end` moves forward by as
/// much as is already used (64 KiB at first, 2 MiB at most), and those
/// pages are faulted in with one `madvise(MADV_POPULATE_WRITE)` instead of
/// one page fault each (a page fault on a file-backed page costs more than
/// the events it holds). False when the buffer is full. Async-signal-safe.
pub fn extend(st: &mut ThreadState) -> bool {
    if st.end >= st.limit || st.lost == 0 {
        return false;
    }
    let events = st.lost - std::mem::offset_of!(EventFileHeader, lost) as u64 + HEADER;
    let chunk = (st.end - events).clamp(FIRST_CHUNK, MAX_CHUNK);
    let new_end = (st.end + chunk).min(st.limit);
    let from = st.end & !4095;
    // SAFETY: [from, new_end) lies in this thread's event mapping; populating
    // pages changes no contents. Failure (an old kernel) is harmless: the
    // pages then fault in one by one.
    unsafe {
        libc::madvise(
            from as *mut libc::c_void,
            (new_end - from) as usize,
            MADV_POPULATE_WRITE,
        )
    };
    st.end = new_end;
    true
}

/// `MADV_POPULATE_WRITE` (Linux 5.14; not in every libc crate version).
const MADV_POPULATE_WRITE: i32 = 23;

/// Bytes of an event file: the header, the buffer, then room to close
/// every frame the trace stack can hold when the buffer fills up (see
/// hooks::close_on_full). The file is sparse: unused room costs no disk.
fn file_size(cfg: &crate::config::Config) -> u64 {
    HEADER + (cfg.buffer_events + cfg.stack_entries) * 16
}

/// Releases the calling thread's buffers when it exits: frames still open
/// are closed, then the event file and the stacks are unmapped (thousands
/// of short-lived threads must not pile up mappings). Later events of the
/// thread (from other libraries' TLS destructors) are not recorded.
pub fn release(st: &mut ThreadState) {
    crate::hooks::close_all_open();
    let header = std::mem::offset_of!(EventFileHeader, lost) as u64;
    let base = st.lost - header;
    let size = crate::CONFIG.get().map_or(0, file_size);
    st.status = crate::state::STATUS_OFF;
    // SAFETY: these are the mappings setup_thread made for this thread;
    // status OFF keeps the trampolines from touching them again.
    unsafe {
        libc::munmap(base as *mut libc::c_void, size as usize);
        if st.stack != 0 {
            let bytes = st.stack_cap as usize * std::mem::size_of::<StackEntry>();
            libc::munmap(st.stack as *mut libc::c_void, bytes);
        }
        if st.side != 0 {
            let bytes = st.side_cap as usize * std::mem::size_of::<crate::state::SideEntry>();
            libc::munmap(st.side as *mut libc::c_void, bytes);
        }
    }
    st.stack = 0;
    st.side = 0;
    st.depth = 0;
    st.side_depth = 0;
    crate::stacks::release(st);
}

fn map_stack(st: &mut ThreadState, entries: u64) -> bool {
    let Some(p) = map_anon(entries * std::mem::size_of::<StackEntry>() as u64) else {
        return false;
    };
    st.stack = p;
    st.stack_cap = entries;
    st.depth = 0;
    true
}

/// Private zeroed memory, reserved lazily.
fn map_anon(bytes: u64) -> Option<u64> {
    // SAFETY: an anonymous private mapping, no aliasing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as u64)
}

/// In a forked child the trace stack holds the parent's open frames: write
/// them again as entries, so the child's file is balanced on its own.
fn replay_open_frames(st: &mut ThreadState) {
    // SAFETY: rdtsc has no memory effects.
    let now = unsafe { core::arch::x86_64::_rdtsc() };
    let max = crate::state::FTAIL_MAX_DEPTH.load(Ordering::Relaxed);
    for i in 0..st.depth.min(max) {
        // SAFETY: i < depth <= stack_cap entries of the stack mapping.
        let e = unsafe { *(st.stack as *const StackEntry).add(i as usize) };
        crate::hooks::write_event(st, EventKind::Entry, e.word, now);
    }
}

/// A fixed-size path buffer (no allocation).
struct PathBuf {
    buf: [u8; 4096],
    len: usize,
    overflowed: bool,
}

impl PathBuf {
    fn new() -> Self {
        PathBuf {
            buf: [0; 4096],
            len: 0,
            overflowed: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.overflowed = true;
            return;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push_num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}
