//! The control agent: a thread of the traced program (started only under
//! `ftail record --ctl` or `--off`) that listens on the abstract Unix
//! socket `ftail-ctl-PID` and runs the commands `ftail ctl` sends, one
//! per line, one answer line each (`control::command`).
//!
//! **It must never touch a descriptor it does not own.** The program may
//! close every descriptor (daemons close 3..1023) and get the same numbers
//! back for its own sockets; an agent that went on using its numbers
//! would spin on `EBADF` or accept the program's own connections. So each
//! descriptor's identity (device and inode) is recorded when it is made
//! and checked before every use; one found closed or replaced is
//! forgotten, never closed (the number is the program's now), and a lost
//! listening socket is made again. The agent's descriptors are moved to
//! high numbers, away from those a program allocates.
//!
//! **Its input is bounded.** A line longer than [`MAX_LINE`] ends the
//! connection; a client that sends no complete line for [`IDLE`] is
//! dropped; at most [`MAX_CLIENTS`] are served at once, all from one
//! `poll` loop, so an idle client delays nobody.
//!
//! **It answers the user who started the recording** (`SO_PEERCRED`), and
//! root: not whatever user the program runs as now. A program started by
//! root that drops to another user keeps root's recording, which that
//! user may not switch off or refilter (it could not trace the process
//! either: the kernel makes such a process non-dumpable).

use std::time::{Duration, Instant};

use ftail_abi::trace::{AGENT_BIND_FAILED, AGENT_LISTENING, AGENT_LOST_SOCKET};

use crate::process::files::errno;
use crate::process::sync::{Locked, RawLock};

/// The longest command line accepted.
pub const MAX_LINE: usize = 64 << 10;
/// How long a client may stay without sending a complete line.
pub const IDLE: Duration = Duration::from_secs(10);
/// Clients served at once; more are turned away.
pub const MAX_CLIENTS: usize = 16;
/// The lowest descriptor number the agent moves its descriptors to.
const HIGH_FD: i32 = 900;
/// How often the agent of a process the runtime was loaded into looks
/// for libraries loaded since (`dlhook::poll`) while tracing is on; while
/// it is off, once a second and before every command.
const MODULES_POLL_MS: i32 = 10;
/// The agent's `poll` timeout otherwise.
const IDLE_POLL_MS: i32 = 1000;

/// A descriptor the agent made, with the identity that proves it is still
/// the same open file.
struct Owned {
    fd: i32,
    dev: u64,
    ino: u64,
}

/// The agent's descriptors, for a forked child: it inherits them (the
/// agent thread is not there to use them) and closes them, so that the
/// program's children see no descriptor of ours. Taken by the fork
/// handlers (`lib.rs`) around `fork`.
static OPEN: Locked<Vec<(i32, u64, u64)>> = Locked::new(Vec::new());

/// The lock of the agent's descriptor list, for the fork handlers.
pub fn lock() -> &'static RawLock {
    OPEN.raw()
}

/// In a forked child: closes the descriptors inherited from the agent
/// (those still naming the agent's files).
pub fn close_inherited() {
    let open = OPEN.with(std::mem::take);
    for (fd, dev, ino) in open {
        if identity(fd) == Some((dev, ino)) {
            // SAFETY: an inherited copy of the agent's descriptor (its
            // identity checked just above), unused in the child.
            unsafe { libc::close(fd) };
        }
    }
}

impl Owned {
    /// Takes `fd` (just made by the agent), moving it to a high number.
    fn new(fd: i32) -> Option<Owned> {
        // SAFETY: duplicating a descriptor we own; the original is closed
        // only when the duplicate exists.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        let fd = if high >= 0 {
            // SAFETY: `fd` is ours and replaced by `high`.
            unsafe { libc::close(fd) };
            high
        } else {
            fd
        };
        let (dev, ino) = identity(fd)?;
        OPEN.with(|o| o.push((fd, dev, ino)));
        Some(Owned { fd, dev, ino })
    }

    /// Whether the number still names the file the agent made.
    fn still_ours(&self) -> bool {
        identity(self.fd) == Some((self.dev, self.ino))
    }

    /// Closes it if it is still ours; otherwise the number belongs to the
    /// program now and is left alone.
    fn close(self) {
        OPEN.with(|o| o.retain(|&(fd, ..)| fd != self.fd));
        if self.still_ours() {
            // SAFETY: our own descriptor (checked just above).
            unsafe { libc::close(self.fd) };
        }
    }

    /// Forgets a descriptor that is no longer ours (never closes it).
    fn forget(self) {
        OPEN.with(|o| o.retain(|&(fd, ..)| fd != self.fd));
    }
}

fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat fills the buffer; a bad descriptor only fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// The abstract socket address `\0NAME`.
pub(crate) fn address(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    let n = bytes.len().min(addr.sun_path.len() - 1);
    for (d, &s) in addr.sun_path[1..=n].iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
    (addr, len as libc::socklen_t)
}

/// A new listening socket bound to `name`; Err(errno).
fn listen(name: &str) -> Result<Owned, i32> {
    // SAFETY: creating a socket; it is ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let (addr, len) = address(name);
    // SAFETY: binding and listening on our socket with a valid address.
    let ok = unsafe {
        libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) == 0
            && libc::listen(fd, 16) == 0
    };
    if !ok {
        let e = errno();
        // SAFETY: our socket, unused.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Owned::new(fd).ok_or(libc::EBADF)
}

/// The uid of the client connected on `fd`.
fn peer_uid(fd: i32) -> Option<u32> {
    // SAFETY: getsockopt(SO_PEERCRED) fills a ucred of the given size.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (r == 0).then_some(cred.uid)
    }
}

/// Whether user `uid` may control this recording: the user who started
/// it, or root.
fn may_control(uid: u32) -> bool {
    let owner = crate::CONFIG.get().map(|c| c.owner_uid);
    uid == 0 || Some(uid) == owner
}

struct Client {
    sock: Owned,
    pending: Vec<u8>,
    since: Instant,
}

/// What serving a client's input decided.
enum Next {
    Keep,
    Drop,
}

/// Writes the whole answer (short, to a nonblocking socket); false when
/// the client does not take it.
fn answer(c: &Client, text: &str) -> bool {
    c.sock.still_ours() && crate::process::files::write_all(c.sock.fd, text.as_bytes())
}

/// Runs one command line; `watch_modules`: first catches up with the
/// libraries loaded since the last look, and holds the loader's list of
/// objects while the command writes sites.
fn run_line(line: &str, watch_modules: bool) -> String {
    let mut text = String::new();
    let mut run = || {
        text = match crate::control::selection::command(line) {
            Ok(s) => format!("ok {s}\n"),
            Err(e) => format!("error {e}\n"),
        }
    };
    if watch_modules {
        crate::control::dlhook::poll(&mut run);
    } else {
        run();
    }
    text
}

/// Reads what the client sent and answers every complete line.
fn serve(c: &mut Client, watch_modules: bool) -> Next {
    if !c.sock.still_ours() {
        return Next::Drop;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: reading into our buffer from our (checked) socket.
    let n = unsafe { libc::read(c.sock.fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n == 0 || (n < 0 && errno() != libc::EAGAIN && errno() != libc::EINTR) {
        return Next::Drop;
    }
    if n < 0 {
        return Next::Keep;
    }
    c.pending.extend_from_slice(&buf[..n as usize]);
    while let Some(end) = c.pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = c.pending.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line[..end]).into_owned();
        let text = run_line(&line, watch_modules);
        if !answer(c, &text) {
            return Next::Drop;
        }
        c.since = Instant::now();
    }
    if c.pending.len() > MAX_LINE {
        answer(c, &format!("error line longer than {MAX_LINE} bytes\n"));
        return Next::Drop;
    }
    Next::Keep
}

/// The agent thread's body; `watch_modules`: it also looks for libraries
/// loaded later (the runtime was loaded into a running process, with no
/// hook in the loader).
pub fn run(name: &str, watch_modules: bool) {
    // SAFETY: blocking every signal in this thread only, so the program's
    // signals keep going to its own threads.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
    let mut listener = match listen(name) {
        Ok(l) => l,
        Err(e) => {
            // Another process holds the name (a squatter, or a stale
            // agent): say so where `ftail record` and `ftail ctl` look.
            crate::process::status::agent(AGENT_BIND_FAILED | ((e as u64) << 8));
            return;
        }
    };
    crate::process::status::agent(AGENT_LISTENING);
    let mut clients: Vec<Client> = Vec::new();
    loop {
        let mut timeout = IDLE_POLL_MS;
        if watch_modules {
            crate::control::dlhook::poll(&mut || {});
            if crate::control::selection::enabled() {
                timeout = MODULES_POLL_MS;
            }
        }
        if !listener.still_ours() {
            // The program closed (and maybe reused) the number: listen
            // again on a socket of our own.
            match listen(name) {
                Ok(l) => std::mem::replace(&mut listener, l).forget(),
                Err(e) => {
                    crate::process::status::agent(AGENT_LOST_SOCKET | ((e as u64) << 8));
                    clients.into_iter().for_each(|c| c.sock.close());
                    listener.forget();
                    return;
                }
            }
        }
        let (live, gone): (Vec<Client>, Vec<Client>) = clients
            .into_iter()
            .partition(|c| c.sock.still_ours() && c.since.elapsed() < IDLE);
        // close() checks the identity again: a replaced one is forgotten.
        gone.into_iter().for_each(|c| c.sock.close());
        clients = live;
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.fd)
            .chain(clients.iter().map(|c| c.sock.fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polling our descriptors (checked just above), with a
        // timeout so that identities and idle clients are checked again.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            continue;
        }
        let mut keep = Vec::with_capacity(clients.len());
        for (c, p) in clients.into_iter().zip(&fds[1..]) {
            let mut c = c;
            let next = if p.revents != 0 {
                serve(&mut c, watch_modules)
            } else {
                Next::Keep
            };
            match next {
                Next::Keep => keep.push(c),
                Next::Drop => c.sock.close(),
            }
        }
        clients = keep;
        if fds[0].revents != 0 && listener.still_ours() {
            accept(&listener, &mut clients);
        }
    }
}

/// Accepts one connection from a user who may control the recording,
/// unless too many are served.
fn accept(listener: &Owned, clients: &mut Vec<Client>) {
    // SAFETY: accepting on our (checked) listening socket.
    let fd = unsafe {
        libc::accept4(
            listener.fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        return;
    }
    let Some(sock) = Owned::new(fd) else {
        return;
    };
    let client = Client {
        sock,
        pending: Vec::new(),
        since: Instant::now(),
    };
    if !peer_uid(client.sock.fd).is_some_and(may_control) {
        answer(
            &client,
            "error only the user who started the recording may control it\n",
        );
        client.sock.close();
    } else if clients.len() >= MAX_CLIENTS {
        answer(&client, "error too many clients\n");
        client.sock.close();
    } else {
        clients.push(client);
    }
}

/// The abstract socket name of process `pid`'s control agent.
pub fn agent_name(pid: u32) -> String {
    format!("ftail-ctl-{pid}")
}

/// Starts the control agent thread; `watch_modules`: see [`run`].
pub fn start(watch_modules: bool) {
    let name = agent_name(std::process::id());
    let _ = std::thread::Builder::new()
        .name("ftail-ctl".into())
        .spawn(move || run(&name, watch_modules));
}
