//! Repacking: a drainer that falls behind writes chunks with LZ4 (about
//! twice zstd's size) or as they are (six times), so that no thread
//! waits for it. Once such a ring is finished, a thread of the watcher
//! at the lowest priority rewrites those frames with the codec of a
//! drainer that keeps up, into `KEY-TID.repacking`, then renames it over
//! `KEY-TID.drained`: a reader that holds the old file reads it whole,
//! one that opens it later reads the new one, and a watcher killed on
//! the way leaves the old file as it was (the new one is unnamed until
//! it is whole, where the filesystem has `O_TMPFILE`; else the part
//! written, which the next recording moves away with the trace).
//!
//! A thread a core runs at nice 19: on a machine whose cores are busy with the
//! program it takes almost nothing until the program ends, and then
//! only what others leave.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use ftail_abi::trace::drain::{DRAINED_SUFFIX, FRAME_HEAD, REPACKING_SUFFIX};
use ftail_trace::reader::drained::{read_frame, DRAINED_HEADER};

use super::budget;
use super::packer::{Codec, Packer};
use super::{BUDGET_STEP, PAGE};

/// A finished ring's drained file to repack.
pub(super) struct Job {
    /// The drained file.
    pub drained: PathBuf,
    /// The trace's budget file (`--max-size`).
    pub budget: PathBuf,
    /// Bytes of the budget the drained file holds.
    pub taken: u64,
    /// The directory, held open while `drained` names a file in it
    /// through `/proc/self/fd/N/`.
    pub dir: Option<Arc<File>>,
}

/// The most repacking threads: one a core (as the program leaves them
/// idle), up to this.
const MOST_THREADS: usize = 4;

/// The repacking threads, which end once every sender of jobs is gone.
pub(super) struct Repackers {
    threads: Vec<std::thread::JoinHandle<Totals>>,
}

impl Repackers {
    /// Starts a repacking thread a core (up to [`MOST_THREADS`]), taking
    /// jobs from the sender returned.
    pub(super) fn start() -> (Sender<Job>, Repackers) {
        let (jobs, queue) = std::sync::mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(MOST_THREADS));
        let threads = (0..n)
            .filter_map(|_| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name("ftail-repack".into())
                    .spawn(move || run(&queue))
                    .ok()
            })
            .collect();
        (jobs, Repackers { threads })
    }

    /// Waits for every job to be done; with `FTAIL_DRAIN_STATS`, says
    /// what was.
    pub(super) fn finish(self) {
        let mut totals = Totals::default();
        for t in self.threads {
            if let Ok(t) = t.join() {
                totals.merge(t);
            }
        }
        totals.report();
    }
}

fn run(queue: &Mutex<Receiver<Job>>) -> Totals {
    // SAFETY: gettid and setpriority take no pointers; on Linux a
    // thread id given to PRIO_PROCESS names that thread alone.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
    let mut totals = Totals::default();
    let Some(mut packer) = Packer::new() else {
        return totals;
    };
    loop {
        // The lock is held only while waiting for the next job.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return totals,
        };
        let Ok(job) = job else {
            return totals;
        };
        match repack(&job, &mut packer) {
            Ok(Some(sizes)) => totals.add(sizes),
            // Left as it was: nothing to gain, or the file changed.
            Ok(None) => {}
            Err(e) => {
                totals.failed += 1;
                totals.last_error = format!("{}: {e}", job.drained.display());
            }
        }
    }
}

/// What the repacker did, for `FTAIL_DRAIN_STATS`.
#[derive(Default)]
struct Totals {
    files: u64,
    before: u64,
    after: u64,
    failed: u64,
    last_error: String,
}

impl Totals {
    fn merge(&mut self, other: Totals) {
        self.files += other.files;
        self.before += other.before;
        self.after += other.after;
        self.failed += other.failed;
        if !other.last_error.is_empty() {
            self.last_error = other.last_error;
        }
    }

    fn add(&mut self, (before, after): (u64, u64)) {
        self.files += 1;
        self.before += before;
        self.after += after;
    }

    fn report(&self) {
        if std::env::var_os("FTAIL_DRAIN_STATS").is_none() || self.files + self.failed == 0 {
            return;
        }
        let why = if self.last_error.is_empty() {
            String::new()
        } else {
            format!(" (the last: {})", self.last_error)
        };
        crate::out::stderr(&format!(
            "ftail: repacked {} drained files, {} bytes into {}; {} left as they were{why}",
            self.files, self.before, self.after, self.failed
        ));
    }
}

/// Repacks `job`'s drained file: its sizes before and after, or None
/// when it was left as it was.
fn repack(job: &Job, packer: &mut Packer) -> std::io::Result<Option<(u64, u64)>> {
    let old = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&job.drained)?;
    let meta = old.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let temp_path = repacking_path(&job.drained);
    let (temp, named) = new_file(&job.drained, &temp_path)?;
    let mut out = Output {
        file: temp,
        len: 0,
        budget: &job.budget,
        taken: 0,
    };
    let result = rewrite(&old, &job.drained, meta.len(), packer, &mut out).and_then(|()| {
        out.file.sync_data()?;
        // Renamed over only the file that was read: not one another
        // recording made since under that name.
        let now = std::fs::symlink_metadata(&job.drained)?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(std::io::Error::other("the drained file was replaced"));
        }
        if !named {
            link_unnamed(&out.file, &temp_path)?;
        }
        std::fs::rename(&temp_path, &job.drained)
    });
    match result {
        Ok(()) => {
            // The budget held the old file and the new one as it grew:
            // it now holds the new one.
            let kept = out.len.div_ceil(PAGE) * PAGE;
            budget::give_back(&job.budget, (job.taken + out.taken).saturating_sub(kept));
            Ok(Some((meta.len(), out.len)))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp_path);
            budget::give_back(&job.budget, out.taken);
            Err(e)
        }
    }
}

/// The file the repacked frames go to: unnamed in the drained file's
/// directory where the filesystem can (`O_TMPFILE`: nothing is left
/// behind by a watcher killed meanwhile, and the directory gains no
/// entry for seconds, which a user's `rm -rf` of the trace could trip
/// on), else `temp_path` made at once; whether it is named.
fn new_file(drained: &Path, temp_path: &Path) -> std::io::Result<(File, bool)> {
    let dir = drained.parent().unwrap_or(Path::new("."));
    let unnamed = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    if let Ok(file) = unnamed {
        return Ok((file, false));
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp_path)?;
    Ok((file, true))
}

/// Gives the unnamed `file` the name `path` (which must not exist),
/// through its `/proc/self/fd` link: `AT_EMPTY_PATH` would need a
/// capability.
fn link_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths; linkat reads them only.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `KEY-TID.repacking` beside `KEY-TID.drained`.
fn repacking_path(drained: &Path) -> PathBuf {
    let name = drained
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(DRAINED_SUFFIX))
        .unwrap_or("");
    drained.with_file_name(format!("{name}{REPACKING_SUFFIX}"))
}

/// The new file as it is written, its bytes taken from the budget ahead.
struct Output<'a> {
    file: File,
    len: u64,
    budget: &'a Path,
    taken: u64,
}

impl Output<'_> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let need = (self.len + bytes.len() as u64).saturating_sub(self.taken);
        if need > 0 {
            let step = need.div_ceil(BUDGET_STEP) * BUDGET_STEP;
            if !budget::take_all(self.budget, step) {
                return Err(std::io::Error::other("--max-size reached"));
            }
            self.taken += step;
        }
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `old`'s header, then each of its frames: as it is when it has
/// the settled codec (or would not be smaller), else repacked.
fn rewrite(
    old: &File,
    path: &Path,
    len: u64,
    packer: &mut Packer,
    out: &mut Output<'_>,
) -> std::io::Result<()> {
    let settled: Codec = packer.settled();
    let mut head = [0u8; DRAINED_HEADER as usize];
    old.read_exact_at(&mut head, 0)?;
    out.append(&head)?;
    let mut at = DRAINED_HEADER;
    let mut raw = Vec::new();
    while at < len {
        let mut frame_head = [0u8; FRAME_HEAD];
        old.read_exact_at(&mut frame_head, at)?;
        let word =
            |o: usize| u32::from_le_bytes(frame_head[o..o + 4].try_into().unwrap_or_default());
        let after = at + (FRAME_HEAD as u64) + u64::from(word(16));
        if after > len {
            return Err(std::io::Error::other(
                "the drained file ends inside a frame",
            ));
        }
        raw.resize((after - at) as usize, 0);
        old.read_exact_at(&mut raw, at)?;
        if word(0) == settled.magic() {
            // Kept as it is, never decoded: readers check it as before.
            out.append(&raw)?;
        } else {
            // Checked (magic, sizes, checksum) and decoded by the reader.
            let Some((frame, _)) = read_frame(old, path, at)? else {
                return Err(std::io::Error::other(
                    "the drained file ends inside a frame",
                ));
            };
            let repacked = packer.frame(settled, frame.chunk, &frame.data)?;
            if repacked.len() < raw.len() {
                out.append(repacked)?;
            } else {
                out.append(&raw)?;
            }
        }
        at = after;
    }
    Ok(())
}
