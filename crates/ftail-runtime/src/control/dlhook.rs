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
//!
//! Loaded into a running process (`ftail record -p`), the runtime writes
//! no hook: the plain store is safe only while no other thread runs, and
//! the loader's code would stay changed after a detach. There the control
//! agent's thread [`poll`]s instead: the loader counts the objects it has
//! added and removed (`dlpi_adds`, `dlpi_subs`), and when the counts have
//! changed, the modules loaded since are planned and their sites written
//! live, since the program may already run their code. A library's calls
//! between its mapping and the next poll are not recorded (its
//! constructors among them); those whose frames are still open then close
//! as begun before tracing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The loader's count of objects added and removed (`dlpi_adds +
/// dlpi_subs`) when [`poll`] last caught up (`u64::MAX`: never).
static CHANGES: AtomicU64 = AtomicU64::new(u64::MAX);

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

/// Remembers the modules planned when the runtime was loaded into a
/// running process, for [`poll`] to catch up from.
pub fn watch(patched: impl IntoIterator<Item = u64>) {
    PATCHED.with(|p| *p = Some(patched.into_iter().collect()));
}

/// In a process the runtime was loaded into: catches up with the
/// libraries loaded and unloaded since the last call, if any, then runs
/// `then`; both with the loader's list of objects locked, so that no
/// module planned or written can be unmapped meanwhile (`dlclose` takes
/// an object off the list, under that lock, before unmapping it).
pub fn poll(then: &mut dyn FnMut()) {
    let mut then = then;
    // SAFETY: the callback runs during the call, with `then` alive; the
    // loader's lock is recursive, so the callback may list the objects
    // again (`loaded`).
    unsafe {
        libc::dl_iterate_phdr(
            Some(under_list_lock),
            (&mut then as *mut &mut dyn FnMut()).cast(),
        );
    }
}

/// [`poll`]'s callback, for the first object only.
unsafe extern "C" fn under_list_lock(
    info: *mut libc::dl_phdr_info,
    size: usize,
    data: *mut libc::c_void,
) -> i32 {
    // SAFETY: the loader passes a valid info of `size` bytes for this
    // call; `data` is `poll`'s closure.
    let (info, then) = unsafe { (&*info, &mut *data.cast::<&mut dyn FnMut()>()) };
    // Older loaders pass no counts: every poll catches up then.
    let counted = size >= std::mem::size_of::<libc::dl_phdr_info>();
    let changes = if counted {
        info.dlpi_adds.wrapping_add(info.dlpi_subs)
    } else {
        u64::MAX - 1
    };
    if CHANGES.swap(changes, Ordering::Relaxed) != changes || !counted {
        PATCHED.with(|patched| {
            if let Some(patched) = patched.as_mut() {
                catch_up(patched, true);
            }
        });
    }
    then();
    1
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
            catch_up(patched, false);
        }
    });
}

/// Plans the modules mapped since the last call and forgets the unloaded;
/// `live`: other threads may already run the new modules' code.
fn catch_up(patched: &mut BTreeSet<u64>, live: bool) {
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
        let done = control::add_module(&m, tsc, &known, live);
        crate::process::status::skipped(done.modules_skipped, done.skipped);
        patched.insert(m.base);
    }
}
