//! Fuzz smoke run (proptest) over the trace reader: a real recorded trace
//! (and the binary it names) with bytes flipped, cut short or replaced,
//! read by every analysis in-process. Nothing may panic, hang or allocate
//! without bound; damage is reported, not fatal.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use ftail_trace::reader::dir::TraceDir;
use proptest::prelude::*;

/// A trace of the analysis fixture, recorded once: (scratch, trace dir).
fn seed() -> &'static (tempfile::TempDir, PathBuf) {
    static SEED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    SEED.get_or_init(|| {
        let scratch = scratch();
        let source = repo().join("tests/analysis/tour.c");
        let trace = build_and_record("gcc", &source, &[], scratch.path(), "tour", "trace");
        (scratch, trace)
    })
}

/// One change to one file of the trace.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, byte: u8 },
    Cut { at: usize },
    Splice { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = (usize, Damage)> {
    let change = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Flip { at, byte }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Damage::Splice { at, bytes }),
    ];
    (any::<usize>(), change)
}

fn apply(data: &mut Vec<u8>, d: &Damage) {
    if data.is_empty() {
        return;
    }
    match d {
        Damage::Flip { at, byte } => {
            let i = at % data.len();
            data[i] ^= byte | 1;
        }
        Damage::Cut { at } => data.truncate(at % data.len()),
        Damage::Splice { at, bytes } => {
            let i = at % data.len();
            let end = (i + bytes.len()).min(data.len());
            data[i..end].copy_from_slice(&bytes[..end - i]);
        }
    }
}

/// Copies the seed trace (and the binary, re-pointed by its module line)
/// into `dir` with `changes` applied to files picked by index.
fn damaged_copy(dir: &Path, changes: &[(usize, Damage)]) -> PathBuf {
    let (_, seed) = seed();
    let trace = dir.join("trace");
    std::fs::create_dir(&trace).unwrap();
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(seed).unwrap().flatten() {
        let mut data = std::fs::read(e.path()).unwrap();
        if e.file_name().to_string_lossy().ends_with(".events") {
            // Keep what was written and a little of the sparse tail.
            let used = data
                .chunks(16)
                .take_while(|c| c.iter().any(|&b| b != 0))
                .count();
            data.truncate(((used + 8) * 16).min(data.len()));
        }
        files.push((trace.join(e.file_name()), data));
    }
    // The binary the module list names, as another file to damage.
    let exe = dir.join("tour");
    let modules = files
        .iter()
        .position(|(p, _)| p.extension().is_some_and(|x| x == "modules"))
        .unwrap();
    let text = String::from_utf8_lossy(&files[modules].1).into_owned();
    let original = text
        .lines()
        .find_map(|l| l.rsplit(' ').next())
        .map(PathBuf::from)
        .unwrap();
    files[modules].1 = text
        .replace(&original.display().to_string(), &exe.display().to_string())
        .into_bytes();
    files.push((exe, std::fs::read(&original).unwrap()));
    files.sort();
    for (i, d) in changes {
        let n = files.len();
        apply(&mut files[i % n].1, d);
    }
    for (p, data) in files {
        std::fs::write(p, data).unwrap();
    }
    trace
}

/// Every analysis over `trace`, into sinks.
fn analyse(trace: &Path) {
    let Ok(listing) = TraceDir::open(trace) else {
        return;
    };
    let names = ftail_trace::names::for_images(&listing.images);
    let mut sink = std::io::sink();
    let _ = ftail_trace::replay::replay(
        &listing,
        &names,
        &ftail_trace::replay::Options::default(),
        &mut sink,
    );
    let filtered = ftail_trace::replay::Options {
        filters: ftail_trace::view::Filters {
            include: vec!["parse".into()],
            min_ticks: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = ftail_trace::replay::replay(&listing, &names, &filtered, &mut sink);
    let r = ftail_trace::report::report(&listing, &names, &Default::default());
    let _ = ftail_trace::report::render(&r, ftail_trace::report::SortKey::Total);
    for kind in [
        ftail_trace::graph::Kind::Whole,
        ftail_trace::graph::Kind::Callers("helper".into()),
    ] {
        let _ = ftail_trace::graph::render(&listing, &names, &kind, &Default::default(), &[]);
    }
    let _ = ftail_trace::dump::dump(&listing, &names, &[], &Default::default(), &mut sink);
    if let Ok(headers) = ftail_trace::trace::open_headers(trace) {
        let _ = ftail_trace::info::render(&listing, &headers, false);
        let _ = ftail_trace::info::render(&listing, &headers, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_traces_are_read_up_to_the_damage(changes in prop::collection::vec(damage(), 1..4)) {
        let dir = scratch();
        let trace = damaged_copy(dir.path(), &changes);
        analyse(&trace);
    }
}

/// A copy of the seed trace in `dir` whose first event file's header
/// says it is a ring of `ring` bytes that went round, the file `len`
/// bytes long (sparse past what was written); the file's path.
fn crafted_ring(dir: &Path, ring: u64, len: u64) -> (PathBuf, PathBuf) {
    use ftail_abi::trace::EventFileHeader;
    let (_, seed) = seed();
    let trace = dir.join("trace");
    std::fs::create_dir(&trace).unwrap();
    for e in std::fs::read_dir(seed).unwrap().flatten() {
        std::fs::copy(e.path(), trace.join(e.file_name())).unwrap();
    }
    let events = std::fs::read_dir(&trace)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "events"))
        .unwrap();
    let mut data = std::fs::read(&events).unwrap();
    data.truncate(1 << 20);
    let mut put = |at: usize, v: u64| data[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(std::mem::offset_of!(EventFileHeader, ring), ring);
    put(std::mem::offset_of!(EventFileHeader, laps), 1);
    put(std::mem::offset_of!(EventFileHeader, format), 0);
    std::fs::write(&events, &data).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&events)
        .unwrap()
        .set_len(len)
        .unwrap();
    (trace, events)
}

/// Runs `ftail CMD -d TRACE`, killed after `secs` seconds; its output,
/// or `None` when it took longer.
fn ftail_within(secs: u64, cmd: &str, trace: &Path) -> Option<std::process::Output> {
    let mut command = std::process::Command::new(ftail());
    command.arg(cmd);
    if cmd == "replay" {
        command.arg("--no-pager");
    }
    let mut child = command
        .arg("-d")
        .arg(trace)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A ring header claiming 2^36 bytes is bounded by the file: in a file
/// of 1 MB it is refused with the file's name and why; in a sparse file
/// that long, the holes (no events) are skipped, and `info`, `replay`
/// and `report` end in seconds (before: minutes each, reading 64 GiB of
/// zeros three times).
#[test]
fn a_crafted_ring_size_is_bounded_by_the_file() {
    let ring = 1u64 << 36;
    let dir = scratch();
    let (trace, events) = crafted_ring(dir.path(), ring, 1 << 20);
    for cmd in ["info", "report"] {
        let out = ftail_within(20, cmd, &trace).unwrap_or_else(|| panic!("{cmd} took over 20 s"));
        let text = String::from_utf8_lossy(&out.stdout);
        let why = format!(
            "{}: the header says the ring holds {ring} bytes, more than the file's {} bytes",
            events.display(),
            1 << 20
        );
        assert!(text.contains(&why), "{cmd}: {text}");
    }
    let dir = scratch();
    let (trace, _) = crafted_ring(dir.path(), ring, ring + (1 << 20));
    for cmd in ["info", "replay", "report"] {
        let out = ftail_within(20, cmd, &trace).unwrap_or_else(|| panic!("{cmd} took over 20 s"));
        assert!(out.status.success(), "{cmd}: {out:?}");
    }
}
