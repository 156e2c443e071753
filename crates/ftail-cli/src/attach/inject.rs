//! Calling functions inside a running process, from one of its threads,
//! with ptrace: the thread is stopped, its registers (every one, the
//! vector state included) saved, made to call the function with a return
//! address of 0 — the fault at address 0 is the call's end — and given
//! back its registers exactly as they were. Only that thread stops, and
//! only for the calls; the process's other threads run on.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::target;

/// `NT_X86_XSTATE`: the regset of the whole XSAVE area.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Bytes kept for the XSAVE area (AMX tiles included it is about 11 KiB).
const XSTATE_ROOM: usize = 16 << 10;
/// The x86-64 ABI's red zone below the stack pointer, which the
/// interrupted code may be using.
const RED_ZONE: u64 = 128;
/// How long a call may take before the tracer gives up waiting.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A thread of another process, stopped under ptrace; detached (and so
/// resumed) when dropped.
pub struct Stopped {
    tid: libc::pid_t,
    /// When it stopped.
    pub since: Instant,
    /// When each step of its borrowing ended, with its processor time
    /// then.
    pub steps: Steps,
}

/// Named moments of a borrowing, for measuring where its time goes.
#[derive(Default)]
pub struct Steps {
    pid: u32,
    at: Vec<Moment>,
}

/// A step's end: its name, the time, the thread's processor time, its
/// context switches ([`switches`]) and the waits for a processor
/// ([`queue_waits`]).
type Moment = (&'static str, Instant, Option<Duration>, [u64; 2], [u64; 2]);

/// The time thread `tid` (this thread when `None`) has waited for a
/// processor, and this thread's, in nanoseconds, from `schedstat`.
fn queue_waits(pid: u32, tid: libc::pid_t) -> [u64; 2] {
    let waited = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    [
        waited(format!("/proc/{pid}/task/{tid}/schedstat")),
        waited("/proc/thread-self/schedstat".to_string()),
    ]
}

/// The voluntary and involuntary context switches of thread `tid`.
fn switches(pid: u32, tid: libc::pid_t) -> [u64; 2] {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    [
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    ]
}

impl Steps {
    fn note(&mut self, tid: libc::pid_t, what: &'static str) {
        self.at.push((
            what,
            Instant::now(),
            run_time(self.pid, tid),
            switches(self.pid, tid),
            queue_waits(self.pid, tid),
        ));
    }

    /// One line: each step's wall time and the thread's processor time
    /// in it, in milliseconds from the previous step, the time the thread
    /// and ftail waited for a processor in it, and how often the thread
    /// was switched out in it, waiting (for a lock, a page) and
    /// preempted.
    pub fn line(&self) -> String {
        let mut out = Vec::new();
        for pair in self.at.windows(2) {
            let (_, t0, r0, s0, q0) = pair[0];
            let (what, t1, r1, s1, q1) = pair[1];
            let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
            let ran = r0
                .zip(r1)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e3);
            out.push(format!(
                "{what} {:.2}/{:.2} (queued {:.2}, ftail queued {:.2}, switches {}+{})",
                (t1 - t0).as_secs_f64() * 1e3,
                ran.unwrap_or(f64::NAN),
                ms(q0[0], q1[0]),
                ms(q0[1], q1[1]),
                s1[0].saturating_sub(s0[0]),
                s1[1].saturating_sub(s0[1])
            ));
        }
        out.join(", ")
    }
}

/// What a thread was doing when it stopped.
pub struct Snapshot {
    regs: libc::user_regs_struct,
    xstate: Vec<u8>,
}

impl Snapshot {
    /// The instruction pointer.
    pub fn rip(&self) -> u64 {
        self.regs.rip
    }

    /// Whether the thread stopped inside a system call (which the stop
    /// interrupted and which must be restarted as it was).
    pub fn in_syscall(&self) -> bool {
        (self.regs.orig_rax as i64) >= 0
    }

    /// An event-loop wait the stop made fail with `EINTR` is given the
    /// result `poll` gets in that case, `ERESTARTNOHAND`: when the thread
    /// resumes, the kernel restarts the call unless a handler of the
    /// program's runs first, and then returns `EINTR`, as it would have
    /// without the stop. The program sees only a wait that took longer.
    fn resume_as_poll(&mut self) {
        const ERESTARTNOHAND: i64 = 514;
        let n = self.regs.orig_rax as i64;
        if RESUMED_AS_POLL.contains(&n) && self.regs.rax as i64 == -(libc::EINTR as i64) {
            self.regs.rax = (-ERESTARTNOHAND) as u64;
        }
    }
}

fn ptrace(req: libc::c_uint, tid: libc::pid_t, addr: u64, data: u64) -> io::Result<libc::c_long> {
    // SAFETY: every request made here passes either plain numbers or
    // pointers to buffers that live across the call and are as large as
    // the request writes.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A wait status of `tid`: `None` while it still runs after `limit`.
/// Blocks in `waitpid` (ftail wakes the moment the thread stops, however
/// busy the machine), with a timer to end the wait.
fn wait(tid: libc::pid_t, limit: Duration) -> io::Result<Option<i32>> {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        arm_timer(left);
        let mut status = 0;
        // SAFETY: waitpid writes the status word.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        let err = io::Error::last_os_error();
        arm_timer(Duration::ZERO);
        match r {
            -1 if err.kind() == io::ErrorKind::Interrupted => {}
            -1 => return Err(err),
            _ => return Ok(Some(status)),
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Delivers SIGALRM to this process after `after` (zero: disarms), with a
/// handler that only interrupts a blocking call.
fn arm_timer(after: Duration) {
    // SAFETY: installing a handler that does nothing (no SA_RESTART: the
    // blocking call returns EINTR), and setting the process's real-time
    // interval timer; both plain values.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut());
        let t = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: after.as_secs() as libc::time_t,
                tv_usec: after.subsec_micros().max(u32::from(!after.is_zero()))
                    as libc::suseconds_t,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
    }
}

fn exited(status: i32) -> bool {
    libc::WIFEXITED(status) || libc::WIFSIGNALED(status)
}

impl Stopped {
    /// Seizes thread `tid` and stops it.
    pub fn stop(pid: u32, tid: libc::pid_t) -> io::Result<Stopped> {
        ptrace(libc::PTRACE_SEIZE, tid, 0, 0)?;
        let mut t = Stopped {
            tid,
            since: Instant::now(),
            steps: Steps {
                pid,
                at: Vec::new(),
            },
        };
        t.steps.note(tid, "seized");
        ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)?;
        loop {
            let Some(status) = wait(tid, Duration::from_secs(2))? else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the thread did not stop",
                ));
            };
            if exited(status) {
                return Err(io::Error::new(io::ErrorKind::NotFound, "the thread ended"));
            }
            if status >> 16 == libc::PTRACE_EVENT_STOP {
                t.since = Instant::now();
                t.steps.note(tid, "stopped");
                return Ok(t);
            }
            // A signal on its way to the thread: delivered now; the stop
            // the interrupt asked for comes after it.
            ptrace(libc::PTRACE_CONT, tid, 0, libc::WSTOPSIG(status) as u64)?;
        }
    }

    /// The thread's registers.
    pub fn snapshot(&self) -> Result<Snapshot> {
        // SAFETY: a plain struct of integers, all zero is valid.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        ptrace(
            libc::PTRACE_GETREGS,
            self.tid,
            0,
            &mut regs as *mut _ as u64,
        )
        .context("reading the thread's registers")?;
        let mut xstate = vec![0u8; XSTATE_ROOM];
        let mut iov = libc::iovec {
            iov_base: xstate.as_mut_ptr().cast(),
            iov_len: xstate.len(),
        };
        ptrace(
            libc::PTRACE_GETREGSET,
            self.tid,
            NT_X86_XSTATE as u64,
            &mut iov as *mut _ as u64,
        )
        .context("reading the thread's vector registers")?;
        xstate.truncate(iov.iov_len);
        Ok(Snapshot { regs, xstate })
    }

    /// Puts back every register `saved` holds.
    pub fn restore(&self, saved: &Snapshot) -> Result<()> {
        let mut xstate = saved.xstate.clone();
        let mut iov = libc::iovec {
            iov_base: xstate.as_mut_ptr().cast(),
            iov_len: xstate.len(),
        };
        ptrace(
            libc::PTRACE_SETREGSET,
            self.tid,
            NT_X86_XSTATE as u64,
            &mut iov as *mut _ as u64,
        )
        .context("restoring the thread's vector registers")?;
        ptrace(
            libc::PTRACE_SETREGS,
            self.tid,
            0,
            &saved.regs as *const _ as u64,
        )
        .context("restoring the thread's registers")?;
        Ok(())
    }

    /// The 8 bytes at `addr`.
    fn peek(&self, addr: u64) -> io::Result<[u8; 8]> {
        // PEEKDATA returns the word, so -1 is an error only with errno set.
        // SAFETY: errno is this thread's; PEEKDATA takes plain numbers.
        let word = unsafe {
            *libc::__errno_location() = 0;
            libc::ptrace(
                libc::PTRACE_PEEKDATA,
                self.tid,
                addr as *mut libc::c_void,
                0usize,
            )
        };
        let err = io::Error::last_os_error();
        if word == -1 && err.raw_os_error() != Some(0) {
            return Err(err);
        }
        Ok(word.to_le_bytes())
    }

    /// The NUL-terminated string at `at` (at most 1 KiB of it).
    fn peek_string(&self, at: u64) -> Result<String> {
        let mut bytes = Vec::new();
        let mut addr = at;
        while at != 0 && bytes.len() < 1024 {
            let word = self.peek(addr).context("reading the process's memory")?;
            match word.iter().position(|&b| b == 0) {
                Some(end) => {
                    bytes.extend_from_slice(&word[..end]);
                    break;
                }
                None => bytes.extend_from_slice(&word),
            }
            addr += 8;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn poke(&self, at: u64, bytes: &[u8]) -> Result<()> {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            let addr = at + 8 * i as u64;
            if chunk.len() < 8 {
                // Keep the bytes past the end as they are.
                word = self.peek(addr).context("reading the thread's stack")?;
            }
            word[..chunk.len()].copy_from_slice(chunk);
            ptrace(
                libc::PTRACE_POKEDATA,
                self.tid,
                addr,
                u64::from_le_bytes(word),
            )
            .context("writing to the thread's stack")?;
        }
        Ok(())
    }

    /// Calls `func(args[0], args[1])` in the thread, from the state
    /// `saved`, with `data` copied below its stack (the red zone left
    /// alone) and its address in place of any argument equal to
    /// [`DATA`]; returns the call's `rax`. The registers are left as the
    /// call ends them: [`Stopped::restore`] puts them back.
    pub fn call(
        &mut self,
        saved: &Snapshot,
        func: u64,
        args: [u64; 2],
        data: &[u8],
    ) -> Result<u64> {
        let mut regs = saved.regs;
        let data_at = (saved.regs.rsp - RED_ZONE - data.len() as u64 - 64) & !15;
        self.poke(data_at, data)?;
        // The call's return address, 0: returning faults at address 0.
        // At the function's first instruction rsp + 8 is 16-aligned.
        let sp = data_at - 16 - 8;
        self.poke(sp, &0u64.to_le_bytes())?;
        let arg = |a: u64| if a == DATA { data_at } else { a };
        regs.rsp = sp;
        regs.rip = func;
        regs.rdi = arg(args[0]);
        regs.rsi = arg(args[1]);
        regs.rax = 0;
        // Not in a system call: no restart when the thread resumes.
        regs.orig_rax = u64::MAX;
        // The ABI's direction flag is clear at a call.
        regs.eflags &= !(1 << 10);
        ptrace(libc::PTRACE_SETREGS, self.tid, 0, &regs as *const _ as u64)
            .context("setting up the call")?;
        ptrace(libc::PTRACE_CONT, self.tid, 0, 0).context("starting the call")?;
        self.steps.note(self.tid, "call set up");
        let until = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Some(status) = wait(self.tid, left).context("waiting for the call")? else {
                bail!(
                    "the call in thread {} did not return within {} s",
                    self.tid,
                    CALL_TIMEOUT.as_secs()
                );
            };
            if exited(status) {
                bail!("thread {} ended during the call", self.tid);
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            if event == 0 && sig == libc::SIGSEGV {
                let now = self.snapshot()?;
                if now.regs.rip == 0 {
                    self.steps.note(self.tid, "returned");
                    return Ok(now.regs.rax);
                }
                bail!(
                    "the call in thread {} faulted at {:#x}",
                    self.tid,
                    now.regs.rip
                );
            }
            // The program's own signals go on to its handlers (running on
            // top of the call, as on top of any function); stops of the
            // whole process are not kept while the call runs.
            let deliver = if event == 0 { sig } else { 0 };
            ptrace(libc::PTRACE_CONT, self.tid, 0, deliver as u64).context("resuming the call")?;
        }
    }
}

/// An argument of [`Stopped::call`] that stands for the copied data's
/// address.
pub const DATA: u64 = u64::MAX;

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = ptrace(libc::PTRACE_DETACH, self.tid, 0, 0);
    }
}

/// What loading the runtime cost the program.
pub struct Took {
    /// The thread borrowed.
    pub tid: libc::pid_t,
    /// How long it was away from the program's code (the calls, and the
    /// time it waited for a processor to run them).
    pub stopped: Duration,
    /// The processor time it spent in the calls, when the kernel says.
    pub ran: Option<Duration>,
    /// Whether it was waiting in a system call (and so lost no time
    /// unless what it waited for came meanwhile).
    pub waiting: bool,
}

/// The processor time thread `tid` of `pid` has run, from its
/// `schedstat`.
fn run_time(pid: u32, tid: libc::pid_t) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

/// While alive, this thread asks the scheduler for short slices
/// (`sched_setattr`'s `sched_runtime` for a normal thread, Linux 6.12
/// and later; elsewhere nothing changes): its priority stays as it was,
/// but each time a stop of the borrowed thread wakes it, it gets a
/// processor sooner than the program's busy threads, which keep their
/// longer slices. On a machine with more runnable threads than
/// processors, waiting for one was most of the borrowed thread's stop.
struct ShortSlice {
    asked: bool,
}

/// The `sched_attr` of `sched_setattr(2)`, first version.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The slice asked for: the shortest the kernel grants.
const SHORT_SLICE_NS: u64 = 100_000;

impl ShortSlice {
    fn ask() -> ShortSlice {
        ShortSlice {
            asked: set_slice(SHORT_SLICE_NS),
        }
    }
}

impl Drop for ShortSlice {
    fn drop(&mut self) {
        if self.asked {
            // 0: the kernel's default slice again.
            set_slice(0);
        }
    }
}

/// Sets this thread's slice, keeping its policy (normal) and nice
/// value; false when the kernel refused.
fn set_slice(ns: u64) -> bool {
    // SAFETY: getpriority has no memory arguments; errno is this
    // thread's (a nice value of -1 is told from an error by it).
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    // SAFETY: policy 0 is SCHED_OTHER; sched_getscheduler takes a pid.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
        return false;
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: ns,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr reads a sched_attr of the size it states.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}

/// `dlopen` flags: resolve everything now, never unload.
const RTLD_NOW_NODELETE: u64 = 0x2 | 0x1000;

/// System calls that a stop interrupts and the kernel restarts as they
/// were once the thread resumes (they return a restart code, never
/// `EINTR`, when no handler runs): a thread waiting in one may be
/// borrowed.
const RESTARTED: &[i64] = &[
    0,   // read
    7,   // poll
    17,  // pread64
    19,  // readv
    23,  // select
    34,  // pause
    35,  // nanosleep
    43,  // accept
    45,  // recvfrom
    47,  // recvmsg
    61,  // wait4
    230, // clock_nanosleep
    247, // waitid
    270, // pselect6
    271, // ppoll
    288, // accept4
];

/// System calls that fail with `EINTR` after any stop, even one for
/// which no handler runs (signal(7)): the event-loop waits. A thread
/// waiting in one may be borrowed too; its call is then resumed as the
/// kernel resumes `poll`'s (see [`Snapshot::resume_as_poll`]).
const RESUMED_AS_POLL: &[i64] = &[
    232, // epoll_wait
    281, // epoll_pwait
    441, // epoll_pwait2
];

/// Whether a thread waiting in system call `n` may be borrowed.
fn borrowable_wait(n: i64) -> bool {
    RESTARTED.contains(&n) || RESUMED_AS_POLL.contains(&n)
}

/// Waits that the kernel restarts with exactly the time they had left
/// (or that have no time limit), and that a stop never makes fail:
/// a thread in one is not kept from anything while it is borrowed,
/// unless what it waits for comes meanwhile.
const QUIET: &[i64] = &[
    7,   // poll
    23,  // select
    34,  // pause
    35,  // nanosleep
    61,  // wait4
    230, // clock_nanosleep
    247, // waitid
    270, // pselect6
    271, // ppoll
];

/// Reads, quiet too unless from a socket: one with a receive timeout
/// fails with `EINTR` after a stop.
const READS: &[i64] = &[
    0,  // read
    17, // pread64
    19, // readv
];

/// Whether a thread of process `pid` waiting in system call `n` with
/// first argument `arg` waits quietly (see [`QUIET`]).
fn quiet_wait(pid: u32, n: i64, arg: u64) -> bool {
    QUIET.contains(&n) || READS.contains(&n) && !is_socket(pid, arg)
}

fn is_socket(pid: u32, fd: u64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map_or(true, |l| l.to_string_lossy().starts_with("socket:"))
}

/// A thread of a process, as `/proc` shows it.
struct Task {
    tid: libc::pid_t,
    state: char,
    /// The system call it waits in, and its first argument.
    syscall: Option<(i64, u64)>,
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<Task> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .map(|tid| {
            let stat =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
                .unwrap_or('?');
            let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
                .ok()
                .and_then(|s| {
                    let mut fields = s.split_whitespace();
                    let n = fields.next()?.parse().ok()?;
                    let arg = fields.next()?.strip_prefix("0x")?;
                    Some((n, u64::from_str_radix(arg, 16).ok()?))
                });
            Task {
                tid,
                state,
                syscall,
            }
        })
        .collect()
}

/// How fit a thread is to be borrowed, best first; `None`: not at all.
fn rank(pid: u32, task: &Task, waiting_ok: bool) -> Option<u8> {
    match (task.state, task.syscall) {
        ('S', Some((n, arg))) if quiet_wait(pid, n, arg) => Some(0),
        ('R', _) => Some(1),
        ('S', Some((n, _))) if waiting_ok && borrowable_wait(n) => Some(2),
        _ => None,
    }
}

/// Stops a thread of the process that may be borrowed for a call,
/// preferring one that loses nothing by it: one waiting quietly (see
/// [`QUIET`]); else one running the program's instrumented code (so
/// holding none of libc's or the loader's locks); or, failing both for a
/// while, one waiting in any system call that is restarted. Threads of
/// other kinds are let go at once (their stop is a few microseconds,
/// outside any system call).
fn borrow(t: &target::Target) -> Result<(Stopped, Snapshot)> {
    let code = t.instrumented();
    let started = Instant::now();
    while started.elapsed() < BORROW_TIMEOUT {
        let waiting_ok = started.elapsed() > BORROW_TIMEOUT / 5;
        let mut tasks: Vec<(u8, Task)> = threads(t.pid)
            .into_iter()
            .filter_map(|task| Some((rank(t.pid, &task, waiting_ok)?, task)))
            .collect();
        tasks.sort_by_key(|(rank, _)| *rank);
        for (_, task) in tasks {
            let Ok(stopped) = Stopped::stop(t.pid, task.tid) else {
                continue;
            };
            let mut snap = stopped.snapshot()?;
            let usable = if snap.in_syscall() {
                let n = snap.regs.orig_rax as i64;
                quiet_wait(t.pid, n, snap.regs.rdi) || waiting_ok && borrowable_wait(n)
            } else {
                t.code_of(snap.rip(), &code)
            };
            if usable {
                snap.resume_as_poll();
                return Ok((stopped, snap));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!(
        "no thread of process {} could be borrowed to load the runtime within {} s: none \
         ran its own code or waited in a system call that can be restarted",
        t.pid,
        BORROW_TIMEOUT.as_secs()
    )
}

/// Set, `ftail record -p` prints how long each step of the borrowing
/// took.
const STEPS_ENV: &str = "FTAIL_ATTACH_STEPS";

/// How long to look for a thread to borrow.
const BORROW_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads `runtime` into the process from one borrowed thread, whose
/// only call is `dlopen`: the runtime's constructor starts the runtime's
/// own thread, which fetches its configuration from this process.
pub fn load_runtime(t: &target::Target, runtime: &Path) -> Result<Took> {
    let libc_path = t
        .find_file(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        .with_context(|| format!("process {} has no C library mapped", t.pid))?
        .to_path_buf();
    // glibc 2.34 and later export dlopen from libc itself.
    let dlopen = match t.symbol(&libc_path, "dlopen")? {
        Some(a) => a,
        None => t
            .symbol(&libc_path, "__libc_dlopen_mode")?
            .with_context(|| format!("{} exports no dlopen", libc_path.display()))?,
    };
    let dlerror = t.symbol(&libc_path, "dlerror")?;
    let _quick = ShortSlice::ask();
    let (mut stopped, saved) = borrow(t)?;
    let ran_before = run_time(t.pid, stopped.tid);
    let result = open_runtime(&mut stopped, &saved, t.pid, dlopen, dlerror, runtime);
    // Whatever happened in the calls, the thread gets its state back.
    stopped.restore(&saved)?;
    stopped.steps.note(stopped.tid, "restored");
    let (tid, since, waiting) = (stopped.tid, stopped.since, saved.in_syscall());
    let mut steps = std::mem::take(&mut stopped.steps);
    // Detaching resumes it.
    drop(stopped);
    let took = Took {
        tid,
        stopped: since.elapsed(),
        ran: ran_before
            .zip(run_time(t.pid, tid))
            .map(|(a, b)| b.saturating_sub(a)),
        waiting,
    };
    steps.note(tid, "resumed");
    if std::env::var_os(STEPS_ENV).is_some() {
        eprintln!("ftail: attach steps (ms wall/running): {}", steps.line());
    }
    result.map(|()| took)
}

fn cstring(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut v = p.as_os_str().as_bytes().to_vec();
    v.push(0);
    v
}

/// Calls `dlopen(runtime)` in the stopped thread; on failure, says why
/// with `dlerror`'s message.
fn open_runtime(
    s: &mut Stopped,
    saved: &Snapshot,
    pid: u32,
    dlopen: u64,
    dlerror: Option<u64>,
    runtime: &Path,
) -> Result<()> {
    let handle = s.call(saved, dlopen, [DATA, RTLD_NOW_NODELETE], &cstring(runtime))?;
    if handle != 0 {
        return Ok(());
    }
    let why = match dlerror {
        Some(f) => s.call(saved, f, [0, 0], &[]).and_then(|p| s.peek_string(p)),
        None => Ok(String::new()),
    };
    bail!(
        "process {pid} could not load {}: {}",
        runtime.display(),
        why.unwrap_or_default()
    )
}
