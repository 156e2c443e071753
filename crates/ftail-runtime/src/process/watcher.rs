//! Telling `ftail record`'s watcher that the program is exiting, so that
//! its summary ("trace written to …") is printed before the program's
//! parent — a shell, a script — sees the program end and goes on.
//!
//! `ftail record` `exec`s the program, so the watcher is no relative of
//! it and learns of its end only once the parent may already have
//! resumed. The process `ftail record` started (`FTAIL_WATCH=PID:NAME`:
//! that pid, through any `exec`) therefore connects at exit to the
//! watcher's listening socket `NAME` (abstract: nothing on disk), and
//! waits until the watcher has printed and closed the connection, at
//! most [`WAIT_MS`]. The descriptor exists only during the exit handlers
//! that run after the program's own; no other process waits. Any failure
//! (no watcher, a socket not of this user) means exiting at once.
//! System calls only: async-signal-safe, for `_exit` from a handler.

use crate::process::config::Watch;

/// The longest the exit waits for the watcher.
const WAIT_MS: i32 = 2_000;

/// The program is exiting: wait for the watcher's summary if this is the
/// process `ftail record` started.
pub fn announce_exit(watch: &Watch) {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } as u32 != watch.pid {
        return;
    }
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return;
    }
    if connect(fd, watch) && listener_is_ours(fd) {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; poll only writes its `revents`. The
        // watcher never writes: readable means it closed (EOF) or failed.
        unsafe { libc::poll(&mut p, 1, WAIT_MS) };
    }
    // SAFETY: closing the descriptor made above.
    unsafe { libc::close(fd) };
}

fn connect(fd: i32, watch: &Watch) -> bool {
    // SAFETY: an all-zero sockaddr_un is valid (family set below).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // Abstract: a NUL first, then the name (no terminator).
    let name = watch.name();
    if name.len() + 1 > addr.sun_path.len() {
        return false;
    }
    for (i, &b) in name.iter().enumerate() {
        addr.sun_path[i + 1] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        ) == 0
    }
}

/// Whether the socket's other end was opened by this process's user:
/// another user who took the name must not make the exit wait.
fn listener_is_ours(fd: i32) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a ucred of at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid has no preconditions.
    r == 0 && cred.uid == unsafe { libc::getuid() }
}
