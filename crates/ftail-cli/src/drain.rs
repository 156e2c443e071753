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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ftail_abi::trace::drain::{
    chunk_at, Control, CHUNK, CONTROL_AT, DRAINED_MAGIC, FRAME_HEAD, FRAME_MAGIC, FRAME_STORED,
    NO_SPILL, RING_AT,
};
use ftail_abi::trace::{EventFileHeader, EVENTS_MAGIC, EVENTS_SUFFIX};

/// zstd's level: the fastest of its usual ones compresses a chunk of
/// records about 8 to 12 times.
const LEVEL: i32 = 1;

/// How long the drainer sleeps when no chunk was ready.
const IDLE: Duration = Duration::from_millis(1);

/// A running drainer; [`Drainer::finish`] drains what is left.
pub struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drainer {
    /// Starts draining the rings of the trace directory `dir`.
    pub fn start(dir: PathBuf) -> Drainer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ftail-drain".into())
            .spawn(move || run(&dir, &flag))
            .ok();
        Drainer { stop, thread }
    }

    /// Once the program has ended: drains every ring whole, waiting for
    /// the processes still writing any.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(dir: &Path, stop: &AtomicBool) {
    let mut rings: HashMap<PathBuf, Ring> = HashMap::new();
    let mut compressor = zstd::bulk::Compressor::new(LEVEL).ok();
    let mut since_scan = u32::MAX;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if since_scan >= 10 || stopping {
            find_rings(dir, &mut rings);
            since_scan = 0;
        }
        since_scan += 1;
        let mut busy = false;
        let mut all_done = true;
        for ring in rings.values_mut() {
            if ring.finished {
                continue;
            }
            ring.beat();
            busy |= ring.drain_ready(compressor.as_mut());
            if stopping && !ring.writer_alive(dir) {
                ring.drain_rest(compressor.as_mut());
            }
            all_done &= ring.finished;
        }
        if stopping && all_done {
            return;
        }
        if !busy {
            std::thread::sleep(IDLE);
        }
    }
}

/// Opens the drained rings of `dir` not known yet.
fn find_rings(dir: &Path, rings: &mut HashMap<PathBuf, Ring>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_events = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(EVENTS_SUFFIX));
        if !is_events || rings.contains_key(&path) {
            continue;
        }
        if let Some(ring) = Ring::open(&path) {
            rings.insert(path, ring);
        }
    }
}

/// One thread's drained ring, as the drainer holds it.
struct Ring {
    path: PathBuf,
    events: File,
    /// The event file's header page, mapped shared: the control words.
    page: *mut u8,
    drain: u64,
    pid: u32,
    out: File,
    /// Where the next frame goes.
    out_len: u64,
    /// Chunks in the drained file.
    next: u64,
    finished: bool,
}

// SAFETY: `page` is a mapping owned by the ring alone, used only by the
// drainer's thread.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the page `open` mapped, not used after this.
        unsafe { libc::munmap(self.page.cast(), RING_AT as usize) };
    }
}

impl Ring {
    /// The ring of the event file `path`, if it is a drained ring not
    /// drained already; its drained file is created.
    fn open(path: &Path) -> Option<Ring> {
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
        if head[..8] != EVENTS_MAGIC || drain < 2 * CHUNK || !drain.is_multiple_of(CHUNK) {
            return None;
        }
        if events.metadata().ok()?.len() < RING_AT {
            return None;
        }
        // SAFETY: a shared mapping of the first page of a file at least
        // that long; it stays mapped as long as the ring is held.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_AT as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                events.as_raw_fd(),
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return None;
        }
        let mut ring = Ring {
            path: path.to_path_buf(),
            events,
            page: page.cast(),
            drain,
            pid,
            out: File::open("/dev/null").ok()?,
            out_len: 0,
            next: 0,
            finished: false,
        };
        if ring.word(|c| &c.finished).load(Ordering::Acquire) != 0 {
            ring.finished = true;
            return Some(ring);
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
        Some(ring)
    }

    /// A control word, shared with the thread.
    fn word(&self, f: impl Fn(&Control) -> &u64) -> &AtomicU64 {
        // SAFETY: the control words lie in the mapped header page at
        // CONTROL_AT, aligned; both sides access them only with atomics.
        unsafe {
            let control = &*(self.page.add(CONTROL_AT as usize) as *const Control);
            AtomicU64::from_ptr(f(control) as *const u64 as *mut u64)
        }
    }

    /// Tells the thread the drainer is there.
    fn beat(&self) {
        self.word(|c| &c.heartbeat)
            .store(monotonic_ns(), Ordering::Release);
    }

    /// Drains the chunks the thread has left behind, all but the last it
    /// finished (a slow path it interrupted may still pad that one);
    /// whether there was one.
    fn drain_ready(&mut self, compressor: Option<&mut zstd::bulk::Compressor<'static>>) -> bool {
        let Some(compressor) = compressor else {
            return false;
        };
        let written = self.word(|c| &c.written).load(Ordering::Acquire);
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let ready = written.saturating_sub(1).min(spill);
        let slots = self.drain / CHUNK;
        let mut any = false;
        while self.next < ready {
            // Behind by more than half the ring: the chunk is stored as it
            // is, before the thread has to wait for its slot.
            let behind = (ready - self.next) * 2 > slots;
            if self.drain_chunk(compressor, true, behind).is_err() {
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
        compressor: &mut zstd::bulk::Compressor<'static>,
        free: bool,
        store: bool,
    ) -> std::io::Result<bool> {
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let at = chunk_at(self.next, self.drain, spill);
        let mut data = vec![0u8; CHUNK as usize];
        let n = read_upto(&self.events, &mut data, at)?;
        data.truncate(n);
        let last = n == 0 || data.iter().all(|&b| b == 0);
        if last && !free {
            return Ok(false);
        }
        let (magic, packed) = if store {
            (FRAME_STORED, data.clone())
        } else {
            (FRAME_MAGIC, compressor.compress(&data)?)
        };
        let mut frame = Vec::with_capacity(FRAME_HEAD + packed.len());
        frame.extend_from_slice(&magic.to_le_bytes());
        frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
        frame.extend_from_slice(&self.next.to_le_bytes());
        frame.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&packed).to_le_bytes());
        frame.extend_from_slice(&packed);
        self.out.write_all_at(&frame, self.out_len)?;
        self.out_len += frame.len() as u64;
        self.next += 1;
        self.word(|c| &c.drained)
            .store(self.next, Ordering::Release);
        if free && self.next <= spill {
            self.events.write_all_at(&vec![0u8; n], at)?;
            self.word(|c| &c.freed).store(self.next, Ordering::Release);
        }
        Ok(true)
    }

    /// Drains everything left once the thread is gone: the rest of the
    /// ring up to the chunk it was writing, then what it wrote after the
    /// ring, up to the first chunk of zeros; the event file is then cut
    /// to its header's page.
    fn drain_rest(&mut self, compressor: Option<&mut zstd::bulk::Compressor<'static>>) {
        let Some(compressor) = compressor else {
            return;
        };
        let written = self.word(|c| &c.written).load(Ordering::Acquire);
        let spill = self.word(|c| &c.spill_from).load(Ordering::Acquire);
        let ring_end = if spill == NO_SPILL {
            written + 1
        } else {
            spill
        };
        while self.next < ring_end {
            // The chunk being written may be empty: nothing to keep.
            let last = self.next + 1 == ring_end && spill == NO_SPILL;
            match self.drain_chunk(compressor, !last, false) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return,
            }
        }
        if spill != NO_SPILL {
            loop {
                match self.drain_chunk(compressor, false, false) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => return,
                }
            }
        }
        self.word(|c| &c.drained)
            .store(self.next, Ordering::Release);
        self.word(|c| &c.finished).store(1, Ordering::Release);
        if self.events.set_len(RING_AT).is_ok() {
            self.finished = true;
        }
    }

    /// Whether the process that writes the ring may still write it: it
    /// runs, and has not `exec`ed into a later image (`PID~N`).
    fn writer_alive(&self, dir: &Path) -> bool {
        // SAFETY: kill with signal 0 only checks the process exists.
        let running = unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !running || zombie(self.pid) {
            return false;
        }
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
