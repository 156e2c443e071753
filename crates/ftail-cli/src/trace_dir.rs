//! The trace directory `ftail record` writes: an existing trace is kept as
//! `DIR.old` (replacing an older one), as uftrace does.
//!
//! Only what is provably a trace is ever removed or renamed: a directory
//! holding the `budget` file `ftail record` wrote (its magic number and
//! size: a user's file that merely has the name does not count) and
//! nothing but the files the runtime writes (`KEY.info`, `KEY.modules`, `KEY.status`,
//! `KEY-TID.events`, the trace's `budget`, and snapshot directories
//! `snapshot-N` holding such files, where `KEY` is a pid, or `PID~N` after an exec, and
//! `TID` a thread id, or `TID~N` when one came back), owned by the user
//! running ftail and reached without a symbolic link. Anything else in the
//! way is an error that names it.
//!
//! A trace whose programs still run may be moved to `DIR.old` (the
//! runtime follows it there: it knows its directory by device and inode)
//! but is never removed: a process recorded in it (its `KEY.info`'s pid
//! and start time) that still runs keeps it.
//!
//! Traces hold command lines and code addresses: a directory ftail creates
//! is private (0700), and an existing empty one is used only when no other
//! user may write into it.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What is found at a path `ftail record` may replace.
enum Found {
    /// Nothing.
    Missing,
    /// An empty directory.
    Empty,
    /// A trace directory, with the names of its files.
    Trace(Vec<OsString>),
}

/// What a directory holds that makes it a trace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// The budget file `ftail record` writes at the top of every trace.
    Budget,
    /// A `KEY.info` file: enough inside a trace's `snapshot-N`, whose
    /// trace was proven already.
    Info,
}

/// Whether `name` is one of the files the runtime writes into a trace
/// directory.
fn is_trace_file(name: &str) -> bool {
    // A snapshot that a trigger took names its call in a mark file.
    if [
        ftail_abi::trace::BUDGET_FILE,
        ftail_abi::argspec::SPEC_FILE,
        ftail_abi::trigger::MARK_FILE,
    ]
    .contains(&name)
    {
        return true;
    }
    let key_ok = |key: &str| {
        let (pid, exec) = key.split_once('~').unwrap_or((key, "0"));
        is_number(pid) && is_number(exec)
    };
    if let Some(rest) = name.strip_prefix(ftail_abi::trace::SCHED_PREFIX) {
        // `sched.PID`, or `sched.PID.N` for a process id that came back.
        let (pid, n) = rest.split_once('.').unwrap_or((rest, "0"));
        return is_number(pid) && is_number(n);
    }
    let stem = name
        .strip_suffix(".events")
        .or_else(|| name.strip_suffix(ftail_abi::trace::drain::DRAINED_SUFFIX))
        // Left by a watcher killed while it repacked a drained file.
        .or_else(|| name.strip_suffix(ftail_abi::trace::drain::REPACKING_SUFFIX));
    if let Some(stem) = stem {
        // `KEY-TID`, or `KEY-TID~N` for a thread id that came back.
        return stem
            .rsplit_once('-')
            .is_some_and(|(key, tid)| key_ok(key) && key_ok(tid));
    }
    name.strip_suffix(".info")
        .or_else(|| name.strip_suffix(".modules"))
        .or_else(|| name.strip_suffix(".status"))
        .is_some_and(key_ok)
}

/// Whether `name` is a snapshot's directory, `snapshot-N`.
fn is_snapshot_dir(name: &str) -> bool {
    name.strip_prefix("snapshot-").is_some_and(is_number)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Looks at `path`: nothing, an empty directory, or a trace; anything else
/// (a symbolic link, a file, another user's directory) is an error naming
/// it.
fn examine(path: &Path) -> Result<Found> {
    examine_as(path, Proof::Budget)
}

fn examine_as(path: &Path, proof: Proof) -> Result<Found> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e).with_context(|| format!("{} cannot be read", path.display())),
    };
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link; ftail does not follow it (give the directory itself)",
            path.display()
        );
    }
    if !meta.is_dir() {
        bail!("{} exists and is not a directory", path.display());
    }
    let me = crate::private_dir::euid();
    if meta.uid() != me {
        bail!(
            "{} is owned by uid {}, not by you (uid {me}); not touching it",
            path.display(),
            meta.uid()
        );
    }
    let entries = std::fs::read_dir(path)
        .with_context(|| format!("{} exists and cannot be read", path.display()))?;
    let mut files = Vec::new();
    let mut proven = false;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if is_snapshot_dir(&text) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            // `ftail ctl PID snapshot`: trace files only, checked alike.
            match examine_as(&entry.path(), Proof::Info)? {
                Found::Trace(_) | Found::Empty => {
                    files.push(name);
                    continue;
                }
                Found::Missing => {}
            }
        }
        if !regular || !is_trace_file(&text) {
            bail!(
                "{} exists and does not look like a trace directory (it holds {text:?}); \
                 not touching it",
                path.display()
            );
        }
        proven |= match proof {
            Proof::Budget => text == ftail_abi::trace::BUDGET_FILE && is_budget(&entry.path(), me),
            Proof::Info => text.ends_with(".info"),
        };
        files.push(name);
    }
    if files.is_empty() {
        return Ok(Found::Empty);
    }
    if !proven {
        let missing = match proof {
            Proof::Budget => "no budget file written by ftail record",
            Proof::Info => "no .info file",
        };
        bail!(
            "{} exists and does not look like a trace directory ({missing}); \
             not touching it",
            path.display()
        );
    }
    Ok(Found::Trace(files))
}

/// Whether `path` is the budget file `ftail record` wrote: a regular file
/// of user `me`, reached without a link, of a [`TraceBudget`]'s size and
/// starting with its magic number and size.
///
/// [`TraceBudget`]: ftail_abi::trace::TraceBudget
fn is_budget(path: &Path, me: u32) -> bool {
    use ftail_abi::trace::{TraceBudget, BUDGET_MAGIC};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let size = std::mem::size_of::<TraceBudget>();
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let ours = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == me && m.len() == size as u64);
    let mut head = [0u8; 16];
    ours && file.read_exact(&mut head).is_ok()
        && head[..8] == BUDGET_MAGIC
        && head[12..16] == (size as u32).to_le_bytes()
}

/// Removes the trace (or empty directory) `found` at `path`.
fn remove(path: &Path, found: Found) -> Result<()> {
    if let Found::Trace(files) = found {
        for f in files {
            let file = path.join(&f);
            if is_snapshot_dir(&f.to_string_lossy()) {
                remove(&file, examine_as(&file, Proof::Info)?)?;
                continue;
            }
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
    }
    std::fs::remove_dir(path).with_context(|| format!("removing {}", path.display()))
}

/// Makes `dir` ready for a new trace: an existing trace becomes `DIR.old`,
/// an empty directory is used as it is. Returns whether `dir` was created
/// here (and so may be removed again if the program cannot start).
pub fn prepare(dir: &Path) -> Result<bool> {
    match examine(dir)? {
        Found::Missing => {}
        Found::Empty => {
            // Others could plant files (or links) where the runtime writes.
            let mode = std::fs::symlink_metadata(dir)
                .with_context(|| format!("{}", dir.display()))?
                .mode();
            if mode & 0o022 != 0 {
                bail!(
                    "{} is writable by other users (mode {:04o}); chmod go-w it or \
                     choose another directory",
                    dir.display(),
                    mode & 0o7777
                );
            }
            return Ok(false);
        }
        Found::Trace(_) => {
            let old = old_path(dir);
            // Check the old trace before touching the current one.
            match examine(&old)? {
                Found::Missing => {}
                Found::Trace(files) if let Some(pid) = running(&old, &files) => bail!(
                    "{} holds the trace of process {pid}, which still runs; not removing \
                     it (record into another directory, or wait until it ends)",
                    old.display()
                ),
                found => remove(&old, found)?,
            }
            std::fs::rename(dir, &old)
                .with_context(|| format!("renaming {} to {}", dir.display(), old.display()))?;
        }
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(true)
}

/// The (device, inode) of the directory `dir`.
pub fn identity(dir: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// Where the trace directory of identity `id`, created at `dir`, is now:
/// `dir`, or `DIR.old` once a later recording moved it there.
pub fn now_at(dir: &Path, id: (u64, u64)) -> PathBuf {
    let old = old_path(dir);
    let moved = identity(dir).ok() != Some(id) && identity(&old).ok() == Some(id);
    if moved {
        old
    } else {
        dir.to_path_buf()
    }
}

/// A process recorded in the trace at `path` (whose entries are `files`)
/// that still runs: its pid.
fn running(path: &Path, files: &[OsString]) -> Option<u32> {
    files
        .iter()
        .filter(|f| f.to_string_lossy().ends_with(".info"))
        .filter_map(|f| recorded_process(&path.join(f)))
        .find(|&(pid, started_ns)| still_runs(pid, started_ns))
        .map(|(pid, _)| pid)
}

/// The pid and start time (ns since the epoch) a `KEY.info` records.
fn recorded_process(info: &Path) -> Option<(u32, u64)> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(info)
        .ok()?;
    // Bounded: a command line is at most a few MiB.
    let mut text = String::new();
    file.take(16 << 20).read_to_string(&mut text).ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    Some((value("pid")? as u32, value("start_realtime_ns")?))
}

/// Whether process `pid`, which started its recording at `started_ns`,
/// still runs: a process of that pid that is not a zombie and began no
/// later than that (a pid used again began after).
fn still_runs(pid: u32, started_ns: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name, which is in parentheses.
    let Some(rest) = stat.rfind(')').and_then(|at| stat.get(at + 2..)) else {
        return false;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first().is_none_or(|s| *s == "Z" || *s == "X") {
        return false;
    }
    let Some(ticks) = fields.get(19).and_then(|t| t.parse::<u64>().ok()) else {
        return true;
    };
    match boot_time_ns() {
        Some(boot) => {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let began = boot + ticks * (1_000_000_000 / hz);
            // The boot time is given to the second.
            began <= started_ns.saturating_add(2_000_000_000)
        }
        None => true,
    }
}

/// When the system booted, ns since the epoch (`/proc/stat`'s `btime`).
fn boot_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(secs * 1_000_000_000)
}

/// `DIR.old` (`trace/` gives `trace.old`, not `trace/.old`).
fn old_path(dir: &Path) -> PathBuf {
    let mut old = dir.components().as_path().as_os_str().to_owned();
    old.push(".old");
    PathBuf::from(old)
}

#[cfg(test)]
mod tests {
    use super::{is_trace_file, old_path};
    use std::path::Path;

    #[test]
    fn the_old_trace_sits_beside_the_directory() {
        assert_eq!(old_path(Path::new("trace/")), Path::new("trace.old"));
        assert_eq!(old_path(Path::new("a/b")), Path::new("a/b.old"));
    }

    #[test]
    fn knows_the_files_the_runtime_writes() {
        for name in [
            "4242.info",
            "4242.modules",
            "4242-4243.events",
            "4242~1.info",
            "4242~1-4242.events",
            "4242.status",
            "4242-4243~2.events",
            "4242-4243.drained",
            "4242-4243.repacking",
            "budget",
        ] {
            assert!(is_trace_file(name), "{name}");
        }
        for name in [
            "main.c",
            "notes.info",
            ".info",
            "4242.events",
            "4242-.events",
            "4242~.info",
            "4242.info.bak",
            "x-1.events",
        ] {
            assert!(!is_trace_file(name), "{name}");
        }
    }
}
