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
    let text = run_ok(
        Command::new(ftail())
            .args(["replay", "-f", "none", "-d"])
            .arg(trace),
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
        .arg("-d")
        .arg(&trace)
        .args(opts)
        .arg("--")
        .arg(exe));
    assert!(out.status.success(), "{opts:?}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "80\n", "{opts:?}");
    trace
}

fn check_triggers(cc: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc);
    let t = "top{mid{leaf}}";
    let cases: Vec<(Vec<&str>, String)> = vec![
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
    ];
    for (opts, want) in &cases {
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
