//! `ftail record --drain`: each thread writes into a fixed ring that
//! `ftail record` drains into a compressed file; the trace reads as if
//! every event had been kept the default way, whatever was killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use ftail_trace::trace::{self, Trace};

/// Threads that each call `leaf` CALLS times under `nest`; with READY and
/// GO, the main thread then creates READY, waits for GO and calls as many
/// times again.
const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

__attribute__((noinline)) long nest(int depth, long calls) {
  if (depth > 0)
    return nest(depth - 1, calls) + 1;
  long sum = 0;
  for (long i = 0; i < calls; i++)
    sum += leaf(i);
  return sum;
}

static long calls;

static void *worker(void *arg) {
  (void)arg;
  return (void *)nest(5, calls);
}

int main(int argc, char **argv) {
  int threads = atoi(argv[1]);
  calls = atol(argv[2]);
  pthread_t t[16];
  for (int i = 0; i < threads && i < 16; i++)
    pthread_create(&t[i], NULL, worker, NULL);
  long sum = nest(5, calls);
  for (int i = 0; i < threads && i < 16; i++) {
    void *r;
    pthread_join(t[i], &r);
    sum += (long)r;
  }
  if (argc > 4) {
    fclose(fopen(argv[3], "w"));
    /* A minute at most: a test killed midway leaves nothing running. */
    for (int i = 0; i < 60000 && access(argv[4], F_OK) != 0; i++)
      usleep(1000);
    sum += nest(5, calls);
  }
  printf("%ld\n", sum);
  return 0;
}
"#;

fn build(dir: &Path) -> PathBuf {
    let src = dir.join("drained.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join("prog");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .arg("-lpthread"),
    );
    exe
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/runtime").join(name)
}

/// Each thread's events as (kind, function) lines, the threads' lists
/// sorted (thread ids and times differ from run to run).
fn per_thread(t: &Trace) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = t
        .processes
        .iter()
        .flat_map(|p| {
            let syms = trace::Symbols::load(p);
            p.threads.iter().map(move |th| {
                assert!(th.damage.is_none(), "tid {}: {:?}", th.tid, th.damage);
                th.events
                    .iter()
                    .map(|e| format!("{:?} {}", e.kind(), syms.name(e.addr(), e.tsc)))
                    .collect()
            })
        })
        .collect();
    all.sort();
    all
}

fn drained_files(tdir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "drained"))
        .collect();
    v.sort();
    v
}

/// Waits until the drainer has cut every event file to its header's page
/// (it finishes after the program's end).
fn wait_drained(tdir: &Path) {
    let start = Instant::now();
    loop {
        let left = std::fs::read_dir(tdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "events"))
            .any(|p| std::fs::metadata(p).unwrap().len() > 4096);
        if !left {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the drainer never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_drained_trace_reads_as_the_default_one() {
    let dir = scratch();
    let exe = build(dir.path());
    // 4 threads of 200,000 calls: about 2.4 MB of records each, through
    // rings of 128 KiB.
    let args = ["3", "200000"];
    let (out, kept) = record_trace(&dir.path().join("kept"), &exe, &args, &["--no-libcall"]);
    assert!(out.status.success(), "{out:?}");
    let tdir = dir.path().join("drained");
    let (out, _) = record_trace(&tdir, &exe, &args, &["--no-libcall", "--drain=128K"]);
    assert!(out.status.success(), "{out:?}");
    let expected = per_thread(&kept);
    assert_eq!(expected.len(), 4);
    assert!(expected.iter().all(|t| t.len() > 400_000));
    // Read while the drainer may still be finishing, then once it has.
    assert!(per_thread(&trace::open(&tdir).unwrap()) == expected);
    wait_drained(&tdir);
    assert_eq!(drained_files(&tdir).len(), 4);
    assert!(per_thread(&trace::open(&tdir).unwrap()) == expected);
    // Compressed: far under the 6 bytes an event of the default format.
    let events: usize = expected.iter().map(Vec::len).sum();
    let bytes: u64 = drained_files(&tdir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        bytes * 2 < events as u64 * 3,
        "{bytes} bytes for {events} events"
    );
    let info = run_ok(
        Command::new(ftail())
            .args(["info", "--events", "-d"])
            .arg(&tdir),
    );
    assert!(
        info.contains(&format!(" on disk for {events} events of drained rings: ")),
        "{info}"
    );
}

#[test]
fn chunks_compressed_with_lz4_read_as_the_default_trace() {
    let dir = scratch();
    let exe = build(dir.path());
    let args = ["1", "200000"];
    let (_, kept) = record_trace(&dir.path().join("kept"), &exe, &args, &["--no-libcall"]);
    let tdir = dir.path().join("drained");
    let out = record_in_small_rings(&tdir, &exe, &args, &[("FTAIL_DRAIN_CODEC", "lz4")]);
    assert!(out.status.success(), "{out:?}");
    let files = drained_files(&tdir);
    assert_eq!(files.len(), 2);
    for f in &files {
        let codecs = frame_codecs(f);
        assert!(
            codecs.iter().all(|c| c == "FTCL"),
            "{}: {codecs:?}",
            f.display()
        );
    }
    assert!(per_thread(&trace::open(&tdir).unwrap()) == per_thread(&kept));
}

#[test]
fn drained_files_count_in_max_size() {
    let dir = scratch();
    let exe = build(dir.path());
    let tdir = dir.path().join("drained");
    // About 6 M events: some 6 MB of LZ4 frames, against 4 MiB.
    let out = run(Command::new(ftail())
        .env("FTAIL_DRAIN_CODEC", "lz4")
        .args(["record", "--no-sched", "--no-libcall", "--drain=128K"])
        .args(["--max-size", "4M", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .args(["0", "3000000"]));
    assert!(out.status.success(), "{out:?}");
    wait_drained(&tdir);
    let drained: u64 = drained_files(&tdir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let all: u64 = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(drained > 1 << 20, "{drained} bytes drained");
    assert!(all <= (4 << 20) + (64 << 10), "{all} bytes in the trace");
    let t = trace::open(&tdir).unwrap();
    assert!(t.processes[0].threads.iter().all(|th| th.damage.is_none()));
}

/// The replay of a trace without its times: the same for any two
/// recordings of a program of one thread that does the same calls.
fn replay_lines(tdir: &Path) -> Vec<String> {
    let text = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(tdir),
    );
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split("| ").nth(1).unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_drained_trace_replays_as_the_default_one() {
    let dir = scratch();
    let exe = build(dir.path());
    let args = ["0", "100000"];
    let kept = dir.path().join("kept");
    let drained = dir.path().join("drained");
    record_trace(&kept, &exe, &args, &["--no-libcall"]);
    record_trace(&drained, &exe, &args, &["--no-libcall", "--drain=128K"]);
    let (a, b) = (replay_lines(&kept), replay_lines(&drained));
    assert!(a.len() > 100_000);
    assert!(a == b, "the replays differ");
}

#[test]
fn a_sigkill_of_the_program_keeps_every_event_written() {
    let dir = scratch();
    // -O0: every recursive call of work() stays a call.
    let exe = dir.path().join("killed");
    run_ok(
        ftail_cc("gcc")
            .args(["-O0", "-o"])
            .arg(&exe)
            .arg(fixture("killed.c")),
    );
    let (out, t) = record_trace(&dir.path().join("trace"), &exe, &[], &["--drain"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    let mut b = trace::Balance::default();
    for th in t.processes.iter().flat_map(|p| &p.threads) {
        assert!(th.damage.is_none(), "{:?}", th.damage);
        let x = th.balance();
        b.entries += x.entries;
        b.open_at_end += x.open_at_end;
    }
    // As `sigkill_keeps_what_was_recorded` finds keeping every event.
    assert_eq!(b.entries, 105, "{b:?}");
    assert_eq!(b.open_at_end, 4, "{b:?}");
}

#[test]
fn a_sigkill_of_ftail_record_leaves_a_readable_trace() {
    let dir = scratch();
    let exe = build(dir.path());
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    // The same calls kept the default way, GO there from the start.
    std::fs::write(&go, "").unwrap();
    let (_, kept) = record_trace(
        &dir.path().join("kept"),
        &exe,
        &["1", "200000", path_str(&ready), path_str(&go)],
        &["--no-libcall"],
    );
    std::fs::remove_file(&go).unwrap();
    std::fs::remove_file(&ready).unwrap();
    let tdir = dir.path().join("trace");
    let child = Command::new(ftail())
        .args(["record", "--no-sched", "--no-libcall", "--drain=128K", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .args(["1", "200000"])
        .arg(&ready)
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The drainer has drained some chunks by now.
    assert!(drained_files(&tdir)
        .iter()
        .any(|p| std::fs::metadata(p).unwrap().len() > 16));
    let watcher = watcher_of(&tdir, child.id()).expect("the watcher");
    // SAFETY: kill has no memory preconditions; the pid is the watcher
    // this test started.
    assert_eq!(unsafe { libc::kill(watcher as i32, libc::SIGKILL) }, 0);
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = trace::open(&tdir).unwrap();
    for th in t.processes.iter().flat_map(|p| &p.threads) {
        assert!(th.balance().is_balanced(), "{:?}", th.balance());
    }
    assert!(per_thread(&t) == per_thread(&kept), "events differ");
}

#[test]
fn a_damaged_chunk_is_an_error_naming_its_file() {
    let dir = scratch();
    let exe = build(dir.path());
    let tdir = dir.path().join("trace");
    let (out, _) = record_trace(
        &tdir,
        &exe,
        &["0", "100000"],
        &["--no-libcall", "--drain=128K"],
    );
    assert!(out.status.success(), "{out:?}");
    wait_drained(&tdir);
    let file = drained_files(&tdir)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    // Within the first frame's compressed bytes.
    bytes[16 + 24 + 40] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();
    let out = run(Command::new(ftail())
        .args(["replay", "--no-pager", "-d"])
        .arg(&tdir));
    // A note in the replay, where reading that thread stopped.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{}: the frame at byte 16 is damaged: chunk 0 fails its checksum",
            file.display()
        )),
        "{text}"
    );
}

#[test]
fn forks_and_execs_are_drained_too() {
    let dir = scratch();
    let exe = dir.path().join("forkcalls");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(fixture("forkcalls.c")),
    );
    let args = ["2", "100000"];
    let (_, kept) = record_trace(&dir.path().join("kept"), &exe, &args, &["--no-libcall"]);
    let (out, t) = record_trace(
        &dir.path().join("drained"),
        &exe,
        &args,
        &["--no-libcall", "--drain=128K"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(t.processes.len(), 3);
    assert!(per_thread(&t) == per_thread(&kept));

    let exe = dir.path().join("exec");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(fixture("exec.c")),
    );
    let (out, t) = record_trace(&dir.path().join("exec-trace"), &exe, &[], &["--drain"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "parent 2\nchild 3\n");
    assert_eq!(t.processes.len(), 2, "two images of one process");
    let text = ftail_trace::replay::render(&t);
    assert!(
        text.contains("become_child() {") && text.contains("/* become_child (unwound) */"),
        "{text}"
    );
}

/// The drainer opens what the trace directory lists, where the program
/// may put names: a link named like an event file is never followed (the
/// drainer would cut the file it points to).
#[test]
fn the_drainer_follows_no_link() {
    let dir = scratch();
    let exe = build(dir.path());
    // A drained ring's event file whose writer is gone, not finished.
    let first = dir.path().join("first");
    record_trace(&first, &exe, &["0", "1000"], &["--no-libcall", "--drain"]);
    wait_drained(&first);
    let ring = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "events"))
        .unwrap();
    let mut bytes = std::fs::read(ring).unwrap();
    let finished = ftail_abi::trace::drain::CONTROL_AT as usize + 40;
    bytes[finished..finished + 8].fill(0);
    bytes.resize(4096 + (128 << 10), 7);
    let target = dir.path().join("target.events");
    std::fs::write(&target, &bytes).unwrap();

    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let tdir = dir.path().join("trace");
    let child = Command::new(ftail())
        .args(["record", "--no-sched", "--no-libcall", "--drain", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .args(["0", "1000"])
        .arg(&ready)
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::os::unix::fs::symlink(&target, tdir.join("999999-1.events")).unwrap();
    std::fs::write(&go, "").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // The drainer ends once it has drained the program's rings.
    let start = Instant::now();
    while watcher_of(&tdir, 0).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the drainer never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::read(&target).unwrap() == bytes,
        "the link was followed"
    );
    assert!(!tdir.join("999999-1.drained").exists());
}

/// The progress bar over a drained trace counts the records its stream
/// holds, not the page its event file is cut to once drained.
#[test]
fn progress_over_a_drained_trace_counts_its_records() {
    let dir = scratch();
    let exe = build(dir.path());
    let tdir = dir.path().join("drained");
    // About 6 M events: some 36 MB of records.
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "--no-libcall", "--drain", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .args(["0", "3000000"]));
    assert!(out.status.success(), "{out:?}");
    wait_drained(&tdir);
    let shown = stderr_on_a_terminal(
        &["report", "-d", path_str(&tdir)],
        &[("FTAIL_PROGRESS_AFTER_MS", "0")],
    );
    // "reading [===   ] 1.50 MiB/34.33 MiB (0s)": each total drawn.
    let totals: Vec<&str> = shown
        .split("] ")
        .filter_map(|s| s.split_once('/'))
        .filter_map(|(_, rest)| rest.split(" (").next())
        .collect();
    assert!(!totals.is_empty(), "{shown:?}");
    assert!(totals.iter().all(|t| t.ends_with("MiB")), "{totals:?}");
}

/// Threads started one after another (each calls `leaf` 1,000 times),
/// then READY is made and the program waits for GO.
const SEQUENTIAL_THREADS: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

static void *worker(void *arg) {
  long sum = 0;
  for (long i = 0; i < 1000; i++)
    sum += leaf(i + (long)arg);
  return (void *)sum;
}

int main(int argc, char **argv) {
  long sum = 0;
  for (long i = 0; i < atol(argv[1]); i++) {
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, worker, (void *)i);
    pthread_join(t, &r);
    sum += (long)r;
  }
  fclose(fopen(argv[2], "w"));
  /* A minute at most: a test killed midway leaves nothing running. */
  for (int i = 0; i < 60000 && access(argv[3], F_OK) != 0; i++)
    usleep(1000);
  printf("%ld\n", sum);
  return 0;
}
"#;

/// The event files of `tdir` and their lengths.
fn event_file_lengths(tdir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(tdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "events"))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

/// Records `exe N READY GO` (READY and GO beside `tdir`) into `tdir`
/// and, once the program is ready (it then waits for GO), waits until
/// `tdir` holds `files` event files, all cut but the main thread's; then
/// lets the program end. Fails after 10 s.
fn cut_while_running(tdir: &Path, exe: &Path, n: &str, files: usize) {
    let (ready, go) = (tdir.with_file_name("ready"), tdir.with_file_name("go"));
    let child = Command::new(ftail())
        .args(["record", "--no-sched", "--no-libcall", "-d"])
        .arg(tdir)
        .arg("--")
        .arg(exe)
        .arg(n)
        .arg(&ready)
        .arg(&go)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let failed = loop {
        let lengths = event_file_lengths(tdir);
        let whole = lengths.iter().filter(|(_, len)| *len > 4096).count();
        if lengths.len() == files && whole == 1 {
            break None;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break Some(format!(
                "{whole} of {} event files not cut: {lengths:?}",
                lengths.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    if let Some(why) = failed {
        panic!("{why}");
    }
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn an_ended_thread_is_drained_while_the_program_runs() {
    let dir = scratch();
    let src = dir.path().join("sequential.c");
    std::fs::write(&src, SEQUENTIAL_THREADS).unwrap();
    let exe = dir.path().join("sequential");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src),
    );
    // The 40 ended threads' rings (8 MiB of file each) are drained and
    // cut while the program still runs; only the main thread's is whole.
    let tdir = dir.path().join("trace");
    cut_while_running(&tdir, &exe, "40", 41);
    // Each ring has its drained file, the main thread's too.
    assert_eq!(drained_files(&tdir).len(), 41);
    wait_drained(&tdir);
    let t = trace::open(&tdir).unwrap();
    let threads = per_thread(&t);
    assert_eq!(threads.len(), 41);
    // Every worker's 1,000 calls of leaf, entry and exit, plus its
    // start routine's.
    let workers = threads.iter().filter(|t| t.len() == 2002).count();
    assert_eq!(
        workers,
        40,
        "{:?}",
        threads.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // `--max-size` counts what the files hold, to the page: not the
    // rings given back, nor the room each drained file took ahead.
    let used = budget_used(&tdir);
    let held: u64 = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len().div_ceil(4096) * 4096)
        .sum();
    assert!(used <= held, "{used} bytes counted, {held} held");
}

/// The bytes of events the budget file of `tdir` counts.
fn budget_used(tdir: &Path) -> u64 {
    let b = std::fs::read(tdir.join(ftail_abi::trace::BUDGET_FILE)).unwrap();
    let at = std::mem::offset_of!(ftail_abi::trace::TraceBudget, used_bytes);
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn a_drained_trace_is_kept_as_old_by_the_next_recording() {
    let dir = scratch();
    let exe = build(dir.path());
    let tdir = dir.path().join("trace");
    for _ in 0..2 {
        let (out, t) = record_trace(&tdir, &exe, &["1", "1000"], &["--drain"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(t.processes[0].threads.len(), 2);
        wait_drained(&tdir);
    }
    assert!(!drained_files(&dir.path().join("trace.old")).is_empty());
}

/// A watcher killed while it repacked leaves `KEY-TID.repacking` beside
/// the drained file: the trace is still one, moved away as `.old` by the
/// next recording rather than refused.
#[test]
fn a_trace_left_with_a_repacking_part_is_kept_as_old() {
    let dir = scratch();
    let exe = build(dir.path());
    let tdir = dir.path().join("trace");
    let (out, _) = record_trace(&tdir, &exe, &["0", "1000"], &["--drain"]);
    assert!(out.status.success(), "{out:?}");
    let drained = drained_files(&tdir);
    let part = drained[0].with_extension("repacking");
    std::fs::copy(&drained[0], &part).unwrap();
    let (out, _) = record_trace(&tdir, &exe, &["0", "1000"], &["--drain"]);
    assert!(out.status.success(), "{out:?}");
    let old = dir.path().join("trace.old");
    assert!(old.join(part.file_name().unwrap()).is_file());
}

#[test]
fn rings_are_drained_unless_the_events_go_elsewhere() {
    let dir = scratch();
    let exe = build(dir.path());
    let cases: [(&[&str], bool); 5] = [
        (&[], true),
        (&["--no-drain"], false),
        (&["--buffer-events", "100000"], false),
        (&["--ring", "1M"], false),
        (&["--snapshot-signal", "USR2"], false),
    ];
    for (i, (options, drained)) in cases.into_iter().enumerate() {
        let tdir = dir.path().join(format!("trace{i}"));
        let (out, t) = record_trace(&tdir, &exe, &["1", "1000"], options);
        assert!(out.status.success(), "{options:?}: {out:?}");
        assert_eq!(t.processes[0].threads.len(), 2, "{options:?}");
        if drained {
            wait_drained(&tdir);
        }
        assert_eq!(
            drained_files(&tdir).len(),
            if drained { 2 } else { 0 },
            "{options:?}"
        );
    }
}

/// Children forked one after another (each calls `leaf` 1,000 times and
/// exits), then READY is made and the program waits for GO.
const SEQUENTIAL_CHILDREN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

int main(int argc, char **argv) {
  for (long i = 0; i < atol(argv[1]); i++) {
    pid_t child = fork();
    if (child == 0) {
      long sum = 0;
      for (long j = 0; j < 1000; j++)
        sum += leaf(j + i);
      exit(sum == 42);
    }
    waitpid(child, NULL, 0);
  }
  fclose(fopen(argv[2], "w"));
  /* A minute at most: a test killed midway leaves nothing running. */
  for (int i = 0; i < 60000 && access(argv[3], F_OK) != 0; i++)
    usleep(1000);
  return 0;
}
"#;

#[test]
fn an_ended_process_is_drained_while_its_parent_runs() {
    let dir = scratch();
    let src = dir.path().join("children.c");
    std::fs::write(&src, SEQUENTIAL_CHILDREN).unwrap();
    let exe = dir.path().join("children");
    run_ok(ftail_cc("gcc").args(["-O2", "-o"]).arg(&exe).arg(&src));
    // The 20 children's rings, whose threads never ended on their own
    // (the processes exited), are drained and cut while the parent runs.
    let tdir = dir.path().join("trace");
    cut_while_running(&tdir, &exe, "20", 21);
    wait_drained(&tdir);
    let t = trace::open(&tdir).unwrap();
    assert_eq!(t.processes.len(), 21);
    let threads = per_thread(&t);
    let children = threads
        .iter()
        .filter(|calls| calls.iter().filter(|e| *e == "Some(Entry) leaf").count() == 1000)
        .count();
    assert_eq!(children, 20, "{:?}", &threads[0][..threads[0].len().min(8)]);
}

/// The program makes READY, waits for GO, then starts a thread that
/// calls `leaf` 1,000 times, and ends.
const LATE_THREAD: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

static void *worker(void *arg) {
  long sum = (long)arg;
  for (long j = 0; j < 1000; j++)
    sum += leaf(j);
  return (void *)sum;
}

int main(int argc, char **argv) {
  pthread_t t;
  fclose(fopen(argv[1], "w"));
  /* A minute at most: a test killed midway leaves nothing running. */
  for (int i = 0; i < 60000 && access(argv[2], F_OK) != 0; i++)
    usleep(1000);
  pthread_create(&t, NULL, worker, NULL);
  pthread_join(t, NULL);
  return 0;
}
"#;

#[test]
fn a_trace_moved_to_old_while_it_drains_is_drained_where_it_is() {
    let dir = scratch();
    let src = dir.path().join("late.c");
    std::fs::write(&src, LATE_THREAD).unwrap();
    let exe = dir.path().join("late");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src),
    );
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let tdir = dir.path().join("trace");
    // Output goes nowhere: a watcher may outlive its program.
    let record = |exe: &Path, args: &[&str]| {
        Command::new(ftail())
            .args(["record", "--no-sched", "--no-libcall", "-d"])
            .arg(&tdir)
            .arg("--")
            .arg(exe)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = record(&exe, &[path_str(&ready), path_str(&go)]);
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A second recording into the same path moves the first to .old;
    // the first program's thread then starts there.
    let second = build(dir.path());
    assert!(record(&second, &["0", "1000"]).wait().unwrap().success());
    std::fs::write(&go, "").unwrap();
    assert!(first.wait().unwrap().success());
    let old = dir.path().join("trace.old");
    let start = Instant::now();
    loop {
        let files = event_file_lengths(&old);
        let whole = files.iter().filter(|(_, len)| *len > 4096).count();
        if files.len() == 2 && whole == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the first trace is not drained: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(drained_files(&old).len(), 2);
    let t = trace::open(&old).unwrap();
    let calls = per_thread(&t)
        .iter()
        .flatten()
        .filter(|e| *e == "Some(Entry) leaf")
        .count();
    assert_eq!(calls, 1000);
    wait_drained(&tdir);
    assert_eq!(drained_files(&tdir).len(), 1);
}

/// `exe ARGS` recorded into `tdir` through rings of 128 KiB, with `env`;
/// returned once `ftail record`'s watcher has ended (it holds standard
/// error): every ring drained, cut and repacked.
fn record_in_small_rings(tdir: &Path, exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run(Command::new(ftail())
        .envs(env.iter().copied())
        .args(["record", "--no-sched", "--no-libcall", "--drain=128K", "-d"])
        .arg(tdir)
        .arg("--")
        .arg(exe)
        .args(args))
}

/// The codecs of the frames of a drained file, in order.
fn frame_codecs(drained: &Path) -> Vec<String> {
    let bytes = std::fs::read(drained).unwrap();
    let mut at = 16;
    let mut codecs = Vec::new();
    while at < bytes.len() {
        codecs.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
        let packed = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap());
        at += 24 + packed as usize;
    }
    codecs
}

/// A drainer that fell behind wrote LZ4 and stored chunks; once the ring
/// is finished they are repacked with zstd, the trace as it was, the
/// budget counting the smaller file.
#[test]
fn chunks_drained_in_haste_are_repacked_once_the_ring_is_done() {
    let dir = scratch();
    let exe = build(dir.path());
    let args = ["2", "200000"];
    let (_, kept) = record_trace(&dir.path().join("kept"), &exe, &args, &["--no-libcall"]);
    let tdir = dir.path().join("drained");
    let haste = [("FTAIL_TEST_DRAIN_HASTE", "1"), ("FTAIL_DRAIN_STATS", "1")];
    let out = record_in_small_rings(&tdir, &exe, &args, &haste);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let stats = err
        .lines()
        .find_map(|l| l.strip_prefix("ftail: drainer: "))
        .unwrap_or_else(|| panic!("{err}"));
    let count = |codec: &str| -> u64 {
        let words: Vec<&str> = stats.split([' ', ',', ';']).collect();
        let at = words.iter().position(|w| *w == codec).unwrap();
        words[at - 1].parse().unwrap()
    };
    assert!(count("lz4") >= 10 && count("stored") >= 10, "{stats}");
    assert!(err.contains("ftail: repacked 3 drained files"), "{err}");
    let files = drained_files(&tdir);
    assert_eq!(files.len(), 3);
    let mut kept_pages = 0;
    for f in &files {
        let codecs = frame_codecs(f);
        assert!(codecs.len() > 20, "{}: {codecs:?}", f.display());
        assert!(
            codecs.iter().all(|c| c == "FTCK"),
            "{}: {codecs:?}",
            f.display()
        );
        kept_pages += std::fs::metadata(f).unwrap().len().div_ceil(4096) * 4096;
    }
    assert!(per_thread(&trace::open(&tdir).unwrap()) == per_thread(&kept));
    let names: Vec<String> = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".repacking")),
        "{names:?}"
    );
    // The three event files' header pages, and the drained files.
    assert_eq!(budget_used(&tdir), kept_pages + 3 * 4096);
}
