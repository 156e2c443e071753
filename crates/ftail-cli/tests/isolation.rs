//! The traced program must not notice ftail: not in its allocator, its
//! descriptors, its signals or its exit status. Each test runs a fixture
//! traced and untraced and compares what the program itself observes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use ftail_trace::trace::{self, Trace};

const MODES: [&str; 3] = ["auto", "mark", "convert"];

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/runtime").join(name)
}

fn build(dir: &Path, cc: &str, flags: &[&str], source: &str, name: &str) -> PathBuf {
    let exe = dir.join(name);
    run_ok(
        ftail_cc(cc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(fixture(source))
            .args(["-ldl", "-lpthread"]),
    );
    exe
}

/// Records `exe args` into `dir/trace-TAG`; returns the run's output and
/// the trace.
fn record(dir: &Path, tag: &str, exe: &Path, args: &[&str], extra: &[&str]) -> (Output, Trace) {
    let tdir = dir.join(format!("trace-{tag}"));
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("-d")
        .arg(&tdir)
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(args));
    let t = trace::open(&tdir)
        .unwrap_or_else(|e| panic!("{e}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out, t)
}

/// Entries of the functions named `names` in process `p` of `t`.
fn entries_of(t: &Trace, p: usize, names: &[&str]) -> usize {
    let text = ftail_trace::replay::render(t);
    let pid = t.processes[p].pid;
    text.lines()
        .filter(|l| l.contains(&format!("[{pid:>6}]")))
        .filter(|l| {
            let call = l.rsplit("| ").next().unwrap_or("").trim_start();
            names.iter().any(|n| {
                call.starts_with(&format!("{n}()")) || call.starts_with(&format!("{n}() {{"))
            })
        })
        .count()
}

/// A program with its own `malloc`, `calloc`, `realloc` and `free`
/// (forwarding to libc's through pointers resolved in a constructor, the
/// forward a tail jump through a pointer at -O2) counts every call. Traced,
/// it must count exactly what it counts untraced — before `main` (the
/// runtime starts first: using the program's allocator there would call
/// a null pointer), in `main`, and in a forked child — and the child's
/// trace must show only the child's own allocator calls.
#[test]
fn a_program_with_its_own_malloc_never_sees_the_runtime_allocate() {
    let allocator = ["malloc", "calloc", "realloc", "free"];
    for cc in ["gcc", "clang-19"] {
        if !have(cc) {
            continue;
        }
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], "ownmalloc.c", "ownmalloc");
        let plain = run(&mut Command::new(&exe));
        assert!(plain.status.success(), "{plain:?}");
        let plain_out = String::from_utf8_lossy(&plain.stdout).into_owned();
        assert!(plain_out.contains("child calls 3\n"), "{plain_out}");
        for mode in MODES {
            let (out, t) = record(dir.path(), mode, &exe, &[], &["--tail", mode]);
            assert_eq!(out.status.code(), Some(0), "{cc} {mode}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                plain_out,
                "{cc} {mode}: the program counted other allocator calls"
            );
            assert_eq!(t.processes.len(), 2, "{cc} {mode}: parent and child");
            // The child calls malloc, realloc and free once each.
            assert_eq!(
                entries_of(&t, 1, &allocator),
                3,
                "{cc} {mode}:\n{}",
                ftail_trace::replay::render(&t)
            );
        }
    }
}

/// A child forked while another thread of the traced program holds the
/// runtime's locks (switching tracing through `ftail_ctl`, writing sites
/// live, allocating) must start with every lock free: it switches tracing
/// itself, loads a library (the loader hook takes them too) and calls a
/// traced function. Before the fork handlers, children waited for good.
#[test]
fn a_child_forked_while_the_runtime_holds_its_locks_starts_unlocked() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "forkctl.c", "forkctl");
    let (out, t) = record(dir.path(), "ctl", &exe, &["60"], &["--ctl"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "forks=60 hung=0 failed=0\n"
    );
    assert_eq!(t.processes.len(), 61, "every child records its own files");
    for p in &t.processes {
        for th in &p.threads {
            assert!(
                th.balance().is_balanced(),
                "pid {}: {:?}",
                p.pid,
                th.balance()
            );
        }
    }
}
