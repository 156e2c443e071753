//! Scheduler events: when each traced thread was switched out and back
//! in, recorded from `ftail record`'s side, so the traced program's
//! descriptors, memory and signals stay its own.
//!
//! The kernel writes a context-switch record for a task into a perf event
//! that watches it (`PERF_COUNT_SW_DUMMY` with `context_switch`, user
//! space only: what `perf_event_paranoid` 2 allows a user for their own
//! processes). One event per CPU (an inherited per-task event can only be
//! mapped with a CPU), inherited by the threads and children the program
//! creates; for a running program, one per thread and CPU, those of a CPU
//! sharing its ring. The rings are drained every [`DRAIN_EVERY`] into
//! `sched.PID` ([`ftail_abi::trace::SchedHeader`]): each time off the CPU
//! as one slice, its times turned from `CLOCK_MONOTONIC_RAW`, the clock
//! the kernel stamps them with, into the time-stamp counter the event
//! files use, by pairs of readings of both taken as it goes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ftail_abi::trace::{
    SchedHeader, SchedSlice, SCHED_MAGIC, SCHED_PREEMPTED, SCHED_PREFIX, TRACE_VERSION,
};

/// How often the rings are emptied.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Data pages of each CPU's ring: 256 KiB, some 5,000 switches between
/// two drains (a thread ping-ponging through a pipe switches some 100,000
/// times a second). Within the kernel's default per-user allowance of
/// locked perf pages (516 KiB per CPU).
const RING_PAGES: usize = 64;
/// Records newer than this (ns) may still have companions not yet
/// written on another CPU: they wait for the next drain.
const SETTLE_NS: u64 = 2_000_000;
/// Makes opening the events fail with this errno (tests of the refusal).
pub const FAIL_ENV: &str = "FTAIL_TEST_SCHED_ERRNO";

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_SET_OUTPUT: libc::c_ulong = 0x2405;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SWITCH: u32 = 14;
const PERF_RECORD_MISC_SWITCH_OUT: u16 = 1 << 13;
const PERF_RECORD_MISC_SWITCH_OUT_PREEMPT: u16 = 1 << 14;
// perf_event_attr's flag bits.
const DISABLED: u64 = 1 << 0;
const INHERIT: u64 = 1 << 1;
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
const ENABLE_ON_EXEC: u64 = 1 << 12;
const SAMPLE_ID_ALL: u64 = 1 << 18;
const USE_CLOCKID: u64 = 1 << 25;
const CONTEXT_SWITCH: u64 = 1 << 26;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5`.
#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}
const _: () = assert!(std::mem::size_of::<Attr>() == 112);

/// Why there are no scheduler events.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// The kernel's `errno`.
    pub errno: i32,
    /// `kernel.perf_event_paranoid` then.
    pub paranoid: i32,
}

impl Refused {
    /// One line saying why, and what would change it.
    pub fn message(&self) -> String {
        ftail_trace::reader::sched::refusal(self.errno, self.paranoid)
    }
}

/// The perf events opened, not yet read.
pub struct Events {
    /// Every event.
    fds: Vec<OwnedFd>,
    /// The CPUs, each with its ring's holder: the first event opened on
    /// it.
    cpus: Vec<Cpu>,
    /// The threads watched (`[0]`: this process).
    tids: Vec<i32>,
}

/// A CPU's events.
struct Cpu {
    cpu: i32,
    /// Index in `fds` of the event that holds the ring.
    leader: Option<usize>,
    /// The ring, once mapped: before another event can write into it,
    /// or by [`Events::record`] (a mapping is not inherited across
    /// `fork`).
    ring: Option<Ring>,
}

impl Events {
    /// Events on this process, enabled when it `exec`s: what `ftail
    /// record` opens before it becomes the program (the watcher it forks
    /// inherits them disabled, so its own switches are not counted).
    pub fn for_exec() -> Result<Events, Refused> {
        let mut events = Events::new()?;
        events.add(&[0], DISABLED | ENABLE_ON_EXEC)?;
        Ok(events)
    }

    /// Events on every thread of running process `pid`.
    pub fn for_process(pid: u32) -> Result<Events, Refused> {
        let mut events = Events::new()?;
        events.add(&threads(pid), 0)?;
        // Threads started while the first ones were being opened (those
        // started by a watched thread since are inherited).
        let late: Vec<i32> = threads(pid)
            .into_iter()
            .filter(|t| !events.tids.contains(t))
            .collect();
        let _ = events.add(&late, 0);
        Ok(events)
    }

    fn new() -> Result<Events, Refused> {
        if let Some(errno) = std::env::var(FAIL_ENV).ok().and_then(|v| v.parse().ok()) {
            return Err(refused(errno));
        }
        let cpus = online_cpus()
            .into_iter()
            .map(|cpu| Cpu {
                cpu,
                leader: None,
                ring: None,
            })
            .collect();
        Ok(Events {
            fds: Vec::new(),
            cpus,
            tids: Vec::new(),
        })
    }

    /// Opens an event per CPU on each of `tids`, those of a CPU writing
    /// into one ring.
    fn add(&mut self, tids: &[i32], flags: u64) -> Result<(), Refused> {
        let as_refusal = |e: std::io::Error| refused(e.raw_os_error().unwrap_or(libc::EINVAL));
        for c in 0..self.cpus.len() {
            for &tid in tids {
                let fd = match open_event(tid, self.cpus[c].cpu, flags) {
                    Ok(fd) => fd,
                    // The thread has ended meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) && tid != 0 => continue,
                    Err(e) => return Err(as_refusal(e)),
                };
                let cpu = &mut self.cpus[c];
                match cpu.leader {
                    None => cpu.leader = Some(self.fds.len()),
                    Some(l) => {
                        // The kernel redirects only into a ring that exists.
                        if cpu.ring.is_none() {
                            cpu.ring = Some(Ring::map(&self.fds[l]).map_err(as_refusal)?);
                        }
                        set_output(&fd, &self.fds[l]).map_err(as_refusal)?;
                    }
                }
                self.fds.push(fd);
            }
        }
        if self.cpus.iter().all(|c| c.leader.is_none()) {
            return Err(refused(libc::ESRCH));
        }
        self.tids.extend_from_slice(tids);
        Ok(())
    }

    /// The descriptors a forked process must keep.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Maps the rings and starts draining them into `out` (a file
    /// [`create`] made, its header written) every [`DRAIN_EVERY`] on a
    /// thread of this process.
    pub fn record(self, out: File) -> std::io::Result<Running> {
        let mut rings = Vec::new();
        for c in self.cpus {
            match (c.ring, c.leader) {
                (Some(r), _) => rings.push(r),
                (None, Some(l)) => rings.push(Ring::map(&self.fds[l])?),
                (None, None) => {}
            }
        }
        let mut recorder = Recorder {
            _events: self.fds,
            rings,
            out,
            clock: Clock::new(),
            waiting: Vec::new(),
            switched_out: HashMap::new(),
            lost: 0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ftail-sched".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    // Woken early by `finish`: a program in its exit
                    // waits for it.
                    std::thread::park_timeout(DRAIN_EVERY);
                    recorder.drain(false);
                }
                recorder.drain(true);
                recorder.finish();
            })?;
        Ok(Running { stop, thread })
    }
}

/// The thread draining the rings.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Drains what is left, writes the header's counts and stops.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// A refusal with `errno`, and the setting that may explain it.
fn refused(errno: i32) -> Refused {
    Refused {
        errno,
        paranoid: paranoid(),
    }
}

/// Creates `DIR/sched.PID` as the runtime creates the trace's files
/// (`O_EXCL|O_NOFOLLOW`, 0600, close-on-exec) and writes its header: for
/// events about to be recorded, or saying why there are none.
pub fn create(dir: &Path, pid: u32, refused: Option<Refused>) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // A later attach to the same process records into the same trace.
    let mut names = std::iter::once(format!("{SCHED_PREFIX}{pid}"))
        .chain((2..100).map(|n| format!("{SCHED_PREFIX}{pid}.{n}")));
    let mut file = loop {
        let name = names.next().unwrap_or_default();
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(&name));
        match made {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !name.is_empty() => {}
            other => break other?,
        }
    };
    let header = SchedHeader {
        magic: SCHED_MAGIC,
        version: TRACE_VERSION,
        size: std::mem::size_of::<SchedHeader>() as u32,
        refused_errno: refused.map_or(0, |r| r.errno),
        paranoid: refused.map_or_else(paranoid, |r| r.paranoid),
        lost: 0,
        reserved: [0; 4],
    };
    file.write_all(&header_bytes(&header))?;
    Ok(file)
}

fn header_bytes(h: &SchedHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&h.magic);
    b.extend_from_slice(&h.version.to_le_bytes());
    b.extend_from_slice(&h.size.to_le_bytes());
    b.extend_from_slice(&h.refused_errno.to_le_bytes());
    b.extend_from_slice(&h.paranoid.to_le_bytes());
    b.extend_from_slice(&h.lost.to_le_bytes());
    for r in h.reserved {
        b.extend_from_slice(&r.to_le_bytes());
    }
    b
}

/// `kernel.perf_event_paranoid`, or -9 when it cannot be read.
fn paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(-9)
}

/// The CPUs online (`/sys/devices/system/cpu/online`: `0-3,5`), or as
/// many as the scheduler lets this process use.
fn online_cpus() -> Vec<i32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            cpus.extend(a..=b.min(a + 4095));
        }
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.extend(0..n as i32);
    }
    cpus
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn open_event(tid: i32, cpu: i32, flags: u64) -> std::io::Result<OwnedFd> {
    let attr = Attr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<Attr>() as u32,
        config: PERF_COUNT_SW_DUMMY,
        sample_period: 1,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
        flags: flags
            | INHERIT
            | EXCLUDE_KERNEL
            | EXCLUDE_HV
            | SAMPLE_ID_ALL
            | USE_CLOCKID
            | CONTEXT_SWITCH,
        clockid: libc::CLOCK_MONOTONIC_RAW,
        ..Attr::default()
    };
    // SAFETY: perf_event_open reads `attr` (its size given in it) and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            tid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn set_output(fd: &OwnedFd, into: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: the ioctl takes the descriptor of an event on the same CPU.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_OUTPUT, into.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A CPU's ring, mapped.
struct Ring {
    base: *mut u8,
    len: usize,
    page: usize,
}

// SAFETY: the mapping is owned by the ring and only the draining thread
// uses it.
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: &OwnedFd) -> std::io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + RING_PAGES);
        // SAFETY: a new shared mapping of the event's ring; the kernel
        // checks the size (1 + 2^n pages).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ring {
            base: base.cast(),
            len,
            page,
        })
    }

    /// Every record written since the last call, as bytes.
    fn take(&mut self, into: &mut Vec<u8>) {
        const DATA_HEAD: usize = 1024;
        const DATA_TAIL: usize = 1032;
        let size = (self.len - self.page) as u64;
        // SAFETY: data_head and data_tail are u64 words of the mapped
        // control page; the kernel writes the head, this reader the tail.
        let (head, tail) = unsafe {
            let head = &*(self.base.add(DATA_HEAD) as *const std::sync::atomic::AtomicU64);
            let tail = &*(self.base.add(DATA_TAIL) as *const std::sync::atomic::AtomicU64);
            (head.load(Ordering::Acquire), tail.load(Ordering::Relaxed))
        };
        let n = head.wrapping_sub(tail).min(size);
        for i in 0..n {
            let at = ((tail + i) % size) as usize;
            // SAFETY: `at` is inside the data pages, which follow the
            // control page.
            into.push(unsafe { *self.base.add(self.page + at) });
        }
        // SAFETY: as above; storing the tail hands the bytes back.
        unsafe {
            let tail = &*(self.base.add(DATA_TAIL) as *const std::sync::atomic::AtomicU64);
            tail.store(head, Ordering::Release);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A context switch as the kernel recorded it.
#[derive(Clone, Copy)]
struct Switch {
    pid: u32,
    tid: u32,
    ns: u64,
    out: bool,
    preempted: bool,
}

/// Pairs of readings of `CLOCK_MONOTONIC_RAW` and the time-stamp counter:
/// the first, and the latest.
struct Clock {
    first: (u64, u64),
    last: (u64, u64),
}

impl Clock {
    fn new() -> Clock {
        let now = clock_pair();
        Clock {
            first: now,
            last: now,
        }
    }

    /// The counter at `ns`, on the line through the first and latest
    /// pairs (both clocks count the same oscillator; the line only
    /// corrects the trace's own few-millisecond calibration).
    fn tsc(&self, ns: u64) -> u64 {
        let (n0, t0) = self.first;
        let (n1, t1) = self.last;
        let span = n1.saturating_sub(n0);
        if span == 0 {
            return t0;
        }
        let rate = (t1 - t0) as f64 / span as f64;
        (t0 as f64 + (ns as f64 - n0 as f64) * rate).max(0.0) as u64
    }
}

/// Readings of both clocks taken to find one pair read without an
/// interruption between them.
const PAIR_TRIES: usize = 16;

/// `(CLOCK_MONOTONIC_RAW ns, counter)` read together: of [`PAIR_TRIES`]
/// readings of the clock between two of the counter, the one with the
/// two counter readings closest, the counter taken as their middle. A
/// reading whose thread was preempted between the two is off by up to
/// the time it waited (milliseconds on a busy machine, and the line
/// through two such pairs, a few percent off), so the tightest one is
/// kept.
fn clock_pair() -> (u64, u64) {
    tightest_pair(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: rdtsc has no memory effects; clock_gettime writes `ts`.
        unsafe {
            let a = core::arch::x86_64::_rdtsc();
            libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts);
            let b = core::arch::x86_64::_rdtsc();
            (a, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64, b)
        }
    })
}

/// Of [`PAIR_TRIES`] `(counter, ns, counter)` readings, the `(ns,
/// counter)` pair whose two counter readings are closest.
fn tightest_pair(mut read: impl FnMut() -> (u64, u64, u64)) -> (u64, u64) {
    let mut best = (0, 0);
    let mut best_width = u64::MAX;
    for _ in 0..PAIR_TRIES {
        let (a, ns, b) = read();
        let width = b.wrapping_sub(a);
        if width < best_width {
            best_width = width;
            best = (ns, a + width / 2);
        }
    }
    best
}

struct Recorder {
    /// Kept open: closing the events ends them.
    _events: Vec<OwnedFd>,
    rings: Vec<Ring>,
    out: File,
    clock: Clock,
    /// Switches read but too recent to pair yet.
    waiting: Vec<Switch>,
    /// Threads switched out, and when.
    switched_out: HashMap<u32, Switch>,
    lost: u64,
}

impl Recorder {
    /// Reads every ring; pairs and writes the switches older than
    /// [`SETTLE_NS`] (all of them when `all`).
    fn drain(&mut self, all: bool) {
        self.clock.last = clock_pair();
        let mut bytes = Vec::new();
        for r in 0..self.rings.len() {
            bytes.clear();
            self.rings[r].take(&mut bytes);
            self.parse(&bytes);
        }
        let settled = if all {
            u64::MAX
        } else {
            self.clock.last.0.saturating_sub(SETTLE_NS)
        };
        self.waiting.sort_by_key(|s| s.ns);
        let ready = self.waiting.partition_point(|s| s.ns <= settled);
        let mut out = Vec::new();
        for s in self.waiting.drain(..ready) {
            if s.out {
                self.switched_out.insert(s.tid, s);
            } else if let Some(o) = self.switched_out.remove(&s.tid) {
                let slice = SchedSlice {
                    pid: o.pid,
                    tid: o.tid,
                    out_tsc: self.clock.tsc(o.ns),
                    in_tsc: self.clock.tsc(s.ns),
                    flags: if o.preempted { SCHED_PREEMPTED } else { 0 },
                };
                out.extend_from_slice(&slice.pid.to_le_bytes());
                out.extend_from_slice(&slice.tid.to_le_bytes());
                out.extend_from_slice(&slice.out_tsc.to_le_bytes());
                out.extend_from_slice(&slice.in_tsc.to_le_bytes());
                out.extend_from_slice(&slice.flags.to_le_bytes());
            }
        }
        let _ = self.out.write_all(&out);
    }

    /// Records of one ring: switches into `waiting`, losses counted.
    fn parse(&mut self, bytes: &[u8]) {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let kind = u32_at(at);
            let misc = u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]);
            let size = u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
            if size < 8 || at + size > bytes.len() {
                break;
            }
            // The sample_id fields (pid, tid, time) end every record.
            let id = at + size - 16;
            match kind {
                PERF_RECORD_SWITCH if size >= 24 => self.waiting.push(Switch {
                    pid: u32_at(id),
                    tid: u32_at(id + 4),
                    ns: u64_at(id + 8),
                    out: misc & PERF_RECORD_MISC_SWITCH_OUT != 0,
                    preempted: misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
                }),
                PERF_RECORD_LOST if size >= 24 => self.lost += u64_at(at + 16),
                _ => {}
            }
            at += size;
        }
    }

    /// Writes the count of lost records into the header.
    fn finish(&mut self) {
        use std::os::unix::fs::FileExt;
        let at = std::mem::offset_of!(SchedHeader, lost) as u64;
        let _ = self.out.write_all_at(&self.lost.to_le_bytes(), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_reading_interrupted_between_the_counters_is_not_used() {
        // The first reading waited 1 ms (2.6 M ticks) between the two
        // counter readings: its clock reading is anywhere in that time.
        let mut readings = vec![(1_000, 5_000_000, 2_601_000)];
        for i in 0..PAIR_TRIES as u64 {
            let a = 3_000_000 + i * 1_000;
            readings.push((a, 5_500_000 + i * 400, a + 40));
        }
        readings[5].2 -= 10;
        let mut next = readings.into_iter();
        let pair = tightest_pair(|| next.next().unwrap());
        assert_eq!(pair, (5_500_000 + 4 * 400, 3_004_000 + 15));
    }
}
