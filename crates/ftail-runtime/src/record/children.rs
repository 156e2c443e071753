//! Carrying the tracer into the programs a traced process starts.
//!
//! `ftail record` reaches a process's children through the environment:
//! `LD_PRELOAD` names this library and `FTAIL_*` say where and how to
//! record. A child started with an environment of its own (`execve`,
//! `execle`, `execvpe`, `fexecve`, `posix_spawn` with an explicit `envp`:
//! a minimal one, a cleaned one) would be lost. The wrappers here give
//! every such environment the tracer's variables it lacks — the
//! `LD_PRELOAD` entry of this library (put first, before any the
//! environment already has) and each `FTAIL_*` variable this process
//! started with — and nothing else: no other variable of this process,
//! and this process's own environment is never changed. A variable the
//! given environment already sets is left as it is.
//!
//! An `exec` may run in a `vfork`ed child, whose memory is its parent's:
//! the new environment is built in pages mapped for it (no allocator, no
//! lock) and unmapped if the `exec` returns.

use std::ffi::CStr;
use std::sync::OnceLock;

use crate::next_symbol;

/// The tracer's variables, as `NAME=value` strings, taken at start-up.
struct Tracer {
    /// This library's path as `LD_PRELOAD` named it.
    preload: Vec<u8>,
    /// Every `FTAIL_*=…` of the process's starting environment.
    vars: Vec<Vec<u8>>,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Takes the tracer's variables from the environment (start-up, before
/// the program can change it).
pub fn snapshot() {
    let mut vars = Vec::new();
    let mut preload = Vec::new();
    for entry in env_entries(current_environ()) {
        if entry.starts_with(b"FTAIL_") {
            vars.push(entry.to_vec());
        } else if let Some(list) = entry.strip_prefix(b"LD_PRELOAD=") {
            preload = own_preload_entry(list).unwrap_or_default();
        }
    }
    if !vars.is_empty() && !preload.is_empty() {
        let _ = TRACER.set(Tracer { preload, vars });
    }
}

fn current_environ() -> *const *const libc::c_char {
    // SAFETY: reading the libc global; the program may change it, but it
    // always points at a NULL-terminated array (or is null).
    unsafe { environ }
}

/// The `LD_PRELOAD` element (separated by ':' or ' ') that is this
/// library: the one whose file is the file this code was loaded from.
fn own_preload_entry(list: &[u8]) -> Option<Vec<u8>> {
    let mut info: libc::Dl_info = unsafe_zeroed();
    // SAFETY: dladdr fills `info` for an address inside this library.
    if unsafe { libc::dladdr(snapshot as *const libc::c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let ours = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let ours_id = file_id(ours)?;
    list.split(|&b| b == b':' || b == b' ')
        .find(|e| !e.is_empty() && file_id(e) == Some(ours_id))
        .map(<[u8]>::to_vec)
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn file_id(path: &[u8]) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st: libc::stat = unsafe_zeroed();
    // SAFETY: stat with a NUL-terminated path into our buffer.
    (unsafe { libc::stat(c.as_ptr(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// The entries of a NULL-terminated environment array.
fn env_entries<'a>(envp: *const *const libc::c_char) -> impl Iterator<Item = &'a [u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if envp.is_null() {
            return None;
        }
        // SAFETY: `envp` is a NULL-terminated array of NUL-terminated
        // strings (the exec functions' contract); `i` stops at the NULL.
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            return None;
        }
        i += 1;
        // SAFETY: as above.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    })
}

fn name_of(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or(entry)
}

/// An environment built for a child, in pages of its own.
pub struct ChildEnv {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildEnv {
    /// The array to pass to the exec or spawn function.
    pub fn envp(&self) -> *const *const libc::c_char {
        self.base as *const *const libc::c_char
    }
}

impl Drop for ChildEnv {
    fn drop(&mut self) {
        // SAFETY: the mapping `with_tracer` made; nothing points into it
        // once the exec or spawn call that used it returned.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `envp` with the tracer's variables it lacks, or `None` when it lacks
/// none (or when none were recorded at start-up, or memory is short: the
/// child then gets `envp` as it is). Allocates nothing but the mapping.
pub fn with_tracer(envp: *const *const libc::c_char) -> Option<ChildEnv> {
    let tracer = TRACER.get()?;
    let has = |name: &[u8]| env_entries(envp).any(|e| name_of(e) == name);
    let old_preload = env_entries(envp).find_map(|e| e.strip_prefix(b"LD_PRELOAD="));
    let preload_ok = old_preload.is_some_and(|list| {
        list.split(|&b| b == b':' || b == b' ')
            .any(|e| e == tracer.preload.as_slice())
    });
    let missing = || tracer.vars.iter().filter(|v| !has(name_of(v)));
    if preload_ok && missing().next().is_none() {
        return None;
    }
    let others = || env_entries(envp).filter(|e| name_of(e) != b"LD_PRELOAD");
    // The new LD_PRELOAD: ours, then whatever the environment had.
    let separator: &[u8] = if old_preload.is_some_and(|o| !o.is_empty()) {
        b":"
    } else {
        b""
    };
    let preload = [
        &b"LD_PRELOAD="[..],
        &tracer.preload,
        separator,
        old_preload.unwrap_or_default(),
    ];
    let count = 1 + others().count() + missing().count() + 1;
    let strings = preload.iter().map(|p| p.len()).sum::<usize>()
        + 1
        + missing().map(|v| v.len() + 1).sum::<usize>();
    let mut w = Writer::map(count, strings)?;
    let p = w.string(&preload);
    w.push(p);
    for e in others() {
        w.push(e.as_ptr());
    }
    for v in missing() {
        let p = w.string(&[v]);
        w.push(p);
    }
    w.push(std::ptr::null());
    Some(w.env)
}

/// Lays a new environment out in a fresh mapping: `count` pointers, then
/// the strings it adds.
struct Writer {
    env: ChildEnv,
    count: usize,
    slot: usize,
    text: usize,
}

impl Writer {
    fn map(count: usize, strings: usize) -> Option<Writer> {
        let len = (count * 8 + strings + 4095) & !4095;
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (base != libc::MAP_FAILED).then(|| Writer {
            env: ChildEnv { base, len },
            count,
            slot: 0,
            text: count * 8,
        })
    }

    /// Copies the concatenation of `parts` and a NUL; returns where.
    fn string(&mut self, parts: &[&[u8]]) -> *const u8 {
        let at = self.env.base as usize + self.text;
        let mut p = at as *mut u8;
        for part in parts {
            // SAFETY: the strings were counted into the mapping's length.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), p, part.len());
                p = p.add(part.len());
            }
        }
        // SAFETY: as above (the NUL was counted too).
        unsafe { *p = 0 };
        self.text = p as usize + 1 - self.env.base as usize;
        at as *const u8
    }

    fn push(&mut self, p: *const u8) {
        if self.slot >= self.count {
            return; // cannot happen: the slots were counted first
        }
        // SAFETY: `slot` < `count` pointers fit at the mapping's start.
        unsafe { *self.env.base.cast::<*const u8>().add(self.slot) = p };
        self.slot += 1;
    }
}

type Argv = *const *const libc::c_char;
type Envp = *const *const libc::c_char;
type Path = *const libc::c_char;

fn fail(errno: i32) -> i32 {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = errno };
    -1
}

/// Closes the calling thread's open frames (the image is about to be
/// replaced: they never return), then runs libc's `name` with `envp`
/// given the tracer's variables.
fn exec_with(name: &CStr, envp: Envp, call: impl FnOnce(*mut libc::c_void, Envp) -> i32) -> i32 {
    crate::record::session::close_all_open();
    let env = with_tracer(envp);
    let envp = env.as_ref().map_or(envp, ChildEnv::envp);
    let p = next_symbol(name);
    if p.is_null() {
        return fail(libc::ENOSYS);
    }
    let r = call(p, envp);
    // The exec failed: keep its errno across the unmapping.
    let errno = crate::process::files::errno();
    drop(env);
    fail(errno);
    r
}

/// `execve` with the tracer's variables carried into the new image.
///
/// # Safety
///
/// The contract of libc's `execve`.
#[no_mangle]
pub unsafe extern "C" fn execve(path: Path, argv: Argv, envp: Envp) -> i32 {
    exec_with(c"execve", envp, |f, envp| {
        // SAFETY: `f` is libc's execve; the arguments are the caller's and
        // an environment that lives until the call returns.
        unsafe {
            let f: unsafe extern "C" fn(Path, Argv, Envp) -> i32 = std::mem::transmute(f);
            f(path, argv, envp)
        }
    })
}

/// `execv`: `execve` with this process's environment.
///
/// # Safety
///
/// The contract of libc's `execv`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: Path, argv: Argv) -> i32 {
    // SAFETY: as for execve.
    unsafe { execve(path, argv, current_environ()) }
}

/// `execvpe` with the tracer's variables carried into the new image.
///
/// # Safety
///
/// The contract of libc's `execvpe`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(file: Path, argv: Argv, envp: Envp) -> i32 {
    exec_with(c"execvpe", envp, |f, envp| {
        // SAFETY: as in execve, for libc's execvpe.
        unsafe {
            let f: unsafe extern "C" fn(Path, Argv, Envp) -> i32 = std::mem::transmute(f);
            f(file, argv, envp)
        }
    })
}

/// `execvp`: `execvpe` with this process's environment.
///
/// # Safety
///
/// The contract of libc's `execvp`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: Path, argv: Argv) -> i32 {
    // SAFETY: as for execvpe.
    unsafe { execvpe(file, argv, current_environ()) }
}

/// `fexecve` with the tracer's variables carried into the new image.
///
/// # Safety
///
/// The contract of libc's `fexecve`.
#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: i32, argv: Argv, envp: Envp) -> i32 {
    exec_with(c"fexecve", envp, |f, envp| {
        // SAFETY: as in execve, for libc's fexecve.
        unsafe {
            let f: unsafe extern "C" fn(i32, Argv, Envp) -> i32 = std::mem::transmute(f);
            f(fd, argv, envp)
        }
    })
}

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    Path,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    Argv,
    Envp,
) -> i32;

/// Runs libc's `posix_spawn` or `posix_spawnp` (`name`) with `envp`
/// given the tracer's variables. The spawning process goes on: nothing
/// of its own is closed.
fn spawn_with(
    name: &CStr,
    pid: *mut libc::pid_t,
    path: Path,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: Argv,
    envp: Envp,
) -> i32 {
    let env = with_tracer(envp);
    let envp = env.as_ref().map_or(envp, ChildEnv::envp);
    let p = next_symbol(name);
    if p.is_null() {
        return libc::ENOSYS;
    }
    // SAFETY: `p` is libc's function of that name and type; the arguments
    // are the caller's, and an environment that lives until it returns
    // (the child has exec'ed or failed by then).
    unsafe {
        let f: SpawnFn = std::mem::transmute(p);
        f(pid, path, actions, attr, argv, envp)
    }
}

/// `posix_spawn` with the tracer's variables carried into the child.
///
/// # Safety
///
/// The contract of libc's `posix_spawn`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: Path,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: Argv,
    envp: Envp,
) -> i32 {
    spawn_with(c"posix_spawn", pid, path, actions, attr, argv, envp)
}

/// `posix_spawnp` with the tracer's variables carried into the child.
///
/// # Safety
///
/// The contract of libc's `posix_spawnp`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: Path,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: Argv,
    envp: Envp,
) -> i32 {
    spawn_with(c"posix_spawnp", pid, file, actions, attr, argv, envp)
}

/// Called by the variadic exec wrappers (`tramp.rs`) with their integer
/// argument registers (`rdi`…`r9`, in order) and the caller's stack
/// arguments: gathers the argument list (and, for `execle`, the
/// environment after it) and runs `execve` (`execl`, `execle`) or
/// `execvpe` (`execlp`). `which`: 0 `execl`, 1 `execlp`, 2 `execle`.
///
/// # Safety
///
/// `regs` points at six words, `stack` at the caller's stack arguments,
/// as the variadic exec functions' contract lays them out (a NULL ends the
/// argument list).
pub unsafe extern "C" fn variadic_exec(which: u32, regs: *const usize, stack: *const usize) -> i32 {
    // SAFETY: per the contract: the first six arguments in `regs`, the
    // rest on the stack, up to the NULL (and one after it for execle).
    let arg = |i: usize| unsafe {
        if i < 6 {
            *regs.add(i)
        } else {
            *stack.add(i - 6)
        }
    };
    const MAX_ARGS: usize = 1 << 20;
    let mut n = 1;
    while n < MAX_ARGS && arg(n) != 0 {
        n += 1;
    }
    if n == MAX_ARGS {
        return fail(libc::E2BIG);
    }
    let envp = if which == 2 {
        arg(n + 1) as Envp
    } else {
        current_environ()
    };
    // argv: arguments 1..n and the NULL, in pages of their own (this may
    // run in a vfork child).
    let Some(mut w) = Writer::map(n, 0) else {
        return fail(libc::ENOMEM);
    };
    for i in 1..=n {
        w.push(arg(i) as *const u8);
    }
    let path = arg(0) as Path;
    let argv = w.env.envp();
    // SAFETY: the exec functions' contracts hold: `path`, an argv that
    // lives until they return, and an environment array.
    unsafe {
        if which == 1 {
            execvpe(path, argv, envp)
        } else {
            execve(path, argv, envp)
        }
    }
}
