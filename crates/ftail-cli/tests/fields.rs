//! The columns and per-thread views uftrace users know: `-f` of replay,
//! report and graph with uftrace's field names, in the order given.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// main → a → b → c, a → c, then d and b → c from main: c is called
/// three times, b twice. Every function touches `calls`, so none is
/// folded away.
const SOURCE: &str = r#"
static volatile int calls;
__attribute__((noinline)) int c(int x) { calls++; return x + 1; }
__attribute__((noinline)) int b(int x) { calls++; return c(x) * 2; }
__attribute__((noinline)) int a(int x) { calls++; return b(x) + c(x); }
__attribute__((noinline)) int d(int x) { calls++; return x - 1; }
int main(void) { int s = a(1) + d(2) + b(3); return s & calls & 0; }
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    trace: PathBuf,
}

/// The program built without PIE, so that its functions are where `nm`
/// says they are.
fn fixture() -> Fixture {
    fixture_with(&["-O0", "-no-pie"])
}

fn fixture_with(flags: &[&str]) -> Fixture {
    let dir = scratch();
    let src = dir.path().join("abc.c");
    std::fs::write(&src, SOURCE).unwrap();
    let trace = build_and_record("gcc", &src, flags, dir.path(), "abc", "trace");
    Fixture {
        exe: dir.path().join("abc"),
        trace,
        _dir: dir,
    }
}

/// `ftail CMD -d TRACE --no-pager ARGS`: status, stdout, stderr.
fn ftail_on(f: &Fixture, cmd: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(Command::new(ftail())
        .arg(cmd)
        .arg("-d")
        .arg(&f.trace)
        .arg("--no-pager")
        .args(args));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(f: &Fixture, cmd: &str, args: &[&str]) -> String {
    let (code, out, err) = ftail_on(f, cmd, args);
    assert_eq!(code, Some(0), "ftail {cmd} {args:?}: {err}");
    out
}

/// A symbol's address as `nm` gives it, in hex without `0x`.
fn nm_address(exe: &Path, symbol: &str) -> String {
    let out = run_ok(Command::new("nm").arg(exe));
    let line = out
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(symbol))
        .unwrap_or_else(|| panic!("{symbol} not in nm's output:\n{out}"));
    let addr = line.split_whitespace().next().unwrap();
    addr.trim_start_matches('0').to_string()
}

/// The words of the column titles of `text` (the line ending in
/// `FUNCTION`).
fn header(text: &str) -> String {
    text.lines()
        .find(|l| l.ends_with("FUNCTION"))
        .unwrap_or_else(|| panic!("no titles in:\n{text}"))
        .trim_start_matches('#')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The line of `text` whose last word is `name`, split into words.
fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{text}"));
    line.split_whitespace().collect()
}

#[test]
fn report_shows_the_fields_asked_in_their_order() {
    if !have("gcc") {
        return;
    }
    let f = fixture();
    let out = ok(&f, "report", &["-f", "call,total"]);
    assert_eq!(header(&out), "CALLS TOTAL TIME FUNCTION", "{out}");
    // Calls, then total time as a value and unit, then the name.
    assert_eq!(row(&out, "c")[0], "3", "{out}");
    assert_eq!(row(&out, "b")[0], "2", "{out}");
    assert_eq!(row(&out, "c").len(), 4, "{out}");
    // uftrace's names, `none` and `all`.
    let out = ok(&f, "report", &["-f", "total-max,self-avg,call"]);
    assert_eq!(header(&out), "MAX SELF AVG CALLS FUNCTION", "{out}");
    assert_eq!(row(&out, "d")[4], "1", "{out}");
    let out = ok(&f, "report", &["-f", "none"]);
    assert_eq!(header(&out), "FUNCTION", "{out}");
    assert_eq!(row(&out, "main"), ["main"], "{out}");
    let out = ok(&f, "report", &["-f", "all"]);
    assert_eq!(
        header(&out),
        "TOTAL TIME SELF TIME CALLS AVERAGE MIN MAX SELF AVG OFF-CPU FUNCTION"
    );
    // The default is unchanged.
    let out = ok(&f, "report", &[]);
    assert_eq!(
        header(&out),
        "TOTAL TIME SELF TIME CALLS AVERAGE MIN MAX FUNCTION"
    );
    let (code, _, err) = ftail_on(&f, "report", &["-f", "total,bogus"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown report field \"bogus\""), "{err}");
}

#[test]
fn graph_shows_self_time_and_addresses() {
    if !have("gcc") || !have("nm") {
        return;
    }
    let f = fixture();
    let out = ok(&f, "graph", &["-f", "addr,call,self"]);
    assert_eq!(header(&out), "ADDRESS CALLS SELF TIME FUNCTION", "{out}");
    let main = row(&out, "main");
    assert_eq!(main[0], nm_address(&f.exe, "main"), "{out}");
    assert_eq!(main[1], "1", "{out}");
    let total = ok(&f, "graph", &["-f", "total"]);
    let self_ = ok(&f, "graph", &["-f", "self"]);
    let time = |text: &str, name: &str| row(text, name)[..2].join(" ");
    let d = |text: &str| {
        text.lines()
            .find(|l| l.trim_end().ends_with("-d"))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .unwrap()
    };
    // d calls nothing: its self time is its total.
    assert_eq!(d(&total), d(&self_), "{total}\n{self_}");
    // main's callees take some of its time.
    assert_ne!(
        time(&total, "main"),
        time(&self_, "main"),
        "{total}\n{self_}"
    );
    let out = ok(&f, "graph", &["-f", "none"]);
    assert_eq!(header(&out), "FUNCTION", "{out}");
    let (code, _, err) = ftail_on(&f, "graph", &["-f", "avg"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown graph field \"avg\""), "{err}");
}

#[test]
fn replay_takes_elapsed_addr_none_and_added_fields() {
    if !have("gcc") || !have("nm") {
        return;
    }
    let f = fixture();
    let out = ok(&f, "replay", &["-f", "elapsed,addr"]);
    assert_eq!(header(&out), "ELAPSED TIME ADDRESS FUNCTION", "{out}");
    let main_line = out
        .lines()
        .find(|l| l.ends_with("| main() {"))
        .unwrap_or_else(|| panic!("{out}"));
    let words: Vec<&str> = main_line.split_whitespace().collect();
    assert_eq!(words[1], nm_address(&f.exe, "main"), "{out}");
    // Elapsed is the time since the trace began, as `-f time` shows it.
    let times = ok(&f, "replay", &["-f", "time"]);
    let time_of_main = times
        .lines()
        .find(|l| l.ends_with("| main() {"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(words[0], time_of_main, "{out}\n{times}");
    // `+` adds to duration,tid; `none` leaves only the functions.
    let out = ok(&f, "replay", &["-f", "+elapsed"]);
    assert_eq!(header(&out), "DURATION TID ELAPSED TIME FUNCTION", "{out}");
    let out = ok(&f, "replay", &["-f", "none"]);
    assert_eq!(header(&out), "FUNCTION", "{out}");
    assert!(out.lines().any(|l| l == "| main() {"), "{out}");
    let (code, _, err) = ftail_on(&f, "replay", &["-f", "self"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field \"self\""), "{err}");
}

/// main starts a thread (worker → leaf ×2), then forks a child process
/// (main → child → leaf).
const TASKS: &str = r#"
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile int calls;
__attribute__((noinline)) int leaf(int x) { calls++; return x + 1; }
__attribute__((noinline)) void *worker(void *p) { leaf(1); leaf(2); return p; }
__attribute__((noinline)) int child(void) { return leaf(3) - 4; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, 0);
    pid_t pid = fork();
    if (pid == 0) _exit(child());
    waitpid(pid, 0, 0);
    return calls & 0;
}
"#;

fn tasks_fixture() -> Fixture {
    let dir = scratch();
    let src = dir.path().join("mt.c");
    std::fs::write(&src, TASKS).unwrap();
    // Rows counted from the program's own functions.
    let trace = build_and_record_with(
        "gcc",
        &src,
        &["-O0", "-pthread"],
        dir.path(),
        "mt",
        "trace",
        &["--no-libcall"],
    );
    Fixture {
        exe: dir.path().join("mt"),
        trace,
        _dir: dir,
    }
}

#[test]
fn report_task_shows_one_row_per_thread() {
    if !have("gcc") {
        return;
    }
    let f = tasks_fixture();
    let out = ok(&f, "report", &["--task"]);
    assert_eq!(
        header(&out.replace("TASK NAME", "TASK NAME FUNCTION")),
        "TOTAL TIME SELF TIME NUM FUNCS PROCESS TID TASK NAME FUNCTION",
        "{out}"
    );
    // Per row: total, unit, self, unit, calls, process, tid, name.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let parent = rows.iter().find(|r| r[5] == r[6] && r[4] == "1");
    let parent = parent.unwrap_or_else(|| panic!("no row of main alone:\n{out}"));
    let thread = rows.iter().find(|r| r[5] == parent[5] && r[6] != parent[6]);
    let thread = thread.unwrap_or_else(|| panic!("no second thread:\n{out}"));
    assert_eq!(thread[4], "3", "worker and two leaf calls:\n{out}");
    let child = rows.iter().find(|r| r[5] != parent[5]);
    let child = child.unwrap_or_else(|| panic!("no child process:\n{out}"));
    assert_eq!(child[4], "3", "main, child and leaf:\n{out}");
    assert_eq!(child[5], child[6], "{out}");
    // Only the calls shown count.
    let out = ok(&f, "report", &["--task", "-N", "leaf"]);
    assert!(
        out.lines().any(|l| l.split_whitespace().nth(4) == Some("1")
            && l.split_whitespace().nth(5) != l.split_whitespace().nth(6)),
        "worker alone:\n{out}"
    );
    let (code, _, err) = ftail_on(&f, "report", &["--task", "--diff", "x"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn graph_task_draws_threads_and_child_processes_under_their_process() {
    if !have("gcc") {
        return;
    }
    let f = tasks_fixture();
    let out = ok(&f, "graph", &["--task"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>().join(" "),
        "# TOTAL TIME SELF TIME TID TASK NAME",
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    // The process, its thread (` +-`), then its child process (` +----`).
    let name = |l: &str| l.split_once("]  ").unwrap().1.to_string();
    let tid = |l: &str| {
        l.split('[')
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(!name(lines[1]).starts_with(' '), "{out}");
    assert!(
        name(lines[2]).starts_with(" +-") && !name(lines[2]).starts_with(" +--"),
        "{out}"
    );
    assert!(name(lines[3]).starts_with(" +----"), "{out}");
    let report = ok(&f, "report", &["--task"]);
    for l in &lines[1..] {
        assert!(
            report
                .lines()
                .any(|r| r.split_whitespace().nth(6) == Some(&tid(l))),
            "{l} not in:\n{report}"
        );
    }
}

/// `abc.c:N`, N the line of SOURCE where `function` is defined.
fn defined_at(function: &str) -> String {
    let n = SOURCE
        .lines()
        .position(|l| l.contains(&format!("int {function}(")))
        .unwrap_or_else(|| panic!("{function} not in the source"));
    format!("abc.c:{}]", n + 1)
}

#[test]
fn report_and_graph_srcline_name_where_each_function_is() {
    if !have("gcc") {
        return;
    }
    let f = fixture_with(&["-O0", "-g"]);
    let report = ok(&f, "report", &["--srcline", "-f", "call"]);
    assert_eq!(
        header(&report.replace("[SOURCE]", "FUNCTION")),
        "CALLS FUNCTION FUNCTION"
    );
    let graph = ok(&f, "graph", &["--srcline"]);
    assert!(graph.contains(" FUNCTION [SOURCE]\n"), "{graph}");
    for func in ["main", "a", "b", "c", "d"] {
        let at = defined_at(func);
        let in_report = report
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(func))
            .unwrap_or_else(|| panic!("no {func} in:\n{report}"));
        assert!(in_report.ends_with(&at), "{func} at {at}:\n{report}");
        for l in graph.lines().filter(|l| l.contains(&format!("-{func} ["))) {
            assert!(l.ends_with(&at), "{func} at {at}:\n{graph}");
        }
    }
    assert!(graph.contains("main ["), "{graph}");
    // Without the option, no source.
    assert!(!ok(&f, "report", &[]).contains("abc.c"));
    assert!(!ok(&f, "graph", &[]).contains("abc.c"));
}

/// `apply` takes a function pointer, `pick` returns one.
const POINTERS: &str = r#"
static volatile int calls;
__attribute__((noinline)) int twice(int x) { calls++; return 2 * x; }
__attribute__((noinline)) int apply(int (*f)(int), int x) { calls++; return f(x); }
__attribute__((noinline)) int (*pick(int n))(int) { calls++; return n ? twice : 0; }
int main(void) { return apply(pick(1), 3) & calls & 0; }
"#;

#[test]
fn pointers_to_functions_show_as_their_names() {
    if !have("gcc") {
        return;
    }
    let dir = scratch();
    let src = dir.path().join("fp.c");
    std::fs::write(&src, POINTERS).unwrap();
    let exe = dir.path().join("fp");
    run_ok(ftail_cc("gcc").args(["-O0", "-o"]).arg(&exe).arg(&src));
    let trace = dir.path().join("trace");
    let spec = ["-A", "apply@arg1/p,arg2/p", "-R", "pick@retval/p"];
    let (out, _) = record_trace(&trace, &exe, &[], &spec);
    assert!(out.status.success(), "{out:?}");
    let f = Fixture {
        exe,
        trace,
        _dir: dir,
    };
    let text = ok(&f, "replay", &["-f", "none"]);
    let lines = tree(&text);
    assert!(lines.contains(&"  pick() = &twice;".to_string()), "{text}");
    // A pointer to no function stays an address.
    assert!(
        lines.contains(&"  apply(&twice, 0x3) {".to_string()),
        "{text}"
    );
}

/// The function column of replay's lines (after `| `).
fn tree(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once("| ").map(|(_, f)| f.trim_end().to_string()))
        .collect()
}
