//! Per-thread event files: file-backed shared mappings in the trace
//! directory, so that what a thread recorded survives `_exit`, `exec`, a
//! crash or SIGKILL.
//!
//! A thread's file grows as it writes: its mapping reserves the address
//! space the file may grow into (up to the trace's maximum size, less
//! when the process has not that much left), and the file is made longer
//! a step at a time, each step's bytes taken from the trace's budget
//! (`budget.rs`) first; the pages are allocated ahead of the writer a
//! chunk at a time. A thread stops recording, and says why in its file's
//! header, when the budget is spent (`--max-size`), its `--buffer-events`
//! is reached, its reserved address space is, or the filesystem is full.
//!
//! Set up on a thread's first event, possibly inside a signal handler, so
//! this uses only async-signal-safe system calls and no allocation: the
//! path is built in a stack buffer.

use std::sync::atomic::Ordering;

use ftail_abi::trace::{
    EventFileHeader, EVENTS_MAGIC, FORMAT_COMPACT, FORMAT_WIDE, STOPPED_ADDRESS_SPACE,
    STOPPED_BUFFER_FULL, STOPPED_DISK_FULL, STOPPED_FILE_ERROR, STOPPED_MAX_SIZE, TRACE_VERSION,
};

use ftail_abi::trace::drain::{Control, CHUNK, CONTROL_AT, NO_SPILL, RING_AT};

use crate::record::state::{StackEntry, ThreadState};

const HEADER: u64 = std::mem::size_of::<EventFileHeader>() as u64;
const PAGE: u64 = 4096;

/// The most address space one thread's file may reserve (256 GiB).
const MAX_MAP: u64 = 1 << 38;
/// The least: when even this much cannot be reserved, the thread
/// records nothing.
const MIN_MAP: u64 = 1 << 20;

/// When tracing was last switched on in the process (0: never): a new
/// file's [`EventFileHeader::traced_since`].
static TRACED_SINCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes that tracing is switched on at `tsc`: the functions already
/// running then began before tracing.
pub fn tracing_switched_on(tsc: u64) {
    TRACED_SINCE.store(tsc, Ordering::Relaxed);
}

/// Notes, in the thread's file header, that tracing was switched on again
/// while the file existed: the time it was.
pub(crate) fn note_rejoined(st: &ThreadState) {
    if st.file_base == 0 {
        return;
    }
    let field = st.file_base + std::mem::offset_of!(EventFileHeader, rejoined) as u64;
    // SAFETY: as in count_before_tracing.
    let since = unsafe { std::sync::atomic::AtomicU64::from_ptr(field as *mut u64) };
    since.store(TRACED_SINCE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Counts, in the thread's file header, an exit of a function entered
/// before tracing began.
pub(crate) fn count_before_tracing(st: &ThreadState) {
    if st.file_base == 0 {
        return;
    }
    let field = st.file_base + std::mem::offset_of!(EventFileHeader, before_tracing) as u64;
    // SAFETY: the header lies at the start of this thread's live mapping,
    // the field is 8-byte aligned, and only this thread (and its signal
    // handlers, which run to completion) writes it.
    let count = unsafe { std::sync::atomic::AtomicU64::from_ptr(field as *mut u64) };
    count.fetch_add(1, Ordering::Relaxed);
}

/// Maps a new event file for the calling thread; false on any failure (the
/// thread then records nothing).
pub fn setup_thread(st: &mut ThreadState) -> bool {
    let Some(cfg) = crate::CONFIG.get() else {
        return false;
    };
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as i32) };
    // The parent's file, inherited by a forked child, is not this
    // thread's to write; it goes once the child's own is made (a ring's
    // file holds the trace stack, which the child's file takes over).
    let inherited = (st.file_base, st.map_len);
    st.file_base = 0;
    let drop_inherited = |st: &mut ThreadState| {
        if inherited.0 == 0 {
            return;
        }
        if st.stack >= inherited.0 && st.stack < inherited.0 + inherited.1 {
            st.stack = 0;
        }
        // SAFETY: the mapping setup_thread made in the parent, copied
        // into this process; nothing writes it (status was reset) and
        // the trace stack is no longer in it.
        unsafe { libc::munmap(inherited.0 as *mut libc::c_void, inherited.1 as usize) };
    };
    let (fd, n) = match create_event_file(tid as u32) {
        Ok(v) => v,
        Err(errno) => {
            drop_inherited(st);
            crate::process::status::thread_failed(tid as u32, errno);
            return false;
        }
    };
    let reserve = cfg.stack_entries * 16;
    // `--buffer-events`: 16 bytes an event in a ring, 8 (an entry's size,
    // twice a close's) in the compact format.
    let by_events = HEADER + cfg.buffer_events * if cfg.ring != 0 { 16 } else { 8 };
    // A ring is all file from the start, with the first page of its trace
    // stack after it (more pages as the stack deepens: `grow_stack`),
    // taken from the budget whole; the files of threads that ended make
    // room for it. A ring that finds no room records nothing, in a file
    // that says why.
    let ring_first =
        (HEADER + cfg.ring + st.depth.clamp(1, cfg.stack_entries) * 16).div_ceil(PAGE) * PAGE;
    let ring = if cfg.ring != 0 && crate::record::retired::take_room(ring_first) {
        cfg.ring
    } else {
        0
    };
    let refused = cfg.ring != 0 && ring == 0;
    // A drained ring is all file from the start too, taken from the
    // budget whole; without the room the thread's file grows as usual.
    let drain = if cfg.ring == 0
        && cfg.drain != 0
        && crate::record::budget::take_all(RING_AT + cfg.drain)
    {
        cfg.drain
    } else {
        0
    };
    // The buffer proper may grow to `cap` bytes of file; its mapping
    // also holds the reserve that closes open frames when it stops (a
    // ring's, the room its trace stack may grow into).
    let cap = if ring != 0 {
        HEADER + ring
    } else if refused {
        HEADER
    } else {
        by_events
            .min(crate::record::budget::max().saturating_add(HEADER))
            .min(MAX_MAP)
    };
    let cap = if drain != 0 {
        cap.max(RING_AT + drain + MIN_MAP)
    } else {
        cap
    };
    let wanted = (cap + reserve).div_ceil(PAGE) * PAGE;
    // The first step of the file: the header's page and a first chunk.
    let mut first = if ring != 0 {
        ring_first
    } else if drain != 0 {
        RING_AT + drain
    } else if refused {
        0
    } else {
        crate::record::budget::take(PAGE + FIRST_CHUNK)
    };
    if first == 0 {
        // The trace is already at its maximum size: the header's page
        // anyway, so that the thread's losses are counted.
        crate::record::budget::force(PAGE);
        first = PAGE;
    }
    let fail = |errno: i32, taken: u64| {
        crate::record::budget::give_back(taken);
        // SAFETY: fd is the file just created, ours to close.
        unsafe { libc::close(fd) };
        remove_event_file(tid as u32, n);
        crate::process::status::thread_failed(tid as u32, errno);
        false
    };
    let fail = |st: &mut ThreadState, errno: i32, taken: u64| {
        drop_inherited(st);
        fail(errno, taken)
    };
    let ino = match crate::process::files::stat(fd) {
        Ok(s) => s.st_ino,
        Err(errno) => return fail(st, errno, first),
    };
    // SAFETY: fd is a regular file we own.
    if unsafe { libc::ftruncate(fd, first as libc::off_t) } != 0 {
        return fail(st, crate::process::files::errno(), first);
    }
    // Reserve the address space the file may grow into; a process short
    // of it (many threads, a ulimit) gets less.
    let mut map_len = wanted;
    let base = loop {
        // SAFETY: a shared mapping of a file we own; the part past its
        // end is only touched once the file has grown over it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            break p;
        }
        let errno = crate::process::files::errno();
        if map_len <= MIN_MAP + reserve || ring != 0 || drain != 0 {
            return fail(st, errno, first);
        }
        map_len = (map_len / 2).max(MIN_MAP + reserve).div_ceil(PAGE) * PAGE;
    };
    if cfg.hugepage && ring == 0 {
        // SAFETY: advice on the mapping just made; it changes no
        // contents, and failing it changes nothing.
        unsafe { libc::madvise(base, map_len as usize, libc::MADV_HUGEPAGE) };
    } else if drain != 0 {
        // No read-ahead: without it, a fault in a drained ring's long
        // sparse file brings in a large folio (2-4 ms to set up a chunk
        // of a fresh 8M ring on ext4, against 0.15 ms page by page).
        // SAFETY: advice on the mapping just made; it changes no
        // contents, and failing it changes nothing.
        unsafe { libc::madvise(base, map_len as usize, libc::MADV_RANDOM) };
    }
    // SAFETY: closing the descriptor created above; the mapping keeps the
    // file.
    unsafe { libc::close(fd) };
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let limit = if ring != 0 {
        cap
    } else if drain != 0 {
        // A drained ring that spills goes on after its ring, up to the
        // end of the room mapped.
        (cap.max(RING_AT + drain + MIN_MAP).min(map_len - reserve) - HEADER) / 16 * 16 + HEADER
    } else {
        (cap.min(map_len - reserve) - HEADER) / 16 * 16 + HEADER
    };
    let header = EventFileHeader {
        magic: EVENTS_MAGIC,
        version: TRACE_VERSION,
        header_size: if drain != 0 { RING_AT } else { HEADER } as u32,
        pid: pid as u32,
        tid: tid as u32,
        capacity: limit - HEADER,
        lost: 0,
        name,
        stopped: 0,
        ring,
        laps: 0,
        open_at_end: 0,
        format: if cfg.ring != 0 {
            FORMAT_WIDE
        } else {
            FORMAT_COMPACT
        },
        before_tracing: 0,
        traced_since: TRACED_SINCE.load(Ordering::Relaxed),
        drain,
        rejoined: 0,
    };
    // The header's page is allocated first: on a full filesystem, touching
    // it would raise SIGBUS in the program.
    // A ring's whole file is allocated at once (the files of ended threads
    // make room on a full filesystem too): it stays in the cache, and its
    // trace stack is written from the trampolines.
    // A drained ring's header page and first chunk; each later chunk of
    // its first lap is allocated as the thread reaches it (`next_chunk`),
    // so a short-lived thread costs no more than with a growing file, and
    // after that lap the thread never meets a fresh page.
    let now = if ring != 0 {
        first
    } else if drain != 0 {
        RING_AT + CHUNK
    } else {
        PAGE
    };
    let mut populated = populate(base as u64, now);
    while ring != 0 && populated == Err(libc::ENOSPC) && crate::record::retired::evict_oldest() {
        populated = populate(base as u64, now);
    }
    if let Err(errno) = populated {
        // SAFETY: unmapping the mapping just made.
        unsafe { libc::munmap(base, map_len as usize) };
        crate::record::budget::give_back(first);
        remove_event_file(tid as u32, n);
        drop_inherited(st);
        crate::process::status::thread_failed(tid as u32, errno);
        return false;
    }
    if drain != 0 {
        let control = Control {
            spill_from: NO_SPILL,
            ..Control::default()
        };
        // SAFETY: the header's page is mapped and populated; the control
        // words lie in it, aligned, and the header, written next, is what a
        // drainer looks for first.
        unsafe { std::ptr::write((base as u64 + CONTROL_AT) as *mut Control, control) };
        std::sync::atomic::fence(Ordering::Release);
    }
    // SAFETY: the mapping is at least HEADER bytes and page-aligned.
    unsafe { std::ptr::write(base.cast::<EventFileHeader>(), header) };
    let base = base as u64;
    st.file_base = base;
    st.map_len = map_len;
    st.file_len = first;
    st.file_id = u64::from(tid as u32) | (n << 32);
    st.file_ino = ino;
    st.limit_why = if refused {
        let why = crate::record::budget::refusal();
        if why == STOPPED_MAX_SIZE {
            crate::process::status::thread_max_size();
        }
        why
    } else if map_len < wanted || cap == MAX_MAP && cap < by_events {
        STOPPED_ADDRESS_SPACE
    } else if cap == by_events {
        STOPPED_BUFFER_FULL
    } else {
        STOPPED_MAX_SIZE
    };
    if ring != 0 {
        // The trace stack moves into the file (a forked child's frames
        // come along).
        let in_file = base + limit;
        if st.stack != 0 {
            let n = st.depth.min(cfg.stack_entries) as usize;
            // SAFETY: both arrays hold at least n entries; they do not
            // overlap (the file's was just mapped).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    st.stack as *const StackEntry,
                    in_file as *mut StackEntry,
                    n,
                )
            };
            if !(st.stack >= inherited.0 && st.stack < inherited.0 + inherited.1) {
                // SAFETY: the anonymous stack map_stack made earlier.
                unsafe {
                    libc::munmap(
                        st.stack as *mut libc::c_void,
                        st.stack_cap as usize * std::mem::size_of::<StackEntry>(),
                    )
                };
            }
        }
        st.stack = in_file;
        st.stack_cap = ((first - limit) / 16).min(cfg.stack_entries);
    }
    drop_inherited(st);
    if st.stack == 0 && !map_stack(st, cfg.stack_entries) {
        return false;
    }
    if st.side == 0 {
        match map_anon(
            cfg.stack_entries * std::mem::size_of::<crate::record::state::SideEntry>() as u64,
        ) {
            Some(p) => {
                st.side = p;
                st.side_cap = cfg.stack_entries;
            }
            None => return false,
        }
    }
    st.cursor = base + HEADER;
    st.end = base + HEADER;
    st.limit = base + limit;
    st.reserve_end = base + map_len;
    st.lost = base + std::mem::offset_of!(EventFileHeader, lost) as u64;
    st.ring = ring;
    // The trampolines are the same for every thread: a ring that was
    // refused keeps 16-byte events (and has room for none).
    st.compact = u64::from(cfg.ring == 0);
    st.base = crate::record::state::NO_BASE;
    st.drain = drain;
    st.drain_chunk = 0;
    st.drain_prev_end = 0;
    if st.ring != 0 {
        st.end = base + limit;
    } else if drain != 0 {
        st.cursor = base + RING_AT;
        st.end = base + RING_AT + CHUNK;
    } else {
        extend(st);
    }
    true
}

/// Removes the event file a thread made but could not use, so that no
/// file the reader would call damaged is left behind.
fn remove_event_file(tid: u32, n: u64) {
    crate::process::files::remove(&mut crate::process::key::event_file_name(tid, n));
}

/// Creates `KEY-TID.events` (`KEY-TID~N.events` when a thread of the same
/// id recorded before: thread ids come back); its descriptor and N, or
/// Err(errno) on failure.
fn create_event_file(tid: u32) -> Result<(i32, u64), i32> {
    let mut last = libc::EEXIST;
    for n in 0..100 {
        match crate::process::files::create(&mut crate::process::key::event_file_name(tid, n)) {
            Err(libc::EEXIST) => continue,
            Err(e) => {
                last = e;
                break;
            }
            Ok(fd) => return Ok((fd, n)),
        }
    }
    Err(last)
}

/// Makes the thread's event file `len` bytes long (longer or shorter),
/// through a descriptor opened for the purpose (the runtime keeps none
/// the program could close or inherit) and checked to be the same file.
/// Err(errno) on failure. Async-signal-safe.
fn set_file_len(st: &ThreadState, len: u64) -> Result<(), i32> {
    let mut name = crate::process::key::event_file_name(st.file_id as u32, st.file_id >> 32);
    let (fd, meta) = crate::process::files::open_rw(&mut name)?;
    let r = if meta.st_ino != st.file_ino {
        Err(libc::ESTALE)
    // SAFETY: a regular file we opened and own.
    } else if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        Err(crate::process::files::errno())
    } else {
        Ok(())
    };
    crate::process::files::close(fd);
    r
}

/// Makes the file long enough for the buffer to reach `to` (an address in
/// its mapping), in steps that grow with what the thread has written (64
/// KiB at first, 32 MiB at most), each taken from the trace's budget;
/// with `force`, takes exactly what is missing whatever the budget says
/// (the reserve). Where the file ends afterwards; on failure the thread
/// stops recording, with the reason in its header.
fn grow_file(st: &mut ThreadState, to: u64, force: bool) -> u64 {
    let file_end = st.file_base + st.file_len;
    if to <= file_end {
        return file_end;
    }
    let missing = (to - file_end).div_ceil(PAGE) * PAGE;
    let grant = if force {
        crate::record::budget::force(missing);
        missing
    } else {
        let step = st.file_len.clamp(FIRST_CHUNK, MAX_STEP);
        let step = step.max(missing).min(st.map_len - st.file_len);
        crate::record::budget::take(step)
    };
    if grant == 0 {
        let why = crate::record::budget::refusal();
        stop(st, why);
        if why == STOPPED_MAX_SIZE {
            crate::process::status::thread_max_size();
        }
        return file_end;
    }
    if let Err(errno) = set_file_len(st, st.file_len + grant) {
        crate::record::budget::give_back(grant);
        stop(st, STOPPED_FILE_ERROR | (errno as u64) << 8);
        return file_end;
    }
    st.file_len += grant;
    st.file_base + st.file_len
}

/// The thread stops recording: its buffer ends where it is mapped up to
/// now, and its header says why.
fn stop(st: &mut ThreadState, why: u64) {
    st.limit = st.end;
    set_stopped(st, why);
}

/// Smallest and largest step of [`extend`], and the largest step of the
/// file's growth.
const FIRST_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 2 << 20;
const MAX_STEP: u64 = 32 << 20;

/// Makes the next part of the buffer usable: `end` moves forward by as
/// much as is already used (64 KiB at first, 2 MiB at most), the file
/// made longer first where needed ([`grow_file`]), those pages allocated
/// ahead ([`populate`]). False when the buffer is full, the trace's
/// budget is spent or the filesystem has no room for more.
/// Async-signal-safe.
pub fn extend(st: &mut ThreadState) -> bool {
    // A thread that stopped (its open frames closed from the reserve,
    // `reserve_end` 0) never records again, even if the trace's budget
    // has room again: its file ends balanced where it stopped.
    if st.lost == 0 || st.ring != 0 || st.drain != 0 || st.reserve_end == 0 {
        return false;
    }
    if st.end >= st.limit {
        set_stopped(st, st.limit_why);
        return false;
    }
    let events = st.file_base + HEADER;
    let chunk = (st.end - events).clamp(FIRST_CHUNK, MAX_CHUNK);
    let mut new_end = (st.end + chunk).min(st.limit);
    let file_end = grow_file(st, new_end, false);
    if file_end <= st.end {
        return false;
    }
    new_end = new_end.min(file_end);
    if populate(st.end, new_end - st.end).is_err() {
        // The filesystem is full: touching these pages would raise SIGBUS
        // in the program. The thread stops recording here, as if its
        // buffer were full.
        st.limit = st.end;
        set_stopped(st, STOPPED_DISK_FULL);
        crate::process::status::thread_disk_full();
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
    match (r, crate::process::files::errno()) {
        (0, _) | (_, libc::EINVAL) => Ok(()),
        // "A SIGBUS would have been generated": the range is inside the
        // file, so its pages could not be allocated — a full filesystem
        // (tmpfs says no more), not a bad address.
        (_, libc::EFAULT) => Err(libc::ENOSPC),
        (_, e) => Err(e),
    }
}

/// Room for the events that close a stopped thread's open frames, `len`
/// bytes at `from` (its buffer's end, in the reserve): the file is made
/// long enough whatever the budget says (a few bytes per open frame),
/// then as much as can be written is ([`writable_room`]).
pub fn closing_room(st: &mut ThreadState, from: u64, len: u64) -> u64 {
    let file_end = grow_file(st, from + len, true);
    writable_room(from, len.min(file_end.saturating_sub(from)))
}

/// The bytes at and after `from` (up to `len`) that can be written: all
/// of them, or, on a full filesystem, those in pages that could still be
/// allocated one by one.
fn writable_room(from: u64, len: u64) -> u64 {
    if populate(from, len).is_ok() {
        return len;
    }
    let mut room = ((from + 4095) & !4095) - from;
    while room < len && populate(from + room, 1).is_ok() {
        room += 4096;
    }
    room.min(len)
}

/// In a ring, a slot for one event: the next one, or, once the cursor
/// has passed the ring's end, its first one, the cursor starting again
/// after it (`laps` counted in the header). The cursor moves with
/// single atomic instructions, so a signal handler's events that come in
/// between take slots of their own, whichever of the two wrapped.
pub fn ring_slot(st: &mut ThreadState) -> u64 {
    use std::sync::atomic::AtomicU64;
    let start = st.file_base + HEADER;
    // SAFETY: `cursor` is this thread's, aligned, and only ever accessed
    // by it and its signal handlers (single instructions, as in tramp.rs).
    let cursor = unsafe { AtomicU64::from_ptr(&mut st.cursor) };
    loop {
        let c = cursor.load(Ordering::Relaxed);
        if c + 16 <= st.end {
            let slot = cursor.fetch_add(16, Ordering::Relaxed);
            if slot + 16 <= st.end {
                return slot;
            }
            continue;
        }
        if cursor
            .compare_exchange(c, start + 16, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let laps = st.file_base + std::mem::offset_of!(EventFileHeader, laps) as u64;
            // SAFETY: the header's `laps` word, in the mapping's first
            // page, aligned; only this thread writes it.
            unsafe { AtomicU64::from_ptr(laps as *mut u64).fetch_add(1, Ordering::Relaxed) };
            return start;
        }
    }
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

/// Gives back the calling thread's buffers once its frames are closed and
/// it records no more (`thread::release`): the event file is cut after
/// its last event (the room allocated ahead goes back to the budget; a
/// ring's is listed with those of ended threads, [`retire_ring`]), then
/// it and the stacks are unmapped.
pub fn release(st: &mut ThreadState) {
    if st.ring != 0 && st.file_base != 0 {
        retire_ring(st);
    } else {
        cut(st);
    }
    if st.file_base != 0 && was_drained(st) {
        // Every record is written: the drainer may drain the rest and
        // cut the file now rather than at the program's end.
        word(&control(st).ended).store(1, Ordering::Release);
    }
    // SAFETY: these are the mappings setup_thread made for this thread;
    // status OFF keeps the trampolines from touching them again.
    unsafe {
        libc::munmap(st.file_base as *mut libc::c_void, st.map_len as usize);
        if st.stack != 0 && st.ring == 0 {
            let bytes = st.stack_cap as usize * std::mem::size_of::<StackEntry>();
            libc::munmap(st.stack as *mut libc::c_void, bytes);
        }
        if st.side != 0 {
            let bytes =
                st.side_cap as usize * std::mem::size_of::<crate::record::state::SideEntry>();
            libc::munmap(st.side as *mut libc::c_void, bytes);
        }
    }
    st.file_base = 0;
    st.lost = 0;
    st.stack = 0;
    st.side = 0;
    st.depth = 0;
    st.side_depth = 0;
}

/// Cuts the calling thread's event file after its last event at process
/// exit: the room allocated ahead goes back to the trace's budget. Events
/// recorded afterwards (later exit handlers) grow it again. Signals are
/// blocked meanwhile: a handler's events must not land in the part being
/// cut.
pub fn cut_at_exit(st: &mut ThreadState) {
    if !crate::record::state::recording(st.status) {
        return;
    }
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask
    // fill and apply it for this thread only.
    unsafe {
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        cut(st);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// Makes a ring's trace stack deeper when it is full: the file grows
/// over the next pages of the room mapped for it (twice as many entries
/// as now, up to `FTAIL_STACK_ENTRIES`), taken from the trace's budget
/// (the files of ended threads make room) and allocated at once (the
/// trampolines write the stack). False when it cannot: the frame is then
/// not recorded, as when the stack is at its size. Signals are blocked
/// meanwhile: a handler's frames must wait for the stack to be whole.
pub fn grow_stack(st: &mut ThreadState) -> bool {
    let Some(cfg) = crate::CONFIG.get() else {
        return false;
    };
    if st.ring == 0 || st.file_base == 0 || st.stack_cap >= cfg.stack_entries {
        return false;
    }
    let _blocked = crate::process::sync::SignalsBlocked::all();
    let at = st.stack - st.file_base;
    let entries = (st.stack_cap * 2).min(cfg.stack_entries);
    let len = ((at + entries * 16).div_ceil(PAGE) * PAGE).min(st.map_len);
    if len <= st.file_len {
        return false;
    }
    let more = len - st.file_len;
    if !crate::record::retired::take_room(more) {
        return false;
    }
    let grown = set_file_len(st, len)
        .and_then(|()| populate(st.file_base + st.file_len, more))
        .is_ok();
    if !grown {
        let _ = set_file_len(st, st.file_len);
        crate::record::budget::give_back(more);
        return false;
    }
    st.file_len = len;
    st.stack_cap = ((len - at) / 16).min(cfg.stack_entries);
    true
}

/// A ring thread ended: its file is cut to what its ring holds (the
/// trace stack, all closed now, and the part of the ring never written
/// go, their bytes back to the budget) and listed with the files of
/// ended threads, which new threads' rings may replace (`retired`).
fn retire_ring(st: &mut ThreadState) {
    let laps = st.file_base + std::mem::offset_of!(EventFileHeader, laps) as u64;
    // SAFETY: the header's `laps` word, in the mapping's first page.
    let lapped = unsafe { (laps as *const u64).read_volatile() } != 0;
    let written = if lapped {
        st.end
    } else {
        st.cursor.min(st.end)
    };
    let keep = (written - st.file_base).div_ceil(PAGE) * PAGE;
    if keep < st.file_len && set_file_len(st, keep).is_ok() {
        crate::record::budget::give_back(st.file_len - keep);
        st.file_len = keep;
        if !lapped && keep < HEADER + st.ring {
            // A ring that never wrapped holds what a ring of the kept
            // size would: say so, so that a reader never finds a ring
            // larger than its file (which it takes for damage).
            let ring = st.file_base + std::mem::offset_of!(EventFileHeader, ring) as u64;
            // SAFETY: the header's `ring` word, in the mapping's first
            // page, which the cut kept; no one writes it after the
            // thread's start, and the thread is ending.
            unsafe { (ring as *mut u64).write_volatile(keep - HEADER) };
        }
    }
    crate::record::retired::push(st.file_id, st.file_ino, st.file_len);
}

/// Cuts the event file after the page of its last event, unless the
/// reserve holds events past `end` (the thread stopped) or there is no
/// file; `end` moves back with it.
fn cut(st: &mut ThreadState) {
    if st.file_base == 0 || st.reserve_end == 0 || st.ring != 0 || st.drain != 0 {
        return;
    }
    let keep = (st.cursor.min(st.end) - st.file_base).div_ceil(PAGE) * PAGE;
    if keep >= st.file_len {
        return;
    }
    let end = st.end;
    st.end = st.end.min(st.file_base + keep);
    if set_file_len(st, keep).is_ok() {
        crate::record::budget::give_back(st.file_len - keep);
        st.file_len = keep;
    } else {
        st.end = end;
    }
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

/// The control words a drained ring shares with its drainer.
fn control(st: &ThreadState) -> &'static Control {
    // SAFETY: the control words lie in the header's page of the thread's
    // live mapping (populated at set-up), aligned; they are only read or
    // written whole through atomics (`word`).
    unsafe { &*((st.file_base + CONTROL_AT) as *const Control) }
}

/// One control word, shared with the drainer.
fn word(w: &u64) -> &std::sync::atomic::AtomicU64 {
    // SAFETY: a word of the shared control page, aligned, accessed by
    // both sides only with atomic loads and stores.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(w as *const u64 as *mut u64) }
}

/// Whether the thread's file was made a drained ring (it may have spilled
/// since, going on after the ring).
fn was_drained(st: &ThreadState) -> bool {
    let field = st.file_base + std::mem::offset_of!(EventFileHeader, drain) as u64;
    // SAFETY: the header's `drain` word, in the mapping's first page,
    // written once at set-up.
    unsafe { (field as *const u64).read_volatile() != 0 }
}

/// Whether `slot` lies in the chunk of a drained ring being written, or
/// the one before it; the end of that chunk.
fn drained_chunk_end(st: &ThreadState, slot: u64) -> Option<u64> {
    [st.end, st.drain_prev_end].into_iter().find(|&end| {
        end != 0 && slot < end && slot >= end - CHUNK && (st.drain != 0 || end != st.end)
    })
}

/// Pads a slot given up: in a drained ring only up to the end of its
/// chunk (the next chunk may lie anywhere, or not be free yet), with a
/// pad record a word, so that no record crosses into the next chunk.
/// Whether the slot was in a drained ring's chunk.
pub(crate) fn pad_drained(st: &ThreadState, slot: u64, size: u64) -> bool {
    let Some(end) = drained_chunk_end(st, slot) else {
        return false;
    };
    let one = ftail_abi::trace::compact::ext_head(ftail_abi::trace::compact::SUB_PAD, 1, 0);
    let mut at = slot;
    while at < (slot + size).min(end) {
        // SAFETY: [slot, end) lies in a chunk of the thread's ring,
        // which only it writes until it moves past the next chunk.
        unsafe { std::ptr::write_volatile(at as *mut u32, one) };
        at += 4;
    }
    true
}

/// A drained ring's thread has filled its chunk (the cursor passed
/// `end`): the chunk is published to the drainer and the thread goes on
/// in the next one once the drainer has freed it, waiting a little for
/// that; when the drainer is behind or gone the thread spills, going on
/// after the ring in a file that grows as usual. False only when a spilled
/// thread's file cannot grow. Signals are blocked meanwhile: a handler's
/// events wait for the new chunk.
pub(crate) fn next_chunk(st: &mut ThreadState) -> bool {
    use std::sync::atomic::Ordering::Release;
    let _blocked = crate::process::sync::SignalsBlocked::all();
    if st.drain == 0 {
        return extend(st);
    }
    if st.cursor <= st.end {
        // A signal handler moved on already.
        return true;
    }
    let ctl = control(st);
    let k = st.drain_chunk + 1;
    word(&ctl.written).store(k, Release);
    let slots = st.drain / CHUNK;
    let at = st.file_base + ftail_abi::trace::drain::chunk_at(k, st.drain, NO_SPILL);
    // On the first lap the chunk's pages are allocated now; a full
    // filesystem makes the thread spill, and its growing file stops as
    // it would without a ring.
    let free = if k < slots {
        populate(at, CHUNK).is_ok()
    } else {
        wait_freed(ctl, k + 1 - slots)
    };
    st.drain_prev_end = st.end;
    if !free {
        word(&ctl.spill_from).store(k, Release);
        let at = st.file_base + RING_AT + st.drain;
        st.drain = 0;
        st.cursor = at;
        st.end = at;
        return extend(st);
    }
    st.drain_chunk = k;
    st.end = at + CHUNK;
    st.cursor = at;
    true
}

/// How long a thread waits for its drainer to free a chunk before it
/// spills, and how long without a sign of the drainer means it is gone.
const DRAIN_WAIT_NS: u64 = 50_000_000;
const DRAINER_GONE_NS: u64 = 500_000_000;

/// Waits until the drainer has freed `need` chunks; false when it has not
/// after [`DRAIN_WAIT_NS`], or is gone. Async-signal-safe.
fn wait_freed(ctl: &Control, need: u64) -> bool {
    use std::sync::atomic::Ordering::Acquire;
    let start = monotonic_ns();
    loop {
        if word(&ctl.freed).load(Acquire) >= need {
            return true;
        }
        let now = monotonic_ns();
        let beat = word(&ctl.heartbeat).load(Acquire);
        let gone = beat != 0 && now.saturating_sub(beat) > DRAINER_GONE_NS;
        if gone || now.saturating_sub(start) > DRAIN_WAIT_NS {
            return false;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000,
        };
        // SAFETY: nanosleep reads `pause` and writes nothing (no
        // remainder asked for).
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
