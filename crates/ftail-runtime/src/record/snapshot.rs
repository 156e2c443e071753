//! Snapshots of a flight recorder (`ftail record --ring`): each thread's
//! ring is its event file, a file-backed shared mapping, so the latest
//! events are on disk whenever the process ends — exit, `abort`, a crash,
//! SIGKILL — with no handler to run and no signal to intercept. A
//! snapshot keeps the rings as they are *now* while the program runs on:
//! `ftail ctl PID snapshot`, or the signal `--snapshot-signal` names,
//! copies this process image's files (`KEY.info`, `KEY.modules`,
//! `KEY.status` and every `KEY-TID.events`) into a new directory
//! `snapshot-N` of the trace directory, which reads as a trace of its
//! own. Each copy's room is taken from the trace's budget (`--max-size`),
//! the files of ended ring threads removed to make it where needed; a
//! snapshot that does not fit is removed whole, refused (`EDQUOT`) and
//! counted in `KEY.status`.
//!
//! Copies are made by the kernel (`sendfile` from file to file), so the
//! code runs in a signal handler: no allocation, no lock, only
//! async-signal-safe system calls, names built in stack buffers. A thread
//! that writes while its ring is copied may leave one event half-written
//! in the copy; the reader finds a ring's oldest event by time.
//!
//! A ring's file also holds its thread's trace stack, right after the
//! ring; what it cannot hold is how deep the stack is (that lives with
//! the thread), which a reader needs to name the functions that ran all
//! through the window. A snapshot writes each thread's depth into its
//! copy's header, and so does a crash (a fatal signal, `abort`) into the
//! live files, before the signal goes on to the program's own handler or
//! its default action: the handler is put back and the signal raised
//! again, never swallowed. Threads are found in a fixed table of their
//! states' addresses ([`register`]), and another thread's state is read
//! with `process_vm_readv` on this process, which fails cleanly instead
//! of faulting if the thread has just exited.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ftail_abi::trace::EventFileHeader;

use crate::process::files::{self, errno, NameBuf};
use crate::record::state::ThreadState;

/// Most threads a snapshot or a crash finds at once; threads beyond
/// keep their rings but not their depth.
const MAX_THREADS: usize = 4096;
/// The states of the threads that record into rings (0: a free slot).
static THREADS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

/// Adds the calling thread's state to the table.
pub fn register(st: &ThreadState) {
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

/// Takes the calling thread's state out of the table (it exits).
pub fn unregister(st: &ThreadState) {
    let me = st as *const ThreadState as u64;
    for slot in &THREADS {
        let _ = slot.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// What a snapshot or a crash needs of a thread: its depth, its file's
/// mapping and name. Read without trusting that the thread still lives.
struct Seen {
    depth: u64,
    file_base: u64,
    file_id: u64,
}

fn read_state(addr: u64) -> Option<Seen> {
    let mut words = [0u64; 3];
    let local = [
        libc::iovec {
            iov_base: std::ptr::addr_of_mut!(words[0]).cast(),
            iov_len: 8,
        },
        libc::iovec {
            iov_base: std::ptr::addr_of_mut!(words[1]).cast(),
            iov_len: 8,
        },
        libc::iovec {
            iov_base: std::ptr::addr_of_mut!(words[2]).cast(),
            iov_len: 8,
        },
    ];
    let field = |off: usize| libc::iovec {
        iov_base: (addr as usize + off) as *mut libc::c_void,
        iov_len: 8,
    };
    let remote = [
        field(std::mem::offset_of!(ThreadState, depth)),
        field(std::mem::offset_of!(ThreadState, file_base)),
        field(std::mem::offset_of!(ThreadState, file_id)),
    ];
    // SAFETY: reading this process's own memory into local words; the
    // kernel checks the remote addresses and fails with EFAULT instead of
    // faulting.
    let n =
        unsafe { libc::process_vm_readv(libc::getpid(), local.as_ptr(), 3, remote.as_ptr(), 3, 0) };
    (n == 24).then_some(Seen {
        depth: words[0],
        file_base: words[1],
        file_id: words[2],
    })
}

/// Offset of `open_at_end` in an event file.
const OPEN_AT_END: u64 = std::mem::offset_of!(EventFileHeader, open_at_end) as u64;

/// Copies this process image's files into a new `snapshot-N` directory
/// of the trace directory. Returns N and the number of threads' files
/// copied, or Err(errno).
pub fn take() -> Result<(u64, u64), i32> {
    take_marked(None)
}

/// As [`take`], and writes `mark` into the snapshot's
/// `ftail_abi::trigger::MARK_FILE` (the call that took it).
pub fn take_marked(mark: Option<&[u8]>) -> Result<(u64, u64), i32> {
    let dir = files::open_dir_for_listing()?;
    let result = take_in(dir, mark);
    files::close(dir);
    result
}

fn take_in(dir: i32, mark: Option<&[u8]>) -> Result<(u64, u64), i32> {
    // A fresh directory: snapshot-1, snapshot-2, ...
    let mut n = 0u64;
    let mut name = loop {
        n += 1;
        let mut name = NameBuf::new();
        name.push(b"snapshot-").push_num(n);
        let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
        // SAFETY: a NUL-terminated name relative to our directory
        // descriptor; mkdirat never follows a link at the last component.
        if unsafe { libc::mkdirat(dir, p, 0o700) } == 0 {
            break name;
        }
        if errno() != libc::EEXIST || n >= 100_000 {
            return Err(errno());
        }
    };
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: as above; O_NOFOLLOW refuses a link put there meanwhile.
    let out = unsafe {
        libc::openat(
            dir,
            p,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if out < 0 {
        let e = errno();
        // SAFETY: removing the empty directory just made.
        unsafe { libc::unlinkat(dir, p, libc::AT_REMOVEDIR) };
        return Err(e);
    }
    // The directory's own block, then each copy, from the trace's budget.
    let mut taken = 0u64;
    let copied = if take_room(PAGE, &mut taken) {
        copy_image_files(dir, out, &mut taken)
    } else {
        Err(libc::EDQUOT)
    };
    let copied = match (copied, mark) {
        (Ok(n), Some(mark)) => write_mark(out, mark, &mut taken).map(|()| n),
        (other, _) => other,
    };
    if copied.is_ok() {
        note_depths_in_copies(out);
    }
    if copied == Err(libc::EDQUOT) {
        // No room for the whole snapshot: none of it stays.
        remove_all(out);
        // SAFETY: removing the directory just emptied, by its name in ours.
        unsafe { libc::unlinkat(dir, p, libc::AT_REMOVEDIR) };
        crate::record::budget::give_back(taken);
        crate::process::status::snapshot_refused();
    }
    files::close(out);
    copied.map(|threads| (n, threads))
}

const PAGE: u64 = 4096;

/// Writes the snapshot's mark file (a page of the budget).
fn write_mark(out: i32, mark: &[u8], taken: &mut u64) -> Result<(), i32> {
    if !take_room(PAGE, taken) {
        return Err(libc::EDQUOT);
    }
    let mut name = NameBuf::new();
    name.push(ftail_abi::trigger::MARK_FILE.as_bytes());
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: a NUL-terminated name in the snapshot's directory, created
    // afresh, never through a link.
    let fd = unsafe {
        libc::openat(
            out,
            p,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let ok = files::write_all(fd, mark);
    files::close(fd);
    if ok {
        Ok(())
    } else {
        Err(libc::EIO)
    }
}

/// Takes `n` bytes (whole pages) from the trace's budget, adding them to
/// `taken`; false when there is no room for them.
fn take_room(n: u64, taken: &mut u64) -> bool {
    let n = n.div_ceil(PAGE) * PAGE;
    let ok = crate::record::retired::take_room(n);
    if ok {
        *taken += n;
    }
    ok
}

/// Removes every file of the directory `out`.
fn remove_all(out: i32) {
    each_entry(out, |name, _| {
        if let Some(p) = name.as_c() {
            // SAFETY: a NUL-terminated name in our directory; unlinkat
            // never follows it.
            unsafe { libc::unlinkat(out, p, 0) };
        }
        Ok(())
    })
    .ok();
}

/// Writes each ring thread's depth into its copy's header.
fn note_depths_in_copies(out: i32) {
    for slot in &THREADS {
        let addr = slot.load(Ordering::Acquire);
        let Some(seen) = (addr != 0).then(|| read_state(addr)).flatten() else {
            continue;
        };
        let mut name =
            crate::process::key::event_file_name(seen.file_id as u32, seen.file_id >> 32);
        let Some(p) = name.as_c() else { continue };
        // SAFETY: a NUL-terminated name in the snapshot's directory, never
        // followed through a link.
        let fd =
            unsafe { libc::openat(out, p, libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            continue;
        }
        let v = (seen.depth + 1).to_le_bytes();
        // SAFETY: writing 8 bytes from a local array into our own file.
        unsafe { libc::pwrite(fd, v.as_ptr().cast(), 8, OPEN_AT_END as libc::off_t) };
        files::close(fd);
    }
}

/// Writes each ring thread's depth into its live file's header (a
/// crash), through `process_vm_writev`: a mapping that is gone fails
/// cleanly.
fn note_depths_live() {
    for slot in &THREADS {
        let addr = slot.load(Ordering::Acquire);
        let Some(seen) = (addr != 0).then(|| read_state(addr)).flatten() else {
            continue;
        };
        if seen.file_base == 0 {
            continue;
        }
        let v = seen.depth + 1;
        let local = libc::iovec {
            iov_base: std::ptr::addr_of!(v) as *mut libc::c_void,
            iov_len: 8,
        };
        let remote = libc::iovec {
            iov_base: (seen.file_base + OPEN_AT_END) as *mut libc::c_void,
            iov_len: 8,
        };
        // SAFETY: writing 8 bytes of this process's own memory, checked
        // by the kernel (EFAULT if the mapping is gone).
        unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    }
}

/// The fatal signals after which a ring's depths are noted.
const CRASH_SIGNALS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
];

/// The program's dispositions of [`CRASH_SIGNALS`] before ours (handler
/// address, and whether it takes three arguments), by signal number.
static CRASH_OLD: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];
static CRASH_OLD_FLAGS: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];

/// Installs the crash handler for the fatal signals (ring mode, at
/// start-up, before the program's own code: a handler the program
/// installs later replaces it).
pub fn install_crash_handlers() {
    for sig in CRASH_SIGNALS {
        // SAFETY: sigaction structures are plain data; the handler makes
        // only async-signal-safe calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_crash as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(sig, &new, &mut old) == 0 {
                CRASH_OLD[sig as usize].store(old.sa_sigaction, Ordering::Relaxed);
                CRASH_OLD_FLAGS[sig as usize].store(old.sa_flags as usize, Ordering::Relaxed);
            }
        }
    }
}

/// A fatal signal: notes every ring thread's depth, then hands the
/// signal on: to the handler the program had before, called as it asked;
/// or, for the default action, the disposition is put back and the
/// signal raised again if something sent it (a fault simply happens
/// again when the handler returns).
extern "C" fn on_crash(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let _errno = crate::record::write::KeepErrno::save();
    note_depths_live();
    let i = sig as usize;
    let old = CRASH_OLD[i].load(Ordering::Relaxed);
    let flags = CRASH_OLD_FLAGS[i].load(Ordering::Relaxed) as i32;
    if old != libc::SIG_DFL && old != libc::SIG_IGN {
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the program's own three-argument handler.
            let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old) };
            f(sig, info, ctx);
        } else {
            // SAFETY: the program's own one-argument handler.
            let f: extern "C" fn(i32) = unsafe { std::mem::transmute(old) };
            f(sig);
        }
        return;
    }
    // SAFETY: putting the old disposition back; reading the siginfo the
    // kernel passed; tgkill to this very thread.
    unsafe {
        let mut back: libc::sigaction = std::mem::zeroed();
        back.sa_sigaction = old;
        libc::sigemptyset(&mut back.sa_mask);
        libc::sigaction(sig, &back, std::ptr::null_mut());
        let sent = info.is_null() || (*info).si_code <= 0;
        if sent {
            // Pending until this handler returns (the signal is blocked
            // meanwhile), then its default action.
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                sig,
            );
        }
    }
}

/// Copies every file of this image from `dir` to `out`; the number of
/// event files copied. Err(EDQUOT) when the trace's budget has no room
/// for one of them.
fn copy_image_files(dir: i32, out: i32, taken: &mut u64) -> Result<u64, i32> {
    let key = crate::process::key::get();
    let mut threads = 0u64;
    each_entry(dir, |name, kind| {
        let entry = name.bytes();
        if kind != libc::DT_REG || !belongs(entry, key) {
            return Ok(());
        }
        let events = entry.ends_with(b".events");
        match copy_file(dir, out, name, taken) {
            Ok(()) if events => threads += 1,
            Err(libc::EDQUOT) => return Err(libc::EDQUOT),
            _ => {}
        }
        Ok(())
    })?;
    Ok(threads)
}

/// Calls `each(name, type)` for every entry of the directory `dir`,
/// from its current position to its end; stops at the first Err.
fn each_entry(
    dir: i32,
    mut each: impl FnMut(&mut NameBuf, u8) -> Result<(), i32>,
) -> Result<(), i32> {
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: getdents64 fills at most buf.len() bytes.
        let got = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if got < 0 {
            return Err(errno());
        }
        if got == 0 {
            return Ok(());
        }
        let mut at = 0usize;
        while at + 19 < got as usize {
            // struct linux_dirent64: ino (8), off (8), reclen (2), type
            // (1), then the NUL-terminated name.
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let kind = buf[at + 18];
            let name_bytes = &buf[at + 19..(at + reclen).min(got as usize)];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let mut name = NameBuf::new();
            name.push(&name_bytes[..len]);
            each(&mut name, kind)?;
            if reclen == 0 {
                break;
            }
            at += reclen;
        }
    }
}

/// Whether `name` is a file of image `key`: `KEY.info`, `KEY.modules`,
/// `KEY.status`, `KEY-TID.events` (not another image's `KEY~N...`).
fn belongs(name: &[u8], key: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(key) else {
        return false;
    };
    matches!(rest, b".info" | b".modules" | b".status")
        || (rest.first() == Some(&b'-') && rest.ends_with(b".events"))
}

/// Copies `name` from `dir` to a new file of the same name in `out`, as
/// long as it is now, its room taken from the trace's budget first.
fn copy_file(dir: i32, out: i32, name: &mut NameBuf, taken: &mut u64) -> Result<(), i32> {
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: a NUL-terminated name relative to our descriptor, never
    // followed through a link.
    let src = unsafe { libc::openat(dir, p, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if src < 0 {
        return Err(errno());
    }
    let size = match files::stat(src) {
        Ok(st) => st.st_size as u64,
        Err(e) => {
            files::close(src);
            return Err(e);
        }
    };
    if !take_room(size, taken) {
        files::close(src);
        return Err(libc::EDQUOT);
    }
    // SAFETY: as above; the copy is created exclusively.
    let dst = unsafe {
        libc::openat(
            out,
            p,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    let result = if dst < 0 {
        Err(errno())
    } else {
        send_all(src, dst, size)
    };
    for fd in [src, dst] {
        if fd >= 0 {
            files::close(fd);
        }
    }
    result
}

/// Copies the first `size` bytes of `src` to `dst`.
fn send_all(src: i32, dst: i32, size: u64) -> Result<(), i32> {
    let mut done = 0u64;
    while done < size {
        // SAFETY: sendfile between two descriptors we own, reading from
        // the source's current offset.
        let n = unsafe { libc::sendfile(dst, src, std::ptr::null_mut(), (size - done) as usize) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return if n == 0 { Ok(()) } else { Err(errno()) };
        }
        done += n as u64;
    }
    Ok(())
}

/// The signal handler of `--snapshot-signal`: takes a snapshot (keeping
/// the program's errno), then runs the handler the program had before,
/// if it had one.
extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let _errno = crate::record::write::KeepErrno::save();
    let _ = take();
    let old = PREVIOUS.load(Ordering::Relaxed);
    if old == libc::SIG_DFL || old == libc::SIG_IGN {
        return;
    }
    if PREVIOUS_SIGINFO.load(Ordering::Relaxed) {
        // SAFETY: the program's own three-argument handler, as it asked
        // to be called.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(old) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program's own one-argument handler.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(old) };
        f(sig);
    }
}

/// The handler the program had for the snapshot signal before ours.
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
/// Whether that handler takes three arguments (`SA_SIGINFO`).
static PREVIOUS_SIGINFO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the handler for `sig` (at start-up, before the program's
/// own code runs).
pub fn install(sig: i32) {
    // SAFETY: sigaction structures are plain data; installing a handler
    // that only makes async-signal-safe calls.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_signal as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(sig, &new, &mut old) == 0 {
            PREVIOUS.store(old.sa_sigaction, Ordering::Relaxed);
            PREVIOUS_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
        }
    }
}
