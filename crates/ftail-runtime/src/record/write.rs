//! Writing events into the calling thread's buffer: [`write_event`]
//! appends a compact record (or a 16-byte event in a ring), mapping more
//! of the buffer as it goes, and closes every open frame from the reserve
//! the first time the buffer is full; [`reserve`] takes room for a record
//! of any length (payloads, `values`). Never calls upwards (`frames`,
//! `hooks`, `stacks`, `thread`).

use ftail_abi::trace::{compact, EventKind, ADDR_MASK, KIND_SHIFT};

use ftail_abi::trace::drain::CHUNK;

use crate::record::state::{written, StackEntry, ThreadState, TIME_POISON};

/// Keeps the program's errno across a slow path: the system calls made
/// there (setting a thread up, mapping more buffer) may fail and set it.
pub(crate) struct KeepErrno(i32);

impl KeepErrno {
    pub(crate) fn save() -> KeepErrno {
        // SAFETY: errno is this thread's.
        KeepErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

pub(crate) fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects and is available on every
    // x86-64 processor.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Bytes of the compact record the trampolines reserve for `kind`.
pub(crate) fn compact_size(kind: EventKind) -> u64 {
    if kind == EventKind::Entry {
        compact::ENTRY_SIZE
    } else {
        compact::CLOSE_SIZE
    }
}

/// A compact trampoline reserved `slot` for a `kind` record but could not
/// write it there: fills it with padding where the buffer reaches it
/// (mapping more when it can), so the stream has no hole. When the
/// buffer cannot reach it, the buffer is full: closes what is open (the
/// first time) or counts the event as lost. Whether the event can be
/// written again.
pub(crate) fn give_up_slot(st: &mut ThreadState, kind: EventKind, slot: u64) -> bool {
    let size = compact_size(kind);
    if crate::record::buffer::pad_drained(st, slot, size) || st.drain != 0 {
        if st.cursor <= st.end || crate::record::buffer::next_chunk(st) {
            return true;
        }
    } else {
        while slot + size > st.end && crate::record::buffer::extend(st) {}
        if slot + size <= st.end {
            pad(slot, size);
            return true;
        }
    }
    if st.reserve_end != 0 {
        close_on_full(st, kind == EventKind::Entry);
    } else {
        count_lost(st);
    }
    false
}

/// A payload's `size`-byte slot at `slot` that a trampoline reserved but
/// could not fill (it lies past the mapped part of the buffer): padded
/// once the buffer reaches it (mapping more when it can), or as far as
/// the buffer reaches, so the stream has no hole. Nothing is counted or
/// closed here: the event the payload went with comes next, through a
/// slow path that does that.
pub(crate) fn give_up_room(st: &mut ThreadState, slot: u64, size: u64) {
    if crate::record::buffer::pad_drained(st, slot, size) || st.drain != 0 {
        if st.cursor > st.end {
            crate::record::buffer::next_chunk(st);
        }
        return;
    }
    while slot + size > st.end && crate::record::buffer::extend(st) {}
    if slot + size <= st.end {
        pad(slot, size);
    } else if slot < st.end {
        pad(slot, st.end - slot);
    }
}

/// The first time a thread's buffer is full: counts the event that did not
/// fit, and writes a `Truncated` exit for every frame whose entry is in
/// the file into the reserve kept at the end of the buffer, so the file
/// stays balanced. Later events are only counted as lost.
pub(crate) fn close_on_full(st: &mut ThreadState, entry_lost: bool) {
    count_lost(st);
    if st.reserve_end == 0 {
        return;
    }
    let open = if entry_lost {
        st.depth.saturating_sub(1)
    } else {
        st.depth + 1
    };
    let (stack, cap) = (st.stack, st.stack_cap);
    let word = move |i: u64| {
        if i < cap {
            // SAFETY: i < stack_cap entries of the stack mapping.
            unsafe { (*(stack as *const StackEntry).add(i as usize)).word }
        } else {
            0
        }
    };
    let max = st.max_depth;
    let closes = (0..open).filter(|&i| written(i, word(i), max)).count() as u64;
    crate::record::buffer::set_stopped(st, st.limit_why);
    let (cursor, end) = (st.cursor, st.end);
    st.cursor = st.end;
    // On a full filesystem only the reserve's pages that can still be had
    // are written; the reader closes what did not fit.
    let want = closes * 16;
    st.end = end + crate::record::buffer::closing_room(st, end, want.min(st.reserve_end - end));
    st.reserve_end = 0;
    let now = rdtsc();
    // The frames still open whose entries were written, innermost first:
    // below the top when the entry was lost, from the one just popped
    // when an exit was.
    for i in (0..open).rev() {
        let w = word(i);
        if written(i, w, max) {
            write_event(st, EventKind::Truncated, w & ADDR_MASK, now);
        }
    }
    st.cursor = cursor.max(end + 16);
    st.end = end;
}

/// Appends one event, reserving its slot first (see `tramp.rs`).
pub(crate) fn write_event(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    if st.compact != 0 {
        write_compact(st, kind, addr, tsc);
        return;
    }
    // One instruction reserves the slot, as the trampolines' xadd does: a
    // signal handler's event cannot take it too.
    // SAFETY: `cursor` is this thread's, aligned, and only ever accessed
    // by it (and its signal handlers, which run to completion on it).
    let cursor = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.cursor) };
    let mut slot = cursor.fetch_add(16, std::sync::atomic::Ordering::Relaxed);
    if slot + 16 > st.end && st.ring != 0 {
        slot = crate::record::buffer::ring_slot(st);
    }
    while slot + 16 > st.end && crate::record::buffer::extend(st) {}
    if slot + 16 > st.end {
        if st.reserve_end != 0 {
            close_on_full(st, kind == EventKind::Entry);
        } else {
            count_lost(st);
        }
        return;
    }
    store(slot, kind, addr, tsc);
}

/// Reserves `size` bytes of the buffer, mapping more as needed: the
/// slot, or `None` when the buffer is full (what is open is then closed,
/// the first time, else the event counted as lost).
pub(crate) fn reserve(st: &mut ThreadState, size: u64, kind: EventKind) -> Option<u64> {
    // SAFETY: as in write_event.
    let cursor = unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.cursor) };
    let mut slot = cursor.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
    while st.drain != 0 || crate::record::buffer::pad_drained(st, slot, 0) {
        if st.drain != 0 && slot + size <= st.end && slot + CHUNK >= st.end {
            return Some(slot);
        }
        // Not in the chunk being written (it is full, or a signal handler
        // moved on meanwhile): padded to its chunk's end, and again in
        // the next chunk.
        crate::record::buffer::pad_drained(st, slot, size);
        let room =
            size <= CHUNK / 4 && (st.cursor <= st.end || crate::record::buffer::next_chunk(st));
        if !room {
            if st.reserve_end != 0 {
                close_on_full(st, kind == EventKind::Entry);
            } else {
                count_lost(st);
            }
            return None;
        }
        slot = cursor.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
    }
    while slot + size > st.end && crate::record::buffer::extend(st) {}
    if slot + size > st.end {
        if st.reserve_end != 0 {
            close_on_full(st, kind == EventKind::Entry);
        } else {
            count_lost(st);
        }
        return None;
    }
    Some(slot)
}

/// The thread's compact base, read or changed with single instructions
/// (a signal handler may change it between any two).
fn base_cell(st: &mut ThreadState) -> &'static std::sync::atomic::AtomicU64 {
    // SAFETY: `base` is this thread's, aligned, and accessed only by it
    // and its signal handlers, which run to completion on it.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(&mut st.base) }
}

/// Writes one event as a compact record (`ftail_abi::trace::compact`):
/// an entry or close with its time as an offset from the base, after a
/// time record that moves the base when the offset would not fit; an
/// event record with its own time for a resumed frame, or while a time
/// record is being written (the base poisoned: this is a signal
/// handler's event). Exact whatever handlers interleave: a record whose
/// base changed between reading it and reserving the slot gives the slot
/// up (padding) and is written again.
fn write_compact(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(tag) = compact::close_tag(kind).or((kind == EventKind::Entry).then_some(0)) else {
        write_timed(st, kind, addr, tsc);
        return;
    };
    let span = if tag == 0 {
        compact::ENTRY_SPAN
    } else {
        compact::CLOSE_SPAN
    };
    loop {
        let base = base_cell(st).load(Relaxed);
        if base == TIME_POISON {
            write_timed(st, kind, addr, tsc);
            return;
        }
        let offset = tsc.wrapping_sub(base);
        if offset >= span {
            if !write_time(st, tsc, kind) {
                return;
            }
            continue;
        }
        let size = if tag == 0 {
            compact::ENTRY_SIZE
        } else {
            compact::CLOSE_SIZE
        };
        let Some(slot) = reserve(st, size, kind) else {
            return;
        };
        if base_cell(st).load(Relaxed) != base {
            pad(slot, size);
            continue;
        }
        // SAFETY: [slot, slot + size) lies in the mapping, below `end`;
        // one store writes the whole record.
        unsafe {
            if tag == 0 {
                std::ptr::write_volatile(slot as *mut u64, compact::entry(offset, addr));
            } else {
                std::ptr::write_volatile(slot as *mut u32, compact::close(tag, offset));
            }
        }
        return;
    }
}

/// Writes a time record for `tsc` and makes it the base; false when the
/// buffer is full. The base is poisoned while the record is written, and
/// set only if nobody set another base meanwhile (a handler's time record,
/// which then lies after this one in the stream and stays the base).
fn write_time(st: &mut ThreadState, tsc: u64, kind: EventKind) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let old = base_cell(st).swap(TIME_POISON, Relaxed);
    let Some(slot) = reserve(st, compact::TIME_SIZE, kind) else {
        // Once the thread has stopped (its buffer full, its open frames
        // closed from the reserve) nothing is written again: the base
        // then only has to keep offsets small, so that the trampolines
        // count later events as lost on their fast path instead of coming
        // here for every event whose offset no longer fits.
        let base = if st.reserve_end == 0 { tsc } else { old };
        let _ = base_cell(st).compare_exchange(TIME_POISON, base, Relaxed, Relaxed);
        return false;
    };
    // SAFETY: [slot, slot + 12) lies in the mapping; the head is written
    // last, so a reader never sees a time record without its time.
    unsafe {
        std::ptr::write_unaligned((slot + 4) as *mut u64, tsc);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::write_volatile(slot as *mut u32, compact::ext_head(compact::SUB_TIME, 3, 0));
    }
    let _ = base_cell(st).compare_exchange(TIME_POISON, tsc, Relaxed, Relaxed);
    true
}

/// Writes an event record that carries its own time (and, for a kind
/// that opens a frame, its address).
fn write_timed(st: &mut ThreadState, kind: EventKind, addr: u64, tsc: u64) {
    let words: u32 = if kind.opens() { 5 } else { 3 };
    let Some(slot) = reserve(st, u64::from(words) * 4, kind) else {
        return;
    };
    // SAFETY: [slot, slot + 4 * words) lies in the mapping; the head is
    // written last.
    unsafe {
        std::ptr::write_unaligned((slot + 4) as *mut u64, tsc);
        if kind.opens() {
            std::ptr::write_unaligned((slot + 12) as *mut u64, addr & ADDR_MASK);
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::write_volatile(
            slot as *mut u32,
            compact::ext_head(compact::SUB_EVENT, words, kind as u32),
        );
    }
}

/// Fills a reserved slot of `size` bytes with a pad record.
pub(crate) fn pad(slot: u64, size: u64) {
    // SAFETY: the caller's slot lies in the mapping, below `end`.
    unsafe {
        std::ptr::write_volatile(
            slot as *mut u32,
            compact::ext_head(compact::SUB_PAD, (size / 4) as u32, 0),
        )
    };
}

/// Writes one event into a slot below `end`.
pub(crate) fn store(slot: u64, kind: EventKind, addr: u64, tsc: u64) {
    let word = ((kind as u64) << KIND_SHIFT) | (addr & ADDR_MASK);
    // SAFETY: [slot, slot + 16) lies in this thread's event mapping (the
    // callers check it against `end`); the time is stored last so a reader
    // never sees a half-written event as valid.
    unsafe {
        std::ptr::write_volatile((slot + 8) as *mut u64, word);
        std::ptr::write_volatile(slot as *mut u64, tsc.max(1));
    }
}

pub(crate) fn count_lost(st: &mut ThreadState) {
    if st.lost != 0 {
        // SAFETY: `lost` points at the event file header's counter, mapped
        // for the thread's lifetime.
        unsafe { *(st.lost as *mut u64) += 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::trace::compact::{Decoder, Record, CLOSE_SPAN, ENTRY_SPAN};

    /// A thread state writing compact records into `buf` (no file: the
    /// buffer never grows).
    fn state(buf: &mut [u64]) -> Box<ThreadState> {
        // SAFETY: ThreadState is plain u64 fields; all zero is valid.
        let mut st: Box<ThreadState> = Box::new(unsafe { std::mem::zeroed() });
        let start = buf.as_mut_ptr() as u64;
        let end = start + (buf.len() * 8) as u64;
        st.cursor = start;
        st.end = end;
        st.limit = end;
        st.reserve_end = end;
        st.compact = 1;
        st.base = crate::record::state::NO_BASE;
        st
    }

    fn decode(bytes: &[u8]) -> Vec<(EventKind, u64, u64)> {
        let mut d = Decoder::default();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match d.next(&bytes[at..]) {
                (Record::Event(e), n) => {
                    out.push((e.kind().unwrap(), e.tsc, e.addr()));
                    at += n;
                }
                (Record::Other, n) => at += n,
                (Record::End, _) => return out,
                (r, _) => panic!("{r:?} at {at}"),
            }
        }
    }

    /// Every kind of event, gaps that do and do not fit an offset, a
    /// clock that goes backwards, and events written while a time record
    /// is (a poisoned base) decode to exactly what was written.
    #[test]
    fn compact_records_decode_exactly() {
        let mut buf = vec![0u64; 4096];
        let mut st = state(&mut buf);
        let t0 = 1_000_000_000_000u64;
        let mut want = Vec::new();
        let mut put = |st: &mut ThreadState, kind: EventKind, tsc: u64, addr: u64| {
            write_event(st, kind, addr, tsc);
            let addr = if kind.opens() { addr } else { 0 };
            want.push((kind, tsc, addr));
        };
        put(&mut st, EventKind::Entry, t0, 0x5555_0000_1005);
        put(&mut st, EventKind::Exit, t0 + 100, 0);
        put(
            &mut st,
            EventKind::Entry,
            t0 + ENTRY_SPAN - 1,
            0x7fff_ffff_fff5,
        );
        put(&mut st, EventKind::Entry, t0 + ENTRY_SPAN, 0x1005);
        put(
            &mut st,
            EventKind::TailExit,
            t0 + ENTRY_SPAN + CLOSE_SPAN - 1,
            0,
        );
        put(&mut st, EventKind::Unwound, t0 + ENTRY_SPAN + CLOSE_SPAN, 0);
        put(&mut st, EventKind::Resumed, t0 + 5 * CLOSE_SPAN, 0x2005);
        put(&mut st, EventKind::Suspended, t0 + 5 * CLOSE_SPAN + 7, 0);
        // The counter went backwards (a resynchronised clock).
        put(&mut st, EventKind::Entry, t0 - 5_000, 0x3005);
        put(&mut st, EventKind::Truncated, t0 - 4_000, 0);
        // A signal handler's events while a time record is written.
        let base = st.base;
        st.base = TIME_POISON;
        put(&mut st, EventKind::Entry, t0 + 1, 0x4005);
        put(&mut st, EventKind::Exit, t0 + 2, 0);
        st.base = base;
        put(&mut st, EventKind::Exit, t0 - 3_000, 0);
        let used = (st.cursor - buf.as_ptr() as u64) as usize;
        // SAFETY: viewing the u64 buffer as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 8) };
        assert_eq!(decode(&bytes[..used + 4]), want);
        // Entries 8 bytes, closes 4, time records 12, timed events 12/20.
        assert_eq!(used, 4 * 8 + 6 * 4 + 5 * 12 + 20 + 20 + 12);
    }

    /// A slot a trampoline gave up (the base moved under it) becomes
    /// padding that a reader skips.
    #[test]
    fn given_up_slots_are_padding() {
        let mut buf = vec![0u64; 64];
        let mut st = state(&mut buf);
        write_event(&mut st, EventKind::Entry, 0x1005, 5_000);
        let slot = st.cursor;
        st.cursor += 8;
        give_up_slot(&mut st, EventKind::Entry, slot);
        write_event(&mut st, EventKind::Exit, 0, 5_010);
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), 64 * 8) };
        assert_eq!(
            decode(bytes),
            [
                (EventKind::Entry, 5_000, 0x1005),
                (EventKind::Exit, 5_010, 0)
            ]
        );
    }
}
