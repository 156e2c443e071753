//! ftail's runtime: the library `ftail record` preloads into the traced
//! process.
//!
//! At start-up ([`init`]) it reads its configuration from the environment,
//! finds every loaded module with site tables, plans each (`patch.rs`),
//! patches the sites of the selected functions to call the trampolines
//! (`tramp.rs`), writes the run's metadata and, when asked, starts the
//! control agent (`control.rs`) that changes the selection while the
//! program runs. From then on each traced call and return appends a
//! 16-byte event to the calling thread's file-backed buffer. Threads that
//! switch stacks (`swapcontext`, coroutines) keep properly nested event
//! files: `stacks.rs` parks the frames of a stack switched away from and
//! resumes them when it runs again; the `makecontext`, `swapcontext` and
//! `setcontext` wrappers tell it about coroutine stacks and switches.
//!
//! **Invariants.** Nothing here is instrumented. The hot path (the
//! trampolines' fast paths) never allocates, locks, makes a system call or
//! unwinds; the slow paths use only async-signal-safe system calls. No
//! return address is ever written.

mod buffer;
mod config;
mod control;
mod dlhook;
mod gdbjit;
mod hooks;
mod key;
mod modules;
mod parked;
mod patch;
mod poke;
mod stacks;
mod state;
mod thread_exit;
mod tramp;
mod unwind;

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use config::Config;

/// The configuration, set once by [`init`].
pub(crate) static CONFIG: OnceLock<Config> = OnceLock::new();

/// What a forked child needs to write its own metadata: the time-stamp
/// counter calibration, what was patched and the module list.
struct StartInfo {
    hz: u64,
    start_tsc: u64,
    patched: patch::Patched,
    modules: String,
    dlopen_hooked: bool,
}
static START: OnceLock<StartInfo> = OnceLock::new();

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
        return;
    };
    // Processes without instrumented code (the shell, make, the
    // compiler...) inherit the preload too: leave them alone, at once.
    let modules = modules::loaded();
    if modules.is_empty() {
        return;
    }
    state::FTAIL_TLS_OFFSET.store(state::compute_tls_offset(), Ordering::Relaxed);
    state::compute_xsave_size();
    state::FTAIL_MAX_DEPTH.store(cfg.depth, Ordering::Relaxed);
    let dir = cfg.dir.clone();
    if CONFIG.set(cfg).is_err() {
        return;
    }
    key::choose(&dir);
    thread_exit::init();
    let (hz, start_tsc) = calibrate_tsc();
    let trampolines = patch::Trampolines {
        entry: tramp::ftail_entry as *const () as u64,
        exit: tramp::ftail_exit as *const () as u64,
        tail_mark: tramp::ftail_tail_mark as *const () as u64,
        convert_enter: tramp::ftail_convert_enter as *const () as u64,
        convert_leave: tramp::ftail_convert_leave as *const () as u64,
    };
    let cfg = CONFIG.get().expect("set above");
    control::init(
        control::Selection {
            enabled: !cfg.off,
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
        },
        trampolines,
    );
    let mut modules_text = String::new();
    let mut totals = patch::Patched::default();
    let bases: Vec<u64> = modules.iter().map(|m| m.base).collect();
    for m in modules {
        let p = control::add_module(&m);
        totals.functions += p.functions;
        totals.sites += p.sites;
        totals.skipped += p.skipped;
        totals.converted += p.converted;
        modules_text.push_str(&module_line(&m));
    }
    let dlopen_hooked = dlhook::install(bases);
    write_metadata(hz, start_tsc, totals, &modules_text, dlopen_hooked);
    let _ = START.set(StartInfo {
        hz,
        start_tsc,
        patched: totals,
        modules: modules_text,
        dlopen_hooked,
    });
    // SAFETY: registering plain extern "C" callbacks.
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
    if cfg.ctl || cfg.off {
        control::start_agent();
    }
}

extern "C" fn at_exit() {
    hooks::close_all_open();
}

/// The child of a fork records into its own files, with its own metadata
/// (the child is single-threaded here, so writing files is safe).
extern "C" fn after_fork_in_child() {
    let st = state::current();
    // SAFETY: the calling (only) thread's own state.
    unsafe {
        if state::recording((*st).status) {
            (*st).status = state::STATUS_NEW;
        }
    }
    if let (Some(s), Some(cfg)) = (START.get(), CONFIG.get()) {
        key::choose(&cfg.dir);
        write_metadata(s.hz, s.start_tsc, s.patched, &s.modules, s.dlopen_hooked);
    }
}

fn exe_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
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

/// The module's path for the metadata: absolute, so that a trace can be
/// read from another directory.
fn module_path(m: &modules::Module) -> String {
    if m.path.is_empty() {
        return exe_path();
    }
    std::fs::canonicalize(&m.path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| m.path.clone())
}

/// The module's line in `KEY.modules`: `BASE BUILD-ID PATH`.
fn module_line(m: &modules::Module) -> String {
    let id = m.build_id.as_ref().map_or_else(
        || "-".to_string(),
        |id| id.iter().map(|b| format!("{b:02x}")).collect(),
    );
    format!("{:#x} {id} {}\n", m.base, module_path(m))
}

/// Adds a module loaded later to this process's module list.
pub(crate) fn append_module(m: &modules::Module) {
    use std::io::Write as _;
    let Some(cfg) = CONFIG.get() else { return };
    let key = String::from_utf8_lossy(key::get()).into_owned();
    let path = cfg.dir.join(format!("{key}.modules"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(module_line(m).as_bytes());
    }
}

fn write_metadata(hz: u64, start_tsc: u64, p: patch::Patched, modules_text: &str, dlopen: bool) {
    let Some(cfg) = CONFIG.get() else { return };
    let pid = std::process::id();
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let realtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let info = format!(
        "version={}\npid={pid}\nppid={}\nexe={}\ncmdline={}\ntsc_hz={hz}\nstart_tsc={start_tsc}\n\
         start_realtime_ns={realtime}\ntail={}\nfilter={}\nexclude={}\n\
         depth={}\ntracing={}\ncontrol_agent={}\npatched_functions={}\npatched_sites={}\nskipped_sites={}\nconverted_tails={}\ndlopen_hook={}\n",
        ftail_abi::trace::TRACE_VERSION,
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() },
        exe_path(),
        args.join("\x1f"),
        format!("{:?}", cfg.tail).to_lowercase(),
        cfg.include.join(","),
        cfg.exclude.join(","),
        if cfg.depth == u64::MAX { 0 } else { cfg.depth },
        if cfg.off { "off" } else { "on" },
        cfg.ctl || cfg.off,
        p.functions,
        p.sites,
        p.skipped,
        p.converted,
        dlopen,
    );
    let key = String::from_utf8_lossy(key::get()).into_owned();
    let _ = std::fs::write(cfg.dir.join(format!("{key}.modules")), modules_text);
    let _ = std::fs::write(cfg.dir.join(format!("{key}.info")), info);
}

/// `_exit` skips `atexit` handlers; close the open frames first so the
/// thread's trace stays balanced, then leave as `_exit` does.
#[no_mangle]
pub extern "C" fn _exit(code: i32) -> ! {
    hooks::close_all_open();
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

macro_rules! exec_wrapper {
    ($name:ident, $cname:expr, ($($arg:ident: $ty:ty),*)) => {
        /// Closes the calling thread's open frames (the image is about to
        /// be replaced; they never return), then runs the real function.
        ///
        /// # Safety
        ///
        /// The contract of the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> i32 {
            hooks::close_all_open();
            let real = next_symbol($cname);
            if real.is_null() {
                // SAFETY: errno is thread-local.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                return -1;
            }
            // SAFETY: `real` is libc's function of this very signature.
            unsafe {
                let f: unsafe extern "C" fn($($ty),*) -> i32 = std::mem::transmute(real);
                f($($arg),*)
            }
        }
    };
}

type Argv = *const *const libc::c_char;
type Path = *const libc::c_char;
exec_wrapper!(execve, c"execve", (path: Path, argv: Argv, envp: Argv));
exec_wrapper!(execv, c"execv", (path: Path, argv: Argv));
exec_wrapper!(execvp, c"execvp", (file: Path, argv: Argv));
exec_wrapper!(execvpe, c"execvpe", (file: Path, argv: Argv, envp: Argv));
exec_wrapper!(fexecve, c"fexecve", (fd: i32, argv: Argv, envp: Argv));

/// Called by the variadic exec wrappers (`tramp.rs`): closes the calling
/// thread's open frames and returns libc's `execl` (0), `execlp` (1) or
/// `execle` (2), or a function that fails with ENOSYS.
pub(crate) extern "C" fn before_variadic_exec(which: u32) -> usize {
    hooks::close_all_open();
    let name = match which {
        0 => c"execl",
        1 => c"execlp",
        _ => c"execle",
    };
    let real = next_symbol(name);
    if real.is_null() {
        exec_unavailable as *const () as usize
    } else {
        real as usize
    }
}

extern "C" fn exec_unavailable() -> i32 {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}
