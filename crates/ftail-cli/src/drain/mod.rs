//! The drainer of `ftail record --drain`: a thread of the watcher (which
//! outlives the program) that compresses the chunks each thread's
//! drained ring fills (`ftail_abi::trace::drain`) into the thread's
//! drained file, and only then frees them for the thread to write again.
//! Once the program has ended it drains what is left (the chunk each
//! thread was writing, what a thread spilled after its ring) and cuts
//! each event file to its header's page.
//!
//! Order makes every step safe to interrupt: a frame is appended before
//! `drained` counts it, and a slot is zeroed only after that, before
//! `freed` says the thread may write it again; a reader goes back to the
//! drained file for any chunk `drained` counts. A drainer killed at any
//! point leaves every written chunk in one of the two files.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ftail_abi::trace::drain::{
    chunk_at, Control, CHUNK, CONTROL_AT, DRAINED_MAGIC, NO_SPILL, RING_AT,
};
use ftail_abi::trace::{EventFileHeader, EVENTS_MAGIC, EVENTS_SUFFIX};

use packer::{Codec, Packer};

mod budget;
mod packer;
mod repack;

/// How much of `--max-size` a drained file takes at a time.
const BUDGET_STEP: u64 = 1 << 20;

/// The unit of the budget's count.
const PAGE: u64 = 4096;

/// How long the drainer sleeps when no chunk was ready.
const IDLE: Duration = Duration::from_millis(1);

/// How often the drainer looks whether the processes writing its rings
/// are still there.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How often the drainer looks for new rings, busy or not: a directory of
/// thousands of files takes a millisecond or more to list, and a thread
/// whose ring is full waits up to 50 ms for its drainer.
const SCAN_EVERY: Duration = Duration::from_millis(10);

/// A running drainer; [`Drainer::finish`] drains what is left.
pub struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The repacking threads ([`repack`]), which end once the drainer has.
    repackers: repack::Repackers,
}

impl Drainer {
    /// Starts draining the rings of the trace directory `dir`. Called in
    /// the watcher, a process of its own: the descriptors it may hold
    /// (two for each ring being drained) are raised to the hard limit
    /// there, the program's own limits untouched.
    pub fn start(dir: PathBuf) -> Drainer {
        raise_file_limit();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (jobs, repackers) = repack::Repackers::start();
        let thread = std::thread::Builder::new()
            .name("ftail-drain".into())
            .spawn(move || {
                // The directory itself, whatever it is called later: a
                // recording into the same path while this one still
                // drains moves this trace to `DIR.old`.
                let held = held_dir(&dir).map(|(file, path)| (Arc::new(file), path));
                let queue = Queue {
                    jobs,
                    dir: held.as_ref().map(|(file, _)| file.clone()),
                };
                run(held.as_ref().map_or(&dir, |(_, path)| path), &flag, &queue);
            })
            .ok();
        Drainer {
            stop,
            thread,
            repackers,
        }
    }

    /// Once the program has ended: drains every ring whole, waiting for
    /// the processes still writing any, then repacks what was drained in
    /// haste.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.repackers.finish();
    }
}

/// Where finished rings go to be repacked, with the directory they are
/// named through (`/proc/self/fd/N/`), held open until the last is.
struct Queue {
    jobs: std::sync::mpsc::Sender<repack::Job>,
    dir: Option<Arc<File>>,
}

fn run(dir: &Path, stop: &AtomicBool, repack: &Queue) {
    let mut rings = Rings::default();
    // Without a compressor (it could not be made), nothing is drained:
    // as after a SIGKILL of the watcher, each thread finds no heartbeat
    // and goes on in a growing file.
    let Some(mut packer) = Packer::new() else {
        return;
    };
    let mut last_scan: Option<std::time::Instant> = None;
    // Whether the directory was looked at since the program ended: a ring
    // made just before is drained too.
    let mut scanned_at_end = false;
    let mut last_look: Option<std::time::Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let due = last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY);
        if due || stopping && !scanned_at_end {
            rings.find(dir);
            last_scan = Some(std::time::Instant::now());
            scanned_at_end = stopping;
        }
        // Whether each ring's writer is still there is looked at now and
        // then: a process that ended (or was killed) leaves rings whose
        // threads never said so, and a suite of thousands of processes
        // must not keep them all open until the end.
        let look = stopping || last_look.is_none_or(|t| t.elapsed() >= LOOK_EVERY);
        if look {
            last_look = Some(std::time::Instant::now());
        }
        let mut running: HashMap<u32, bool> = HashMap::new();
        let mut busy = false;
        for ring in rings.live.values_mut() {
            ring.beat();
            busy |= ring.drain_ready(&mut packer);
            let gone = look
                && !(*running
                    .entry(ring.pid)
                    .or_insert_with(|| process_running(ring.pid))
                    && ring.image_current(dir));
            if ring.ended() || gone {
                ring.drain_rest(&mut packer);
                if let Some(mut job) = ring.repack_job() {
                    job.dir = repack.dir.clone();
                    let _ = repack.jobs.send(job);
                }
            }
        }
        rings.forget_finished();
        if scanned_at_end && rings.live.is_empty() {
            packer.report();
            return;
        }
        if !busy {
            std::thread::sleep(IDLE);
        }
    }
}

/// The event files of a trace directory as the drainer knows them.
#[derive(Default)]
struct Rings {
    /// Drained rings not finished yet.
    live: HashMap<PathBuf, Ring>,
    /// Files never to look at again: finished rings (whose mappings and
    /// descriptors are let go at once: a program may start thousands of
    /// threads) and files that are not drained rings.
    done: HashSet<PathBuf>,
}

impl Rings {
    /// Opens the drained rings of `dir` not known yet.
    fn find(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let is_events = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(EVENTS_SUFFIX));
            if !is_events {
                continue;
            }
            let path = e.path();
            if self.live.contains_key(&path) || self.done.contains(&path) {
                continue;
            }
            match Ring::open(&path) {
                Opened::Ring(ring) => {
                    self.live.insert(path, ring);
                }
                Opened::Never => {
                    self.done.insert(path);
                }
                Opened::NotYet => {}
            }
        }
    }

    /// Lets go of the rings that are finished.
    fn forget_finished(&mut self) {
        let finished: Vec<PathBuf> = self
            .live
            .iter()
            .filter(|(_, r)| r.finished)
            .map(|(p, _)| p.clone())
            .collect();
        for path in finished {
            self.live.remove(&path);
            self.done.insert(path);
        }
    }
}

/// What [`Ring::open`] found.
enum Opened {
    Ring(Ring),
    /// Not a drained ring, or one drained already: never one later.
    Never,
    /// Not whole yet (its thread is making it), or not readable now.
    NotYet,
}

/// One thread's drained ring, as the drainer holds it.
struct Ring {
    path: PathBuf,
    events: File,
    /// The event file's header page and ring, mapped shared: the control
    /// words, and the chunks read and zeroed in place.
    map: *mut u8,
    drain: u64,
    pid: u32,
    out: File,
    /// Where the next frame goes.
    out_len: u64,
    /// Chunks in the drained file.
    next: u64,
    finished: bool,
    /// A chunk read from after the ring.
    spilled: Vec<u8>,
    /// The trace's budget file (`--max-size`).
    budget: PathBuf,
    /// Bytes of the drained file taken from the budget.
    taken: u64,
    /// Whether the budget had no room for the next frame: nothing more is
    /// drained while the program runs.
    full: bool,
    /// Whether the thread is gone and the rest is being drained.
    ending: bool,
    /// Frames written with a faster codec than the settled one (the
    /// drainer was behind): to repack once the ring is finished.
    hasty: u64,
}

// SAFETY: `map` is a mapping owned by the ring alone, used only by the
// drainer's thread.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping `open` made, not used after this.
        unsafe { libc::munmap(self.map.cast(), (RING_AT + self.drain) as usize) };
    }
}

impl Ring {
    /// The ring of the event file `path`, if it is a drained ring not
    /// drained already; its drained file is created.
    fn open(path: &Path) -> Opened {
        Ring::try_open(path).unwrap_or(Opened::NotYet)
    }

    fn try_open(path: &Path) -> Option<Opened> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // The program may name files in the trace directory: a link is
        // never followed, and only a regular file is drained (and cut).
        let events = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !events.metadata().ok()?.is_file() {
            return None;
        }
        let mut head = [0u8; std::mem::size_of::<EventFileHeader>()];
        events.read_exact_at(&mut head, 0).ok()?;
        let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or_default());
        let drain = u64_at(std::mem::offset_of!(EventFileHeader, drain));
        let pid_at = std::mem::offset_of!(EventFileHeader, pid);
        let pid = u32::from_le_bytes(head[pid_at..pid_at + 4].try_into().unwrap_or_default());
        if head[..8] != EVENTS_MAGIC {
            return None;
        }
        if drain < 2 * CHUNK || !drain.is_multiple_of(CHUNK) {
            return Some(Opened::Never);
        }
        // The thread makes its file this long before it writes the header;
        // a finished ring's is cut to its header's page.
        if events.metadata().ok()?.len() < RING_AT + drain {
            return Some(Opened::Never);
        }
        let len = RING_AT + drain;
        // SAFETY: a shared mapping of the start of a file at least that
        // long; it stays mapped as long as the ring is held.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                events.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let mut ring = Ring {
            path: path.to_path_buf(),
            events,
            map: map.cast(),
            drain: len - RING_AT,
            pid,
            out: File::open("/dev/null").ok()?,
            out_len: 0,
            next: 0,
            finished: false,
            spilled: Vec::new(),
            budget: path.with_file_name(ftail_abi::trace::BUDGET_FILE),
            taken: 0,
            full: false,
            ending: false,
            hasty: 0,
        };
        if ring.word(|c| &c.finished).load(Ordering::Acquire) != 0 {
            return Some(Opened::Never);
        }
        let out_path = ftail_trace::reader::drained::drained_path(path);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&out_path)
            .ok()?;
        out.write_all(&DRAINED_MAGIC).ok()?;
        out.write_all(&[0; 8]).ok()?;
        ring.out = out;
        ring.out_len = ftail_trace::reader::drained::DRAINED_HEADER;
        Some(Opened::Ring(ring))
    }

    /// A control word, shared with the thread.
    fn word(&self, f: impl Fn(&Control) -> &u64) -> &AtomicU64 {
        // SAFETY: the control words lie in the mapped header page at
        // CONTROL_AT, aligned; both sides access them only with atomics.
        unsafe {
            let control = &*(self.map.add(CONTROL_AT as usize) as *const Control);
            AtomicU64::from_ptr(f(control) as *const u64 as *mut u64)
        }
    }

    /// Whether the thread has ended, every record of it written.
    fn ended(&self) -> bool {
        self.word(|c| &c.ended).load(Ordering::Acquire) != 0
    }

    /// Tells the thread the drainer is there.
    fn beat(&self) {
        self.word(|c| &c.heartbeat)
            .store(monotonic_ns(), Ordering::Release);
    }

    /// Drains the chunks the thread has left behind, all but the last it
    /// finished (a slow path it interrupted may still pad that one);
    /// whether there was one.
    fn drain_ready(&mut self, packer: &mut Packer) -> bool {
        if self.full {
            return false;
        }
        let written = self.word(|c| &c.written).load(Ordering::Acquire);
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let ready = written.saturating_sub(1).min(spill);
        let slots = self.drain / CHUNK;
        let mut any = false;
        while self.next < ready {
            let codec = packer.codec(ready - self.next, slots);
            if self.drain_chunk(packer, true, codec).is_err() {
                return any;
            }
            any = true;
        }
        any
    }

    /// Appends chunk `next` to the drained file; with `free`, then zeroes
    /// its slot and lets the thread write it again.
    fn drain_chunk(
        &mut self,
        packer: &mut Packer,
        free: bool,
        codec: Codec,
    ) -> std::io::Result<bool> {
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let at = chunk_at(self.next, self.drain, spill);
        let in_ring = at + CHUNK <= RING_AT + self.drain;
        let data: &[u8] = if in_ring {
            // SAFETY: the chunk lies in the mapped ring; the thread writes
            // it again only once `freed` counts it, after this.
            unsafe { std::slice::from_raw_parts(self.map.add(at as usize), CHUNK as usize) }
        } else {
            self.spilled.resize(CHUNK as usize, 0);
            let n = read_upto(&self.events, &mut self.spilled, at)?;
            &self.spilled[..n]
        };
        let last = !free && data.iter().all(|&b| b == 0);
        if last {
            return Ok(false);
        }
        if codec != packer.settled() {
            self.hasty += 1;
        }
        let frame = packer.frame(codec, self.next, data)?;
        let need = (self.out_len + frame.len() as u64).saturating_sub(self.taken);
        if need > 0 {
            // While the program runs, a chunk without room stays in the
            // ring: its thread spills, and stops where the budget does.
            // The rest is drained whatever is left: the ring it comes
            // from is given back.
            let step = need.div_ceil(BUDGET_STEP) * BUDGET_STEP;
            if self.ending {
                budget::force(&self.budget, step);
            } else if !budget::take_all(&self.budget, step) {
                self.full = true;
                return Err(std::io::Error::other("--max-size reached"));
            }
            self.taken += step;
        }
        self.out.write_all_at(frame, self.out_len)?;
        self.out_len += frame.len() as u64;
        self.next += 1;
        self.word(|c| &c.drained)
            .store(self.next, Ordering::Release);
        if free && in_ring && self.next <= spill {
            // SAFETY: as above; nothing reads the chunk's slot meanwhile
            // but readers, which go to the drained file once `drained`
            // counts the chunk.
            unsafe { std::ptr::write_bytes(self.map.add(at as usize), 0, CHUNK as usize) };
            self.word(|c| &c.freed).store(self.next, Ordering::Release);
        }
        Ok(true)
    }

    /// Drains everything left once the thread is gone: the rest of the
    /// ring up to the chunk it was writing, then what it wrote after the
    /// ring, up to the first chunk of zeros; the event file is then cut
    /// to its header's page.
    fn drain_rest(&mut self, packer: &mut Packer) {
        self.ending = true;
        // A chunk that cannot be written (a full filesystem) stays where it
        // is, in the ring or after it, where readers find it: the ring is
        // let go uncut rather than tried again for ever.
        let whole = self.drain_left(packer).is_ok();
        self.finished = true;
        if !whole {
            return;
        }
        self.word(|c| &c.drained)
            .store(self.next, Ordering::Release);
        self.word(|c| &c.finished).store(1, Ordering::Release);
        let len = self.events.metadata().map_or(0, |m| m.len());
        if self.events.set_len(RING_AT).is_ok() {
            // The ring, and what the drained file took ahead of its
            // frames (a step of 1 MiB: thousands of short threads must
            // not use up `--max-size` with room they never wrote).
            let kept = self.out_len.div_ceil(PAGE) * PAGE;
            let ahead = self.taken.saturating_sub(kept);
            self.taken -= ahead;
            budget::give_back(&self.budget, len.saturating_sub(RING_AT) + ahead);
        }
    }

    /// The repacking a finished ring's drained file is due, once.
    fn repack_job(&mut self) -> Option<repack::Job> {
        let whole = self.word(|c| &c.finished).load(Ordering::Acquire) != 0;
        if !(self.finished && whole && std::mem::take(&mut self.hasty) > 0) {
            return None;
        }
        Some(repack::Job {
            drained: ftail_trace::reader::drained::drained_path(&self.path),
            budget: self.budget.clone(),
            taken: self.taken,
            dir: None,
        })
    }

    /// Drains the rest of the ring up to the chunk its thread was
    /// writing, then what it wrote after the ring, up to the first chunk
    /// of zeros.
    fn drain_left(&mut self, packer: &mut Packer) -> std::io::Result<()> {
        // Nothing waits for these any more: the settled codec.
        let codec = packer.settled();
        let written = self.word(|c| &c.written).load(Ordering::Acquire);
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let ring_end = if spill == NO_SPILL {
            written.saturating_add(1)
        } else {
            spill
        };
        while self.next < ring_end {
            // The chunk being written may be empty: nothing to keep.
            let last = self.next + 1 == ring_end && spill == NO_SPILL;
            if !self.drain_chunk(packer, !last, codec)? {
                break;
            }
        }
        if spill != NO_SPILL {
            while self.drain_chunk(packer, false, codec)? {}
        }
        Ok(())
    }

    /// Whether the ring's process image is its process's latest: it has
    /// not `exec`ed into a later one (`PID~N`).
    fn image_current(&self, dir: &Path) -> bool {
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let key = name.rsplit_once('-').map_or("", |(k, _)| k);
        let image = |k: &str| -> u64 {
            k.split_once('~')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0)
        };
        let this = image(key);
        let later = format!("{}~{}.info", self.pid, this + 1);
        !dir.join(later).exists()
    }
}

/// The trace directory `dir` held open, and the path that names it
/// through the descriptor (`/proc/self/fd/N/`); `None` without `/proc`.
fn held_dir(dir: &Path) -> Option<(File, PathBuf)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .ok()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let id = |a: &Path| std::fs::metadata(a).ok().map(|m| (m.dev(), m.ino()));
    let held = id(&path)?;
    (Some(held) == id(dir)).then_some((file, path))
}

/// Lets this process open as many files as its hard limit allows.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Whether process `pid` runs (and has not ended, waiting to be reaped).
fn process_running(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks the process exists.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !zombie(pid)
}

/// Whether process `pid` has ended and waits to be reaped.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Reads up to `buf.len()` bytes at `at`; how many there were.
fn read_upto(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `CLOCK_MONOTONIC` in nanoseconds, as the runtime reads it.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
