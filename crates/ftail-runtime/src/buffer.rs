//! Per-thread event files: file-backed shared mappings in the trace
//! directory, so that what a thread recorded survives `_exit`, `exec`, a
//! crash or SIGKILL.
//!
//! Set up on a thread's first event, possibly inside a signal handler, so
//! this uses only async-signal-safe system calls and no allocation: the
//! path is built in a stack buffer.

use std::sync::atomic::Ordering;

use ftail_abi::trace::{
    EventFileHeader, EventKind, EVENTS_MAGIC, EVENTS_SUFFIX, STOPPED_DISK_FULL, TRACE_VERSION,
};

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
    let fd = match create_event_file(tid as u32) {
        Ok(fd) => fd,
        Err(errno) => {
            crate::status::thread_failed(tid as u32, errno);
            return false;
        }
    };
    let size = file_size(cfg);
    let reserve = cfg.stack_entries * 16;
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
        let errno = crate::files::errno();
        libc::close(fd);
        if p == libc::MAP_FAILED {
            crate::status::thread_failed(tid as u32, errno);
            return false;
        }
        p
    };
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
        stopped: 0,
        reserved: [0; 2],
    };
    // The header's page is allocated first: on a full filesystem, touching
    // it would raise SIGBUS in the program.
    if let Err(errno) = populate(base as u64, 4096) {
        // SAFETY: unmapping the mapping just made.
        unsafe { libc::munmap(base, size as usize) };
        crate::status::thread_failed(tid as u32, errno);
        return false;
    }
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
    crate::status::thread_recorded();
    true
}

/// Creates `KEY-TID.events` (`KEY-TID~N.events` when a thread of the same
/// id recorded before: thread ids come back); Err(errno) on failure.
fn create_event_file(tid: u32) -> Result<i32, i32> {
    let mut last = libc::EEXIST;
    for n in 0..100 {
        let mut name = crate::files::key_name(b"-");
        name.push_num(u64::from(tid));
        if n > 0 {
            name.push(b"~").push_num(n);
        }
        name.push(EVENTS_SUFFIX.as_bytes());
        match crate::files::create(&mut name) {
            Err(libc::EEXIST) => continue,
            Err(e) => {
                last = e;
                break;
            }
            Ok(fd) => return Ok(fd),
        }
    }
    Err(last)
}

/// Smallest and largest step of [`extend`].
const FIRST_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 2 << 20;

/// Makes the next part of the buffer usable: `end` moves forward by as
/// much as is already used (64 KiB at first, 2 MiB at most), those pages
/// allocated ahead ([`populate`]). False when the buffer is full or the
/// filesystem has no room for more. Async-signal-safe.
pub fn extend(st: &mut ThreadState) -> bool {
    if st.end >= st.limit || st.lost == 0 {
        return false;
    }
    let events = st.lost - std::mem::offset_of!(EventFileHeader, lost) as u64 + HEADER;
    let chunk = (st.end - events).clamp(FIRST_CHUNK, MAX_CHUNK);
    let new_end = (st.end + chunk).min(st.limit);
    if populate(st.end, new_end - st.end).is_err() {
        // The filesystem is full: touching these pages would raise SIGBUS
        // in the program. The thread stops recording here, as if its
        // buffer were full.
        st.limit = st.end;
        set_stopped(st, STOPPED_DISK_FULL);
        crate::status::thread_disk_full();
        return false;
    }
    st.end = new_end;
    true
}

/// `MADV_POPULATE_WRITE` (Linux 5.14; not in every libc crate version).
const MADV_POPULATE_WRITE: i32 = 23;

/// Allocates the pages of the event mapping under [from, from + len) in
/// one `madvise(MADV_POPULATE_WRITE)`, instead of a page fault each (a
/// fault on a file-backed page costs more than the events it holds), and
/// so that a full filesystem shows as an error here instead of SIGBUS on
/// a later store. Err(errno) when the pages cannot be had; a kernel
/// without the advice (EINVAL) counts as success: its pages then fault in
/// one by one, as before. Async-signal-safe.
pub fn populate(from: u64, len: u64) -> Result<(), i32> {
    let lo = from & !4095;
    // SAFETY: [lo, from + len) lies in this thread's event mapping (the
    // callers' ranges are inside it and `lo` is in the page of `from`);
    // populating pages changes no contents.
    let r = unsafe {
        libc::madvise(
            lo as *mut libc::c_void,
            (from + len - lo) as usize,
            MADV_POPULATE_WRITE,
        )
    };
    match (r, crate::files::errno()) {
        (0, _) | (_, libc::EINVAL) => Ok(()),
        (_, e) => Err(e),
    }
}

/// The bytes at and after `from` (up to `len`) that can be written: all
/// of them, or, on a full filesystem, those in pages that could still be
/// allocated one by one.
pub fn writable_room(from: u64, len: u64) -> u64 {
    if populate(from, len).is_ok() {
        return len;
    }
    let mut room = ((from + 4095) & !4095) - from;
    while room < len && populate(from + room, 1).is_ok() {
        room += 4096;
    }
    room.min(len)
}

/// Records in the event file's header why the thread stopped recording
/// (the first reason only).
pub fn set_stopped(st: &ThreadState, why: u64) {
    if st.lost == 0 {
        return;
    }
    let field = st.lost - std::mem::offset_of!(EventFileHeader, lost) as u64
        + std::mem::offset_of!(EventFileHeader, stopped) as u64;
    // SAFETY: `field` is the header's `stopped` word, in the first page of
    // the thread's mapping (populated at set-up), aligned.
    unsafe {
        let p = field as *mut u64;
        if p.read_volatile() == 0 {
            p.write_volatile(why);
        }
    }
}

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
