//! Creating and opening files in the trace directory, safely against
//! another local user: every file is created with `O_EXCL` (a name that
//! exists, a planted symbolic link included, is never opened, truncated or
//! written through) and mode 0600, relative to a descriptor of the trace
//! directory opened with `O_NOFOLLOW`, whose owner must be the process's
//! effective user. Existing files (the module list, appended to when a
//! library is loaded) are opened with `O_NOFOLLOW`.
//!
//! Used from the trampolines' slow paths (a thread's first event may come
//! in a signal handler), so nothing here allocates: paths are built in a
//! fixed buffer and only async-signal-safe system calls are made. The
//! directory descriptor is opened for each use and closed again, so the
//! program never sees a descriptor of ours it could close or inherit.

/// A NUL-terminated file name built without allocation (short: the
/// slow paths may run on a small coroutine or signal stack).
pub struct NameBuf {
    buf: [u8; 256],
    len: usize,
    overflowed: bool,
}

impl NameBuf {
    /// An empty name.
    pub fn new() -> Self {
        NameBuf {
            buf: [0; 256],
            len: 0,
            overflowed: false,
        }
    }

    /// Appends bytes.
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        if self.len + bytes.len() >= self.buf.len() {
            self.overflowed = true;
        } else {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        self
    }

    /// Appends a number in decimal.
    pub fn push_num(&mut self, mut n: u64) -> &mut Self {
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
        self.push(&digits[i..])
    }

    /// The bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The name with its NUL, or `None` when it did not fit.
    pub fn as_c(&mut self) -> Option<*const libc::c_char> {
        if self.overflowed || self.buf[..self.len].contains(&0) {
            return None;
        }
        self.buf[self.len] = 0;
        Some(self.buf.as_ptr().cast())
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

/// A descriptor of the trace directory, closed when dropped.
struct Dir(i32);

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// Opens the trace directory, refusing a symbolic link and a directory
/// another user owns. Err(errno) on failure.
fn open_dir() -> Result<Dir, i32> {
    open_dir_flags(libc::O_PATH)
}

/// The trace directory opened for reading its entries; the descriptor
/// is the caller's to close. Err(errno) on failure.
pub fn open_dir_for_listing() -> Result<i32, i32> {
    let d = open_dir_flags(libc::O_RDONLY)?;
    let fd = d.0;
    std::mem::forget(d);
    Ok(fd)
}

fn open_dir_flags(mode: i32) -> Result<Dir, i32> {
    let cfg = crate::CONFIG.get().ok_or(libc::ENOENT)?;
    let first = open_checked(&cfg.dir_c, mode);
    let Some(id) = cfg.dir_id else {
        return first.map(|(dir, _)| dir);
    };
    let why = match first {
        Ok((dir, found)) if found == id => return Ok(dir),
        Ok(_) => libc::ENOENT,
        Err(e) => e,
    };
    // Recorded into again: this trace is now `DIR.old`.
    match open_checked(&cfg.dir_old_c, mode) {
        Ok((dir, found)) if found == id => Ok(dir),
        _ => Err(why),
    }
}

/// Opens the directory `path`, refusing a symbolic link and a directory
/// another user owns; returns it with its (device, inode).
fn open_checked(path: &std::ffi::CStr, mode: i32) -> Result<(Dir, (u64, u64)), i32> {
    // SAFETY: `path` is NUL-terminated; O_PATH opens without reading.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            mode | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let dir = Dir(fd);
    let st = stat(dir.0)?;
    // SAFETY: geteuid has no preconditions.
    if st.st_uid != unsafe { libc::geteuid() } {
        return Err(libc::EACCES);
    }
    Ok((dir, (st.st_dev, st.st_ino)))
}

/// Creates `name` in the trace directory, exclusively, mode 0600, opened
/// for reading and writing. Err(errno) on failure (`EEXIST` when the name
/// is taken).
pub fn create(name: &mut NameBuf) -> Result<i32, i32> {
    let dir = open_dir()?;
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: `p` is NUL-terminated; the flags never follow a link nor
    // open an existing file.
    let fd = unsafe {
        libc::openat(
            dir.0,
            p,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// Removes `name` from the trace directory (a file this process just
/// created and gives up).
pub fn remove(name: &mut NameBuf) {
    let Ok(dir) = open_dir() else { return };
    if let Some(p) = name.as_c() {
        // SAFETY: `p` is NUL-terminated; unlinkat removes a name, never
        // follows it.
        unsafe { libc::unlinkat(dir.0, p, 0) };
    }
}

/// Removes `name` from the trace directory if it is still the regular
/// file `ino` (a file of this process's that is no longer needed); true
/// when it is gone, removed now or before.
pub fn remove_if(name: &mut NameBuf, ino: u64) -> bool {
    let Ok(dir) = open_dir() else { return false };
    let Some(p) = name.as_c() else { return false };
    // SAFETY: a zeroed stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated; the link itself is looked at, never
    // followed.
    if unsafe { libc::fstatat(dir.0, p, &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return errno() == libc::ENOENT;
    }
    if st.st_ino != ino || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return true;
    }
    // SAFETY: as above; unlinkat removes a name, never follows it.
    unsafe { libc::unlinkat(dir.0, p, 0) == 0 }
}

/// Opens the existing file `name` of the trace directory for appending,
/// never through a symbolic link. Err(errno) on failure.
pub fn open_append(name: &mut NameBuf) -> Result<i32, i32> {
    let dir = open_dir()?;
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: `p` is NUL-terminated; O_NOFOLLOW refuses a link.
    let fd = unsafe {
        libc::openat(
            dir.0,
            p,
            libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// Opens the existing regular file `name` of the trace directory for
/// reading and writing, never through a symbolic link, and checks that
/// it is a regular file of this user's. Err(errno) on failure.
pub fn open_rw(name: &mut NameBuf) -> Result<(i32, libc::stat), i32> {
    let dir = open_dir()?;
    let p = name.as_c().ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: `p` is NUL-terminated; O_NOFOLLOW refuses a link.
    let fd = unsafe { libc::openat(dir.0, p, libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stat(fd) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == me => Ok((fd, st)),
        Ok(_) => {
            close(fd);
            Err(libc::EACCES)
        }
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

/// `fstat` of a descriptor this module returned.
pub fn stat(fd: i32) -> Result<libc::stat, i32> {
    // SAFETY: a zeroed stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(errno());
    }
    Ok(st)
}

/// Writes all of `bytes` to `fd`; false on any failure.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Closes a descriptor this module returned.
pub fn close(fd: i32) {
    // SAFETY: the caller owns `fd`.
    unsafe { libc::close(fd) };
}
