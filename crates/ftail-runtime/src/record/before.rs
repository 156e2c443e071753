//! Exits of functions entered before tracing began (`ftail record -p`,
//! `ftail ctl on`): the trace stack is empty when they return. Their
//! entry was never seen; the function is known from the exit's stub,
//! one per function and kind of `ret` (`code::stubs`), whose bytes after
//! its `ret`, which never run, hold a tag and the function's entry
//! address (entry site + 5). The exit is written as an `Exit` that
//! carries that address, as a ring's closes do, and counted in the file's
//! header; a reader opens a frame for it at the thread's start.

use ftail_abi::trace::{compact, EventKind, ADDR_MASK};

use crate::record::state::ThreadState;
use crate::record::values::read_memory;
use crate::record::write::{reserve, write_event};

/// Bytes of an exit stub; stubs lie at multiples of it in their area.
pub const EXIT_STUB: u64 = 32;
/// Where an exit stub keeps [`TAG`], and its function's entry address.
pub const TAG_AT: usize = 20;
pub const ENTRY_AT: usize = 24;
/// Says that a stub's last bytes name its function ("ftxf").
pub const TAG: u32 = u32::from_le_bytes(*b"ftxf");

/// Records the exit of a frame entered before tracing began, when its
/// function is known: `from` is where the exit trampoline returns to
/// (its stub's `call` + 5).
pub(crate) fn exit(st: &mut ThreadState, from: u64, now: u64) {
    let Some(entry) = stub_function(from, &|addr, out| read_memory(addr, out) == out.len()) else {
        return;
    };
    if st.compact != 0 {
        write_timed_close(st, entry, now);
    } else {
        write_event(st, EventKind::Exit, entry, now);
    }
    crate::record::buffer::count_before_tracing(st);
}

/// A compact close that carries its own time and its frame's address
/// (an event record of 5 words), which the 4-byte close has no room for.
fn write_timed_close(st: &mut ThreadState, entry: u64, tsc: u64) {
    let Some(slot) = reserve(st, 20, EventKind::Exit) else {
        return;
    };
    // SAFETY: [slot, slot + 20) lies in the mapping, below `end`; the
    // head is written last, so a reader never sees a record without its
    // fields.
    unsafe {
        std::ptr::write_unaligned((slot + 4) as *mut u64, tsc);
        std::ptr::write_unaligned((slot + 12) as *mut u64, entry & ADDR_MASK);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        std::ptr::write_volatile(
            slot as *mut u32,
            compact::ext_head(compact::SUB_EVENT, 5, EventKind::Exit as u32),
        );
    }
}

/// The entry address an exit stub that called the trampoline from
/// `from - 5` names; `None` for anything else that calls it (a library
/// or convert thunk). `read` copies memory of the process, false where
/// it cannot.
fn stub_function(from: u64, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<u64> {
    let stub = from.checked_sub(5)?;
    if stub % EXIT_STUB != 0 {
        return None;
    }
    let mut tail = [0u8; EXIT_STUB as usize - TAG_AT];
    if !read(stub + TAG_AT as u64, &mut tail) || tail[..4] != TAG.to_le_bytes() {
        return None;
    }
    let at = ENTRY_AT - TAG_AT;
    let entry = u64::from_le_bytes(tail[at..at + 8].try_into().ok()?);
    (entry != 0).then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mem: &[(u64, Vec<u8>)]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        |addr, out| {
            mem.iter().any(|(at, bytes)| {
                let Some(off) = addr.checked_sub(*at) else {
                    return false;
                };
                let Some(src) = bytes.get(off as usize..off as usize + out.len()) else {
                    return false;
                };
                out.copy_from_slice(src);
                true
            })
        }
    }

    fn stub(entry: u64) -> Vec<u8> {
        let mut b = vec![0xcc; EXIT_STUB as usize];
        b[TAG_AT..TAG_AT + 4].copy_from_slice(&TAG.to_le_bytes());
        b[ENTRY_AT..].copy_from_slice(&entry.to_le_bytes());
        b
    }

    #[test]
    fn an_exit_stub_names_its_function() {
        let mem = [(0x1000, stub(0x4005)), (0x1020, vec![0xcc; 32])];
        assert_eq!(stub_function(0x1005, &read(&mem)), Some(0x4005));
        // Not a stub's call: misaligned, untagged, unreadable.
        assert_eq!(stub_function(0x1006, &read(&mem)), None);
        assert_eq!(stub_function(0x1025, &read(&mem)), None);
        assert_eq!(stub_function(0x2005, &read(&mem)), None);
        assert_eq!(stub_function(3, &read(&mem)), None);
    }
}
