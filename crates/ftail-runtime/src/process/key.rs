//! The name stem of this process image's files in the trace directory:
//! `PID`, or `PID~N` when an earlier image of the same process (before an
//! `exec`) already uses `PID`. Chosen at start-up and again in a forked
//! child, both single-threaded; read (without allocation) when a thread
//! creates its event file.

use std::cell::UnsafeCell;

use crate::process::files::{self, NameBuf};

struct KeyBuf(UnsafeCell<([u8; 48], usize)>);

// SAFETY: written only while the process is single-threaded (constructor,
// fork child handler), read afterwards.
unsafe impl Sync for KeyBuf {}

static KEY: KeyBuf = KeyBuf(UnsafeCell::new(([0; 48], 0)));

/// The files that claim a stem, created together.
pub struct Claimed {
    /// `KEY.info`.
    pub info: i32,
    /// `KEY.modules`.
    pub modules: i32,
    /// `KEY.status`.
    pub status: i32,
}

/// Claims a fresh stem by creating its `.info`, `.modules` and `.status`
/// files exclusively (a stem any of whose names is taken — by an earlier
/// image, or by a link someone planted — is passed over); returns their
/// descriptors, or `None` when no stem could be claimed (the directory is
/// gone or not ours).
pub fn choose() -> Option<Claimed> {
    let pid = u64::from(std::process::id());
    for n in 0..1000u64 {
        let mut stem = NameBuf::new();
        stem.push_num(pid);
        if n > 0 {
            stem.push(b"~").push_num(n);
        }
        let create = |suffix: &[u8]| {
            let mut name = NameBuf::new();
            name.push(stem.bytes()).push(suffix);
            files::create(&mut name)
        };
        let info = match create(b".info") {
            Ok(fd) => fd,
            Err(libc::EEXIST) => continue,
            Err(_) => return None,
        };
        match (create(b".modules"), create(b".status")) {
            (Ok(modules), Ok(status)) => {
                set(stem.bytes());
                return Some(Claimed {
                    info,
                    modules,
                    status,
                });
            }
            (a, b) => {
                for fd in [Ok(info), a, b].into_iter().flatten() {
                    files::close(fd);
                }
                let mut name = NameBuf::new();
                name.push(stem.bytes()).push(b".info");
                files::remove(&mut name);
            }
        }
    }
    None
}

fn set(bytes: &[u8]) {
    // SAFETY: single-threaded here (see KeyBuf).
    unsafe {
        let k = &mut *KEY.0.get();
        let n = bytes.len().min(k.0.len());
        k.0[..n].copy_from_slice(&bytes[..n]);
        k.1 = n;
    }
}

/// The stem chosen by [`choose`].
pub fn get() -> &'static [u8] {
    // SAFETY: only read after the single-threaded write (see KeyBuf).
    unsafe {
        let k = &*KEY.0.get();
        &k.0[..k.1]
    }
}

/// The name `KEY` + `suffix` of this process image's file.
pub fn key_name(suffix: &[u8]) -> NameBuf {
    let mut n = NameBuf::new();
    n.push(get()).push(suffix);
    n
}

/// The name of event file `KEY-TID.events`, or `KEY-TID~N.events`.
pub fn event_file_name(tid: u32, n: u64) -> NameBuf {
    let mut name = key_name(b"-");
    name.push_num(u64::from(tid));
    if n > 0 {
        name.push(b"~").push_num(n);
    }
    name.push(ftail_abi::trace::EVENTS_SUFFIX.as_bytes());
    name
}
