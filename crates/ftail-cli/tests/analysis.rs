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
    let scratch = scratch();
    let exe = scratch.path().join("tour");
    run_ok(
        ftail_cc(cc)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/analysis").join(source)),
    );
    let trace = scratch.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("-d")
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
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
        assert!(filtered.contains("shapes::Circle::area();"), "{filtered}");
        assert!(!filtered.contains("run()"), "{filtered}");
    }
}

#[test]
fn info_says_what_the_trace_is() {
    let r = record_fixture("gcc", "tour.c");
    let text = ftail_on(&r.trace, "info", &[]);
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
