//! ftail's runtime: the library `ftail record` preloads into the traced
//! process.
//!
//! The code is laid out along its data path, one folder a room, imports
//! going only downwards in this list:
//! * `control/`: which functions are traced and changing that while the
//!   program runs (`selection`), the control agent, the dynamic loader's
//!   hook, the metadata a process image writes;
//! * `plan/`: each module with site tables is planned once, when found:
//!   every site's patched form decided, its stubs and thunks written;
//! * `found/`: the loaded modules that carry site tables;
//! * `code/`: what is written into the code — trampolines (`tramp`),
//!   stubs and convert thunks (`stubs`), their unwind info, site writes
//!   before and while threads run (`poke`);
//! * `record/`: events recorded — per-thread state, event files and rings
//!   (`buffer`), writing events (`write`), the trampolines' slow paths
//!   (`hooks`), stack switches (`stacks`, `parked`), a thread's start and
//!   end (`thread`), snapshots, the size budget;
//! * `process/`: the runtime's own memory and lock, settings, files.
//!
//! At start-up ([`init`]) it reads its configuration from the environment,
//! finds every loaded module with site tables, plans each, patches the
//! sites of the selected functions to call the trampolines, writes the
//! run's metadata and, when asked, starts the control agent. From then on
//! each traced call and return appends a compact record (8 bytes an entry,
//! 4 a return; `ftail_abi::trace::compact`) to the calling thread's
//! file-backed buffer (a 16-byte event to its ring under `--ring`).
//! Threads that switch stacks (`swapcontext`, coroutines) keep properly
//! nested event files: `record::stacks` parks the frames of a stack
//! switched away from and resumes them when it runs again; the
//! `makecontext`, `swapcontext` and `setcontext` wrappers tell it about
//! coroutine stacks and switches.
//!
//! **Invariants.** Nothing here is instrumented. The hot path (the
//! trampolines' fast paths) never allocates, locks, makes a system call or
//! unwinds; the slow paths use only async-signal-safe system calls. No
//! return address is ever written.

mod code;
mod control;
mod found;
mod plan;
mod process;
mod record;

use code::{stubs, tramp};
use control::{agent, dlhook, metadata, selection};
use found::modules;
use process::{alloc, config, key, status, sync, watcher};
use record::{budget, buffer, children, session, snapshot, stacks, state, thread};

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use config::Config;

/// The configuration, set once by [`init`].
pub(crate) static CONFIG: OnceLock<Config> = OnceLock::new();

/// What a forked child needs to write its own metadata.
static START: OnceLock<metadata::Start> = OnceLock::new();

// The constructor, as a real SHT_INIT_ARRAY entry: a `#[used]` static in
// a `.init_array` section was dropped by the linker in debug builds.
std::arch::global_asm!(
    ".pushsection .init_array,\"aw\",@init_array",
    ".p2align 3",
    ".quad {init}",
    ".popsection",
    init = sym init,
);

/// Start-up: runs as the preloaded library's constructor.
extern "C" fn init() {
    stacks::init();
    let Some(cfg) = Config::from_env() else {
        control::attach::on_load();
        return;
    };
    // Before anything else, and in every process (instrumented or not):
    // the variables its children need to be traced too.
    children::snapshot();
    start(cfg, Start::Preloaded);
}

/// How the runtime came into the process.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// Preloaded: the constructor runs before `main`, alone.
    Preloaded,
    /// Loaded into a running process (`ftail record -p`): other threads
    /// run the program's code while the sites are written.
    Attached,
}

/// Finds the modules, plans them, writes the selected sites and the
/// run's metadata; false when the process has nothing to trace or the
/// trace directory cannot be used.
fn start(cfg: Config, how: Start) -> bool {
    // Processes without instrumented code (the shell, make, the
    // compiler...) inherit the preload too: leave them alone, at once.
    let modules = modules::loaded();
    if modules.is_empty() {
        return false;
    }
    state::FTAIL_TLS_OFFSET.store(state::compute_tls_offset(), Ordering::Relaxed);
    state::compute_xsave_size();
    state::FTAIL_MAX_DEPTH.store(cfg.depth, Ordering::Relaxed);
    if CONFIG.set(cfg).is_err() {
        return false;
    }
    // The trace directory is unusable (gone, or not ours): patch nothing.
    let Some(files) = key::choose() else {
        return false;
    };
    status::create(files.status);
    budget::init(CONFIG.get().map_or(u64::MAX, |c| c.max_size));
    metadata::write_modules(files.modules, "");
    thread::init();
    let (hz, start_tsc) = calibrate_tsc();
    // Rings write 16-byte events (a reader must name the functions a
    // window's first closes end); threads that keep everything write
    // compact records.
    let ring = CONFIG.get().is_some_and(|c| c.ring != 0);
    let trampolines = stubs::Trampolines {
        entry: if ring {
            tramp::ftail_entry as *const () as u64
        } else {
            tramp::ftail_entry_c as *const () as u64
        },
        exit: if ring {
            tramp::ftail_exit as *const () as u64
        } else {
            tramp::ftail_exit_c as *const () as u64
        },
        tail_mark: tramp::ftail_tail_mark as *const () as u64,
        convert_enter: tramp::ftail_convert_enter as *const () as u64,
        convert_leave: if ring {
            tramp::ftail_convert_leave as *const () as u64
        } else {
            tramp::ftail_convert_leave_c as *const () as u64
        },
        lib_enter: tramp::ftail_lib_enter as *const () as u64,
        lib_leave: tramp::ftail_lib_leave as *const () as u64,
        lib_entry: if ring {
            0
        } else {
            tramp::ftail_lib_entry_c as *const () as u64
        },
        lib_exit: tramp::ftail_lib_exit_c as *const () as u64,
        entry_spec: tramp::ftail_entry_spec as *const () as u64,
    };
    let cfg = CONFIG.get().expect("set above");
    record::args::init(&cfg.dir_c, cfg.argspec);
    record::triggers::init(hz, ring, cfg);
    // Attached, every module is planned with tracing off (nothing to
    // write), then switched on live, as `ftail ctl on` does.
    selection::init(
        selection::Selection {
            enabled: !cfg.off && how == Start::Preloaded,
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
        },
        trampolines,
    );
    if !cfg.off && how == Start::Preloaded {
        record::buffer::tracing_switched_on(start_tsc);
    }
    let mut patched = plan::Patched::default();
    let bases: Vec<u64> = modules.iter().map(|m| m.base).collect();
    let known = plan::libcall::Known::of(&modules);
    plan::indirect::publish(&modules);
    for m in &modules {
        patched += selection::add_module(m, start_tsc, &known, false);
    }
    if how == Start::Attached && !cfg.off {
        control::attach::switch_on(&mut patched);
    }
    let start = metadata::Start {
        hz,
        start_tsc,
        patched,
        // The hook is written with a plain store, safe only before other
        // threads run: in a running process, the agent polls instead.
        dlopen_hooked: match how {
            Start::Preloaded => dlhook::install(bases),
            Start::Attached => {
                dlhook::watch(bases);
                false
            }
        },
    };
    metadata::write_info(files.info, &start);
    let _ = START.set(start);
    // SAFETY: registering plain extern "C" callbacks.
    unsafe {
        // Registered first, so it runs last: after the program's handlers
        // and after `at_exit` has closed the open frames.
        on_exit(exit_status, std::ptr::null_mut());
        libc::atexit(at_exit);
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
    }
    if cfg.ring != 0 {
        snapshot::install_crash_handlers();
    }
    if cfg.snapshot_signal != 0 {
        snapshot::install(cfg.snapshot_signal);
    }
    if cfg.ctl || cfg.off || how == Start::Attached {
        agent::start(how == Start::Attached);
    }
    true
}

extern "C" {
    /// glibc's `atexit` that is told the status given to `exit` (or
    /// returned by `main`).
    fn on_exit(f: extern "C" fn(libc::c_int, *mut libc::c_void), arg: *mut libc::c_void) -> i32;
}

extern "C" fn exit_status(code: libc::c_int, _: *mut libc::c_void) {
    exiting(code);
}

/// The process image ends with `code`: noted, and the watcher told.
fn exiting(code: i32) {
    status::exiting(code);
    if let Some(watch) = CONFIG.get().and_then(|c| c.watch.as_ref()) {
        watcher::announce_exit(watch);
    }
}

extern "C" fn at_exit() {
    session::close_all_open();
    // SAFETY: the calling thread's own state.
    buffer::cut_at_exit(unsafe { &mut *state::current() });
}

/// The runtime's locks, in the order they are taken: whoever holds one
/// may take those after it, never those before.
fn locks_in_order() -> [&'static sync::RawLock; 5] {
    [
        dlhook::lock(),
        selection::lock(),
        session::lock(),
        agent::lock(),
        alloc::lock(),
    ]
}

/// Holds every runtime lock across `fork`, so that the child never starts
/// with one taken by a thread that does not exist there (its next
/// `dlopen`, `ftail_ctl` or allocation would wait for good).
extern "C" fn before_fork() {
    for l in locks_in_order() {
        l.lock();
    }
}

extern "C" fn after_fork_in_parent() {
    for l in locks_in_order().iter().rev() {
        l.unlock();
    }
}

/// The child of a fork records into its own files, with its own metadata
/// (the child is single-threaded here, so writing files is safe).
extern "C" fn after_fork_in_child() {
    after_fork_in_parent();
    agent::close_inherited();
    session::forget_all();
    let st = state::current();
    // SAFETY: the calling (only) thread's own state.
    unsafe {
        if state::recording((*st).status) {
            (*st).status = state::STATUS_NEW;
        }
    }
    if let Some(start) = START.get() {
        if let Some(files) = key::choose() {
            status::create(files.status);
            metadata::write_modules(files.modules, &selection::loaded_lines());
            plan::indirect::log_again();
            metadata::write_info(files.info, start);
        }
    }
}

/// Time-stamp counter frequency, measured against CLOCK_MONOTONIC over a
/// few milliseconds; and the counter's value at start.
fn calibrate_tsc() -> (u64, u64) {
    let now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    // SAFETY: rdtsc has no memory effects.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (now(), tsc());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (t1, c1) = (now(), tsc());
    let hz = (c1 - c0) as u128 * 1_000_000_000 / (t1 - t0).max(1) as u128;
    (hz as u64, c0)
}

/// `_exit` skips `atexit` handlers; close the open frames first so the
/// thread's trace stays balanced, then leave as `_exit` does.
#[no_mangle]
pub extern "C" fn _exit(code: i32) -> ! {
    session::close_all_open();
    exiting(code);
    // SAFETY: exit_group ends the process; nothing runs after it.
    unsafe {
        libc::syscall(libc::SYS_exit_group, code);
    }
    unreachable!("exit_group returned")
}

/// `_Exit` is `_exit`.
#[no_mangle]
pub extern "C" fn _Exit(code: i32) -> ! {
    _exit(code)
}

/// The real `name` from the next object in the lookup order (libc).
pub(crate) fn next_symbol(name: &std::ffi::CStr) -> *mut libc::c_void {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
}
