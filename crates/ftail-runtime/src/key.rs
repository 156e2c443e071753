//! The name stem of this process image's files in the trace directory:
//! `PID`, or `PID~N` when an earlier image of the same process (before an
//! `exec`) already uses `PID`. Chosen at start-up and again in a forked
//! child, both single-threaded; read (without allocation) when a thread
//! creates its event file.

use std::cell::UnsafeCell;
use std::path::Path;

struct KeyBuf(UnsafeCell<([u8; 48], usize)>);

// SAFETY: written only while the process is single-threaded (constructor,
// fork child handler), read afterwards.
unsafe impl Sync for KeyBuf {}

static KEY: KeyBuf = KeyBuf(UnsafeCell::new(([0; 48], 0)));

/// Claims a fresh stem in `dir` by creating its `.info` file exclusively.
pub fn choose(dir: &Path) -> String {
    let pid = std::process::id();
    let mut key = pid.to_string();
    for n in 1..1000 {
        let claimed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("{key}.info")))
            .is_ok();
        if claimed {
            break;
        }
        key = format!("{pid}~{n}");
    }
    let bytes = key.as_bytes();
    // SAFETY: single-threaded here (see KeyBuf).
    unsafe {
        let k = &mut *KEY.0.get();
        let n = bytes.len().min(k.0.len());
        k.0[..n].copy_from_slice(&bytes[..n]);
        k.1 = n;
    }
    key
}

/// The stem chosen by [`choose`].
pub fn get() -> &'static [u8] {
    // SAFETY: only read after the single-threaded write (see KeyBuf).
    unsafe {
        let k = &*KEY.0.get();
        &k.0[..k.1]
    }
}
