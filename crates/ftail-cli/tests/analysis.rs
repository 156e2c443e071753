//! The analysis commands end to end, against golden files: fixture
//! programs (C from gcc and clang, C++ from g++ and clang++) recorded, then
//! `replay` with each option, `report`, `graph`, `info` and `dump`. What
//! varies from run to run (durations, times, pids, tids, addresses, paths)
//! is replaced by placeholders before comparing; counts, names, nesting and
//! how calls ended are compared exactly. `UPDATE_EXPECT=1` rewrites the
//! golden files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use expect_test::{expect_file, ExpectFile};

/// A recorded fixture.
struct Recorded {
    _scratch: tempfile::TempDir,
    trace: PathBuf,
}

fn record_fixture(cc: &str, source: &str) -> Recorded {
    record_fixture_with(cc, source, &[])
}

fn record_fixture_with(cc: &str, source: &str, flags: &[&str]) -> Recorded {
    let scratch = scratch();
    let source = repo().join("tests/analysis").join(source);
    let trace = build_and_record(cc, &source, flags, scratch.path(), "tour", "trace");
    Recorded {
        _scratch: scratch,
        trace,
    }
}

/// Runs `ftail CMD -d TRACE ARGS` (never paged); its stdout.
fn ftail_on(trace: &Path, cmd: &str, args: &[&str]) -> String {
    run_ok(
        Command::new(ftail())
            .arg(cmd)
            .arg("-d")
            .arg(trace)
            .args(args),
    )
}

/// Replaces what varies between runs with placeholders.
fn normalize(text: &str, trace: &Path) -> String {
    let rules = [
        // Durations and times with their units (and the padding that
        // depends on their width), then bare seconds.
        (r" *\d+\.\d{3} (ns|us|ms| s)", " <dur>"),
        (r" *\b\d+\.\d{9}\b", " <time>"),
        // dump: time in ns, pid, tid.
        (r"(?m)^\d+ \d+(~\d+)? \d+ ", "<ns> PID TID "),
        (r"\[ *\d+\]", "[TID]"),
        (r"(process|thread) \d+(~\d+)?", "$1 N$2"),
        (r"0x[0-9a-f]+", "0xADDR"),
        (r"\b[0-9a-f]{40}\b", "<build-id>"),
    ];
    let mut out = text.replace(&trace.display().to_string(), "$TRACE");
    out = out.replace(&repo().display().to_string(), "$REPO");
    if let Some(dir) = trace.parent() {
        out = out.replace(&dir.display().to_string(), "$DIR");
    }
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

fn check(r: &Recorded, cmd: &str, args: &[&str], golden: ExpectFile) {
    golden.assert_eq(&normalize(&ftail_on(&r.trace, cmd, args), &r.trace));
}

#[test]
fn replay_report_and_graph_of_c_from_gcc() {
    let r = record_fixture("gcc", "tour.c");
    check(&r, "replay", &[], expect_file!["golden/gcc-replay.txt"]);
    check(
        &r,
        "replay",
        &["-F", "parse"],
        expect_file!["golden/gcc-replay-filter.txt"],
    );
    check(
        &r,
        "replay",
        &["-N", "parse", "-N", "depth"],
        expect_file!["golden/gcc-replay-notrace.txt"],
    );
    check(
        &r,
        "replay",
        &["-D", "2"],
        expect_file!["golden/gcc-replay-depth.txt"],
    );
    check(
        &r,
        "replay",
        &["-t", "1ms"],
        expect_file!["golden/gcc-replay-time-filter.txt"],
    );
    check(
        &r,
        "replay",
        &["--no-merge", "-F", "forward"],
        expect_file!["golden/gcc-replay-no-merge.txt"],
    );
    check(
        &r,
        "replay",
        &["-f", "time,delta,duration,tid", "-F", "depth"],
        expect_file!["golden/gcc-replay-fields.txt"],
    );
    check(
        &r,
        "replay",
        &["--time-range", "~0ns"],
        expect_file!["golden/gcc-replay-empty-range.txt"],
    );
    check(
        &r,
        "report",
        &["-s", "name"],
        expect_file!["golden/gcc-report.txt"],
    );
    check(
        &r,
        "report",
        &["-s", "calls", "-N", "parse"],
        expect_file!["golden/gcc-report-notrace.txt"],
    );
    check(&r, "graph", &[], expect_file!["golden/gcc-graph.txt"]);
    check(
        &r,
        "graph",
        &["parse"],
        expect_file!["golden/gcc-graph-parse.txt"],
    );
    check(
        &r,
        "graph",
        &["--callers", "helper"],
        expect_file!["golden/gcc-graph-callers.txt"],
    );
    check(&r, "dump", &[], expect_file!["golden/gcc-dump.txt"]);
    check(
        &r,
        "dump",
        &["-F", "parse", "-N", "helper"],
        expect_file!["golden/gcc-dump-filter.txt"],
    );
    dump_applies_the_replay_filters(&r.trace);
}

/// `dump`'s rows: (kind, depth, function), past the header.
fn dump_rows(trace: &Path, args: &[&str]) -> Vec<(String, u32, String)> {
    ftail_on(trace, "dump", args)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            assert_eq!(l.trim_end(), l, "a stray space: {l:?}");
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 7, "{l}");
            (f[3].to_string(), f[5].parse().unwrap(), f[6].to_string())
        })
        .collect()
}

/// `dump -F/-N/-D/-t` shows the calls `replay` shows with the same
/// filters, and every row names its frame's function and depth.
fn dump_applies_the_replay_filters(trace: &Path) {
    let all = dump_rows(trace, &[]);
    // Exits name the function they end, at the depth of its entry.
    let mut open = Vec::new();
    for (kind, depth, func) in &all {
        if kind == "Entry" {
            assert_eq!(*depth as usize, open.len());
            open.push(func.clone());
        } else {
            assert_eq!(open.pop().as_ref(), Some(func), "{kind} at {depth}");
            assert_eq!(*depth as usize, open.len());
        }
    }
    let entries = |rows: &[(String, u32, String)]| rows.iter().filter(|r| r.0 == "Entry").count();
    for args in [
        &["-F", "parse"][..],
        &["-N", "helper"],
        &["-D", "2"],
        &["-t", "100s"],
        &["-F", "parse", "-D", "1"],
    ] {
        let rows = dump_rows(trace, args);
        // As many calls as replay shows (one line per leaf, one per open).
        let replay = ftail_on(trace, "replay", args);
        let calls = replay
            .lines()
            .filter_map(|l| l.split_once("| ").map(|(_, call)| call.trim()))
            .filter(|c| !c.starts_with('}') && (c.ends_with('{') || c.contains(';')))
            .count();
        assert_eq!(entries(&rows), calls, "{args:?}:\n{replay}");
        assert!(entries(&rows) < entries(&all), "{args:?} changed nothing");
        match args[..2] {
            ["-F", f] => assert!(rows.iter().all(|r| r.1 > 0 || r.2 == f)),
            ["-N", f] => assert!(rows.iter().all(|r| r.2 != f)),
            ["-D", d] => assert!(rows.iter().all(|r| r.1 < d.parse().unwrap())),
            _ => assert!(rows.is_empty()),
        }
    }
}

#[test]
fn replay_report_and_graph_of_c_from_clang() {
    if !have("clang-19") {
        return;
    }
    let r = record_fixture("clang-19", "tour.c");
    check(&r, "replay", &[], expect_file!["golden/clang-replay.txt"]);
    check(
        &r,
        "report",
        &["-s", "name"],
        expect_file!["golden/clang-report.txt"],
    );
    check(&r, "graph", &[], expect_file!["golden/clang-graph.txt"]);
}

#[test]
fn cxx_names_are_demangled_in_every_view() {
    let compilers = [
        (
            "g++",
            expect_file!["golden/gxx-replay.txt"],
            expect_file!["golden/gxx-report.txt"],
        ),
        (
            "clang++-19",
            expect_file!["golden/clangxx-replay.txt"],
            expect_file!["golden/clangxx-report.txt"],
        ),
    ];
    for (cc, replay, report) in compilers {
        if !have(cc) {
            continue;
        }
        let r = record_fixture(cc, "tour.cc");
        check(&r, "replay", &[], replay);
        check(&r, "report", &["-s", "name"], report);
        // Globs match demangled names.
        let filtered = ftail_on(&r.trace, "replay", &["-F", "shapes::Circle::*"]);
        assert!(filtered.contains("shapes::Circle::area"), "{filtered}");
        assert!(!filtered.contains("run()"), "{filtered}");
    }
}

/// `--srcline` shows where each function entered is defined, from the
/// DWARF of a `-g` build, with gcc and clang.
#[test]
fn srcline_shows_where_each_function_is() {
    let r = record_fixture_with("gcc", "tour.c", &["-g"]);
    check(
        &r,
        "replay",
        &["--srcline", "-F", "parse"],
        expect_file!["golden/gcc-replay-srcline.txt"],
    );
    if have("clang-19") {
        let r = record_fixture_with("clang-19", "tour.c", &["-g"]);
        check(
            &r,
            "replay",
            &["--srcline", "-F", "parse"],
            expect_file!["golden/clang-replay-srcline.txt"],
        );
    }
}

#[test]
fn info_says_what_the_trace_is() {
    let r = record_fixture("gcc", "tour.c");
    let text = ftail_on(&r.trace, "info", &[]);
    let varying = [
        (r"size on disk: .*", "size on disk: <size>"),
        (r"parent pid       : \d+", "parent pid       : <pid>"),
        (r"started          : .*", "started          : <time>"),
        (r"clock            : .*", "clock            : <rate>"),
        (
            r"resources        : .*",
            "resources        : <cpu and memory>",
        ),
        (r"(?m)^ +\d+ tour ", "    <tid> tour "),
        // The default maximum size is a share of the free space on the trace's filesystem.
        (r"maximum size: [^(]*\(", "maximum size: <free share> ("),
        (r"grow up to [^ ]+ [^ ]+ ", "grow up to <free share> "),
        (r"kept up to [^ ]+ [^ ]+ ", "kept up to <free share> "),
        // How well a few events compress.
        (
            r"drained          : [0-9.]+ [KMG]?i?B on disk for (\d+) events of drained rings: [0-9.]+ bytes each",
            "drained          : <bytes> on disk for $1 events of drained rings: <n> bytes each",
        ),
        (r"[0-9.]+ [KMG]?i?B of it used", "<used> of it used"),
        // How many context switches there were, or why the kernel refused them.
        (
            r"(?m)^# scheduler events.*$",
            "# scheduler events: <how many, or why none>",
        ),
        // Where the system keeps libc.
        (r"/\S*/libc\.so\.6", "<libdir>/libc.so.6"),
        // Time records come whenever a time offset would not fit: how many depends on timing.
        (
            r"events, [0-9.]+ [KMG]?i?B of them: [0-9.]+ bytes each",
            "events, <bytes> of them: <n> bytes each",
        ),
    ];
    let mut golden = normalize(&text, &r.trace);
    for (pattern, with) in varying {
        golden = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&golden, with)
            .into_owned();
    }
    expect_file!["golden/gcc-info.txt"].assert_eq(&golden);
    for want in [
        "command line     : ",
        "recorded with    : tail=auto",
        "threads          : 1",
        "events           0 lost",
        "modules          : 1",
        "patched          : 6 functions",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let r = record_fixture("gcc", "tour.c");
    for (args, why) in [
        (&["replay", "-t", "fast"][..], "is not a duration"),
        (
            &["replay", "--time-range", "2ms~1ms"][..],
            "ends before it starts",
        ),
        (&["replay", "-f", "time,colour"][..], "unknown field"),
        (
            &["graph", "nosuchfunction"][..],
            "no call of a function matching",
        ),
    ] {
        let out = run(Command::new(ftail())
            .arg(args[0])
            .arg("-d")
            .arg(&r.trace)
            .args(&args[1..]));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// Runs `ftail ARGS` with its address space limited to `mib` MiB.
fn ftail_limited(mib: u64, args: &[&str], dir: &Path) -> std::process::Output {
    let script = format!("ulimit -v {}; exec \"$0\" \"$@\"", mib << 10);
    run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(ftail())
        .args(&args[..1])
        .arg("-d")
        .arg(dir)
        .args(&args[1..]))
}

fn build_recurse(dir: &Path) -> PathBuf {
    let exe = dir.join("recurse");
    run_ok(
        ftail_cc("gcc")
            .args(["-O1", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/analysis/recurse.c"))
            .arg("-lpthread"),
    );
    exe
}

/// Records `exe ARGS` into `dir/NAME`; the trace directory.
fn record_into(dir: &Path, name: &str, exe: &Path, args: &[&str]) -> PathBuf {
    let trace = dir.join(name);
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .arg("--")
        .arg(exe)
        .args(args));
    assert!(out.status.success(), "{out:?}");
    trace
}

/// `report --diff BASE -d TRACE` measures the change from BASE (before)
/// to TRACE (after), relative to BASE: `tick` going from 1 call to 3 is
/// +200.0% (before: -66.7%, the base and the trace swapped), and the
/// header says which is which; `flame --diff` agrees: the frame that
/// grew is drawn red.
#[test]
fn diff_goes_from_the_base_to_the_trace() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let before = record_into(scratch.path(), "before", &exe, &["3", "1"]);
    let after = record_into(scratch.path(), "after", &exe, &["3", "3"]);
    let text = ftail_on(
        &after,
        "report",
        &["--diff", before.to_str().unwrap(), "-s", "calls"],
    );
    let tick: Vec<&str> = text
        .lines()
        .find(|l| l.ends_with(" tick"))
        .unwrap_or_else(|| panic!("no tick row:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(tick[..3], ["1", "3", "+200.0%"], "{text}");
    assert!(
        text.contains(&format!("# before: {}\n", before.display()))
            && text.contains(&format!("# after:  {}\n", after.display())),
        "{text}"
    );
    let svg = scratch.path().join("diff.svg");
    run_ok(
        Command::new(ftail())
            .args(["flame", "--weight", "calls", "-d"])
            .arg(&after)
            .arg("--diff")
            .arg(&before)
            .arg("-o")
            .arg(&svg),
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    let frame = svg
        .split("<g>")
        .find(|g| g.contains("<title>tick "))
        .unwrap_or_else(|| panic!("no tick frame:\n{svg}"));
    assert!(frame.contains("fill=\"rgb(255,"), "tick grew: red\n{frame}");
}

/// The TOTAL column of `report` as printed for `func` (`280.419 ns`).
fn report_total(report: &str, func: &str) -> String {
    let line = report
        .lines()
        .find(|l| l.ends_with(&format!("  {func}")))
        .unwrap_or_else(|| panic!("no row for {func}:\n{report}"));
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A recursive function's TOTAL counts its outermost activations once,
/// as uftrace does (before: every level again, 100 levels of `down`
/// summed to about 50 times the time its caller `run` took): it is the
/// duration replay shows for the outermost call, and no more than its
/// caller's, through the plain fold and the filtered one alike.
#[test]
fn a_recursive_function_counts_its_time_once() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = record_into(scratch.path(), "trace", &exe, &["100", "2"]);
    let outer = ftail_on(&trace, "replay", &["-F", "run", "-D", "2", "--no-pager"]);
    let outermost = outer
        .lines()
        .find(|l| l.ends_with(" down();"))
        .unwrap_or_else(|| panic!("no outermost down:\n{outer}"))
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    for args in [&[][..], &["-N", "tick"][..]] {
        let report = ftail_on(&trace, "report", args);
        assert_eq!(
            report_total(&report, "down"),
            outermost,
            "{args:?}\n{report}"
        );
        let ns = |t: &str| -> f64 {
            let (v, unit) = t.split_once(' ').unwrap();
            let scale = match unit {
                "ns" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                _ => 1e9,
            };
            v.parse::<f64>().unwrap() * scale
        };
        assert!(
            ns(&report_total(&report, "down")) <= ns(&report_total(&report, "run")),
            "{args:?}\n{report}"
        );
    }
    // The inverted graph's first row is every call of down: its time too.
    let callers = ftail_on(&trace, "graph", &["--callers", "down"]);
    let first = callers
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap_or_default();
    assert!(
        first.starts_with(&format!("{outermost:>14}")) && first.ends_with("  101  down"),
        "{callers}"
    );
}

/// A 60,000-deep recursion replays in bounded memory (before: memory
/// quadratic in depth, an indentation string per line and the whole
/// output in one string; it aborted allocating 4 GiB), with the depth
/// shown as a number past the indentation's cap.
#[test]
fn a_deep_recursion_replays_in_bounded_memory() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = scratch.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--", exe.to_str().unwrap(), "60000"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "60001\n");
    let out = ftail_limited(512, &["replay", "--no-pager"], &trace);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("down()").count(), 60_001);
    assert!(
        text.contains("[60001] down();"),
        "the deepest call shows its depth"
    );
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 200, "a line of {longest} bytes");
}

/// `graph`, `flame` and `dump --flame-graph` of a 60,000-deep recursion
/// take time and memory linear in the depth (before: quadratic, a copied
/// path per open call and a spelled-out path per node — 7 GB and more,
/// 86 s and more): each within 512 MiB of address space and 20 s. The
/// graph shows the depth as a number past the indentation's cap; folded
/// paths stop at their cap, the deeper calls counted in the call at it
/// (every call still counted once), with a note.
#[test]
fn a_deep_recursion_graphs_and_folds_in_linear_time_and_memory() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = record_into(scratch.path(), "trace", &exe, &["60000"]);
    let folded = scratch.path().join("folded.txt");
    let svg = scratch.path().join("flame.svg");
    let (f, s) = (folded.to_str().unwrap(), svg.to_str().unwrap());
    let mut outputs = Vec::new();
    for args in [
        &["graph"][..],
        &["dump", "--flame-graph", "--weight", "calls", "-o", f][..],
        &["flame", "-o", s][..],
    ] {
        let started = std::time::Instant::now();
        let out = ftail_limited(512, args, &trace);
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took.as_secs() < 20, "{args:?} took {took:?}");
        outputs.push(out);
    }
    let graph = String::from_utf8_lossy(&outputs[0].stdout);
    assert_eq!(graph.matches("-down").count(), 60_001, "{}", &graph[..2000]);
    assert!(
        graph.contains("[60001] `-down"),
        "the deepest call shows its depth"
    );
    let longest = graph.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 200, "a line of {longest} bytes");
    let note = String::from_utf8_lossy(&outputs[1].stderr);
    assert!(note.contains("60002 levels deep"), "{note}");
    let lines = std::fs::read_to_string(&folded).unwrap();
    let down_calls: u64 = lines
        .lines()
        .filter(|l| l.rsplit_once(' ').unwrap().0.ends_with("down"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(down_calls, 60_001);
    let deepest = lines.lines().map(|l| l.matches(';').count() + 1).max();
    assert_eq!(deepest, Some(1024));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("down"));
}

/// `-t` costs time linear in the events at any threshold (before: each
/// event scanned the queue of undecided calls, so the time grew with the
/// square of the events within the threshold: the 600,000 under a call
/// shorter than it took minutes). Each command must end within 20 s, and
/// shows nothing: every call ran shorter than 100 s.
#[test]
fn a_time_filter_costs_linear_time_at_any_threshold() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = record_into(scratch.path(), "trace", &exe, &["10", "300000"]);
    for cmd in ["replay", "report", "graph"] {
        let out = run(Command::new("timeout")
            .arg("20")
            .arg(ftail())
            .arg(cmd)
            .arg("-d")
            .arg(&trace)
            .args(["-t", "100s"]));
        assert!(out.status.success(), "{cmd}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("tick"), "{cmd}: {text}");
    }
}

/// A trace of a few calls with a huge buffer reads only what was written
/// (before: every event file was read whole, its never-written tail
/// included: 2 GiB here).
#[test]
fn a_huge_empty_buffer_is_not_read() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = scratch.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args([
            "--buffer-events",
            "134217728",
            "--",
            exe.to_str().unwrap(),
            "3",
            "10",
        ]));
    assert!(out.status.success(), "{out:?}");
    for cmd in ["report", "replay", "graph", "info", "dump"] {
        let out = ftail_limited(256, &[cmd], &trace);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report =
        String::from_utf8_lossy(&ftail_limited(256, &["report"], &trace).stdout).into_owned();
    assert!(
        report.contains("          10  ") && report.contains("tick"),
        "{report}"
    );
}

/// A command that reads a trace shows a progress bar on a terminal, once
/// it has taken long enough (here: at once), and nothing on a pipe.
#[test]
fn progress_shows_on_a_terminal_only() {
    let scratch = scratch();
    let exe = build_recurse(scratch.path());
    let trace = scratch.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--", exe.to_str().unwrap(), "10", "3000000"]));
    assert!(out.status.success(), "{out:?}");
    let t = trace.to_str().unwrap();
    let shown = stderr_on_a_terminal(&["report", "-d", t], &[("FTAIL_PROGRESS_AFTER_MS", "0")]);
    assert!(shown.contains("reading ["), "{shown:?}");
    let piped = run(Command::new(ftail())
        .args(["report", "-d", t])
        .env("FTAIL_PROGRESS_AFTER_MS", "0"));
    assert!(
        piped.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // Without the override, a quick command shows nothing.
    let quick = stderr_on_a_terminal(&["info", "-d", t], &[]);
    assert!(!quick.contains('['), "{quick:?}");
}

/// The threads fixture of the runtime tests, recorded.
fn record_threads() -> Recorded {
    record_fixture_with("gcc", "../runtime/threads.c", &["-lpthread"])
}

/// `--tid` keeps one thread; `report --threads` has a row per thread and
/// function, and the threads' calls add up to the whole; `--diff` of a
/// trace with itself changes nothing.
#[test]
fn threads_can_be_told_apart_and_runs_compared() {
    let r = record_threads();
    let t = ftail_trace::trace::open(&r.trace).unwrap();
    let p = &t.processes[0];
    let worker = p.threads.iter().find(|th| th.tid != p.pid).unwrap().tid;
    let text = ftail_on(&r.trace, "replay", &["--tid", &worker.to_string()]);
    let tids: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .map(str::trim)
        .collect();
    assert_eq!(tids.into_iter().collect::<Vec<_>>(), [worker.to_string()]);
    let rows = ftail_on(&r.trace, "report", &["--threads", "-s", "calls"]);
    let fib_calls: u64 = rows
        .lines()
        .filter(|l| l.ends_with(" fib"))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(fib_calls, 8 * 1973, "{rows}");
    assert_eq!(rows.lines().filter(|l| l.ends_with(" fib")).count(), 8);
    let diff = ftail_on(
        &r.trace,
        "report",
        &["--diff", r.trace.to_str().unwrap(), "-s", "calls"],
    );
    let changes: Vec<&str> = diff
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert!(
        !changes.is_empty() && changes.iter().all(|c| *c == "+0.0%"),
        "{diff}"
    );
}

/// Threads are read on several cores (`report` and `graph`), their
/// figures merged in the threads' order: the output is the same byte for
/// byte on one core as on four, and the graph of eight threads running
/// the same code is one worker's with eight times its calls.
#[test]
fn threads_read_in_parallel_merge_into_the_same_output() {
    let r = record_threads();
    let on_cores = |cores: &str, cmd: &str, args: &[&str]| {
        run_ok(
            Command::new(ftail())
                .env("RAYON_NUM_THREADS", cores)
                .arg(cmd)
                .arg("-d")
                .arg(&r.trace)
                .args(args),
        )
    };
    for (cmd, args) in [
        ("report", &[][..]),
        ("report", &["--threads"][..]),
        ("graph", &[][..]),
        ("graph", &["--callers", "leaf"][..]),
    ] {
        assert_eq!(
            on_cores("1", cmd, args),
            on_cores("4", cmd, args),
            "{cmd} {args:?}"
        );
    }
    let t = ftail_trace::trace::open(&r.trace).unwrap();
    let p = &t.processes[0];
    let worker = p.threads.iter().find(|th| th.tid != p.pid).unwrap().tid;
    // Calls and the tree's lines, from `worker` down.
    let calls = |text: &str| -> Vec<(u64, String)> {
        text.lines()
            .skip_while(|l| !l.ends_with(" worker"))
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (calls, line) = l.trim_start().split_once(' ').unwrap();
                (calls.parse().unwrap(), line.trim_start().to_string())
            })
            .collect()
    };
    let one = calls(&on_cores(
        "4",
        "graph",
        &["-f", "call", "--tid", &worker.to_string()],
    ));
    let all = calls(&on_cores("4", "graph", &["-f", "call"]));
    let eight: Vec<(u64, String)> = one.into_iter().map(|(n, l)| (8 * n, l)).collect();
    assert!(eight.len() > 10, "{eight:?}");
    assert_eq!(all, eight);
}

/// Colours on request, wall-clock time, and `live`: one command records
/// and replays, with the program's exit status.
#[test]
fn colours_wall_clock_and_live() {
    let r = record_fixture("gcc", "tour.c");
    let coloured = ftail_on(&r.trace, "replay", &["--color", "always"]);
    assert!(coloured.contains("\x1b[31m"), "the 3 ms call in red");
    let plain = ftail_on(&r.trace, "replay", &["--color", "never"]);
    assert!(!plain.contains('\x1b'));
    let wall = ftail_on(
        &r.trace,
        "replay",
        &["-f", "time", "--wall-clock", "-F", "slow"],
    );
    let secs: f64 = wall
        .lines()
        .find(|l| l.contains("slow"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - secs).abs() < 3600.0,
        "{secs} is not about now ({now})"
    );
    let scratch = scratch();
    let exe = scratch.path().join("tour");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/analysis/tour.c")),
    );
    let out = run(Command::new(ftail())
        .args(["live", "--no-sched", "--no-pager", "--"])
        .arg(&exe));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forward() {") && text.contains("helper();"),
        "{text}"
    );
    let out = run(Command::new(ftail()).args([
        "live",
        "--no-sched",
        "--no-pager",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]));
    assert_eq!(out.status.code(), Some(7));
}

/// A binary rebuilt since it was recorded (another build id) is reported,
/// and its functions show as addresses, never with the new file's names;
/// `--symbols-dir` pointing at the recorded build brings the names back.
#[test]
fn a_rebuilt_binary_is_reported_not_misnamed() {
    let r = record_fixture("gcc", "tour.c");
    let exe = r.trace.parent().unwrap().join("tour");
    let keep = r.trace.parent().unwrap().join("kept");
    std::fs::create_dir(&keep).unwrap();
    std::fs::copy(&exe, keep.join("tour")).unwrap();
    // Another build of another program, under the recorded path.
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/analysis/recurse.c"))
            .arg("-lpthread"),
    );
    let text = ftail_on(&r.trace, "replay", &[]);
    assert!(text.contains("build id mismatch"), "{text}");
    assert!(
        !text.contains("parse()") && !text.contains("down()"),
        "{text}"
    );
    let named = ftail_on(
        &r.trace,
        "replay",
        &["--symbols-dir", keep.to_str().unwrap()],
    );
    assert!(
        named.contains("parse() {") && named.contains("helper();"),
        "{named}"
    );
}

/// On a terminal, replay goes through `$PAGER`, or `less` when there is
/// one; with neither, straight to the terminal (before: through a shell
/// that could not find `less`, and the output was lost).
#[test]
fn replay_on_a_terminal_without_a_pager_still_shows() {
    let r = record_fixture("gcc", "tour.c");
    let t = r.trace.to_str().unwrap();
    // A PATH with a shell but no less.
    let bin = r.trace.parent().unwrap().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
    let path = bin.display().to_string();
    let shown = stdout_on_a_terminal(&["replay", "-d", t], &[("PATH", &path)]);
    assert!(shown.contains("main() {"), "{shown:?}");
    let paged = stdout_on_a_terminal(&["replay", "-d", t], &[("PAGER", "cat")]);
    assert!(paged.contains("main() {"), "{paged:?}");
}

/// Tail calls into code that is not traced: on one line each without
/// library calls (`--no-libcall`), and with them (the default) the
/// library function under its tail caller, which ends when it returns.
#[test]
fn a_tail_call_into_untraced_code_shows_on_one_line() {
    for mode in ["auto", "convert"] {
        let scratch = scratch();
        let exe = scratch.path().join("tailout");
        run_ok(
            ftail_cc("gcc")
                .args(["-O2", "-o"])
                .arg(&exe)
                .arg(repo().join("tests/analysis/tailout.c")),
        );
        let calls = |extra: &[&str]| -> Vec<String> {
            let trace = scratch.path().join("trace");
            let mut args = vec!["--tail", mode, "-R", "greet"];
            args.extend_from_slice(extra);
            let (out, _) = record_trace(&trace, &exe, &[], &args);
            assert!(out.status.success(), "{out:?}");
            let replay = normalize(&ftail_on(&trace, "replay", &[]), &trace);
            replay
                .lines()
                .filter_map(|l| l.split_once("|  ").map(|(_, c)| c.trim().to_string()))
                .collect()
        };
        assert_eq!(
            calls(&["--no-libcall"]),
            ["greet() = 6; /* tail call */", "len(); /* tail call */"],
            "{mode}"
        );
        assert_eq!(
            calls(&[]),
            [
                "greet() {",
                "puts();",
                "} = 6; /* greet (tail call) */",
                "len() {",
                "strlen();",
                "} /* len (tail call) */"
            ],
            "{mode}"
        );
    }
}

/// Plain replay takes a fused path (events straight to lines); the
/// general path (filters, values, colours) must write the same bytes on
/// every kind of line: library calls and a tail call (`tour.c`), threads
/// interleaved, calls unwound by an exception, coroutines switched out
/// and resumed, a ring's window with calls begun before it, long names
/// and deep calls.
#[test]
fn plain_replay_writes_what_the_general_path_writes() {
    let tour = record_fixture("gcc", "tour.c");
    let text = replay_paths_agree(&tour.trace);
    assert!(text.contains("(tail call)"), "{text}");
    assert!(text.contains("strlen();"), "{text}");
    let threads = record_threads();
    replay_paths_agree(&threads.trace);
    let dir = scratch();
    let build = |cc: &str, source: &str, exe: &str| {
        let exe = dir.path().join(exe);
        run_ok(
            ftail_cc(cc)
                .args(["-O2", "-o"])
                .arg(&exe)
                .arg(repo().join("tests/runtime").join(source)),
        );
        exe
    };
    let many = build("gcc", "many_coroutines.c", "many");
    let tdir = dir.path().join("coroutines");
    record_trace(&tdir, &many, &["20", "2"], &["--no-libcall"]);
    let text = replay_paths_agree(&tdir);
    assert!(text.contains("/* resumed */"), "{text}");
    // Lines longer than the pieces the fused path copies whole: a long
    // name, and calls deeper than spelled-out indentation.
    let deep = dir.path().join("deep.c");
    std::fs::write(
        &deep,
        format!(
            "__attribute__((noinline)) int {long}(int n) {{ return n; }}\n\
             __attribute__((noinline)) int deep(int n) \
             {{ return n == 0 ? {long}(n) : deep(n - 1) + 1; }}\n\
             int main(void) {{ return deep(50) == 50 ? 0 : 1; }}\n",
            long = "a_function_whose_name_is_longer_than_one_piece_of_the_line_copied_whole",
        ),
    )
    .unwrap();
    let deep_exe = dir.path().join("deep");
    run_ok(
        ftail_cc("gcc")
            .args(["-O0", "-o"])
            .arg(&deep_exe)
            .arg(&deep),
    );
    let tdir = dir.path().join("deep-trace");
    record_trace(&tdir, &deep_exe, &[], &["--no-libcall"]);
    let text = replay_paths_agree(&tdir);
    assert!(text.contains("[50] deep() {"), "{text}");
    assert!(text.contains("_copied_whole();"), "{text}");
    let tdir = dir.path().join("ring");
    let tour_exe = tour.trace.parent().unwrap().join("tour");
    record_trace(&tdir, &tour_exe, &[], &["--ring", "1M"]);
    replay_paths_agree(&tdir);
    if have("g++") {
        let exc = build("g++", "exceptions.cc", "exc");
        let tdir = dir.path().join("exceptions");
        record_trace(&tdir, &exc, &[], &[]);
        let text = replay_paths_agree(&tdir);
        assert!(text.contains("(unwound)"), "{text}");
    }
}
