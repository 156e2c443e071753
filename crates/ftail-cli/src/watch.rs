//! Running the program in ftail's own process, with a watcher left behind.
//!
//! Service managers, pid files, `kill $!` and test harnesses take the pid
//! they started for the program's. So `ftail record` does not run the
//! program as its child: it `exec`s it, and the pid stays the program's.
//! What must happen after the program ends (the end-of-run summary) is
//! done by a watcher process that the program cannot see:
//!
//! * it is forked twice, so it is not the program's child (no extra child,
//!   no SIGCHLD: the intermediate process is reaped, and the SIGCHLD it
//!   sends is discarded, before the `exec`);
//! * it closes every descriptor but standard error (standard input and
//!   output become `/dev/null`), so it holds no pipe of the program's open
//!   but the one its messages go to;
//! * it ignores SIGINT, SIGQUIT and SIGTSTP, so Ctrl-C and Ctrl-Z act on
//!   the program alone;
//! * it learns whether the `exec` happened through a close-on-exec pipe:
//!   end of file means it did; an errno written into it means it failed
//!   (`ftail record` then reports the error itself and the watcher leaves
//!   quietly);
//! * it waits for the program's end on a pidfd taken before the `exec`,
//!   so a reused pid cannot fool it; where `pidfd_open` is not available
//!   it polls `/proc/PID/stat`, checking the process's start time;
//! * it prints the summary before the program's parent sees it end: the
//!   runtime, in the process started (`FTAIL_WATCH=PID:NAME`), connects
//!   at exit to the watcher's abstract socket `NAME` (created before the
//!   fork, close-on-exec: the program never holds it) and waits, at most
//!   two seconds, until the watcher has printed and closed the
//!   connection; a program killed by a signal, or one that `exec`s an
//!   untraced program, is summarised once it has ended, as before;
//! * it learns how the program ended without being its parent: from
//!   `/proc/PID/stat` while the program is a zombie, or from its pidfd
//!   (`PIDFD_GET_INFO`, Linux 6.15) once its parent has reaped it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Signals the watcher leaves to the program (sent to the whole
/// foreground process group by the terminal).
const TERMINAL_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP];

/// How often the watcher looks at `/proc/PID/stat` without a pidfd.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long the watcher waits for the program's exit status to become
/// readable (the parent reaping it) before it reports none.
const STATUS_WAIT: Duration = Duration::from_secs(1);

/// What the watcher does for `ftail record`.
pub struct Hooks<'a> {
    /// The lines printed on standard error once the program has ended,
    /// or is exiting.
    pub summary: &'a dyn Fn() -> Vec<String>,
    /// Told the program's wait status, where it could be learnt.
    pub ended: &'a dyn Fn(i32),
    /// The trace directory whose drained rings the watcher drains
    /// (`--drain`), until the program and its children are gone.
    pub drain: Option<&'a std::path::Path>,
}

/// The variable that tells the runtime where the watcher listens.
const WATCH_ENV: &str = "FTAIL_WATCH";

/// The program as the watcher knows it.
struct Program {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    start: Option<u64>,
    /// Where the runtime says the program is exiting.
    listener: Option<OwnedFd>,
    /// Its scheduler events, opened to start at the `exec`, and the file
    /// they go to.
    sched: Option<(crate::sched::Events, File)>,
}

/// Replaces this process with `cmd`, after starting a watcher that prints
/// the summary of `run` on standard error once the program is exiting or
/// has ended. Returns only when the watcher or the program could not be
/// started, with the reason.
pub fn exec(
    cmd: &mut Command,
    run: &Hooks<'_>,
    sched: Option<(crate::sched::Events, File)>,
) -> std::io::Error {
    let (outcome_read, outcome_write) = match pipe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let pidfd = pidfd_open(pid);
    let start = start_time(pid);
    let name = socket_name(pid);
    let listener = listen(&name);
    if listener.is_some() {
        cmd.env(WATCH_ENV, format!("{pid}:{name}"));
    }
    let program = Program {
        pid,
        pidfd,
        start,
        listener,
        sched,
    };
    // A subreaper keeps that role across exec: the watcher, orphaned,
    // would become the program's child. Not one while forking.
    let subreaper = set_subreaper(false);
    // SIGCHLD (from the intermediate process) and the terminal's signals
    // stay pending until the watcher ignores them and this process has
    // cleaned up after the fork.
    let mut blocked = empty_sigset();
    let mut old_mask = empty_sigset();
    for sig in TERMINAL_SIGNALS.iter().chain(&[libc::SIGCHLD]) {
        // SAFETY: `blocked` is an initialised sigset_t.
        unsafe { libc::sigaddset(&mut blocked, *sig) };
    }
    // SAFETY: both sets are initialised; this process has one thread.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut old_mask) };
    // SAFETY: ftail has a single thread here, so the child may run any
    // code; it never returns from `intermediate`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        intermediate(program, outcome_read, &old_mask, run);
    }
    let forked = if child < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        reap(child);
        Ok(())
    };
    discard_sigchld();
    if subreaper {
        set_subreaper(true);
    }
    // SAFETY: `old_mask` was filled by pthread_sigmask above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    if let Err(e) = forked {
        return e;
    }
    drop(outcome_read);
    drop(program);
    let err = cmd.exec();
    // The exec failed: tell the watcher, which then leaves quietly.
    let code = err.raw_os_error().unwrap_or(libc::ENOEXEC);
    let _ = File::from(outcome_write).write_all(&code.to_ne_bytes());
    err
}

/// The first child: forks the watcher and leaves at once, so that the
/// watcher is nobody's child but init's (or a subreaper's).
fn intermediate(program: Program, outcome: OwnedFd, mask: &libc::sigset_t, run: &Hooks<'_>) -> ! {
    // SAFETY: this process has one thread (a fork of one).
    if unsafe { libc::fork() } == 0 {
        watcher(program, outcome, mask, run);
    }
    // SAFETY: _exit ends the process without running anything inherited.
    unsafe { libc::_exit(0) }
}

/// The watcher: waits for the program to start and end, then prints the
/// summary.
fn watcher(program: Program, outcome: OwnedFd, mask: &libc::sigset_t, run: &Hooks<'_>) -> ! {
    for sig in TERMINAL_SIGNALS {
        // SAFETY: ignoring a signal is always allowed.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: `mask` is the caller's original, initialised mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    let mut keep = vec![
        libc::STDERR_FILENO,
        outcome.as_raw_fd(),
        program.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        program.listener.as_ref().map_or(-1, AsRawFd::as_raw_fd),
    ];
    if let Some((events, file)) = &program.sched {
        keep.extend(events.raw_fds());
        keep.push(file.as_raw_fd());
    }
    close_all_but(&keep);
    let mut program = program;
    let sched = program.sched.take();
    let mut code = [0u8; 4];
    let mut outcome = File::from(outcome);
    let exec_failed = loop {
        match outcome.read(&mut code) {
            Ok(n) => break n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    if !exec_failed {
        let drainer = run
            .drain
            .map(|dir| crate::drain::Drainer::start(dir.to_path_buf()));
        let mut sched = sched.and_then(|(events, file)| events.record(file).ok());
        let print = || {
            for line in (run.summary)() {
                crate::out::stderr(&line);
            }
        };
        if let Some(exiting) = program.wait_end_or_exit_call() {
            // The program waits in its exit for the summary: printed now,
            // then it is let go. Its scheduler events are complete before
            // its parent can see it end and read the trace.
            if let Some(s) = sched.take() {
                s.finish();
            }
            print();
            drop(exiting);
            program.wait_end();
            if let Some(status) = program.wait_status() {
                (run.ended)(status);
            }
        } else {
            if let Some(s) = sched.take() {
                s.finish();
            }
            if let Some(status) = program.wait_status() {
                (run.ended)(status);
            }
            print();
        }
        if let Some(d) = drainer {
            d.finish();
        }
    }
    // SAFETY: _exit ends the process without running anything inherited.
    unsafe { libc::_exit(0) }
}

/// A close-on-exec pipe: (reading end, writing end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pidfd of process `pid` (close-on-exec), or `None` where the kernel
/// has no `pidfd_open` (before 5.3) or a sandbox forbids it.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new descriptor owned by nothing
    // else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), and
/// whether it is still running (not a zombie).
fn stat(pid: libc::pid_t) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let running = !matches!(fields.first(), Some(&("Z" | "X" | "x")));
    Some((fields.get(19)?.parse().ok()?, running))
}

fn start_time(pid: libc::pid_t) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

/// Waits until the process behind `pidfd` has ended.
fn wait_pidfd(pidfd: &OwnedFd) {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; poll only writes its `revents`.
    while unsafe { libc::poll(&mut p, 1, -1) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Waits until process `pid`, started at `start`, has ended: it is gone,
/// a zombie, or its pid now belongs to another process. Without `/proc`
/// (no start time), until the pid is gone.
fn wait_polling(pid: libc::pid_t, start: Option<u64>) {
    loop {
        if !running(pid, start) {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

impl Program {
    /// Waits until the program has ended, or until its runtime calls from
    /// its exit; returns that call's connection, which holds the program
    /// in its exit until dropped.
    fn wait_end_or_exit_call(&self) -> Option<OwnedFd> {
        let Some(listener) = &self.listener else {
            self.wait_end();
            return None;
        };
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Without a pidfd, the end is polled for.
        let timeout = if self.pidfd.is_some() {
            -1
        } else {
            POLL_INTERVAL.as_millis() as i32
        };
        loop {
            // SAFETY: two valid pollfds (a negative fd is ignored); poll
            // only writes their `revents`.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if fds[0].revents & libc::POLLIN != 0 {
                if let Some(conn) = accept_from(listener, self.pid) {
                    return Some(conn);
                }
            }
            let ended = match &self.pidfd {
                Some(_) => fds[1].revents != 0,
                None => !running(self.pid, self.start),
            };
            if ended {
                return None;
            }
        }
    }

    fn wait_end(&self) {
        match &self.pidfd {
            Some(fd) => wait_pidfd(fd),
            None => wait_polling(self.pid, self.start),
        }
    }

    fn wait_status(&self) -> Option<i32> {
        wait_status(self.pid, self.start, self.pidfd.as_ref())
    }
}

/// A random name for the watcher's socket, unguessable by others.
fn socket_name(pid: libc::pid_t) -> String {
    let mut random = [0u8; 8];
    // SAFETY: getrandom writes at most the buffer's length.
    unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    format!("ftail-watch-{pid}-{:016x}", u64::from_ne_bytes(random))
}

/// A listening abstract Unix socket named `name` (close-on-exec,
/// non-blocking), or `None` where it cannot be made.
fn listen(name: &str) -> Option<OwnedFd> {
    // SAFETY: a plain socket call; the result is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is valid (family set below).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, &b) in name.as_bytes().iter().enumerate() {
        addr.sun_path[i + 1] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    // SAFETY: listen on the socket just bound.
    (bound == 0 && unsafe { libc::listen(fd.as_raw_fd(), 4) } == 0).then_some(fd)
}

/// A connection on `listener` from process `pid`; others are refused.
fn accept_from(listener: &OwnedFd, pid: libc::pid_t) -> Option<OwnedFd> {
    loop {
        // SAFETY: accepting on a listening socket; the result is owned
        // below. Non-blocking: none pending ends the loop.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just accepted and is owned by nothing else.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        if crate::peer::credentials(&conn).is_ok_and(|c| c.pid == pid) {
            return Some(conn);
        }
    }
}

/// Whether process `pid`, started at `start`, still runs.
fn running(pid: libc::pid_t, start: Option<u64>) -> bool {
    match start {
        Some(start) => matches!(stat(pid), Some((s, true)) if s == start),
        // SAFETY: signal 0 only asks whether the process exists.
        None => (unsafe { libc::kill(pid, 0) }) == 0,
    }
}

/// The wait status of process `pid` (started at `start`), which has
/// ended: read while it is a zombie, or from `pidfd` once reaped. `None`
/// when neither tells it within [`STATUS_WAIT`] (an older kernel, and a
/// parent that reaped the program at once).
fn wait_status(pid: libc::pid_t, start: Option<u64>, pidfd: Option<&OwnedFd>) -> Option<i32> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = zombie_status(pid, start) {
            return Some(status);
        }
        if let Some(status) = pidfd.and_then(pidfd_exit_status) {
            return Some(status);
        }
        if t0.elapsed() >= STATUS_WAIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The wait status of zombie `pid` started at `start` (field 52 of
/// `/proc/PID/stat`, Linux 3.5).
fn zombie_status(pid: libc::pid_t, start: Option<u64>) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let started = fields.get(19).and_then(|f| f.parse::<u64>().ok());
    let same = start.is_some() && started == start;
    (fields.first() == Some(&"Z") && same)
        .then(|| fields.get(49)?.parse().ok())
        .flatten()
}

/// `struct pidfd_info` as of Linux 6.15 (`PIDFD_INFO_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_INFO_EXIT`: the exit status is asked for, or was given.
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: u64 =
    3 << 30 | (std::mem::size_of::<PidfdInfo>() as u64) << 16 | 0xFF << 8 | 11;

/// The wait status of the reaped process behind `pidfd`, where the kernel
/// keeps it (Linux 6.15 and later).
fn pidfd_exit_status(pidfd: &OwnedFd) -> Option<i32> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO fills at most the struct whose size its
    // request number carries; an older kernel fails with an error.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// Makes this process a child subreaper or not; returns whether it was
/// one.
fn set_subreaper(on: bool) -> bool {
    let mut was: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer;
    // PR_SET_CHILD_SUBREAPER takes a flag.
    unsafe {
        libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut was as *mut libc::c_int);
        if (was != 0) != on {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, libc::c_ulong::from(on));
        }
    }
    was != 0
}

/// Waits for the intermediate child, which leaves at once.
fn reap(child: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Discards the pending SIGCHLD the intermediate child sent (SIGCHLD is
/// blocked), so the program does not inherit it.
fn discard_sigchld() {
    let mut set = empty_sigset();
    // SAFETY: `set` is initialised; a zero timeout makes sigtimedwait
    // return at once whether or not SIGCHLD is pending.
    unsafe {
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGCHLD {}
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

/// Points standard input and output at `/dev/null` and closes every other
/// descriptor but those in `keep`.
fn close_all_but(keep: &[RawFd]) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto the standard descriptors from an open one.
        unsafe {
            libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO);
            libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
        }
    }
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (0..1024).collect(),
    };
    for fd in open {
        if fd > libc::STDOUT_FILENO && !keep.contains(&fd) {
            // SAFETY: closing a descriptor nothing in this process uses
            // (the watcher runs no other code); EBADF is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_sees_a_child_end_even_before_it_is_reaped() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let start = start_time(pid);
        assert!(start.is_some());
        let t0 = std::time::Instant::now();
        // The child stays a zombie until `wait` below: that counts as ended.
        wait_polling(pid, start);
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(child.wait().unwrap().success());
        // A pid whose start time differs is another process.
        wait_polling(std::process::id() as libc::pid_t, Some(1));
    }

    #[test]
    fn the_exit_status_is_read_from_a_zombie_or_a_reaped_pidfd() {
        let mut child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let start = start_time(pid);
        let pidfd = pidfd_open(pid);
        wait_polling(pid, start);
        assert_eq!(wait_status(pid, start, pidfd.as_ref()), Some(7 << 8));
        child.wait().unwrap();
        if let Some(fd) = &pidfd {
            // Reaped: only a kernel that keeps it (6.15) still tells.
            let reaped = wait_status(pid, start, Some(fd));
            assert!(reaped.is_none() || reaped == Some(7 << 8), "{reaped:?}");
        }
    }
}
