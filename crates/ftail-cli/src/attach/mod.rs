//! `ftail record -p PID`: trace a program that is already running.
//!
//! The first time, the runtime is loaded into the process: one of its
//! threads, stopped with ptrace, calls `dlopen` on it (`inject`) and is
//! given back its registers; the runtime's constructor, seeing the
//! thread traced, starts the runtime's own thread, which fetches its
//! configuration from this process over a socket ([`Handover`]), writes
//! the selected sites live and starts the control agent. From then on —
//! later attaches, and a program started under `ftail record --off` —
//! the agent is the way in: `on` to attach, `off` to detach. Detaching
//! switches every site back to its original bytes, with no thread
//! stopped, and leaves the runtime loaded but idle.
//!
//! Nothing else of the program changes: no thread is stopped but the
//! borrowed one, for the one call; the thread borrowed is preferably one
//! waiting in a system call that the kernel restarts with the time it had
//! left (a sleep, `poll`, a read from a pipe: it loses nothing), else one
//! running the program's own instrumented code (it holds none of libc's
//! or the loader's locks, which `dlopen` takes), or else one waiting in
//! any system call that the kernel restarts — `epoll_wait` included,
//! which is restarted unless a handler of the program's runs first, as
//! `poll` is, so an idle event-loop server can be attached to.

mod inject;
mod target;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::record::RecordOptions;

/// Where Yama says who may attach to what.
const PTRACE_SCOPE: &str = "/proc/sys/kernel/yama/ptrace_scope";
/// How long the runtime may take to switch tracing on after it is
/// loaded.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a thread may still be finishing an event begun before
/// detaching.
const SETTLE: Duration = Duration::from_millis(100);

/// Why recording ended.
enum End {
    Duration,
    Signal(i32),
    Exited,
}

/// Attaches to process `pid`, records until `duration` has passed, this
/// process is interrupted or terminated, or the program ends, then
/// detaches.
pub fn record(pid: u32, duration: Option<Duration>, o: RecordOptions) -> Result<i32> {
    if o.snapshot_signal.is_some() {
        bail!("--snapshot-signal is not available with -p: it would change the handler of a signal of a running program; use `ftail ctl PID snapshot`");
    }
    // Until detached, an interrupt must not end ftail in the middle of a
    // call it made the program run: it is waited for instead.
    let signals = block_ending_signals();
    let t = target::examine(pid, Path::new(PTRACE_SCOPE))?;
    // Opened before tracing starts, so the first calls have theirs too.
    let events = o.sched.then(|| crate::sched::Events::for_process(pid));
    let dir = match t.find_file(is_runtime) {
        Some(_) => rejoin(&t, &o)?,
        None => first_attach(&t, &o)?,
    };
    let until = duration.map(|d| format!(" for {:.3} s", d.as_secs_f64()));
    eprintln!(
        "ftail: recording process {pid} ({}) into {}{}; Ctrl-C detaches",
        t.exe.display(),
        dir.display(),
        until.as_deref().unwrap_or("")
    );
    let sched = events
        .and_then(|events| crate::record::start_sched(&dir, pid, || events))
        .and_then(|(events, file)| events.record(file).ok());
    let end = wait_for_end(pid, duration, &signals);
    if let Some(s) = sched {
        s.finish();
    }
    if !matches!(end, End::Exited) {
        detach(pid, &dir)?;
    }
    for line in crate::record::summary(&dir, &t.exe) {
        eprintln!("{line}");
    }
    match end {
        End::Exited => eprintln!("ftail: process {pid} ended"),
        End::Signal(sig) => eprintln!("ftail: detached from process {pid} (signal {sig})"),
        End::Duration => eprintln!("ftail: detached from process {pid}"),
    }
    Ok(0)
}

fn is_runtime(name: &str) -> bool {
    name.starts_with("libftail_runtime")
}

/// The runtime is in the process already: attaches through its agent.
fn rejoin(t: &target::Target, o: &RecordOptions) -> Result<PathBuf> {
    let pid = t.pid;
    let status = crate::ctl::send(pid, &["status".to_string()]).with_context(|| {
        format!("process {pid} has ftail's runtime loaded, but its control agent does not answer")
    })?;
    let status = status.last().cloned().unwrap_or_default();
    let dir = PathBuf::from(status.split_once(" dir=").map_or("", |(_, d)| d));
    if status.starts_with("tracing=on") {
        bail!(
            "process {pid} is already being traced by ftail, into {}; `ftail ctl {pid} off` \
             switches tracing off, `ftail ctl {pid} status` shows it",
            dir.display()
        );
    }
    if dir.as_os_str().is_empty() || !dir.is_dir() {
        bail!(
            "process {pid} has ftail's runtime loaded, recording into {}, which is gone",
            dir.display()
        );
    }
    let given = o.dir.canonicalize().unwrap_or_else(|_| o.dir.clone());
    if given != dir {
        eprintln!(
            "ftail: process {pid} loaded ftail's runtime before, which records into {}: \
             recording there",
            dir.display()
        );
    }
    same_specs(t, o, &dir)?;
    if !o.triggers.is_empty() || o.snapshot_interval.is_some() {
        bail!(
            "process {pid} loaded ftail's runtime at an earlier attach, which set the trigger \
             rules it had then: -T, --snapshot-on and --snapshot-interval apply only to the \
             first attach (those of the first stay in effect)"
        );
    }
    // The runtime clears the mark of the files of its live threads when
    // tracing goes on again; the files of threads that ended while it was
    // off keep theirs (their open frames are the detach's).
    let mut lines = vec![
        format!("filter {}", crate::ctl::globs(&o.filter)),
        format!("exclude {}", crate::ctl::globs(&o.exclude)),
    ];
    lines.push("on".to_string());
    crate::ctl::send(pid, &lines)?;
    Ok(dir)
}

/// Refuses `-A`, `-R` and `-a` that differ from the rules the runtime
/// already loaded in the process read from `dir` when it was loaded:
/// each function's spec is planned into its code then, and stays.
fn same_specs(t: &target::Target, o: &RecordOptions, dir: &Path) -> Result<()> {
    let asked = crate::argspec::spec_text(&crate::record::spec_sources(o, Some(&t.exe)))?;
    let Some(asked) = asked else {
        return Ok(());
    };
    let path = dir.join(ftail_abi::argspec::SPEC_FILE);
    let armed = std::fs::read_to_string(&path).unwrap_or_default();
    if armed != asked {
        bail!(
            "process {} loaded ftail's runtime at an earlier attach, which armed the argument \
             rules it had then ({}): -A, -R and -a can only repeat those",
            t.pid,
            if armed.is_empty() {
                "none".to_string()
            } else {
                path.display().to_string()
            }
        );
    }
    Ok(())
}

/// Loads the runtime into the process and waits until it traces.
fn first_attach(t: &target::Target, o: &RecordOptions) -> Result<PathBuf> {
    let pid = t.pid;
    if t.instrumented().is_empty() {
        bail!(
            "process {pid} ({}) runs no code built with `ftail cc`: neither its executable nor \
             its libraries have ftail's site tables, so there is nothing to trace",
            t.exe.display()
        );
    }
    let runtime = crate::record::find_runtime()?;
    let (dir, env) = crate::record::prepare_trace(o, &t.exe)?;
    let handover = Handover::listen(config_text(&env))?;
    let took = inject::load_runtime(t, &runtime)?;
    let ran = took
        .ran
        .map(|r| format!(", {:.2} ms of it running", r.as_secs_f64() * 1e3));
    eprintln!(
        "ftail: loaded the runtime into process {pid}: thread {}{} stopped for {:.2} ms{}",
        took.tid,
        if took.waiting {
            " (waiting in a system call)"
        } else {
            ""
        },
        took.stopped.as_secs_f64() * 1e3,
        ran.as_deref().unwrap_or("")
    );
    handover.hand(pid)?;
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let status = crate::ctl::send(pid, &["status".to_string()]);
        match status {
            Ok(s) if s.last().is_some_and(|s| s.starts_with("tracing=on")) => break,
            _ if Instant::now() >= until => bail!(
                "the runtime loaded into process {pid} did not start tracing within {} s \
                 (is {} usable by it?)",
                START_TIMEOUT.as_secs(),
                dir.display()
            ),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(dir)
}

/// The runtime's settings as `NAME=VALUE` lines.
fn config_text(env: &[crate::record::RuntimeVar]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut text = Vec::new();
    // A value of several lines (the trigger rules) is one line per line
    // of it, which the runtime joins again.
    for (name, value) in env {
        let Some(value) = value else { continue };
        for line in value.as_bytes().split(|&b| b == b'\n') {
            text.extend_from_slice(name.as_bytes());
            text.push(b'=');
            text.extend_from_slice(line);
            text.push(b'\n');
        }
    }
    text
}

/// How long the runtime loaded may take to ask for its settings.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket on which the runtime loaded into the process asks this
/// process for its settings (`ftail_abi::attach`): abstract, named after
/// this process's pid; the runtime checks that this process made it, and
/// this process answers only the target process.
struct Handover {
    listener: std::os::unix::net::UnixListener,
    config: Vec<u8>,
}

impl Handover {
    fn listen(config: Vec<u8>) -> Result<Handover> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("{}{}", ftail_abi::attach::TRACER_SOCKET, std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)
            .with_context(|| format!("listening on the abstract socket @{name}"))?;
        listener.set_nonblocking(true)?;
        Ok(Handover { listener, config })
    }

    /// Sends the settings to the runtime loaded into process `pid`, and
    /// checks its answer.
    fn hand(self, pid: u32) -> Result<()> {
        use std::io::{Read, Write};
        let until = Instant::now() + HANDOVER_TIMEOUT;
        let mut stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) if peer_pid(&stream) == Some(pid) => break stream,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= until {
                        bail!(
                            "the runtime loaded into process {pid} did not ask for its                              settings within {} s",
                            HANDOVER_TIMEOUT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).context("waiting for the runtime's call"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
        stream
            .write_all(&self.config)
            .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
            .with_context(|| format!("sending process {pid} its settings"))?;
        let mut code = [0u8; 1];
        stream
            .read_exact(&mut code)
            .with_context(|| format!("reading the answer of the runtime in process {pid}"))?;
        match i32::from(code[0]) {
            ftail_abi::attach::STARTED => Ok(()),
            _ => bail!("the runtime in process {pid} could not read the settings it was sent"),
        }
    }
}

/// The process at the other end of `stream`.
fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt(SO_PEERCRED) fills a ucred of the given size.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let r = libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        (r == 0).then_some(cred.pid as u32)
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this process; returns their set.
fn block_ending_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; blocking
    // signals in this (single-threaded) process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for the end of the recording.
fn wait_for_end(pid: u32, duration: Option<Duration>, signals: &libc::sigset_t) -> End {
    let until = duration.map(|d| Instant::now() + d);
    loop {
        if !alive(pid) {
            return End::Exited;
        }
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return End::Duration;
        }
        let step = until.map_or(Duration::from_millis(100), |u| {
            (u - now).min(Duration::from_millis(100))
        });
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: step.subsec_nanos() as libc::c_long,
        };
        // SAFETY: waiting for one of the blocked signals; no info wanted.
        let sig = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &ts) };
        if sig > 0 {
            return End::Signal(sig);
        }
    }
}

/// Whether process `pid` is still running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Switches tracing off in process `pid` and marks its threads' event
/// files as ended by the detach.
fn detach(pid: u32, dir: &Path) -> Result<()> {
    let answer = crate::ctl::send(pid, &["off".to_string()]);
    if let Err(e) = answer {
        if alive(pid) {
            return Err(e.context(format!("detaching from process {pid}")));
        }
    }
    // A thread may be inside a slow path that began before the sites went
    // back (its first event: making its file): let it finish first.
    std::thread::sleep(SETTLE);
    mark_detached(dir, pid);
    Ok(())
}

/// Sets the `stopped` field of every event file of process `pid` in `dir`
/// that has none to [`ftail_abi::trace::STOPPED_DETACHED`] (the runtime
/// does so too, for the threads it can reach): a reader closes the frames
/// still open at the end of such a file.
fn mark_detached(dir: &Path, pid: u32) {
    use ftail_abi::trace::{EventFileHeader, EVENTS_SUFFIX, STOPPED_DETACHED};
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{pid}-");
    let at = std::mem::offset_of!(EventFileHeader, stopped) as u64;
    let me = crate::private_dir::euid();
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        if !name.starts_with(&prefix) || !name.ends_with(EVENTS_SUFFIX) {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir.join(&name))
        else {
            continue;
        };
        let ok = file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.uid() == me && m.len() >= 96);
        let mut word = [0u8; 8];
        if !ok || file.read_exact_at(&mut word, at).is_err() {
            continue;
        }
        if u64::from_le_bytes(word) == 0 {
            let _ = file.write_all_at(&STOPPED_DETACHED.to_le_bytes(), at);
        }
    }
}
