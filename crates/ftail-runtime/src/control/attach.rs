//! Loading into a running process (`ftail record -p PID`).
//!
//! The tracer makes one thread of the process call `dlopen` on this
//! library (whose constructor finds no configuration in the environment
//! and does nothing), then [`ftail_attach`] with the path of a
//! configuration file: the running process's environment cannot be set.
//! That call only reads the file and starts a thread of the runtime, so
//! the borrowed thread is back to the program at once; the runtime's
//! thread plans every module with tracing off, switches the selection on
//! with the live protocol (`poke`), as `ftail ctl on` does, and starts the
//! control agent, through which the tracer switches tracing off again
//! and later on again: the runtime is loaded once, and stays.
//!
//! The library's TLS is in every thread's static block at one offset
//! (`state::current`): threads already running take the slow path at
//! their first event and are set up there, as threads started later are.

use std::sync::atomic::{AtomicBool, Ordering};

use ftail_abi::attach::{ALREADY, BAD_CONFIG, NO_THREAD, STARTED};

use crate::process::config::Config;

/// Set by the first [`ftail_attach`].
static CALLED: AtomicBool = AtomicBool::new(false);

/// Largest configuration file read.
const MAX_CONFIG: usize = 64 << 10;

/// Entry point for `ftail record -p`: reads the configuration at `path`
/// and starts the runtime on a thread of its own; returns one of
/// `ftail_abi::attach`'s codes.
///
/// # Safety
///
/// `path` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ftail_attach(path: *const libc::c_char) -> libc::c_int {
    if crate::CONFIG.get().is_some() || CALLED.swap(true, Ordering::AcqRel) {
        return ALREADY;
    }
    if path.is_null() {
        return BAD_CONFIG;
    }
    // SAFETY: per the contract.
    let path = unsafe { std::ffi::CStr::from_ptr(path) };
    let Some(cfg) = read_config(path).and_then(|text| Config::from_file(&text)) else {
        CALLED.store(false, Ordering::Release);
        return BAD_CONFIG;
    };
    if spawn(cfg) {
        STARTED
    } else {
        CALLED.store(false, Ordering::Release);
        NO_THREAD
    }
}

/// The file at `path`, when it is a regular file of this user's that no
/// one else may write, of a sane size.
fn read_config(path: &std::ffi::CStr) -> Option<Vec<u8>> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    let text = crate::process::files::stat(fd).ok().and_then(|st| {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let trusted = st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_uid == me
            && st.st_mode & 0o022 == 0
            && (st.st_size as usize) < MAX_CONFIG;
        trusted.then(|| read_all(fd))?
    });
    crate::process::files::close(fd);
    text
}

fn read_all(fd: i32) -> Option<Vec<u8>> {
    let mut text = vec![0u8; MAX_CONFIG];
    let mut len = 0;
    while len < text.len() {
        // SAFETY: reading into the unfilled rest of `text`.
        let n = unsafe { libc::read(fd, text[len..].as_mut_ptr().cast(), text.len() - len) };
        match n {
            0 => break,
            n if n > 0 => len += n as usize,
            _ if crate::process::files::errno() == libc::EINTR => {}
            _ => return None,
        }
    }
    text.truncate(len);
    Some(text)
}

/// Starts the runtime's set-up thread, with every signal blocked from
/// its first instruction (the program's signals keep going to its own
/// threads); false when it could not be started.
fn spawn(cfg: Config) -> bool {
    let arg = Box::into_raw(Box::new(cfg));
    // SAFETY: the attributes and signal sets are initialised before use;
    // the calling thread's mask is put back as it was; `arg` is handed to
    // the new thread, or taken back when there is none.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut thread: libc::pthread_t = 0;
        let made = libc::pthread_create(&mut thread, &attr, set_up, arg.cast()) == 0;
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if !made {
            drop(Box::from_raw(arg));
        }
        made
    }
}

extern "C" fn set_up(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `spawn` hands over the boxed configuration.
    let cfg = unsafe { Box::from_raw(arg.cast::<Config>()) };
    crate::start(*cfg, crate::Start::Attached);
    std::ptr::null_mut()
}

/// Switches tracing on while the program runs, as `ftail ctl on` does;
/// `patched` then says what the sites hold.
pub fn switch_on(patched: &mut crate::plan::Patched) {
    let Ok(answer) = crate::control::selection::command("on") else {
        return;
    };
    let field = |name: &str| {
        answer
            .split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    if let (Some(functions), Some(sites)) = (field("functions"), field("sites")) {
        patched.functions = functions;
        patched.sites = sites;
    }
}
