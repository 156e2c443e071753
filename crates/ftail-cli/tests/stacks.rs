//! Programs that switch stacks (`makecontext`, `swapcontext`,
//! `setcontext`) under `ftail record`: the coroutine's frames are shown
//! where they ran, frames switched out are not taken for gone, and what
//! runs after a switch nests where it ran. The fixture
//! (`tests/runtime/stacks.c`) is built with gcc -O0, gcc -O2 and clang-19
//! -O2 and run with its coroutine stacks in static storage, from malloc,
//! from mmap and in `main`'s frame (above the frames of the function that
//! switches, so CFA order alone looks like a longjmp), in every tail mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use ftail_trace::trace::{self, Trace};

const MODES: [&str; 3] = ["auto", "mark", "convert"];
const STORAGES: [&str; 4] = ["static", "heap", "mmap", "local"];
const SCENARIOS: [&str; 6] = ["suspend", "link", "pingpong", "tail", "orphan", "setctx"];

fn build(dir: &Path, cc: &str, opt: &str) -> PathBuf {
    let exe = dir.join(format!("stacks-{cc}{opt}"));
    run_ok(
        ftail_cc(cc)
            .arg(opt)
            .arg("-o")
            .arg(&exe)
            .arg(repo().join("tests/runtime/stacks.c")),
    );
    exe
}

/// Records `exe args` in `tail` mode; returns the traced run's output and
/// the trace.
fn record(dir: &Path, exe: &Path, args: &[&str], tail: &str) -> (Output, Trace) {
    record_trace(
        &dir.join("trace"),
        exe,
        args,
        &["--no-libcall", "--tail", tail],
    )
}

/// The replay's function column: the call tree without times and tids.
fn tree(t: &Trace) -> String {
    ftail_trace::replay::render(t)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once("| ").map_or(l, |(_, f)| f).to_string() + "\n")
        .collect()
}

/// The call tree `scenario` must give. `tail`: yield_to's swapcontext
/// call is a tail call (built with -O2), so yield_to ends with it.
fn expected(scenario: &str, tail: bool) -> String {
    let body = match scenario {
        // bar is switched out for good; a new coroutine on the same stack
        // (makecontext again) does not resume it.
        "suspend" => {
            "
  foo() {
    bar() {
      leaf();
    } /* bar (switched out) */
    bar() {
      leaf();
    } /* bar (switched out) */
  } /* foo */"
        }
        "link" => {
            "
  foo() {
    bar() {
      leaf();
    } /* bar */
  } /* foo */"
        }
        "pingpong" => {
            "
  foo() {
    bar() {
      leaf();
    } /* bar (switched out) */
    bar() { /* resumed */
      leaf();
    } /* bar (switched out) */
    bar() { /* resumed */
      leaf();
    } /* bar (switched out) */
    bar() { /* resumed */
    } /* bar */
  } /* foo */"
        }
        "tail" => {
            "
  foo() {
    yield_to() {
      bar() {
        leaf();
        yield_to() {
        } /* yield_to (switched out) */
      } /* bar (switched out) */
    } /* yield_to{T} */
    yield_to() {
      bar() { /* resumed */
        yield_to() { /* resumed */
        } /* yield_to{T} */
        leaf();
        yield_to() {
        } /* yield_to (switched out) */
      } /* bar (switched out) */
    } /* yield_to{T} */
    yield_to() {
      bar() { /* resumed */
        yield_to() { /* resumed */
        } /* yield_to{T} */
      } /* bar */
    } /* yield_to{T} */
  } /* foo */"
        }
        // bar switches to qux, which nests where it ran; qux returns
        // through uc_link to foo, not to bar.
        "orphan" => {
            "
  foo() {
    bar() {
      leaf();
      qux() {
        leaf();
      } /* qux */
    } /* bar (switched out) */
  } /* foo */"
        }
        // bar's setcontext goes back to a context main saved: foo's frame
        // is gone, as after a longjmp.
        "setctx" => {
            "
  foo() {
    bar() {
      leaf();
    } /* bar (switched out) */
  } /* foo (unwound) */"
        }
        _ => unreachable!("{scenario}"),
    };
    let body = body.replace("{T}", if tail { " (tail call)" } else { "" });
    // Afterwards, a longjmp on the main stack still closes what it left.
    format!(
        "main() {{{body}
  deep() {{
    deep() {{
      deep() {{
        deep() {{
        }} /* deep (unwound) */
      }} /* deep (unwound) */
    }} /* deep (unwound) */
  }} /* deep (unwound) */
  baz();
}} /* main */
"
    )
}

fn check(cc: &str, opt: &str) {
    if !have(cc) {
        return;
    }
    let dir = scratch();
    let exe = build(dir.path(), cc, opt);
    for storage in STORAGES {
        for scenario in SCENARIOS {
            let args = [storage, scenario];
            let plain = run(Command::new(&exe).args(args));
            assert_eq!(plain.status.code(), Some(0), "{args:?}");
            let want = expected(scenario, opt != "-O0");
            for mode in MODES {
                let what = format!("{cc} {opt} {storage} {scenario} --tail={mode}");
                let (out, t) = record(dir.path(), &exe, &args, mode);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.stdout, plain.stdout, "{what}: traced output differs");
                let threads = &t.processes[0].threads;
                assert_eq!(threads.len(), 1, "{what}");
                let b = threads[0].balance();
                assert!(b.is_balanced(), "{what}: {b:?}");
                assert_eq!(tree(&t), want, "{what}");
            }
        }
    }
}

#[test]
fn coroutines_nest_where_they_ran_gcc_o0() {
    check("gcc", "-O0");
}

#[test]
fn coroutines_nest_where_they_ran_gcc_o2() {
    check("gcc", "-O2");
}

#[test]
fn coroutines_nest_where_they_ran_clang_o2() {
    check("clang-19", "-O2");
}

/// A coroutine and the main stack each throw and catch C++ exceptions
/// (through a tail call: a convert thunk under `--tail=convert`) while the
/// other is switched out inside a converted tail call to swapcontext: the
/// unwinder finds each thunk's side-stack entry wherever it lies, and
/// each thunk finds its own when its callee returns.
#[test]
fn exceptions_while_another_stack_is_switched_out() {
    for (cxx, opt) in [("g++", "-O0"), ("g++", "-O2"), ("clang++-19", "-O2")] {
        if !have(cxx) {
            continue;
        }
        let dir = scratch();
        let exe = dir.path().join("throw");
        run_ok(
            ftail_cc(cxx)
                .arg(opt)
                .arg("-o")
                .arg(&exe)
                .arg(repo().join("tests/runtime/stacks_throw.cc")),
        );
        let plain = run(&mut Command::new(&exe));
        assert_eq!(plain.status.code(), Some(0));
        for mode in MODES {
            let what = format!("{cxx} {opt} --tail={mode}");
            let (out, t) = record(dir.path(), &exe, &[], mode);
            assert_eq!(out.status.code(), Some(0), "{what}");
            assert_eq!(out.stdout, plain.stdout, "{what}");
            let b = t.processes[0].threads[0].balance();
            assert!(b.is_balanced(), "{what}: {b:?}");
            let tail = opt != "-O0";
            // via_tail ends with the exception: as a marked tail caller, or
            // as an unwound frame (its thunk's landing is skipped).
            let via = if tail && mode != "convert" {
                " (tail call)"
            } else {
                " (unwound)"
            };
            let want = throw_tree()
                .replace("{T}", if tail { " (tail call)" } else { "" })
                .replace("{V}", via);
            assert_eq!(tree(&t), want, "{what}");
        }
    }
}

fn throw_tree() -> String {
    let catcher = |indent: &str| {
        format!(
            "{indent}catcher() {{
{indent}  via_tail() {{
{indent}    thrower() {{
{indent}    }} /* thrower (unwound) */
{indent}  }} /* via_tail{{V}} */
{indent}}} /* catcher */
"
        )
    };
    let (main, co) = (catcher("  "), catcher("      "));
    format!(
        "main() {{
  yield_to() {{
    coro() {{
{co}      yield_to() {{
      }} /* yield_to (switched out) */
    }} /* coro (switched out) */
  }} /* yield_to{{T}} */
{main}  yield_to() {{
    coro() {{ /* resumed */
      yield_to() {{ /* resumed */
      }} /* yield_to{{T}} */
{co}      yield_to() {{
      }} /* yield_to (switched out) */
    }} /* coro (switched out) */
  }} /* yield_to{{T}} */
{main}  yield_to() {{
    coro() {{ /* resumed */
      yield_to() {{ /* resumed */
      }} /* yield_to{{T}} */
    }} /* coro */
  }} /* yield_to{{T}} */
{main}}} /* main */
"
    )
}

/// Two stacks that switch to each other through converted tail calls
/// leave each other's side-stack entries in the middle; freed ones are
/// taken again, so 1000 rounds fit in 16 entries and every yield_to still
/// ends with its tail call.
#[test]
fn a_long_ping_pong_keeps_the_side_stack_small() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", "-O2");
    for storage in ["heap", "local"] {
        for mode in ["auto", "convert"] {
            let what = format!("{storage} --tail={mode}");
            let tdir = dir.path().join("trace");
            let out = run(Command::new(ftail())
                .env("FTAIL_STACK_ENTRIES", "16")
                .arg("record")
                .arg("--no-sched")
                .arg("-d")
                .arg(&tdir)
                .args(["--no-libcall", "--tail", mode, "--"])
                .arg(&exe)
                .args([storage, "tail", "1000"]));
            assert_eq!(out.status.code(), Some(0), "{what}");
            let t = trace::open(&tdir).unwrap();
            let b = t.processes[0].threads[0].balance();
            assert!(b.is_balanced(), "{what}: {b:?}");
            let text = tree(&t);
            let tails = text.matches("} /* yield_to (tail call) */").count();
            assert_eq!(tails, 2 * 1000 + 1, "{what}");
            assert_eq!(b.unwound, 4, "{what}: only deep()'s frames: {b:?}");
        }
    }
}

/// The fixture, traced through converted tail calls to swapcontext on both
/// stacks, runs under the emulated shadow stack (`tests/shadowstack`,
/// which gives each context a shadow stack of its own) without a
/// mismatch: every call the runtime makes is matched by its own ret.
#[test]
fn every_ret_matches_its_call_across_context_switches() {
    let dir = scratch();
    let checker = dir.path().join("shadowstack");
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&checker)
            .arg(repo().join("tests/shadowstack/shadowstack.c")),
    );
    let exe = build(dir.path(), "gcc", "-O2");
    let summary = |out: &Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("calls="))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    };
    // Untraced, the checker follows the switches (a check of the checker).
    let plain = run(Command::new(&checker).arg(&exe).args(["heap", "tail"]));
    let plain = summary(&plain);
    assert!(plain.contains(" switches=6 mismatches=0"), "{plain}");
    let tdir = dir.path().join("ss");
    std::fs::create_dir_all(&tdir).unwrap();
    let out = run(Command::new(&checker)
        .arg(&exe)
        .args(["heap", "tail"])
        .env("LD_PRELOAD", runtime())
        .env("FTAIL_DIR", &tdir)
        .env("FTAIL_TAIL", "convert"));
    let traced = summary(&out);
    assert!(
        traced.contains(" switches=6 mismatches=0"),
        "{traced}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = trace::open(&tdir).unwrap();
    assert!(t.processes[0].threads[0].balance().is_balanced());
    assert!(t.processes[0].info["converted_tails"] != "0");
}

/// A coroutine on an 8 KiB stack that uses most of it, then takes the
/// runtime's slow paths at its deepest (after a switch, buffer
/// extensions, and a thread's first event when its set-up happens
/// there): they run on the thread's spare stack, so the traced run uses
/// only a few words more of the coroutine stack than the untraced one
/// (the XSAVE area alone would overflow it).
#[test]
fn a_small_coroutine_stack_sees_only_the_fast_paths() {
    let used = |out: &Output| -> u64 {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let n = text.strip_prefix("used ").and_then(|t| t.split(' ').next());
        n.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    };
    for (cc, opt) in [("gcc", "-O2"), ("clang-19", "-O2")] {
        if !have(cc) {
            continue;
        }
        let dir = scratch();
        let exe = dir.path().join("smallstack");
        run_ok(
            ftail_cc(cc)
                .arg(opt)
                .arg("-o")
                .arg(&exe)
                .arg(repo().join("tests/runtime/smallstack.c"))
                .arg("-lpthread"),
        );
        let plain = used(&run(&mut Command::new(&exe)));
        for mode in MODES {
            for thread in [false, true] {
                let what = format!("{cc} {opt} --tail={mode} thread={thread}");
                let tdir = dir.path().join("trace");
                let mut cmd = Command::new(ftail());
                cmd.arg("record")
                    .arg("--no-sched")
                    .arg("-d")
                    .arg(&tdir)
                    .args(["--no-libcall", "--tail", mode]);
                if thread {
                    // The thread's first traced event is at the deepest
                    // point of the coroutine.
                    cmd.args(["-N", "thread_start", "-N", "bar", "-N", "dig"]);
                }
                cmd.arg("--").arg(&exe);
                if thread {
                    cmd.arg("thread");
                }
                let out = run(&mut cmd);
                assert_eq!(out.status.code(), Some(0), "{what}");
                let traced = used(&out);
                assert!(
                    traced <= plain + 256,
                    "{what}: {traced} bytes, untraced {plain}"
                );
                let t = trace::open(&tdir).unwrap();
                for th in &t.processes[0].threads {
                    assert!(th.balance().is_balanced(), "{what}");
                }
            }
        }
    }
}

/// Five threads ping-pong with coroutines through tail calls to
/// swapcontext while a timer signal runs traced code every 100 us,
/// landing inside the runtime's switch bookkeeping, its slow paths and
/// the switches themselves: nothing is taken for gone, every yield_to
/// ends with its tail call, every thread stays balanced.
#[test]
fn a_timer_signal_during_switches_breaks_nothing() {
    let dir = scratch();
    let exe = dir.path().join("signals");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/runtime/stacks_signals.c"))
            .arg("-lpthread"),
    );
    for mode in ["auto", "convert"] {
        let tdir = dir.path().join("trace");
        let out = run(Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&tdir)
            .args(["--tail", mode, "--buffer-events", "8000000", "--"])
            .arg(&exe));
        assert_eq!(out.status.code(), Some(0), "{mode}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done 1\n", "{mode}");
        let t = trace::open(&tdir).unwrap();
        assert_eq!(t.processes[0].threads.len(), 5, "{mode}");
        for th in &t.processes[0].threads {
            let b = th.balance();
            assert!(b.is_balanced(), "{mode} tid {}: {b:?}", th.tid);
            assert_eq!(b.unwound, 0, "{mode} tid {}: {b:?}", th.tid);
            assert_eq!(th.lost, 0, "{mode}");
        }
        let text = tree(&t);
        let calls = text.matches("yield_to() {\n").count();
        let ended = text.matches("} /* yield_to (tail call) */").count();
        assert_eq!(calls, 5 * 3 * (2 * 10_000 + 1), "{mode}");
        assert_eq!(ended, calls, "{mode}");
    }
}

/// Three thousand coroutines under a round-robin scheduler: each one's
/// frames are parked and resumed by stack, never taken for another's.
/// With a parked store of 64 frames, most are dropped (the oldest
/// stacks' first), and the trace still stays balanced.
#[test]
fn thousands_of_coroutines_each_resume_their_own_frames() {
    let dir = scratch();
    let exe = dir.path().join("many");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/runtime/many_coroutines.c")),
    );
    let (n, rounds) = (3000u64, 3u64);
    let args = [n.to_string(), rounds.to_string()];
    let plain = run(Command::new(&exe).args(&args));
    for entries in [None, Some("64")] {
        let tdir = dir.path().join("trace");
        let mut cmd = Command::new(ftail());
        if let Some(e) = entries {
            cmd.env("FTAIL_STACK_ENTRIES", e);
        }
        let out = run(cmd
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&tdir)
            .arg("--no-libcall")
            .arg("--")
            .arg(&exe)
            .args(&args));
        assert_eq!(out.status.code(), Some(0), "{entries:?}");
        assert_eq!(out.stdout, plain.stdout, "{entries:?}");
        let t = trace::open(&tdir).unwrap();
        let b = t.processes[0].threads[0].balance();
        assert!(b.is_balanced(), "{entries:?}: {b:?}");
        if entries.is_none() {
            assert_eq!(b.unwound, 0, "{b:?}");
            assert_eq!(b.suspended, n * rounds, "{b:?}");
            assert_eq!(b.resumed, n * rounds, "{b:?}");
            // main, then each body and its leaf calls.
            assert_eq!(b.entries, 1 + n + n * rounds, "{b:?}");
            assert_eq!(b.exits, b.entries, "{b:?}");
        }
    }
}
