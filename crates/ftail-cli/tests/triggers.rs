//! `ftail record -T/--trigger` (uftrace's actions), `--snapshot-on` and
//! the program's `ftail_snapshot()`, with gcc and clang, in every format.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ftail, ftail_cc, have, run, run_ok, scratch};

/// Calls at depths the triggers tell apart; `tl` ends in a tail call.
const PROGRAM: &str = r#"
#include <stdio.h>
__attribute__((noinline)) int leaf(int x) { return x + 1; }
__attribute__((noinline)) int mid(int x) { return leaf(x) * 2; }
__attribute__((noinline)) int top(int x) { return mid(x) + 1; }
__attribute__((noinline)) int on(int x) { return top(x) + 1; }
__attribute__((noinline)) int off(int x) { return top(x) + 1; }
__attribute__((noinline)) int tl(int x) { return top(x); }
__attribute__((noinline)) int done(int x) { return top(x) + 1; }
int main(void) {
  int s = top(1);
  s += off(2);
  s += top(3);
  s += on(4);
  s += done(5);
  s += top(6);
  s += tl(7);
  printf("%d\n", s);
  return 0;
}
"#;

fn build(dir: &Path, cc: &str) -> PathBuf {
    let src = dir.join("t.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join(format!("t-{cc}"));
    run_ok(ftail_cc(cc).args(["-O2", "-o"]).arg(&exe).arg(&src));
    exe
}

/// The calls `replay` shows, as `f{g{h}}` with calls side by side
/// separated by a space.
fn tree(trace: &Path) -> String {
    tree_shown(trace, &[])
}

/// [`tree`] with `replay`'s options `view`.
fn tree_shown(trace: &Path, view: &[&str]) -> String {
    let text = run_ok(
        Command::new(ftail())
            .args(["replay", "-f", "none", "-d"])
            .arg(trace)
            .args(view),
    );
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let call = line.trim_start_matches([' ', '|']).trim();
        // `tl(); /* tail call */`
        let call = call.split(" /*").next().unwrap_or(call);
        if call.starts_with('}') {
            out.push('}');
        } else if let Some(name) = call.strip_suffix("() {") {
            if !out.is_empty() && !out.ends_with('{') {
                out.push(' ');
            }
            out.push_str(name);
            out.push('{');
        } else if let Some(name) = call.strip_suffix("();") {
            if !out.is_empty() && !out.ends_with('{') {
                out.push(' ');
            }
            out.push_str(name);
        }
    }
    out
}

fn record(dir: &Path, exe: &Path, opts: &[&str]) -> PathBuf {
    let trace = dir.join("trace");
    let _ = std::fs::remove_dir_all(&trace);
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        // The trees compared are the program's own calls.
        .arg("--no-libcall")
        .args(opts)
        .arg("--")
        .arg(exe));
    assert!(out.status.success(), "{opts:?}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "80\n", "{opts:?}");
    trace
}

/// Trigger options, and the calls recorded with them.
fn trigger_cases() -> Vec<(Vec<&'static str>, String)> {
    let t = "top{mid{leaf}}";
    vec![
        (
            vec![],
            format!("main{{{t} off{{{t}}} {t} on{{{t}}} done{{{t}}} {t} tl{{{t}}}}}"),
        ),
        (vec!["-T", "off@trace_off"], format!("main{{{t}}}")),
        (
            vec!["-T", "off@trace_off", "-T", "on@traceon"],
            format!("main{{{t} on{{{t}}} done{{{t}}} {t} tl{{{t}}}}}"),
        ),
        (vec!["-T", "on@filter"], format!("on{{{t}}}")),
        (
            vec!["-T", "mid@notrace"],
            "main{top off{top} top on{top} done{top} top tl{top}}".into(),
        ),
        (
            vec!["-T", "on@depth=2"],
            format!("main{{{t} off{{{t}}} {t} on{{top}} done{{{t}}} {t} tl{{{t}}}}}"),
        ),
        (
            vec!["-T", "mid@depth=1"],
            "main{top{mid} off{top{mid}} top{mid} on{top{mid}} done{top{mid}} top{mid} \
             tl{top{mid}}}"
                .into(),
        ),
        (
            vec!["-T", "done@finish"],
            format!("main{{{t} off{{{t}}} {t} on{{{t}}} done{{{t}}}}}"),
        ),
        // A trigger on a function that ends in a tail call.
        (
            vec!["-T", "tl@depth=2"],
            format!("main{{{t} off{{{t}}} {t} on{{{t}}} done{{{t}}} {t} tl{{top}}}}"),
        ),
        (
            vec!["-T", "tl@notrace"],
            format!("main{{{t} off{{{t}}} {t} on{{{t}}} done{{{t}}} {t}}}"),
        ),
        // -D, and a depth trigger that goes deeper than it.
        (
            vec!["-D", "2", "-T", "on@depth=3"],
            "main{top off top on{top{mid}} done top tl}".into(),
        ),
    ]
}

fn check_triggers(cc: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc);
    for (opts, want) in &trigger_cases() {
        for format in [&[][..], &["--ring", "1M"][..], &["--tail", "convert"][..]] {
            let all: Vec<&str> = opts.iter().chain(format).copied().collect();
            let trace = record(dir.path(), &exe, &all);
            assert_eq!(&tree(&trace), want, "{cc} {all:?}");
        }
    }
}

#[test]
fn triggers_act_as_uftraces_gcc() {
    check_triggers("gcc");
}

#[test]
fn triggers_act_as_uftraces_clang() {
    if have("clang-19") {
        check_triggers("clang-19");
    }
}

/// `replay -T` shows of a trace recorded whole what `record -T` records.
fn check_view_triggers(cc: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc);
    let trace = record(dir.path(), &exe, &[]);
    for (opts, want) in &trigger_cases() {
        assert_eq!(&tree_shown(&trace, opts), want, "{cc} replay {opts:?}");
    }
    // report and graph count what replay shows.
    let report = run_ok(
        Command::new(ftail())
            .args(["report", "-d"])
            .arg(&trace)
            .args(["-T", "on@filter"]),
    );
    let functions: Vec<&str> = report
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|w| ["main", "on", "off", "top", "mid", "leaf"].contains(w))
        .collect();
    assert_eq!(functions.len(), 4, "{report}");
    assert!(!functions.contains(&"main"), "{report}");
    for (view, says) in [
        ("main@snapshot", "snapshots are taken while recording"),
        ("main@depth=0", "1 or more"),
        ("main", "PATTERN@ACTION"),
    ] {
        let out = run(Command::new(ftail())
            .args(["replay", "-d"])
            .arg(&trace)
            .args(["-T", view]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{view}: {err}");
    }
}

#[test]
fn replay_triggers_show_what_record_triggers_record_gcc() {
    check_view_triggers("gcc");
}

#[test]
fn replay_triggers_show_what_record_triggers_record_clang() {
    if have("clang-19") {
        check_view_triggers("clang-19");
    }
}

#[test]
fn bad_triggers_are_refused_with_a_reason() {
    let dir = scratch();
    let exe = common::small_program(dir.path());
    for (opts, says) in [
        (vec!["-T", "main"], "GLOB@ACTION"),
        (vec!["-T", "main@depth=0"], "1 or more"),
        (vec!["-T", "main@trace"], "unknown action 'trace'"),
        (vec!["-T", "@finish"], "no function glob"),
        (vec!["-T", "main@snapshot"], "--snapshot-on"),
        (vec!["--snapshot-on", "main>fast"], "not a duration"),
        (vec!["--snapshot-on", "main"], "needs --ring"),
    ] {
        let out = run(Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(dir.path().join("trace"))
            .args(&opts)
            .arg("--")
            .arg(&exe));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opts:?}");
        assert!(err.contains(says), "{opts:?}: {err}");
        assert!(!dir.path().join("trace").exists(), "{opts:?}");
    }
}

/// Many short calls of `handle` and one of 7 ms (the 51st); `report`
/// calls `ftail_snapshot()` when the program has an argument.
const SERVER: &str = r#"
#include <stdio.h>
#include <time.h>
#include "ftail.h"
__attribute__((noinline)) void work(long ns) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do clock_gettime(CLOCK_MONOTONIC, &t);
  while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < ns);
}
__attribute__((noinline)) int handle(int i) { work(i == 50 ? 7000000 : 10000); return i; }
__attribute__((noinline)) int report(void) { return ftail_snapshot ? ftail_snapshot() : 1; }
int main(int argc, char **argv) {
  (void)argv;
  int s = 0;
  for (int i = 0; i < 100; i++) s += handle(i);
  printf("%d %d\n", s, argc > 1 ? report() : 7);
  return 0;
}
"#;

fn build_server(dir: &Path, cc: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join("server.c");
    std::fs::write(&src, SERVER).unwrap();
    let exe = dir.join(format!("server-{cc}"));
    run_ok(
        ftail_cc(cc)
            .args(["-O2", "-I"])
            .arg(common::repo().join("include"))
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(&src),
    );
    exe
}

/// The line of the call `replay` marks as the one that took the
/// snapshot `snap`, and the Chrome export's event that says so; panics
/// unless there is one of each.
fn marked(snap: &Path) -> (String, String) {
    let text = run_ok(Command::new(ftail()).args(["replay", "-d"]).arg(snap));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/* snapshot: "))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let json = snap.with_extension("json");
    run_ok(
        Command::new(ftail())
            .args(["dump", "--chrome", "-o"])
            .arg(&json)
            .arg("-d")
            .arg(snap),
    );
    let json = std::fs::read_to_string(&json).unwrap();
    let events: Vec<&str> = json
        .split("},")
        .filter(|e| e.contains("\"snapshot\":"))
        .collect();
    assert_eq!(events.len(), 1, "{json}");
    (lines[0].to_string(), events[0].to_string())
}

/// Records `exe ARGS` with a ring and `opts`; returns its output and
/// the snapshots' `trigger` files, in order.
fn snapshots(dir: &Path, exe: &Path, args: &[&str], opts: &[&str]) -> (String, Vec<String>) {
    let trace = dir.join("trace");
    let _ = std::fs::remove_dir_all(&trace);
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--ring", "64K"])
        // The window compared holds the program's own calls.
        .arg("--no-libcall")
        .args(opts)
        .arg("--")
        .arg(exe)
        .args(args));
    assert!(out.status.success(), "{opts:?}: {out:?}");
    let mut marks = Vec::new();
    for n in 1.. {
        let snap = trace.join(format!("snapshot-{n}"));
        if !snap.exists() {
            break;
        }
        marks.push(std::fs::read_to_string(snap.join("trigger")).unwrap());
        // Each snapshot reads as a trace of its own.
        run_ok(Command::new(ftail()).args(["replay", "-d"]).arg(&snap));
    }
    (String::from_utf8_lossy(&out.stdout).into_owned(), marks)
}

fn mark_field(mark: &str, key: &str) -> String {
    mark.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in {mark:?}"))
        .to_string()
}

/// The address `nm` gives `name` in `exe`.
fn symbol(exe: &Path, name: &str) -> u64 {
    let text = run_ok(Command::new("nm").arg(exe));
    let line = text
        .lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .unwrap_or_else(|| panic!("no {name} in nm's output"));
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

fn check_snapshot_on(cc: &str) {
    let dir = scratch();
    let exe = build_server(dir.path(), cc, &[]);
    let handle = symbol(&exe, "handle");
    // The one slow call, at its exit.
    let (out, marks) = snapshots(dir.path(), &exe, &[], &["--snapshot-on", "handle>5ms"]);
    assert_eq!(out, "4950 7\n");
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(mark_field(&marks[0], "why"), "lasted");
    // The slow call is the one marked: replay shows its 7 ms.
    let (line, event) = marked(&dir.path().join("trace/snapshot-1"));
    assert!(
        line.contains("handle() { /* snapshot: lasted too long */"),
        "{line}"
    );
    assert!(
        event.contains("\"name\":\"handle\",\"ph\":\"B\""),
        "{event}"
    );
    let text = run_ok(
        Command::new(ftail())
            .args(["replay", "-t", "5ms", "-d"])
            .arg(dir.path().join("trace/snapshot-1")),
    );
    assert!(text.contains("} /* handle */"), "{text}");
    // The entry address is the site's end: the function's first bytes
    // (after endbr64), at the module's page-aligned load address.
    let addr: u64 = mark_field(&marks[0], "addr").parse().unwrap();
    assert!(
        [5, 9].contains(&(addr.wrapping_sub(handle) & 0xfff)),
        "{addr:#x} is not handle ({handle:#x})"
    );
    // Every call: one snapshot a second by default, each with no limit.
    let (_, marks) = snapshots(dir.path(), &exe, &[], &["--snapshot-on", "handle"]);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(mark_field(&marks[0], "why"), "called");
    let (line, _) = marked(&dir.path().join("trace/snapshot-1"));
    assert!(line.contains("handle() { /* snapshot: called */"), "{line}");
    let (_, marks) = snapshots(
        dir.path(),
        &exe,
        &[],
        &["--snapshot-on", "handle", "--snapshot-interval", "0"],
    );
    assert_eq!(marks.len(), 100);
    // No call of another function lasts 5 ms.
    let (_, marks) = snapshots(dir.path(), &exe, &[], &["--snapshot-on", "main>500ms"]);
    assert!(marks.is_empty(), "{marks:?}");
}

#[test]
fn snapshots_on_a_call_and_on_a_slow_call_gcc() {
    check_snapshot_on("gcc");
}

#[test]
fn snapshots_on_a_call_and_on_a_slow_call_clang() {
    if have("clang-19") {
        check_snapshot_on("clang-19");
    }
}

#[test]
fn the_program_takes_a_snapshot_and_runs_without_ftail() {
    let dir = scratch();
    for cc in ["gcc", "clang-19"] {
        if !have(cc) {
            continue;
        }
        for flags in [&[][..], &["-Wl,-z,now"], &["-no-pie"]] {
            let exe = build_server(dir.path(), cc, flags);
            // Without ftail: the weak symbol is null.
            let plain = run_ok(Command::new(&exe).arg("x"));
            assert_eq!(plain, "4950 1\n", "{cc} {flags:?}");
            let (out, marks) = snapshots(dir.path(), &exe, &["x"], &[]);
            assert_eq!(out, "4950 0\n", "{cc} {flags:?}");
            assert_eq!(marks.len(), 1, "{cc} {flags:?}");
            assert_eq!(mark_field(&marks[0], "why"), "program");
            let addr: u64 = mark_field(&marks[0], "addr").parse().unwrap();
            let report = symbol(&exe, "report");
            assert!(
                [5, 9].contains(&(addr.wrapping_sub(report) & 0xfff)),
                "{cc} {flags:?}: {addr:#x} is not report ({report:#x})"
            );
            let (line, _) = marked(&dir.path().join("trace/snapshot-1"));
            assert!(
                line.contains("report() { /* snapshot: ftail_snapshot() */"),
                "{line}"
            );
        }
    }
}

#[test]
fn a_trace_with_triggered_snapshots_is_recorded_into_again() {
    let dir = scratch();
    let exe = build_server(dir.path(), "gcc", &[]);
    let (_, marks) = snapshots(dir.path(), &exe, &[], &["--snapshot-on", "handle"]);
    assert_eq!(marks.len(), 1);
    // The trace and its snapshot, mark included, move to trace.old.
    let trace = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    assert!(dir
        .path()
        .join("trace.old/snapshot-1")
        .join(ftail_abi::trigger::MARK_FILE)
        .is_file());
}
