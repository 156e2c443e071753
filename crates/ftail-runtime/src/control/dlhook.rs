//! Libraries loaded after start-up (`dlopen`): the runtime hooks the
//! dynamic loader's debugger interface. `ld.so` calls `_dl_debug_state()`
//! — an empty function that exists for debuggers to break on — each time
//! its list of objects changes, and `_r_debug.r_state` says whether the
//! list is consistent again. The hook patches every newly mapped module
//! with site tables there and then, after mapping and before relocation
//! and constructors, so a library's constructors are traced too.
//!
//! `_dl_debug_state` is `ret` followed by alignment padding; the hook
//! overwrites the `ret` and four padding bytes with `jmp rel32` to
//! [`on_objects_changed`], which returns to the loader in its stead. This
//! happens in the constructor, before any other thread exists; later the
//! loader only calls the function with its lock held.

use std::collections::BTreeSet;

use crate::code::poke;
use crate::control::selection as control;
use crate::found::modules::{loaded, Module};
use crate::process::sync::{Locked, RawLock};

/// Load biases of the modules already patched (or seen without tables).
static PATCHED: Locked<Option<BTreeSet<u64>>> = Locked::new(None);

/// The lock of the patched set, for the fork handlers; taken before the
/// control lock.
pub fn lock() -> &'static RawLock {
    PATCHED.raw()
}

/// `r_debug.r_state` value: the object list is consistent.
const RT_CONSISTENT: i32 = 0;

extern "C" {
    static _r_debug: RDebug;
}

#[repr(C)]
struct RDebug {
    version: i32,
    map: *const libc::c_void,
    brk: u64,
    state: i32,
    ldbase: u64,
}

/// Remembers the modules patched at start-up and installs the hook;
/// returns whether it could.
pub fn install(patched: impl IntoIterator<Item = u64>) -> bool {
    PATCHED.with(|p| *p = Some(patched.into_iter().collect()));
    // SAFETY: dlsym with a NUL-terminated name.
    let target = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_debug_state".as_ptr()) } as u64;
    if target == 0 {
        return false;
    }
    // SAFETY: _dl_debug_state is mapped code; reading 5 bytes of it.
    let bytes = unsafe { std::slice::from_raw_parts(target as *const u8, 5) };
    // `ret` then padding (multi-byte nops or int3).
    let padding = |b: u8| {
        matches!(
            b,
            0x66 | 0x2e | 0x0f | 0x1f | 0x84 | 0x00 | 0x40 | 0x44 | 0x90 | 0xcc
        )
    };
    if bytes[0] != 0xc3 || !bytes[1..].iter().all(|&b| padding(b)) {
        return false;
    }
    let hook = on_objects_changed as *const () as u64;
    let Some(dest) = crate::code::stubs::reachable(target, hook) else {
        return false;
    };
    let rel = (dest.wrapping_sub(target + 5) as i32).to_le_bytes();
    poke::write_code(target, &[0xe9, rel[0], rel[1], rel[2], rel[3]])
}

/// Runs in place of `_dl_debug_state`, inside the loader.
extern "C" fn on_objects_changed() {
    // SAFETY: _r_debug is the loader's exported, always-mapped structure.
    let state = unsafe { std::ptr::addr_of!(_r_debug).read_volatile().state };
    if state != RT_CONSISTENT {
        return;
    }
    PATCHED.with(|patched| {
        if let Some(patched) = patched.as_mut() {
            catch_up(patched);
        }
    });
}

/// Plans the modules mapped since the last call and forgets the unloaded.
fn catch_up(patched: &mut BTreeSet<u64>) {
    let now: Vec<Module> = loaded();
    let known = crate::plan::libcall::Known::of(&now);
    crate::plan::indirect::publish(&now);
    // Unloaded modules leave the set, so one loaded again at the same
    // address is patched again.
    let current: BTreeSet<u64> = now.iter().map(|m| m.base).collect();
    // SAFETY: rdtsc has no memory effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    patched.retain(|b| current.contains(b));
    control::keep_modules(&current, tsc);
    let fresh: Vec<Module> = now
        .into_iter()
        .filter(|m| !patched.contains(&m.base))
        .collect();
    for m in fresh {
        let done = control::add_module(&m, tsc, &known);
        crate::process::status::skipped(done.modules_skipped, done.skipped);
        patched.insert(m.base);
    }
}
