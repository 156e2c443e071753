//! The files of ring threads that ended (`--ring`), oldest first: kept,
//! cut to what their rings hold, while the trace's budget has room, and
//! removed oldest first, their bytes given back, when a new ring, a
//! trace stack that grows or a snapshot needs the room ([`take_room`]).
//!
//! So a program that starts a thread per request runs for as long as it
//! likes within `--max-size`, and what it keeps is the latest history: the
//! rings of the threads alive, then those of the threads that ended last.
//! Files are removed rather than reused for a new thread because removal
//! needs no care for the reader (a file is a thread's, whole) and costs
//! no more: a new ring's pages are allocated either way.
//!
//! Only this process image's own files are listed: a forked child starts
//! with an empty list (its parent's ended threads are its parent's to
//! remove), and an `exec` leaves the old image's files where they are,
//! counted, as its trace. Called from slow paths, possibly in signal
//! handlers: no allocation, the list behind a [`SlowLock`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::process::sync::SlowLock;
use crate::record::budget;

/// Most ended threads listed; past it the oldest is removed at once.
const SLOTS: usize = 1024;

/// One ended thread's file: its name (thread id, `~N` in bits 32 and up),
/// inode and bytes taken from the budget.
struct Retired {
    file_id: AtomicU64,
    ino: AtomicU64,
    bytes: AtomicU64,
}

static LIST: [Retired; SLOTS] = [const {
    Retired {
        file_id: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    }
}; SLOTS];
/// Entries pushed and popped so far (the list is LIST[oldest % SLOTS..]).
static OLDEST: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);
/// The process whose list it is (a forked child finds its parent's).
static OWNER: AtomicU64 = AtomicU64::new(0);
static LOCK: SlowLock = SlowLock::new();

/// (file_id, ino, bytes) of a listed file.
type Entry = (u64, u64, u64);

/// Empties a list this process inherited from its parent. Lock held.
fn own_list() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u64;
    if OWNER.load(Ordering::Relaxed) != me {
        OWNER.store(me, Ordering::Relaxed);
        OLDEST.store(NEXT.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Takes the oldest entry off the list. Lock held.
fn pop() -> Option<Entry> {
    let (oldest, next) = (OLDEST.load(Ordering::Relaxed), NEXT.load(Ordering::Relaxed));
    if oldest == next {
        return None;
    }
    let e = &LIST[oldest as usize % SLOTS];
    OLDEST.store(oldest + 1, Ordering::Relaxed);
    Some((
        e.file_id.load(Ordering::Relaxed),
        e.ino.load(Ordering::Relaxed),
        e.bytes.load(Ordering::Relaxed),
    ))
}

/// Lists the file of a ring thread that ended: `bytes` of the budget are
/// its, inode `ino`.
pub fn push(file_id: u64, ino: u64, bytes: u64) {
    let full = LOCK.with(|| {
        own_list();
        let next = NEXT.load(Ordering::Relaxed);
        let full = if next - OLDEST.load(Ordering::Relaxed) == SLOTS as u64 {
            pop()
        } else {
            None
        };
        let e = &LIST[next as usize % SLOTS];
        e.file_id.store(file_id, Ordering::Relaxed);
        e.ino.store(ino, Ordering::Relaxed);
        e.bytes.store(bytes, Ordering::Relaxed);
        NEXT.store(next + 1, Ordering::Relaxed);
        full
    });
    if let Some(e) = full {
        remove(e);
    }
}

/// Removes the oldest listed file and gives its bytes back; false when
/// there is none.
pub fn evict_oldest() -> bool {
    match LOCK.with(|| {
        own_list();
        pop()
    }) {
        Some(e) => {
            remove(e);
            true
        }
        None => false,
    }
}

fn remove((file_id, ino, bytes): Entry) {
    let mut name = crate::process::key::event_file_name(file_id as u32, file_id >> 32);
    if crate::process::files::remove_if(&mut name, ino) {
        budget::give_back(bytes);
    }
}

/// Takes exactly `n` bytes from the budget, removing the files of ended
/// threads, oldest first, while that is what it takes; false when even
/// that is not enough (or the budget's count is lost).
pub fn take_room(n: u64) -> bool {
    loop {
        if budget::take_all(n) {
            return true;
        }
        if budget::lost() || !evict_oldest() {
            return false;
        }
    }
}
