//! Reading a trace directory written by `ftail record`: the processes'
//! metadata and module lists, and each thread's events, up to the first
//! damage.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use ftail_abi::trace::{
    Event, EventFileHeader, EventKind, EVENTS_MAGIC, EVENTS_SUFFIX, TRACE_VERSION,
};

/// A whole trace directory.
#[derive(Debug)]
pub struct Trace {
    /// Its path.
    pub dir: PathBuf,
    /// Every traced process, by pid.
    pub processes: Vec<Process>,
}

/// One traced process image (a process, or what it became after `exec`).
#[derive(Debug)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Name stem of its files: the pid, or `PID~N` for the N-th image
    /// after the first one `exec`ed.
    pub key: String,
    /// Its `PID.info` key/value pairs.
    pub info: BTreeMap<String, String>,
    /// Modules with site tables.
    pub modules: Vec<Module>,
    /// Its threads.
    pub threads: Vec<Thread>,
}

/// A module with site tables, as the traced process loaded it.
#[derive(Debug, Clone)]
pub struct Module {
    /// Load bias.
    pub base: u64,
    /// GNU build id (hex), when the module has one.
    pub build_id: Option<String>,
    /// Absolute path.
    pub path: PathBuf,
}

/// One thread's recording.
#[derive(Debug)]
pub struct Thread {
    /// Thread id.
    pub tid: u32,
    /// Thread name when recording began.
    pub name: String,
    /// Events the runtime had to drop.
    pub lost: u64,
    /// Its events in order.
    pub events: Vec<Event>,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<String>,
}

/// Errors opening a trace.
#[derive(Debug)]
pub enum Error {
    /// The directory cannot be read.
    Io(PathBuf, std::io::Error),
    /// The directory holds no trace.
    Empty(PathBuf),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Empty(p) => write!(f, "{}: no trace here (no *.info files)", p.display()),
        }
    }
}

impl std::error::Error for Error {}

impl Process {
    /// Time-stamp counter ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.info
            .get("tsc_hz")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000_000)
    }
}

/// Reads `dir`.
///
/// # Errors
///
/// When the directory cannot be read or holds no `*.info` file. Damaged
/// event files are read up to the damage, reported in [`Thread::damage`].
pub fn open(dir: &Path) -> Result<Trace, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut procs: HashMap<String, Process> = HashMap::new();
    for n in &names {
        let Some(key) = n.strip_suffix(".info") else {
            continue;
        };
        let Ok(pid) = key.split('~').next().unwrap_or("").parse::<u32>() else {
            continue;
        };
        let info = read_info(&dir.join(n));
        let modules = read_modules(&dir.join(format!("{key}.modules")));
        let key = key.to_string();
        procs.insert(
            key.clone(),
            Process {
                pid,
                key,
                info,
                modules,
                threads: Vec::new(),
            },
        );
    }
    if procs.is_empty() {
        return Err(Error::Empty(dir.to_path_buf()));
    }
    for n in &names {
        let Some(stem) = n.strip_suffix(EVENTS_SUFFIX) else {
            continue;
        };
        let Some((key, tid)) = stem.rsplit_once('-') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        if let Some(p) = procs.get_mut(key) {
            p.threads.push(read_thread(&dir.join(n), tid));
        }
    }
    let mut processes: Vec<Process> = procs.into_values().collect();
    processes.sort_by(|a, b| (a.pid, a.key.len(), &a.key).cmp(&(b.pid, b.key.len(), &b.key)));
    for p in &mut processes {
        p.threads.sort_by_key(|t| t.tid);
    }
    Ok(Trace {
        dir: dir.to_path_buf(),
        processes,
    })
}

fn read_info(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `BASE BUILD-ID PATH` lines (`-` for no build id).
fn read_modules(path: &Path) -> Vec<Module> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (base, rest) = l.split_once(' ')?;
            let (id, p) = rest.split_once(' ')?;
            let base = u64::from_str_radix(base.trim_start_matches("0x"), 16).ok()?;
            Some(Module {
                base,
                build_id: (id != "-").then(|| id.to_string()),
                path: PathBuf::from(p),
            })
        })
        .collect()
}

fn read_thread(path: &Path, tid: u32) -> Thread {
    let mut t = Thread {
        tid,
        name: String::new(),
        lost: 0,
        events: Vec::new(),
        damage: None,
    };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            t.damage = Some(format!("{}: {e}", path.display()));
            return t;
        }
    };
    let hsize = std::mem::size_of::<EventFileHeader>();
    if data.len() < hsize || data[..8] != EVENTS_MAGIC {
        t.damage = Some(format!(
            "{}: not an ftail event file (bad magic)",
            path.display()
        ));
        return t;
    }
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    if u32_at(8) != TRACE_VERSION {
        t.damage = Some(format!(
            "{}: event file version {}, this ftail reads version {TRACE_VERSION}",
            path.display(),
            u32_at(8)
        ));
        return t;
    }
    let header_size = (u32_at(12) as usize).max(hsize);
    t.lost = u64_at(std::mem::offset_of!(EventFileHeader, lost));
    let name_at = std::mem::offset_of!(EventFileHeader, name);
    t.name = String::from_utf8_lossy(&data[name_at..name_at + 16])
        .trim_end_matches('\0')
        .to_string();
    let mut off = header_size;
    while off + 16 <= data.len() {
        let ev = Event {
            tsc: u64_at(off),
            word: u64_at(off + 8),
        };
        if ev.tsc == 0 {
            break;
        }
        if ev.kind().is_none() {
            t.damage = Some(format!(
                "{}: event {} at offset {off}: unknown kind {}",
                path.display(),
                t.events.len(),
                ev.word >> 56
            ));
            break;
        }
        t.events.push(ev);
        off += 16;
    }
    t
}

/// How well entries and exits pair up in one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Entries.
    pub entries: u64,
    /// Normal exits.
    pub exits: u64,
    /// Exits of functions that ended by a tail call.
    pub tail_exits: u64,
    /// Exits synthesised for frames left by longjmp/exceptions/exit.
    pub unwound: u64,
    /// Frames closed when the buffer filled up (real exit not recorded).
    pub truncated: u64,
    /// Slices closed because the thread switched to another stack while
    /// the function was alive there.
    pub suspended: u64,
    /// Slices opened when a suspended function ran again (not calls:
    /// `entries` counts those).
    pub resumed: u64,
    /// Exits with no open entry.
    pub unmatched: u64,
    /// Entries still open at the end of the recording.
    pub open_at_end: u64,
}

impl Balance {
    /// Whether every entry (and every resumed slice) has exactly one
    /// exit.
    pub fn is_balanced(&self) -> bool {
        self.unmatched == 0 && self.open_at_end == 0
    }
}

impl Thread {
    /// Pairs entries and exits.
    pub fn balance(&self) -> Balance {
        let mut b = Balance::default();
        let mut depth = 0u64;
        for e in &self.events {
            match e.kind() {
                Some(EventKind::Entry) => {
                    b.entries += 1;
                    depth += 1;
                    continue;
                }
                Some(EventKind::Resumed) => {
                    b.resumed += 1;
                    depth += 1;
                    continue;
                }
                Some(EventKind::Exit) => b.exits += 1,
                Some(EventKind::TailExit) => b.tail_exits += 1,
                Some(EventKind::Unwound) => b.unwound += 1,
                Some(EventKind::Truncated) => b.truncated += 1,
                Some(EventKind::Suspended) => b.suspended += 1,
                None => continue,
            }
            if depth == 0 {
                b.unmatched += 1;
            } else {
                depth -= 1;
            }
        }
        b.open_at_end = depth;
        b
    }
}

/// Maps entry addresses (site + 5, as recorded) to function names, from
/// the site tables of each process's modules.
#[derive(Debug, Default)]
pub struct Symbols {
    names: HashMap<u64, String>,
}

impl Symbols {
    /// Loads the tables of `p`'s modules; unreadable modules are skipped.
    pub fn load(p: &Process) -> Symbols {
        let mut names = HashMap::new();
        for Module { base, path, .. } in &p.modules {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            let Ok(funcs) = crate::sites::read(&data) else {
                continue;
            };
            let bias = if is_fixed_position(&data) { 0 } else { *base };
            for f in funcs {
                for s in f
                    .sites
                    .iter()
                    .filter(|s| s.kind == ftail_abi::SiteKind::Entry)
                {
                    names.insert(bias + s.addr + 5, demangle(&f.name));
                }
            }
        }
        Symbols { names }
    }

    /// The function entered at `addr`.
    pub fn name(&self, addr: u64) -> String {
        self.names
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| format!("{:#x}", addr.saturating_sub(5)))
    }
}

fn is_fixed_position(data: &[u8]) -> bool {
    // e_type at offset 16: ET_EXEC (2) is linked at its run-time address.
    data.len() > 18 && u16::from_le_bytes([data[16], data[17]]) == 2
}

/// C++ names demangled; others as they are.
pub fn demangle(name: &str) -> String {
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(s) = sym.demangle(&cpp_demangle::DemangleOptions::new().no_params()) {
                return s;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::trace::{EventKind, KIND_SHIFT};

    fn header(pid: u32, tid: u32, lost: u64) -> Vec<u8> {
        let h = EventFileHeader {
            magic: EVENTS_MAGIC,
            version: TRACE_VERSION,
            header_size: std::mem::size_of::<EventFileHeader>() as u32,
            pid,
            tid,
            capacity: 16,
            lost,
            name: *b"worker\0\0\0\0\0\0\0\0\0\0",
            reserved: [0; 3],
        };
        let mut v = Vec::new();
        v.extend_from_slice(&h.magic);
        for x in [h.version, h.header_size, h.pid, h.tid] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&h.capacity.to_le_bytes());
        v.extend_from_slice(&h.lost.to_le_bytes());
        v.extend_from_slice(&h.name);
        v.resize(std::mem::size_of::<EventFileHeader>(), 0);
        v
    }

    fn event(v: &mut Vec<u8>, tsc: u64, kind: u8, addr: u64) {
        v.extend_from_slice(&tsc.to_le_bytes());
        v.extend_from_slice(&((u64::from(kind) << KIND_SHIFT) | addr).to_le_bytes());
    }

    fn dir_with(events: &[u8]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("7.info"),
            "version=1\npid=7\ntsc_hz=1000000000\n",
        )
        .unwrap();
        std::fs::write(d.path().join("7.modules"), "0x1000 - /nonexistent\n").unwrap();
        std::fs::write(d.path().join("7-8.events"), events).unwrap();
        d
    }

    #[test]
    fn reads_events_up_to_the_first_unwritten_slot() {
        let mut v = header(7, 8, 3);
        event(&mut v, 10, EventKind::Entry as u8, 0x1005);
        event(&mut v, 11, EventKind::Entry as u8, 0x2005);
        event(&mut v, 12, EventKind::TailExit as u8, 0);
        event(&mut v, 13, EventKind::Exit as u8, 0x1010);
        v.resize(v.len() + 64, 0); // unwritten tail of the file
        let d = dir_with(&v);
        let t = open(d.path()).unwrap();
        let th = &t.processes[0].threads[0];
        assert_eq!((th.tid, th.lost, th.name.as_str()), (8, 3, "worker"));
        assert_eq!(th.events.len(), 4);
        let b = th.balance();
        assert!(b.is_balanced(), "{b:?}");
        assert_eq!((b.entries, b.exits, b.tail_exits), (2, 1, 1));
        assert_eq!(t.processes[0].tsc_hz(), 1_000_000_000);
    }

    #[test]
    fn suspended_and_resumed_slices_pair_like_exits_and_entries() {
        let mut v = header(7, 8, 0);
        event(&mut v, 10, EventKind::Entry as u8, 0x1005); // f
        event(&mut v, 20, EventKind::Entry as u8, 0x2005); // co, on another stack
        event(&mut v, 30, EventKind::Suspended as u8, 0);
        event(&mut v, 40, EventKind::Resumed as u8, 0x2005);
        event(&mut v, 45, EventKind::Exit as u8, 0x2010);
        event(&mut v, 60, EventKind::Exit as u8, 0x1010);
        let d = dir_with(&v);
        let t = open(d.path()).unwrap();
        let b = t.processes[0].threads[0].balance();
        assert!(b.is_balanced(), "{b:?}");
        assert_eq!((b.entries, b.resumed), (2, 1), "a resumed slice is no call");
        assert_eq!((b.exits, b.suspended), (2, 1));
        let text = crate::replay::render(&t);
        let body: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_once("| ").unwrap().1)
            .collect();
        assert_eq!(
            body,
            [
                "0x1000() {",
                "  0x2000() {",
                "  } /* 0x2000 (switched out) */",
                "  0x2000() { /* resumed */",
                "  } /* 0x2000 */",
                "} /* 0x1000 */",
            ]
        );
        // The coroutine's time is its two slices: 10 + 5 ticks of 1 ns.
        let stats = crate::report::stats(&t);
        let co = &stats["0x2000"];
        assert_eq!(co.calls, 1);
        assert!((co.total_ns - 15.0).abs() < 1e-9, "{co:?}");
        assert!((stats["0x1000"].self_ns - 35.0).abs() < 1e-9);
    }

    #[test]
    fn stops_at_damage_with_its_place() {
        let mut v = header(7, 8, 0);
        event(&mut v, 10, EventKind::Entry as u8, 0x1005);
        event(&mut v, 11, 0x7f, 0);
        let d = dir_with(&v);
        let t = open(d.path()).unwrap();
        let th = &t.processes[0].threads[0];
        assert_eq!(th.events.len(), 1);
        let damage = th.damage.as_deref().unwrap();
        assert!(
            damage.ends_with("7-8.events: event 1 at offset 96: unknown kind 127"),
            "{damage}"
        );
        let b = th.balance();
        assert_eq!(b.open_at_end, 1);

        let d = dir_with(b"not an event file");
        let t = open(d.path()).unwrap();
        assert!(t.processes[0].threads[0]
            .damage
            .as_deref()
            .unwrap()
            .contains("bad magic"));
    }

    #[test]
    fn an_empty_directory_is_not_a_trace() {
        let d = tempfile::tempdir().unwrap();
        let e = open(d.path()).unwrap_err().to_string();
        assert!(e.ends_with("no trace here (no *.info files)"), "{e}");
    }

    #[test]
    fn demangles_cxx_names_without_parameters() {
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar");
        assert_eq!(demangle("main"), "main");
    }
}
