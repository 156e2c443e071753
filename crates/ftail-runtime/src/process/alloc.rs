//! The runtime's own memory: a small allocator over `mmap`, installed as
//! this library's global allocator, so that nothing the runtime allocates
//! goes through the program's `malloc`.
//!
//! **Why.** A program may define `malloc` itself (counting allocations,
//! forwarding to the real one through `dlsym(RTLD_NEXT, …)`, arenas), and
//! then it is instrumented and traced like any other function. Had the
//! runtime used it, the program would count allocations it never made,
//! its heap layout would differ from an untraced run (pointer-ordered
//! containers then take other paths), its trace would show the runtime's
//! own allocations (in a forked child, dozens of them), and a slow path
//! entered from inside the program's allocator would re-enter it.
//!
//! Blocks of up to [`LARGEST_CLASS`] bytes come from power-of-two size
//! classes carved out of 256 KiB slabs and are recycled through per-class
//! free lists; larger ones are whole mappings. One [`RawLock`] guards the
//! lists; `pthread_atfork` handlers (`lib.rs`) hold it across `fork`, so a
//! child never inherits it taken. Nothing here is used from a signal
//! handler: the trampolines' slow paths do not allocate.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;

use crate::process::sync::RawLock;

/// Smallest block: room for the free-list link, and 16-byte alignment.
const SMALLEST_CLASS: usize = 16;
/// Largest block served from slabs; larger ones are mapped whole.
const LARGEST_CLASS: usize = 32 << 10;
/// Number of size classes (16, 32, …, 32 KiB).
const CLASSES: usize = (LARGEST_CLASS / SMALLEST_CLASS).trailing_zeros() as usize + 1;
/// Bytes mapped at a time for one size class.
const SLAB: usize = 256 << 10;
const PAGE: usize = 4096;

/// A free block's first word: the next free block of its class.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct Lists {
    free: [*mut FreeBlock; CLASSES],
}

/// The runtime's allocator (see the module docs).
pub struct RuntimeAlloc {
    lock: RawLock,
    lists: UnsafeCell<Lists>,
}

// SAFETY: `lists` is only touched with `lock` held.
unsafe impl Sync for RuntimeAlloc {}

#[global_allocator]
static ALLOC: RuntimeAlloc = RuntimeAlloc {
    lock: RawLock::new(),
    lists: UnsafeCell::new(Lists {
        free: [std::ptr::null_mut(); CLASSES],
    }),
};

/// The allocator's lock, for the fork handlers.
pub fn lock() -> &'static RawLock {
    &ALLOC.lock
}

/// The size class of a layout: its index and block size; `None` when it
/// is mapped whole (too large, or aligned beyond a page: slabs are only
/// page-aligned).
fn class_of(layout: Layout) -> Option<(usize, usize)> {
    if layout.align() > PAGE {
        return None;
    }
    let size = layout
        .size()
        .max(layout.align())
        .max(SMALLEST_CLASS)
        .checked_next_power_of_two()?;
    (size <= LARGEST_CLASS).then(|| ((size / SMALLEST_CLASS).trailing_zeros() as usize, size))
}

/// Fresh zeroed pages, or null.
fn map(len: usize) -> *mut u8 {
    // SAFETY: a new private anonymous mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

fn round_to_pages(n: usize) -> Option<usize> {
    n.checked_add(PAGE - 1).map(|n| n & !(PAGE - 1))
}

/// A whole mapping for a large block, aligned as asked: page-aligned by
/// itself; for larger alignments, map more and trim both ends.
fn map_large(layout: Layout) -> *mut u8 {
    let Some(len) = round_to_pages(layout.size()) else {
        return std::ptr::null_mut();
    };
    if layout.align() <= PAGE {
        return map(len);
    }
    let Some(padded) = len.checked_add(layout.align()) else {
        return std::ptr::null_mut();
    };
    let p = map(padded);
    if p.is_null() {
        return p;
    }
    let start = (p as usize + layout.align() - 1) & !(layout.align() - 1);
    let (head, tail) = (start - p as usize, padded - (start - p as usize) - len);
    // SAFETY: unmapping the unused, page-aligned ends of our own mapping.
    unsafe {
        if head > 0 {
            libc::munmap(p.cast(), head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    start as *mut u8
}

impl RuntimeAlloc {
    /// Pops a block of class `class` (size `size`), carving a new slab
    /// when the list is empty. Called with the lock held.
    ///
    /// # Safety
    ///
    /// The caller holds `self.lock`.
    unsafe fn pop(&self, class: usize, size: usize) -> *mut u8 {
        // SAFETY: the caller holds the lock.
        let lists = unsafe { &mut *self.lists.get() };
        if lists.free[class].is_null() {
            let slab = map(SLAB);
            if slab.is_null() {
                return slab;
            }
            // Slabs are page-aligned and blocks a power of two no larger
            // than the slab, so every block is aligned to its size or to
            // a page, whichever is less (`class_of` sends larger
            // alignments elsewhere).
            for i in (0..SLAB / size).rev() {
                let block = slab.wrapping_add(i * size).cast::<FreeBlock>();
                // SAFETY: `block` lies in the fresh slab, aligned.
                unsafe {
                    block.write(FreeBlock {
                        next: lists.free[class],
                    })
                };
                lists.free[class] = block;
            }
        }
        let block = lists.free[class];
        // SAFETY: a listed block is a free block of this class.
        lists.free[class] = unsafe { (*block).next };
        block.cast()
    }
}

// SAFETY: blocks are handed out once until returned; each is at least as
// large and as aligned as its layout asks (a power-of-two class at least
// `max(size, align)` from a page-aligned slab, or a mapping aligned as
// asked); `dealloc` gets the layout `alloc` saw, so it finds the same
// class.
unsafe impl GlobalAlloc for RuntimeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, size)) = class_of(layout) else {
            return map_large(layout);
        };
        self.lock.lock();
        // SAFETY: the lock is held.
        let p = unsafe { self.pop(class, size) };
        self.lock.unlock();
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((class, _)) = class_of(layout) else {
            if let Some(len) = round_to_pages(layout.size()) {
                // SAFETY: a large block is exactly this mapping (trimmed to
                // `len` when over-aligned).
                unsafe { libc::munmap(ptr.cast(), len) };
            }
            return;
        };
        self.lock.lock();
        // SAFETY: the lock is held; `ptr` is a block of this class being
        // returned by its only owner.
        unsafe {
            let lists = &mut *self.lists.get();
            let block = ptr.cast::<FreeBlock>();
            block.write(FreeBlock {
                next: lists.free[class],
            });
            lists.free[class] = block;
        }
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_distinct() {
        let layouts = [
            Layout::from_size_align(1, 1).unwrap(),
            Layout::from_size_align(24, 8).unwrap(),
            Layout::from_size_align(100, 64).unwrap(),
            Layout::from_size_align(5000, 16).unwrap(),
            Layout::from_size_align(40 << 10, 8).unwrap(),
            Layout::from_size_align(8 << 10, 8192).unwrap(),
            Layout::from_size_align(64 << 10, 1 << 16).unwrap(),
        ];
        for layout in layouts {
            // SAFETY: allocating, writing within and freeing each block
            // with its own layout.
            unsafe {
                let a = ALLOC.alloc(layout);
                let b = ALLOC.alloc(layout);
                assert!(!a.is_null() && !b.is_null());
                assert_ne!(a, b);
                assert_eq!(a as usize % layout.align(), 0, "{layout:?}");
                assert_eq!(b as usize % layout.align(), 0, "{layout:?}");
                a.write_bytes(0xa5, layout.size());
                b.write_bytes(0x5a, layout.size());
                assert_eq!(*a.add(layout.size() - 1), 0xa5);
                ALLOC.dealloc(b, layout);
                ALLOC.dealloc(a, layout);
            }
        }
    }

    #[test]
    fn the_standard_collections_run_on_it() {
        let v: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
        let joined = v.join(",");
        assert!(joined.len() > 10_000);
        let mut m = std::collections::BTreeMap::new();
        for (i, s) in v.iter().enumerate() {
            m.insert(s.clone(), i);
        }
        assert_eq!(m["item 9999"], 9999);
    }
}
