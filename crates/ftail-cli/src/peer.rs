//! Who is at the other end of a Unix socket.

use std::os::fd::AsRawFd;

/// The pid, uid and gid of the process at the other end of `socket`, as
/// the kernel recorded them when the connection was made.
///
/// # Errors
///
/// When `getsockopt(SO_PEERCRED)` fails.
pub fn credentials(socket: &impl AsRawFd) -> std::io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_PEERCRED) writes at most `len` bytes into the
    // ucred it is given; the descriptor is the caller's open socket.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(cred)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
