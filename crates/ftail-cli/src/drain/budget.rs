//! The trace's count of bytes against `--max-size`, shared with the
//! runtime: updated as it does (`ftail-runtime`'s `record::budget`), under
//! a record lock on the budget file, never through a mapping.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use ftail_abi::trace::{TraceBudget, BUDGET_MAGIC, TRACE_VERSION};

const SIZE: usize = std::mem::size_of::<TraceBudget>();
const USED_AT: usize = std::mem::offset_of!(TraceBudget, used_bytes);
const MAX_AT: usize = std::mem::offset_of!(TraceBudget, max_bytes);
const PAGE: u64 = 4096;

/// Runs `f(used, max)`, which returns the new count and a result, on
/// the count of the budget file `path`; None when there is no whole
/// budget file (no limit can be kept then: the runtime stops taking).
fn update<R>(path: &Path, f: impl Fn(u64, u64) -> (u64, R)) -> Option<R> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    // The lock goes with the descriptor, closed on return.
    lock(&file)?;
    let mut b = [0u8; SIZE];
    file.read_exact_at(&mut b, 0).ok()?;
    let version = u32::from_le_bytes(b[8..12].try_into().ok()?);
    if b[..8] != BUDGET_MAGIC || version != TRACE_VERSION {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let (now, r) = f(word(USED_AT), word(MAX_AT));
    file.write_all_at(&now.to_le_bytes(), USED_AT as u64).ok()?;
    Some(r)
}

fn lock(file: &File) -> Option<()> {
    // SAFETY: a zeroed flock is valid; the fields are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_len = SIZE as libc::off_t;
    loop {
        // SAFETY: F_SETLKW with a valid flock on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &lock) } == 0 {
            return Some(());
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Takes exactly `n` bytes (in pages), or nothing: false when they
/// are not all left. Without a budget file, nothing limits.
pub(super) fn take_all(path: &Path, n: u64) -> bool {
    let n = n.div_ceil(PAGE) * PAGE;
    update(path, |u, max| {
        let fits = max.saturating_sub(u) >= n;
        (if fits { u + n } else { u }, fits)
    })
    .unwrap_or(true)
}

/// Takes `n` bytes whatever is left.
pub(super) fn force(path: &Path, n: u64) {
    let _ = update(path, |u, _| (u.saturating_add(n), ()));
}

/// Gives back `n` bytes taken before.
pub(super) fn give_back(path: &Path, n: u64) {
    let _ = update(path, |u, _| (u.saturating_sub(n), ()));
}
