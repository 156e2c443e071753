//! What the readers cost as a trace grows in ways other than events:
//! many process images of one build, large event files. The bounds are
//! generous multiples of what the readers need, and far below what they
//! needed when each image had its own copy of its symbols.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Functions in the generated program.
const FUNCTIONS: usize = 5000;
/// Children it forks, each calling a few of them.
const CHILDREN: usize = 200;

/// C source of a program with `functions` small functions whose `main`
/// forks `children` short children, each calling five of them.
fn many_functions_source(functions: usize, children: usize) -> String {
    let mut s = String::from(
        "#include <stdlib.h>\n#include <sys/wait.h>\n#include <unistd.h>\n\
         volatile int sink;\n",
    );
    for i in 0..functions {
        let _ = writeln!(
            s,
            "__attribute__((noinline)) int f{i}(int x) {{ sink += x; return x + {i}; }}"
        );
    }
    s.push_str("static int (*const table[])(int) = {");
    for i in 0..functions {
        let _ = write!(s, "f{i},");
    }
    let _ = write!(
        s,
        "}};\n\
         int main(void) {{\n\
           for (int k = 0; k < {children}; k++) {{\n\
             pid_t p = fork();\n\
             if (p == 0) {{\n\
               int s = 0;\n\
               for (int j = 0; j < 5; j++) s += table[(k * 7 + j) % {functions}](j);\n\
               _exit(s & 1);\n\
             }}\n\
             waitpid(p, 0, 0);\n\
           }}\n\
           return 0;\n\
         }}\n"
    );
    s
}

/// A recorded run of the many-processes program.
struct ManyImages {
    _scratch: tempfile::TempDir,
    trace: PathBuf,
}

fn record_many_images() -> Option<ManyImages> {
    if !have("gcc") {
        return None;
    }
    let scratch = scratch();
    let src = scratch.path().join("many.c");
    std::fs::write(&src, many_functions_source(FUNCTIONS, CHILDREN)).unwrap();
    let exe = scratch.path().join("many");
    run_ok(ftail_cc("gcc").args(["-O1", "-o"]).arg(&exe).arg(&src));
    let trace = scratch.path().join("trace");
    record(&trace, &exe, &[]);
    let infos = std::fs::read_dir(&trace)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "info")
        })
        .count();
    assert_eq!(infos, CHILDREN + 1, "one image per process");
    Some(ManyImages {
        _scratch: scratch,
        trace,
    })
}

/// Records `exe ARGS` into `trace`. (Never read here: a child's peak
/// resident set starts from this process's when it is spawned, so this
/// process stays small.)
fn record(trace: &Path, exe: &Path, args: &[&str]) {
    record_with(trace, exe, args, &[]);
}

fn record_with(trace: &Path, exe: &Path, args: &[&str], options: &[&str]) {
    run_ok(
        Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            // Counts from the program's own calls.
            .arg("--no-libcall")
            .arg("-d")
            .arg(trace)
            .args(options)
            .arg("--")
            .arg(exe)
            .args(args),
    );
}

/// This process's peak resident set, KiB.
fn own_peak_rss_kib() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local of the right type.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64
}

/// What a finished `ftail` run cost.
struct Cost {
    /// Peak resident set, KiB.
    max_rss_kib: u64,
    /// Bytes it read through system calls (`rchar` of `/proc/PID/io`).
    read_bytes: u64,
}

/// Runs `ftail ARGS -d TRACE` to the end, its output thrown away; what it
/// cost.
#[allow(clippy::zombie_processes)] // reaped by wait4 below
fn cost(args: &[&str], trace: &Path) -> Cost {
    let child = Command::new(ftail())
        .args(args)
        .arg("-d")
        .arg(trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // SAFETY: an all-zero siginfo_t is a valid value of a plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits for this test's own child, leaving it unreaped
    // (WNOWAIT) so that its /proc entry can still be read; `info` is a
    // live local.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as u32,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(r, 0, "waitid failed");
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let read_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io: {io:?}"));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps the same child; both pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ftail {args:?} failed: status {status:#x}"
    );
    Cost {
        max_rss_kib: usage.ru_maxrss as u64,
        read_bytes,
    }
}

#[test]
fn many_images_of_one_build_share_their_names() {
    let Some(m) = record_many_images() else {
        return;
    };
    let tid = std::fs::read_dir(&m.trace)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".events").map(str::to_string))
        .filter_map(|n| n.rsplit_once('-').map(|(_, t)| t.to_string()))
        .max()
        .unwrap();
    // One copy of a 5000-function module's tables (and of per-function
    // counters) per image took ~1.3 MiB per image: 250+ MiB here.
    const BOUND_KIB: u64 = 64 * 1024;
    for args in [
        &["report"][..],
        &["replay", "--no-pager"],
        &["graph"],
        &["report", "--tid", &tid],
        &["replay", "--no-pager", "-F", "f1*", "-D", "2"],
    ] {
        let c = cost(args, &m.trace);
        let kib = c.max_rss_kib;
        eprintln!(
            "ftail {args:?}: {kib} KiB at most, {} bytes read",
            c.read_bytes
        );
        assert!(
            kib < BOUND_KIB,
            "ftail {args:?} on {} images took {kib} KiB (bound {BOUND_KIB}; the test \
             process, whose size a child starts from, {} KiB)",
            CHILDREN + 1,
            own_peak_rss_kib()
        );
    }
}

/// `info` answers from metadata, headers and file sizes: on a thread of
/// 4 M events whose file has gigabytes of unwritten room, it reads a
/// small part of the events and estimates the count, which `--events`
/// gives exactly.
#[test]
fn info_reads_sizes_not_every_event() {
    info_reads_little(&["--no-drain"]);
}

/// As [`info_reads_sizes_not_every_event`], of a drained ring (the
/// default): the heads of its drained file's frames, not the events.
#[test]
fn info_reads_the_heads_of_a_drained_file_not_every_event() {
    info_reads_little(&[]);
}

fn info_reads_little(options: &[&str]) {
    if !have("gcc") {
        return;
    }
    let drained = options.is_empty();
    let scratch = scratch();
    let src = scratch.path().join("loop.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\n\
         __attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }\n\
         int main(int argc, char **argv) {\n\
           int s = 0;\n\
           for (int i = 0; i < atoi(argv[1]); i++) s += leaf(i);\n\
           return s == 42;\n\
         }\n",
    )
    .unwrap();
    let exe = scratch.path().join("loop");
    run_ok(ftail_cc("gcc").args(["-O1", "-o"]).arg(&exe).arg(&src));
    let trace = scratch.path().join("trace");
    record_with(&trace, &exe, &["2000000"], options);
    // main's entry and exit, and leaf's.
    let events = 2 + 2 * 2_000_000u64;
    let file = std::fs::read_dir(&trace)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let ext = if drained { "drained" } else { "events" };
            p.extension().is_some_and(|x| x == ext) && std::fs::metadata(p).unwrap().len() > 4096
        })
        .unwrap();
    let written = std::fs::metadata(&file).unwrap().len();
    if !drained {
        // Room the runtime could have reserved, as a hole.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(written + (4 << 30))
            .unwrap();
    }
    let c = cost(&["info"], &trace);
    eprintln!(
        "ftail info: {} bytes read of a {written}-byte file",
        c.read_bytes
    );
    assert!(
        c.read_bytes < written / 4,
        "info read {} bytes of a {written}-byte file",
        c.read_bytes
    );
    let text = run_ok(Command::new(ftail()).args(["info", "-d"]).arg(&trace));
    let estimate: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("events           : ~"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no estimated count:\n{text}"));
    assert!(
        estimate.abs_diff(events) < events / 20,
        "estimated {estimate} events of {events}:\n{text}"
    );
    assert!(text.contains("--events counts them"), "{text}");
    let exact = run_ok(
        Command::new(ftail())
            .args(["info", "--events", "-d"])
            .arg(&trace),
    );
    assert!(
        exact.contains("duration         : ") && exact.contains(&format!("({events} events")),
        "{exact}"
    );
}

/// How long `main` ran in `trace`, in ns (from its `dump` rows).
fn main_ns(trace: &Path) -> u64 {
    let rows = run_ok(
        Command::new(ftail())
            .args(["dump", "-F", "main", "-D", "1", "-d"])
            .arg(trace),
    );
    let times: Vec<u64> = rows
        .lines()
        .filter(|l| l.ends_with(" main"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{rows}");
    times[1] - times[0]
}

/// `-t` holds only the open calls, at any threshold (before: the items
/// after an undecided entry waited in a queue until TIME had passed, so
/// a long call with millions of short ones inside held TIME's worth of
/// them, hundreds of MiB here). `main` makes 3,000,000 calls of `tick`;
/// with TIME half of `main`'s time, the views show `main` alone, each
/// within 64 MiB.
#[test]
fn a_time_filter_holds_only_the_open_calls() {
    if !have("gcc") {
        return;
    }
    let scratch = scratch();
    let exe = scratch.path().join("recurse");
    run_ok(
        ftail_cc("gcc")
            .args(["-O1", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/analysis/recurse.c"))
            .arg("-lpthread"),
    );
    let trace = scratch.path().join("trace");
    record(&trace, &exe, &["10", "3000000"]);
    let time = format!("{}ns", main_ns(&trace) / 2);
    let svg = scratch.path().join("flame.svg");
    let svg = svg.to_str().unwrap();
    for args in [
        &["report", "-t", &time][..],
        &["replay", "--no-pager", "-t", &time][..],
        &["graph", "-t", &time][..],
        &["flame", "-o", svg, "-t", &time][..],
        &["dump", "--chrome", "-o", "-", "-t", &time][..],
    ] {
        let peak = cost(args, &trace).max_rss_kib;
        assert!(peak < 64 << 10, "{args:?}: peak resident set {peak} KiB");
    }
    for cmd in ["report", "replay"] {
        let shown = run_ok(
            Command::new(ftail())
                .args([cmd, "--no-pager", "-t", &time, "-d"])
                .arg(&trace),
        );
        assert!(shown.contains("main"), "{cmd}: {shown}");
        assert!(!shown.contains("tick"), "{cmd}: {shown}");
    }
}
