//! Reading a trace directory written by `ftail record`: the processes'
//! metadata and module lists, and each thread's events, up to the first
//! damage.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ftail_abi::trace::{unescape_value, Event, EventKind, ProcessStatus, TraceBudget};

pub use crate::reader::dir::{Error, Module};
use crate::reader::dir::{ThreadFile, TraceDir};

/// A whole trace directory.
#[derive(Debug)]
pub struct Trace {
    /// Its path.
    pub dir: PathBuf,
    /// Every traced process, by pid.
    pub processes: Vec<Process>,
    /// The trace's size budget (`--max-size`), if it has a readable one.
    pub budget: Option<TraceBudget>,
}

/// One traced process image (a process, or what it became after `exec`).
#[derive(Debug)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Name stem of its files: the pid, or `PID~N` for the N-th image
    /// after the first one `exec`ed.
    pub key: String,
    /// Its `PID.info` key/value pairs, unescaped (`cmdline` keeps its
    /// arguments apart with `\x1f`: see [`Process::args`]).
    pub info: BTreeMap<String, String>,
    /// Modules with site tables, in load order; one entry per load (a
    /// library loaded again is another module).
    pub modules: Vec<Module>,
    /// Modules left untraced as a whole: load bias, reason, path.
    pub skipped_modules: Vec<(u64, String, PathBuf)>,
    /// What the process counted while it ran (`KEY.status`), if readable.
    pub status: Option<ProcessStatus>,
    /// Its threads.
    pub threads: Vec<Thread>,
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
    /// Why the thread stopped recording early, if it did (the header's
    /// `stopped`: `STOPPED_BUFFER_FULL` or `STOPPED_DISK_FULL`).
    pub stopped: u64,
    /// Its events in order.
    pub events: Vec<Event>,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<String>,
}

impl Process {
    /// The program's arguments as recorded.
    pub fn args(&self) -> Vec<String> {
        self.info
            .get("cmdline")
            .map(|c| c.split('\x1f').map(unescape_value).collect())
            .unwrap_or_default()
    }

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
    open_with(dir, true)
}

/// Reads `dir` like [`open`], but of each thread only its event file's
/// header (name, lost events, why it stopped): what a summary of the run
/// needs, without reading a single event.
///
/// # Errors
///
/// As for [`open`].
pub fn open_headers(dir: &Path) -> Result<Trace, Error> {
    open_with(dir, false)
}

fn open_with(dir: &Path, events: bool) -> Result<Trace, Error> {
    let listing = TraceDir::open(dir)?;
    let budget = listing.budget;
    let processes = listing
        .images
        .into_iter()
        .map(|i| Process {
            pid: i.pid,
            key: i.key,
            info: i.info,
            modules: i.modules,
            skipped_modules: i.skipped_modules,
            status: i.status,
            threads: i.threads.iter().map(|t| read_thread(t, events)).collect(),
        })
        .collect();
    Ok(Trace {
        dir: listing.dir,
        processes,
        budget,
    })
}

fn read_thread(f: &ThreadFile, events: bool) -> Thread {
    let mut t = Thread {
        tid: f.tid,
        name: f.name().to_string(),
        lost: 0,
        stopped: 0,
        events: Vec::new(),
        damage: None,
    };
    match &f.header {
        Ok(h) => {
            t.lost = h.lost;
            t.stopped = h.stopped;
        }
        Err(e) => {
            t.damage = Some(e.clone());
            return t;
        }
    }
    if !events {
        return t;
    }
    match f.events() {
        Ok(mut stream) => {
            t.events.extend(&mut stream);
            t.damage = stream.damage().map(str::to_string);
        }
        Err(e) => t.damage = Some(e),
    }
    if t.stopped != 0 {
        close_at_stop(&mut t.events);
    }
    t
}

/// A thread that stopped recording early (full buffer, full disk) closes
/// its open frames as `Truncated` where there is room; the frames that did
/// not fit are closed here, at the time of its last event.
fn close_at_stop(events: &mut Vec<Event>) {
    let mut depth = 0u64;
    for e in events.iter() {
        match e.kind() {
            Some(k) if k.opens() => depth += 1,
            Some(_) => depth = depth.saturating_sub(1),
            None => {}
        }
    }
    let last = events.last().map_or(0, |e| e.tsc);
    let word = (EventKind::Truncated as u64) << ftail_abi::trace::KIND_SHIFT;
    events.extend((0..depth).map(|_| Event { tsc: last, word }));
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
    /// Frames a ring's reader opened at its start for functions already
    /// running when its window began (not calls seen to begin).
    pub earlier: u64,
    /// Exits with no open entry.
    pub unmatched: u64,
    /// Entries still open at the end of the recording.
    pub open_at_end: u64,
    /// Entries still open when `ftail record -p` detached (a reader
    /// closes them at the thread's last event, as `Truncated`).
    pub open_at_detach: u64,
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
                Some(EventKind::Earlier) => {
                    b.earlier += 1;
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
        if self.stopped == ftail_abi::trace::STOPPED_DETACHED {
            b.open_at_detach = depth;
        } else {
            b.open_at_end = depth;
        }
        b
    }
}

/// Maps entry addresses (site + 5, as recorded) to function names, from
/// the site tables of each process's modules. An address is resolved
/// against the modules mapped at the time of its event: a library loaded
/// later at the address of one unloaded before is another module.
#[derive(Debug, Default)]
pub struct Symbols {
    /// Per module: when it was mapped, and its names by entry address.
    modules: Vec<(Module, HashMap<u64, String>)>,
}

impl Symbols {
    /// Loads the tables of `p`'s modules; unreadable modules are skipped.
    pub fn load(p: &Process) -> Symbols {
        let mut modules = Vec::new();
        for m in &p.modules {
            // The library functions it calls, at their thunks' entries.
            let libcalls: HashMap<u64, String> = crate::symbols::library_calls(m)
                .into_iter()
                .map(|(entry, name)| (entry, demangle(&name)))
                .collect();
            let Ok(data) = crate::untrusted::files::read_regular(
                &m.path,
                crate::untrusted::files::MODULE_LIMIT,
            ) else {
                modules.push((m.clone(), libcalls));
                continue;
            };
            let Ok(funcs) = crate::sites::read(&data) else {
                continue;
            };
            let bias = if is_fixed_position(&data) { 0 } else { m.base };
            let mut names = libcalls;
            for f in funcs {
                for s in f
                    .sites
                    .iter()
                    .filter(|s| s.kind == ftail_abi::SiteKind::Entry)
                {
                    names.insert(bias + s.addr + 5, demangle(&f.name));
                }
            }
            modules.push((m.clone(), names));
        }
        Symbols { modules }
    }

    /// The function entered at `addr` by an event at time `tsc`.
    pub fn name(&self, addr: u64, tsc: u64) -> String {
        self.modules
            .iter()
            .filter(|(m, _)| m.mapped_at(tsc))
            .find_map(|(_, names)| names.get(&addr).cloned())
            .unwrap_or_else(|| format!("{:#x}", addr.saturating_sub(5)))
    }
}

fn is_fixed_position(data: &[u8]) -> bool {
    // e_type at offset 16: ET_EXEC (2) is linked at its run-time address.
    data.len() > 18 && u16::from_le_bytes([data[16], data[17]]) == 2
}

/// C++ names demangled; others as they are.
pub fn demangle(name: &str) -> String {
    crate::symbols::demangle(name, false).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::trace::{EventFileHeader, EventKind, EVENTS_MAGIC, KIND_SHIFT, TRACE_VERSION};

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
            stopped: 0,
            ring: 0,
            laps: 0,
            open_at_end: 0,
            format: 0,
            before_tracing: 0,
            traced_since: 0,
            drain: 0,
            rejoined: 0,
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
        // A module path inside the test's own directory, where nothing is.
        std::fs::write(
            d.path().join("7.modules"),
            format!(
                "load 0 0x1000 - 0 0 {}\n",
                d.path().join("absent").display()
            ),
        )
        .unwrap();
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
        let text = crate::views::replay::render(&t);
        let body: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once("| ").map(|x| x.1))
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
        let listing = crate::reader::dir::TraceDir::open(d.path()).unwrap();
        let names = crate::symbols::names::for_images(&listing.images);
        let r = crate::views::report::report(&listing, &names, &Default::default());
        let row = |n: &str| {
            &r.rows[&crate::views::report::RowKey {
                thread: None,
                name: n.into(),
                args: None,
            }]
        };
        let co = row("0x2000");
        assert_eq!(co.calls, 1);
        assert!((co.total_ns - 15.0).abs() < 1e-9, "{co:?}");
        assert!((row("0x1000").self_ns - 35.0).abs() < 1e-9);
    }

    #[test]
    fn a_report_or_graph_asked_to_stop_ends_early() {
        // 10 000 calls of one function: 20 000 events (a time of 0 is
        // an unwritten slot).
        let mut v = header(7, 8, 0);
        for i in 1..=10_000u64 {
            event(&mut v, 10 * i, EventKind::Entry as u8, 0x1005);
            event(&mut v, 10 * i + 5, EventKind::Exit as u8, 0x1010);
        }
        let d = dir_with(&v);
        let listing = crate::reader::dir::TraceDir::open(d.path()).unwrap();
        let names = crate::symbols::names::for_images(&listing.images);
        let calls = |stop: bool| {
            let stop = std::sync::atomic::AtomicBool::new(stop);
            let r =
                crate::views::report::report_until(&listing, &names, &Default::default(), &stop);
            r.rows.values().map(|s| s.calls).sum::<u64>()
        };
        assert_eq!(calls(false), 10_000);
        assert!(calls(true) < 4096, "{}", calls(true));
        let graph_calls = |stop: bool| {
            let stop = std::sync::atomic::AtomicBool::new(stop);
            let t = crate::views::graph::build_until(
                &listing.images[0],
                &names[0],
                &crate::views::graph::Kind::Whole,
                &Default::default(),
                &[],
                false,
                &stop,
            );
            t.roots()
                .iter()
                .filter_map(|&n| t.node(n))
                .map(|n| n.calls)
                .sum::<u64>()
        };
        assert_eq!(graph_calls(false), 10_000);
        assert!(graph_calls(true) < 4096);
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
            damage.ends_with("7-8.events: event 1 at offset 144: unknown kind 127"),
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
