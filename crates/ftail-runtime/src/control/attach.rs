//! Loading into a running process (`ftail record -p PID`).
//!
//! The tracer makes one thread of the process call `dlopen` on this
//! library, and that one call is all the borrowed thread runs: the
//! constructor finds no configuration in the environment (the running
//! process's cannot be set), sees from the thread's status that a tracer
//! holds it ([`on_load`]), and starts a thread of the runtime, so the
//! borrowed thread is back to the program after a single trip. The
//! runtime's thread fetches the configuration from the tracer over the
//! abstract socket `ftail-attach-TRACERPID` — only from a listener made
//! by that very process, of this user or root (`SO_PEERCRED`) — answers
//! whether it could read it, plans every module with tracing off,
//! switches the selection on with the live protocol (`poke`), as `ftail
//! ctl on` does, and starts the control agent, through which the tracer
//! switches tracing off again and later on again: the runtime is loaded
//! once, and stays.
//!
//! The library's TLS is in every thread's static block at one offset
//! (`state::current`): threads already running take the slow path at
//! their first event and are set up there, as threads started later are.

use std::sync::atomic::{AtomicBool, Ordering};

use ftail_abi::attach::{BAD_CONFIG, STARTED, TRACER_SOCKET};

use crate::process::config::Config;

/// Set by the first [`on_load`] that starts the runtime's thread.
static CALLED: AtomicBool = AtomicBool::new(false);

/// Largest configuration read.
const MAX_CONFIG: usize = 64 << 10;

/// How long the runtime's thread waits for the tracer's configuration.
const FETCH_TIMEOUT_S: libc::time_t = 10;

/// Called by the constructor when the environment holds no
/// configuration: when a tracer has this thread stopped (`ftail record
/// -p` calling `dlopen` from it), starts the runtime's thread, which
/// fetches the configuration from that tracer. The borrowed thread only
/// reads its own status and creates a thread.
pub fn on_load() {
    // The borrowed thread may be between a failed call and its reading of
    // `errno`: a failed call here must not change it.
    let errno = crate::process::files::errno();
    start_if_traced();
    // SAFETY: this thread's errno location, always valid.
    unsafe { *libc::__errno_location() = errno };
}

fn start_if_traced() {
    let tracer = tracer_pid();
    if tracer <= 0 || crate::CONFIG.get().is_some() || CALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    if !spawn(tracer) {
        CALLED.store(false, Ordering::Release);
    }
}

/// The `TracerPid` of this thread's status: 0 when none traces it.
fn tracer_pid() -> libc::pid_t {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated literal path.
    let fd = unsafe {
        libc::open(
            c"/proc/thread-self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reading into the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    crate::process::files::close(fd);
    parse_tracer(&buf[..len])
}

fn parse_tracer(status: &[u8]) -> libc::pid_t {
    const FIELD: &[u8] = b"TracerPid:";
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(FIELD))
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The configuration the tracer `tracer` sends, after checking that the
/// socket's listener is that process, run by this user or root; the
/// tracer is told whether it was usable.
fn fetch_config(tracer: libc::pid_t) -> Option<Config> {
    let sock = connect(&format!("{TRACER_SOCKET}{tracer}"))?;
    let cfg = from_tracer(sock, tracer).and_then(|text| Config::from_file(&text));
    let code: u8 = if cfg.is_some() { STARTED } else { BAD_CONFIG } as u8;
    crate::process::files::write_all(sock, &[code]);
    crate::process::files::close(sock);
    cfg
}

fn connect(name: &str) -> Option<i32> {
    // SAFETY: creating a socket; it is ours.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let (addr, len) = crate::control::agent::address(name);
    let wait = libc::timeval {
        tv_sec: FETCH_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: connecting our socket to a valid address; the timeout is a
    // timeval of the size given.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&wait as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        ) == 0
            && libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) == 0
    };
    if !ok {
        crate::process::files::close(fd);
        return None;
    }
    Some(fd)
}

/// What the tracer sends on `sock`, up to its end, when the listener is
/// the tracer's.
fn from_tracer(sock: i32, tracer: libc::pid_t) -> Option<Vec<u8>> {
    // SAFETY: getsockopt(SO_PEERCRED) fills a ucred of the given size.
    let cred = unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (r == 0).then_some(cred)?
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if cred.pid != tracer || (cred.uid != me && cred.uid != 0) {
        return None;
    }
    read_all(sock)
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
    // A configuration that fills the room may have been cut.
    (len < text.len()).then(|| {
        text.truncate(len);
        text
    })
}

/// Starts the runtime's set-up thread, with every signal blocked from
/// its first instruction (the program's signals keep going to its own
/// threads); false when it could not be started.
fn spawn(tracer: libc::pid_t) -> bool {
    // SAFETY: the attributes and signal sets are initialised before use;
    // the calling thread's mask is put back as it was; the tracer's pid
    // travels in the argument pointer's value.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut thread: libc::pthread_t = 0;
        let arg = tracer as usize as *mut libc::c_void;
        let made = libc::pthread_create(&mut thread, &attr, set_up, arg) == 0;
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        made
    }
}

extern "C" fn set_up(arg: *mut libc::c_void) -> *mut libc::c_void {
    let tracer = arg as usize as libc::pid_t;
    match fetch_config(tracer) {
        Some(cfg) => {
            crate::start(cfg, crate::Start::Attached);
        }
        None => CALLED.store(false, Ordering::Release),
    }
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

#[cfg(test)]
mod tests {
    use super::parse_tracer;

    #[test]
    fn the_tracer_is_read_from_the_status() {
        let status = b"Name:\tx\nState:\tt (tracing stop)\nTracerPid:\t4242\nUid:\t0\n";
        assert_eq!(parse_tracer(status), 4242);
        assert_eq!(parse_tracer(b"Name:\tx\nTracerPid:\t0\n"), 0);
        assert_eq!(parse_tracer(b"Name:\tx\n"), 0);
    }
}
