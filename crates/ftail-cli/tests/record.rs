//! `ftail record` end to end: programs built through `ftail cc` run under
//! the runtime with every site patched; their output and exit status are
//! those of the untraced run and every thread's trace is balanced.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use ftail_abi::trace::EventKind;
use ftail_trace::trace::{self, Balance, Trace};

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/runtime").join(name)
}

fn build(dir: &Path, cc: &str, flags: &[&str], sources: &[PathBuf], name: &str) -> PathBuf {
    let exe = dir.join(name);
    run_ok(
        ftail_cc(cc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .args(sources)
            .arg("-lpthread"),
    );
    exe
}

/// Records `exe args`; returns the traced run's output and the trace.
fn record(dir: &Path, exe: &Path, args: &[&str], extra: &[&str]) -> (Output, Trace) {
    record_trace(&dir.join("trace"), exe, args, extra)
}

fn untraced(exe: &Path, args: &[&str]) -> Output {
    run(Command::new(exe).args(args))
}

fn totals(t: &Trace) -> Balance {
    let mut b = Balance::default();
    for th in t.processes.iter().flat_map(|p| &p.threads) {
        let x = th.balance();
        b.entries += x.entries;
        b.exits += x.exits;
        b.tail_exits += x.tail_exits;
        b.unwound += x.unwound;
        b.truncated += x.truncated;
        b.unmatched += x.unmatched;
        b.open_at_end += x.open_at_end;
    }
    b
}

fn assert_balanced(t: &Trace) {
    for p in &t.processes {
        for th in &p.threads {
            let b = th.balance();
            assert!(b.is_balanced(), "pid {} tid {}: {b:?}", p.pid, th.tid);
            assert!(th.damage.is_none(), "{:?}", th.damage);
        }
    }
}

fn replay(t: &Trace) -> String {
    ftail_trace::replay::render(t)
}

fn check_shapes(cc: &str) {
    if !have(cc) {
        return;
    }
    let dir = scratch();
    let shapes = repo().join("tests/shapes");
    let exe = build(
        dir.path(),
        cc,
        &["-O2"],
        &[shapes.join("shapes.c"), shapes.join("shapes_main.c")],
        "shapes",
    );
    let plain = untraced(&exe, &[]);
    for mode in MODES {
        let (out, t) = record(dir.path(), &exe, &[], &["--tail", mode]);
        assert_eq!(out.stdout, plain.stdout, "{mode}: traced output differs");
        assert_eq!(out.status.code(), Some(0), "{mode}");
        check_shapes_trace(&t, mode);
    }
}

const MODES: [&str; 3] = ["auto", "mark", "convert"];

fn check_shapes_trace(t: &Trace, mode: &str) {
    assert_balanced(t);
    let converted: u64 = t.processes[0].info["converted_tails"].parse().unwrap();
    match mode {
        "mark" => assert_eq!(converted, 0),
        // printf, strlen, the indirect tails, eight() and by_value()...
        _ => assert!(converted >= 5, "{mode}: {converted} converted"),
    }
    let text = replay(t);
    // Tail calls into traced callees end when the callee returns; split()
    // tail-calls itself (a jump to its own entry site).
    assert!(
        text.contains("} /* split (tail call) */"),
        "{mode}:\n{text}"
    );
    for f in ["tail_direct", "tail_reg", "tail_member", "tail_slot"] {
        let open = format!("| {}{f}() {{", "  ");
        assert!(text.contains(&open), "{f} not shown with a callee:\n{text}");
        assert!(
            text.contains(&format!("}} /* {f} (tail call) */")),
            "{f}:\n{text}"
        );
    }
    let b = totals(t);
    assert!(b.tail_exits >= 4, "{b:?}");
    assert_eq!(b.entries, b.exits + b.tail_exits + b.unwound);
    if mode != "mark" {
        // Exact even into untraced libc: the printf tail ends by itself.
        assert!(
            text.contains("tail_printf();") || text.contains("} /* tail_printf (tail call) */"),
            "{text}"
        );
        assert!(
            text.contains("tail_strlen();") || text.contains("} /* tail_strlen (tail call) */"),
            "{text}"
        );
    }
}

#[test]
fn shapes_traced_gcc() {
    check_shapes("gcc");
}

#[test]
fn shapes_traced_clang() {
    check_shapes("clang-19");
}

#[test]
fn threads_each_record_their_own_balanced_calls() {
    for cc in compilers() {
        for mode in MODES {
            check_threads(cc, mode);
        }
    }
}

/// gcc, and clang-19 where it is installed.
fn compilers() -> Vec<&'static str> {
    ["gcc", "clang-19"]
        .into_iter()
        .filter(|cc| have(cc))
        .collect()
}

fn check_threads(cc: &str, mode: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc, &["-O2"], &[fixture("threads.c")], "threads");
    let (out, t) = record(dir.path(), &exe, &[], &["--tail", mode]);
    assert_eq!(out.stdout, untraced(&exe, &[]).stdout);
    assert_balanced(&t);
    let threads = &t.processes[0].threads;
    assert_eq!(threads.len(), 9, "main and 8 workers");
    // Per worker: worker() itself, fib(15)'s 1973 calls, and 1000 tail()
    // each tail-calling leaf().
    for th in threads.iter().filter(|th| th.tid != t.processes[0].pid) {
        let b = th.balance();
        assert_eq!(b.entries, 1 + 1973 + 2000, "{cc} tid {}: {b:?}", th.tid);
        assert_eq!(b.tail_exits, 1000, "{cc} tid {}: {b:?}", th.tid);
    }
}

#[test]
fn longjmp_signals_fork_and_exit_stay_balanced() {
    for cc in compilers() {
        for mode in MODES {
            check_unwind(cc, mode);
        }
    }
}

fn check_unwind(cc: &str, mode: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc, &["-O2"], &[fixture("unwind.c")], "unwind");
    let plain = untraced(&exe, &[]);
    let (out, t) = record(dir.path(), &exe, &[], &["--tail", mode]);
    assert_eq!(out.stdout, plain.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status of the program is ftail's"
    );
    assert_eq!(
        t.processes.len(),
        2,
        "the forked child records into its own files"
    );
    assert_balanced(&t);
    let text = replay(&t);
    assert!(text.contains("deepest (unwound)"), "{text}");
    assert!(text.contains("on_signal() {"), "traced handler:\n{text}");
    assert!(text.contains("child_work()"), "{text}");
    let b = totals(&t);
    // Each of the 5 longjmps leaves middle() and deepest() behind.
    assert!(b.unwound >= 10, "{b:?}");
    if mode != "mark" {
        // raise_it() tail-calls raise(), which is not traced: converted,
        // so each raise_it() ends when raise() returns and the second one
        // is not nested in the first.
        let opens: Vec<usize> = text
            .lines()
            .filter(|l| l.ends_with("raise_it() {"))
            .map(|l| l.len())
            .collect();
        assert_eq!(opens.len(), 2, "{text}");
        assert_eq!(opens[0], opens[1], "{cc} {mode}: nested raise_it:\n{text}");
    }
}

#[test]
fn cxx_exceptions_through_traced_frames() {
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        check_exceptions(cxx);
    }
}

fn check_exceptions(cxx: &str) {
    let dir = scratch();
    let exe = dir.path().join("exc");
    run_ok(
        ftail_cc(cxx)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(fixture("exceptions.cc")),
    );
    let plain = untraced(&exe, &[]).stdout;
    for (mode, extra) in [
        ("auto", None),
        ("mark", None),
        ("convert", None),
        ("auto", Some("*thrower*")),
    ] {
        let mut args = vec![cxx, "--tail", mode];
        if let Some(f) = extra {
            args.extend(["-N", f]);
        }
        let (out, t) = record(dir.path(), &exe, &[], &args[1..]);
        assert_eq!(out.stdout, plain, "{args:?}");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_balanced(&t);
        let text = replay(&t);
        let info = &t.processes[0].info;
        assert_eq!(info["tail"], mode, "{args:?}");
        let converted: u64 = info["converted_tails"].parse().unwrap();
        // The exceptions crossed convert thunks (their unwind info is
        // registered; via_chain's and via_tail's are chained on one stack
        // slot under convert), and the tail callers ended when they did.
        if mode == "convert" {
            assert!(converted >= 2, "{args:?}: {converted}");
            assert!(text.contains("via_chain (unwound)"), "{args:?}\n{text}");
        }
        if extra.is_some() {
            assert!(converted >= 1, "{args:?}: {converted}");
            assert!(text.contains("via_tail (unwound)"), "{args:?}\n{text}");
        }
        if extra.is_none() {
            assert!(text.contains("thrower (unwound)"), "{args:?}");
        }
    }
}

#[test]
fn deep_recursion_degrades_to_lost_events() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O0"], &[fixture("deep.c")], "deep");
    let (out, t) = record(dir.path(), &exe, &[], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000000\n");
    assert_balanced(&t);
    let lost: u64 = t.processes[0].threads.iter().map(|th| th.lost).sum();
    assert!(lost > 900_000, "lost {lost}");
}

#[test]
fn sigkill_keeps_what_was_recorded() {
    let dir = scratch();
    // -O0: every recursive call of work() stays a call.
    let exe = build(
        dir.path(),
        "gcc",
        &["-O0"],
        &[fixture("killed.c")],
        "killed",
    );
    let (out, t) = record(dir.path(), &exe, &[], &[]);
    // The pid ftail record was started as is the program's: it is the
    // one killed.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    let b = totals(&t);
    // main, inner and 100 nested work() calls, then die() and its
    // library calls getpid() and kill(): all recorded.
    assert_eq!(b.entries, 105, "{b:?}");
    assert_eq!(
        b.open_at_end, 4,
        "main, inner, die and kill were open: {b:?}"
    );
}

#[test]
fn filters_and_depth_limit_what_is_recorded() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("threads.c")],
        "threads",
    );
    let (_, t) = record(dir.path(), &exe, &[], &["-F", "fib", "-F", "main"]);
    assert_balanced(&t);
    let text = replay(&t);
    assert!(text.contains("fib()") && !text.contains("leaf()"), "{text}");
    let (_, t) = record(dir.path(), &exe, &[], &["-N", "fib"]);
    assert!(!replay(&t).contains("fib()"));
    let (_, t) = record(dir.path(), &exe, &[], &["-D", "2"]);
    assert_balanced(&t);
    let deepest = replay(&t)
        .lines()
        .filter(|l| l.contains("fib()"))
        .map(|l| l.find("fib").unwrap())
        .max();
    let shallow = replay(&t)
        .lines()
        .filter(|l| l.contains("worker()"))
        .map(|l| l.find("worker").unwrap())
        .max();
    assert_eq!(
        deepest.unwrap(),
        shallow.unwrap() + 2,
        "only one level below worker"
    );
}

#[test]
fn an_existing_trace_is_kept_as_old() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("killed.c")],
        "killed",
    );
    record(dir.path(), &exe, &[], &[]);
    record(dir.path(), &exe, &[], &[]);
    assert!(dir.path().join("trace.old").is_dir());
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(repo().join("crates"))
        .arg("true"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not look like a trace directory"));
}

#[test]
fn return_addresses_are_untouched() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("retaddr.c")],
        "retaddr",
    );
    let plain = String::from_utf8_lossy(&untraced(&exe, &[]).stdout).into_owned();
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    for mode in MODES {
        let (out, t) = record(dir.path(), &exe, &[], &["--tail", mode]);
        assert_balanced(&t);
        let traced = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(line(&traced, "normal"), line(&plain, "normal"), "{mode}");
        let tail_same = line(&traced, "tail") == line(&plain, "tail");
        match mode {
            // where() is traced, so auto marks the tail call.
            "auto" | "mark" => assert!(tail_same, "{mode}: {traced} vs {plain}"),
            _ => assert!(!tail_same, "convert: the thunk is the tail callee's caller"),
        }
    }
}

/// Runs `exe` under the emulated shadow stack (`tests/shadowstack`) with the
/// runtime preloaded; returns the checker's summary line.
fn shadow_stack_check(dir: &Path, checker: &Path, exe: &Path, mode: &str) -> String {
    let tdir = dir.join(format!("ss-{mode}"));
    std::fs::create_dir_all(&tdir).unwrap();
    let out = run(Command::new(checker)
        .arg(exe)
        .env("LD_PRELOAD", runtime())
        .env("FTAIL_DIR", &tdir)
        .env("FTAIL_TAIL", mode));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = text
        .lines()
        .find(|l| l.starts_with("calls="))
        .unwrap_or_else(|| panic!("no summary: {text}{}", String::from_utf8_lossy(&out.stderr)))
        .to_string();
    let t = trace::open(&tdir).unwrap();
    assert!(
        totals(&t).entries > 0,
        "{mode}: nothing traced under the checker"
    );
    format!("{summary}\n{}", String::from_utf8_lossy(&out.stderr))
}

#[test]
fn every_ret_matches_its_call_under_an_emulated_shadow_stack() {
    let dir = scratch();
    let checker = dir.path().join("shadowstack");
    let src = repo().join("tests/shadowstack");
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&checker)
            .arg(src.join("shadowstack.c")),
    );
    // The checker catches a planted return-address overwrite.
    let hijack = dir.path().join("hijack");
    run_ok(
        Command::new("gcc")
            .args(["-O0", "-fno-omit-frame-pointer", "-o"])
            .arg(&hijack)
            .arg(src.join("hijack.c")),
    );
    let out = run(Command::new(&checker).arg(&hijack));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mismatches=1"), "{text}");
    // Every fixture, traced in each tail mode that changes it: zero
    // mismatches.
    let shapes = repo().join("tests/shapes");
    let tail_modes = &MODES[..];
    let programs = [
        (
            build(
                dir.path(),
                "gcc",
                &["-O2"],
                &[shapes.join("shapes.c"), shapes.join("shapes_main.c")],
                "shapes",
            ),
            tail_modes,
        ),
        (
            build(
                dir.path(),
                "gcc",
                &["-O2"],
                &[fixture("unwind.c")],
                "unwind",
            ),
            tail_modes,
        ),
        // Indirect calls into libc, through the target cache and thunks:
        // the tail mode does not change them, and each single-stepped run
        // of this one takes minutes.
        (
            build(
                dir.path(),
                "gcc",
                &["-O2"],
                &[repo().join("tests/libcall/indirect.c")],
                "indirect",
            ),
            &MODES[..1],
        ),
    ];
    for (exe, modes) in &programs {
        for &mode in *modes {
            let report = shadow_stack_check(dir.path(), &checker, exe, mode);
            assert!(
                report.contains(" mismatches=0"),
                "{} {mode}: {report}",
                exe.display()
            );
        }
    }
}

#[test]
fn dlopened_libraries_are_traced_from_their_constructor() {
    let dir = scratch();
    let lib = dir.path().join("libplugin.so");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-fPIC", "-shared", "-o"])
            .arg(&lib)
            .arg(fixture("plugin.c")),
    );
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("dlopen.c")],
        "dlopen",
    );
    let lib_arg = lib.to_str().unwrap();
    let (out, t) = record(dir.path(), &exe, &[lib_arg], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "22 29\n");
    assert_balanced(&t);
    let text = replay(&t);
    assert_eq!(text.matches("plugin_init() {").count(), 2, "{text}");
    assert_eq!(text.matches("plugin_entry() {").count(), 2, "{text}");
    assert_eq!(t.processes[0].info["dlopen_hook"], "true");
    // Each module is listed with its load address and GNU build id.
    let modules = &t.processes[0].modules;
    assert!(modules.len() >= 2, "{modules:?}");
    for m in modules {
        let notes = run_ok(Command::new("readelf").arg("-n").arg(&m.path));
        let id = m.build_id.as_deref().expect("build id");
        assert!(notes.contains(&format!("Build ID: {id}")), "{id}\n{notes}");
    }
}

#[test]
fn exec_of_an_instrumented_program_is_traced_separately() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], &[fixture("exec.c")], "exec");
    // execv, then the variadic execl (wrapped in assembly).
    for args in [&[][..], &["l"][..]] {
        let (out, t) = record(dir.path(), &exe, args, &[]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "parent 2\nchild 3\n");
        assert_eq!(t.processes.len(), 2, "two images of one process");
        assert_eq!(t.processes[0].pid, t.processes[1].pid);
        assert_eq!(t.processes[1].key, format!("{}~1", t.processes[0].pid));
        assert_balanced(&t);
        let text = replay(&t);
        assert!(
            text.contains("become_child() {") && text.contains("/* become_child (unwound) */"),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn thousands_of_short_lived_threads() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("manythreads.c")],
        "many",
    );
    let (out, t) = record(dir.path(), &exe, &["2000"], &["--buffer-events", "65536"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "4000000\n");
    assert_balanced(&t);
    let threads = &t.processes[0].threads;
    assert_eq!(threads.len(), 2001);
    // Each worker: run() and work(), entered and left.
    let workers = threads.iter().filter(|th| th.tid != t.processes[0].pid);
    assert!(workers.into_iter().all(|th| th.events.len() == 4));
}

#[test]
fn a_full_buffer_loses_events_but_stays_balanced() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("threads.c")],
        "threads",
    );
    for mode in MODES {
        let (out, t) = record(
            dir.path(),
            &exe,
            &[],
            &["--tail", mode, "--buffer-events", "500"],
        );
        assert_eq!(out.stdout, untraced(&exe, &[]).stdout);
        assert_balanced(&t);
        let b = totals(&t);
        let lost: u64 = t.processes[0].threads.iter().map(|th| th.lost).sum();
        assert!(
            lost > 10_000 && b.truncated > 0,
            "{mode}: lost {lost}, {b:?}"
        );
        assert!(replay(&t).contains("(buffer full: exit not recorded)"));
    }
}

/// Issue 11: a thread kept only its first 4 Mi events; now its buffer
/// grows as it writes, and its file is cut after its last event when the
/// process exits (no room allocated ahead is left behind).
#[test]
fn issue_11_a_thread_keeps_every_event_past_the_old_limit() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("manycalls.c")],
        "manycalls",
    );
    let calls = 3_000_000u64;
    // The growing event file (a drained ring's bytes are in its drained
    // file: `drain` tests those).
    let (out, t) = record(dir.path(), &exe, &[&calls.to_string()], &["--no-drain"]);
    assert_eq!(out.stdout, untraced(&exe, &[&calls.to_string()]).stdout);
    assert_balanced(&t);
    let th = &t.processes[0].threads[0];
    assert_eq!((th.lost, th.stopped), (0, 0));
    // leaf per call, nest (its recursion a loop at -O2), main: each
    // entered and left.
    let events = th.events.len() as u64;
    assert!(events >= 2 * (calls + 2), "{events} events");
    let file = std::fs::read_dir(dir.path().join("trace"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "events"))
        .unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    let (_, mut stream) = ftail_trace::reader::events::Events::open(&file).unwrap();
    assert_eq!(stream.by_ref().count() as u64, events);
    let used = std::mem::size_of::<ftail_abi::trace::EventFileHeader>() as u64 + stream.consumed();
    assert!(
        len >= used && len < used + 4096,
        "file of {len} bytes for {used} bytes of header and events"
    );
    // Compact records: an 8-byte entry and a 4-byte exit per call.
    assert!(
        stream.consumed() * 10 <= events * 61,
        "{} bytes for {events} events",
        stream.consumed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("lost"), "{stderr}");
}

/// Issue 11: `--max-size` bounds the whole trace, every process of it
/// together (four children and their parent write at once), and the
/// summary says what was lost and why; every thread stays balanced.
#[test]
fn issue_11_max_size_holds_across_processes() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("forkcalls.c")],
        "forkcalls",
    );
    let max = 8u64 << 20;
    let (out, t) = record(dir.path(), &exe, &["4", "1000000"], &["--max-size", "8M"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(t.processes.len(), 5);
    assert_balanced(&t);
    let bytes: u64 = std::fs::read_dir(dir.path().join("trace"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "events"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // The reserve that closes open frames may go past the maximum: a page
    // per process at most here.
    assert!(bytes <= max + 5 * 4096, "{bytes} bytes of event files");
    let recorded: u64 = t
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .map(|th| th.events.len() as u64)
        .sum();
    assert!(recorded * 16 > max / 2, "only {recorded} events recorded");
    let stopped = t
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .filter(|th| th.stopped == ftail_abi::trace::STOPPED_MAX_SIZE && th.lost > 0)
        .count();
    assert!(stopped >= 1, "no thread stopped at the maximum size");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("events lost: the trace reached its maximum size of 8.0 MiB (--max-size"),
        "{stderr}"
    );
    let info = run_ok(
        Command::new(ftail())
            .args(["info", "-d"])
            .arg(dir.path().join("trace")),
    );
    assert!(
        info.contains("# maximum size: 8.0 MiB (--max-size)"),
        "{info}"
    );
    assert!(
        info.contains("the trace reached its maximum size"),
        "{info}"
    );
}

/// The replay lines of a trace directory, without its header lines.
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

/// Issue 11: `--ring` keeps each thread's latest events in a ring that
/// is its event file; a replay shows the functions that were running
/// when the window began as open at its start, and every thread stays
/// balanced (in every tail mode).
#[test]
fn issue_11_a_ring_keeps_the_latest_events() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], &[fixture("crash.c")], "crash");
    for mode in MODES {
        let (out, t) = record(
            dir.path(),
            &exe,
            &["100000"],
            &["--tail", mode, "--ring", "64K"],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_balanced(&t);
        let th = &t.processes[0].threads[0];
        let b = th.balance();
        // 64 KiB of 16-byte events, and the frames open at its start.
        assert_eq!(
            b.entries + b.exits + b.unwound + b.tail_exits,
            4096,
            "{b:?}"
        );
        assert_eq!(b.earlier, 2, "main and nest: {b:?}");
        let lines = replay_lines(&dir.path().join("trace"));
        assert_eq!(lines[0], "main() { /* began before the window */", "{mode}");
        assert_eq!(
            lines[1], "  nest() { /* began before the window */",
            "{mode}"
        );
        assert!(
            lines.iter().any(|l| l.trim().starts_with("fail()")),
            "{mode}: no fail()"
        );
        assert_eq!(lines.last().unwrap().trim(), "} /* main */");
        let file = std::fs::read_dir(dir.path().join("trace"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "events"))
            .unwrap();
        // Header, ring and trace stack: the file does not grow.
        assert!(std::fs::metadata(&file).unwrap().len() < 2 << 20);
    }
}

/// Issue 11: a program that crashes (a fault, `abort`) under `--ring`
/// dies of its signal as it would untraced (the signal is handed on,
/// never swallowed), and its ring shows where it was: every function
/// open at the crash, named, the outer ones begun before the window. A
/// SIGKILL keeps the ring too.
#[test]
fn issue_11_a_crash_keeps_the_ring_and_its_signal() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], &[fixture("crash.c")], "crash");
    for (how, sig) in [("abort", 6), ("segv", 11), ("kill", 9)] {
        let plain = untraced(&exe, &["100000", how]);
        assert_eq!(plain.status.signal(), Some(sig), "{how} untraced");
        let (out, t) = record(dir.path(), &exe, &["100000", how], &["--ring", "64K"]);
        assert_eq!(out.status.signal(), Some(sig), "{how}: {out:?}");
        assert_eq!(out.stdout, plain.stdout);
        let th = &t.processes[0].threads[0];
        assert!(th.damage.is_none(), "{:?}", th.damage);
        let lines = replay_lines(&dir.path().join("trace"));
        // The last line: the library call that ended it, still open, or
        // for the fault the last library call fail() made before it.
        let (innermost, open) = match how {
            "abort" => ("abort() {", 4),
            "kill" => ("kill() {", 4),
            _ => ("strcmp();", 3),
        };
        assert!(lines.iter().any(|l| l.trim() == "fail() {"), "{how}");
        assert_eq!(lines.last().unwrap().trim(), innermost, "{how}");
        if how != "kill" {
            // The crash noted how deep the stack was: all of it is named.
            assert_eq!(lines[0], "main() { /* began before the window */", "{how}");
            assert_eq!(lines[1], "  nest() { /* began before the window */");
            assert_eq!(th.balance().open_at_end, open, "{how}");
        }
    }
}

/// Issue 17: truncating the trace's budget file while the program runs
/// (the program itself here) must not kill it: it runs on with its
/// normal output, and what could not be recorded once the budget was
/// gone is reported as a loss, with the reason.
#[test]
fn issue_17_a_truncated_budget_file_is_a_loss_not_a_crash() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("cutbudget.c")],
        "cutbudget",
    );
    let tdir = dir.path().join("trace");
    let budget = tdir.join(ftail_abi::trace::BUDGET_FILE);
    let budget = budget.to_str().unwrap();
    let plain = untraced(&exe, &[budget, "300000"]);
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");
    let (out, t) = record(dir.path(), &exe, &[budget, "300000"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, plain.stdout);
    assert_eq!(std::fs::metadata(budget).unwrap().len(), 0);
    assert_balanced(&t);
    let threads = &t.processes[0].threads;
    assert_eq!(threads.len(), 6, "main and five threads");
    let lost: Vec<_> = threads
        .iter()
        .filter(|th| th.lost > 0)
        .map(|th| th.stopped)
        .collect();
    assert!(!lost.is_empty(), "nothing lost after the budget was gone");
    assert!(
        lost.iter()
            .all(|&s| s == ftail_abi::trace::STOPPED_BUDGET_LOST),
        "{lost:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("events lost: the trace's budget file was truncated or replaced"),
        "{stderr}"
    );
}

/// The bytes of disk the files under `dir` take (allocated blocks, not
/// their apparent sizes), and the bytes of its event files among them.
fn allocated_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut all, mut events) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            let (a, ev) = allocated_bytes(&p);
            all += a + m.blocks() * 512;
            events += ev;
        } else {
            all += m.blocks() * 512;
            if p.extension().is_some_and(|x| x == "events") {
                events += m.blocks() * 512;
            }
        }
    }
    (all, events)
}

/// Room for the files a trace holds besides its events (metadata,
/// budget, a directory's own blocks), a few blocks each.
const METADATA_SLACK: u64 = 64 << 10;

/// Issue 17: under `--ring`, a program that starts a thread per request
/// stays within `--max-size` (before: every thread's file was the ring
/// and a 1 MiB trace-stack reserve, taken past the budget and kept after
/// the thread ended: 200 threads wrote over 200 MB). The files of ended
/// threads are trimmed, and removed oldest first when new threads need
/// their room; the latest threads keep their rings.
#[test]
fn issue_17_ring_threads_stay_within_max_size() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("manythreads.c")],
        "manythreads",
    );
    let (out, t) = record(
        dir.path(),
        &exe,
        &["200"],
        &["--ring", "64K", "--max-size", "1M"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, untraced(&exe, &["200"]).stdout);
    let (all, events) = allocated_bytes(&dir.path().join("trace"));
    assert!(
        events <= 1 << 20 && all <= (1 << 20) + METADATA_SLACK,
        "{all} bytes on disk, {events} of them event files"
    );
    assert_balanced(&t);
    let threads = &t.processes[0].threads;
    // The main thread, and the last threads' rings are kept.
    assert!(threads.len() >= 5, "{} threads kept", threads.len());
    let last = threads.iter().map(|th| th.tid).max().unwrap();
    let newest = threads.iter().find(|th| th.tid == last).unwrap();
    assert!(
        newest
            .events
            .iter()
            .any(|e| e.kind() == Some(EventKind::Entry)),
        "the newest thread recorded nothing"
    );
}

/// Issue 17: snapshots are taken from `--max-size` too (before: 100
/// snapshot signals filled a 64 MB filesystem); once the budget is spent
/// a snapshot is refused, the program runs on, and the summary says how
/// many were not taken.
#[test]
fn issue_17_snapshots_stay_within_max_size() {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("ctlwait.c")],
        "ctlwait",
    );
    let tdir = dir.path().join("trace");
    let mut child = Command::new(ftail())
        .args([
            "record",
            "--no-sched",
            "--ring",
            "64K",
            "--max-size",
            "1M",
            "--snapshot-signal",
            "USR2",
            "-d",
        ])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    for n in 1..=100 {
        run_ok(Command::new("kill").args(["-USR2", &pid]));
        writeln!(stdin, "{n}").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), format!("done {n}"));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (all, _) = allocated_bytes(&tdir);
    assert!(all <= (1 << 20) + METADATA_SLACK, "{all} bytes on disk");
    let taken = (1..=100)
        .filter(|n| tdir.join(format!("snapshot-{n}")).is_dir())
        .count();
    assert!((1..100).contains(&taken), "{taken} snapshots");
    let t = trace::open(&tdir.join("snapshot-1")).unwrap();
    assert_eq!(t.processes[0].threads.len(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} snapshot(s) not taken: the trace reached its maximum size",
            100 - taken
        )),
        "{stderr}"
    );
}

/// Issue 11: `ftail ctl PID snapshot` and `--snapshot-signal` copy the
/// rings as they are into DIR/snapshot-N, each a trace of its own, while
/// the program runs on; recording again keeps the whole directory as
/// `.old`.
#[test]
fn issue_11_snapshots_of_a_running_ring() {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("ctlwait.c")],
        "ctlwait",
    );
    let tdir = dir.path().join("trace");
    let mut child = Command::new(ftail())
        .args([
            "record",
            "--no-sched",
            "--ctl",
            "--ring",
            "64K",
            "--snapshot-signal",
            "USR2",
            "-d",
        ])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    let mut round = |n: u32| {
        writeln!(stdin, "{n}").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), format!("done {n}"));
    };
    round(1);
    let mut answer = String::new();
    for _ in 0..100 {
        let out = run(Command::new(ftail()).args(["ctl", &pid, "snapshot"]));
        if out.status.success() {
            answer = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(answer.trim(), "snapshot=snapshot-1 threads=1");
    round(2);
    run_ok(Command::new("kill").args(["-USR2", &pid]));
    round(3);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let calls = |d: &Path| {
        replay_lines(d)
            .iter()
            .filter(|l| l.trim_start().starts_with("round_of_calls"))
            .count()
    };
    assert_eq!(calls(&tdir.join("snapshot-1")), 1);
    assert_eq!(calls(&tdir.join("snapshot-2")), 2);
    assert_eq!(calls(&tdir), 3);
    for snap in ["snapshot-1", "snapshot-2"] {
        let t = trace::open(&tdir.join(snap)).unwrap();
        let th = &t.processes[0].threads[0];
        // Taken while main waited in fgets(): both stay open at the
        // snapshot's end.
        assert_eq!(th.balance().open_at_end, 2, "{snap}");
    }
    // A new recording keeps this one, snapshots included, as trace.old.
    let other = build(dir.path(), "gcc", &["-O2"], &[fixture("crash.c")], "crash");
    let (out, _) = record(dir.path(), &other, &["10"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls(&dir.path().join("trace.old/snapshot-2")), 2);
}

/// gdb unwinds through a trampoline with the unwind info the runtime's
/// assembly carries: a backtrace taken in the entry slow path reaches the
/// traced function's caller. (`--tail=mark`: convert thunks have no unwind
/// info yet.)
#[test]
fn gdb_backtraces_pass_through_trampolines_and_thunks() {
    if !have("gdb") {
        return;
    }
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2", "-g"],
        &[fixture("threads.c")],
        "threads",
    );
    let tdir = dir.path().join("trace");
    std::fs::create_dir_all(&tdir).unwrap();
    let out = run(Command::new("gdb")
        .args(["-q", "-batch", "-nx"])
        .args(["-ex", "set breakpoint pending on"])
        .args([
            "-ex",
            "break ftail_runtime::record::hooks::ftail_slow_entry",
        ])
        .args(["-ex", "run", "-ex", "bt", "-ex", "kill"])
        .arg("--args")
        .arg("env")
        .arg(format!("LD_PRELOAD={}", runtime().display()))
        .arg(format!("FTAIL_DIR={}", tdir.display()))
        .arg("FTAIL_TAIL=mark")
        .arg(&exe));
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(frames.len() >= 3, "{text}");
    assert!(frames[0].contains("ftail_slow_entry"), "{text}");
    assert!(frames[1].contains("ftail_entry"), "{text}");
    assert!(
        frames[2].contains(" main ") || frames[2].contains(" in main"),
        "{text}"
    );

    // Inside a tail callee behind a convert thunk: gdb learns of the thunk
    // through its JIT interface and unwinds through it to main.
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2", "-g"],
        &[repo().join("tests/differential/calls.c")],
        "calls",
    );
    let out = run(Command::new("gdb")
        .args(["-q", "-batch", "-nx"])
        .args(["-ex", "set breakpoint pending on", "-ex", "break leaf"])
        .args(["-ex", "run", "-ex", "bt", "-ex", "kill"])
        .arg("--args")
        .arg("env")
        .arg(format!("LD_PRELOAD={}", runtime().display()))
        .arg(format!("FTAIL_DIR={}", tdir.display()))
        .arg("FTAIL_TAIL=convert")
        .arg(&exe)
        .arg("3"));
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(frames.len() == 3, "{text}");
    assert!(frames[0].contains(" leaf "), "{text}");
    assert!(frames[1].contains("ftail_convert_thunk"), "{text}");
    assert!(frames[2].contains(" main "), "{text}");
}

#[test]
fn a_program_that_cannot_start_leaves_no_trace_directory() {
    let dir = scratch();
    let tdir = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("-d")
        .arg(&tdir)
        .arg(dir.path().join("missing-program")));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ftail: error: running ") && err.contains("missing-program"),
        "{err}"
    );
    assert!(!tdir.exists());
}

/// Entries recorded per function name, over all threads.
fn entry_counts(t: &Trace) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for p in &t.processes {
        let syms = trace::Symbols::load(p);
        for th in &p.threads {
            for e in th
                .events
                .iter()
                .filter(|e| e.kind() == Some(EventKind::Entry))
            {
                *counts.entry(syms.name(e.addr(), e.tsc)).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn check_toggles(cc: &str, mode: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc, &["-O2"], &[fixture("toggle.c")], "toggle");
    let out = untraced(&exe, &["10"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "runtime=no toggles=0 failed=0 called=1\n"
    );
    let (out, t) = record(
        dir.path(),
        &exe,
        &["10000"],
        &["--off", "--tail", mode, "--buffer-events", "4000000"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "runtime=yes toggles=10000 failed=0 called=1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(t.processes[0].info["tracing"], "off");
    assert_balanced(&t);
    let counts = entry_counts(&t);
    assert!(counts.get("work").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(
        counts.get("tail_work").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    // Four spinning threads recorded, besides the main thread.
    assert!(t.processes[0].threads.len() >= 4);
}

#[test]
fn tracing_switched_10000_times_while_four_threads_run_it() {
    for mode in MODES {
        check_toggles("gcc", mode);
    }
    if have("clang-19") {
        check_toggles("clang-19", "auto");
    }
}

#[test]
fn ftail_ctl_switches_a_running_program() {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("ctlwait.c")],
        "ctlwait",
    );
    let tdir = dir.path().join("trace");
    let mut child = Command::new(ftail())
        .args(["record", "--no-sched", "--off", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    let ctl = |args: &[&str]| ctl_once_listening(&pid, args);
    let mut round = |n: u32| {
        writeln!(stdin, "{n}").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), format!("done {n}"));
    };
    assert!(ctl(&["status"]).starts_with("tracing=off"));
    round(1); // off: nothing recorded
    assert!(ctl(&["on"]).starts_with("tracing=on"));
    round(2); // everything
    let state = ctl(&["-F", "alpha", "-F", "main"]);
    assert!(
        state.contains("filter=alpha,main exclude= functions=2"),
        "{state}"
    );
    round(3); // alpha only
    assert!(ctl(&["off"]).starts_with("tracing=off"));
    round(4);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let t = trace::open(&tdir).unwrap();
    assert_balanced(&t);
    let counts = entry_counts(&t);
    assert_eq!(counts.get("round_of_calls"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("alpha"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("beta"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("main"), None, "entered before tracing began");

    // A program without the agent: a clear error.
    let out = run(Command::new(ftail()).args(["ctl", "1", "on"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no ftail control agent"));
}

#[test]
fn an_ftail_installed_alone_uses_its_embedded_runtime() {
    // As after `cargo install`: the binary alone, no runtime beside it.
    let dir = scratch();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let alone = bin.join("ftail");
    std::fs::copy(ftail(), &alone).unwrap();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("threads.c")],
        "threads",
    );
    let cache = dir.path().join("cache");
    let out = run(Command::new(&alone)
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("FTAIL_RUNTIME")
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(dir.path().join("trace"))
        .arg(&exe));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = trace::open(&dir.path().join("trace")).unwrap();
    assert_balanced(&t);
    assert!(totals(&t).entries > 0);
    let written: Vec<_> = std::fs::read_dir(cache.join("ftail")).unwrap().collect();
    assert_eq!(written.len(), 1, "one runtime copy in the cache");
}

#[test]
fn a_failing_slow_path_leaves_errno_alone() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], &[fixture("errno.c")], "errno");
    assert_eq!(untraced(&exe, &[]).stdout, b"errno kept: yes\n");
    let (out, _) = record(dir.path(), &exe, &[], &["-N", "worker"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "errno kept: yes\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn avx_arguments_survive_the_slow_paths() {
    // A thread's first traced call (-N worker: the set-up slow path runs
    // with four __m256d arguments live) and buffer extensions every few
    // thousand calls, in every tail mode.
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpu.contains(" avx2") {
        eprintln!("skipping: no AVX2 on this CPU");
        return;
    }
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2", "-mavx2"],
        &[fixture("avx.c")],
        "avx",
    );
    let plain = untraced(&exe, &[]);
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "800000.0 425000.0 250000.0 100000.0\n"
    );
    for mode in MODES {
        let (out, t) = record(dir.path(), &exe, &[], &["-N", "worker", "--tail", mode]);
        assert_eq!(out.stdout, plain.stdout, "{mode}");
        assert_balanced(&t);
        assert!(totals(&t).entries >= 200_000, "{mode}");
    }
}

/// Once a thread's buffer is full its later events are only counted, and
/// counting must cost about what recording does, not a slow path per
/// event: before, every event whose time offset no longer fitted the
/// unwritable base went through the slow path (about 150 ns each), so a
/// capped run was several times slower than one that kept everything.
/// The margin (3×) is wide: the two differed by 7× before, and capped
/// runs are now a little faster than uncapped ones.
#[test]
fn a_full_buffer_counts_lost_events_on_the_fast_path() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[repo().join("bench/hotloop.c")],
        "hotloop",
    );
    let calls = "3000000";
    let best = |extra: &[&str]| {
        (0..3)
            .map(|_| {
                let tdir = dir.path().join("trace");
                let _ = std::fs::remove_dir_all(&tdir);
                let _ = std::fs::remove_dir_all(dir.path().join("trace.old"));
                let start = std::time::Instant::now();
                let (out, _) = record_trace(&tdir, &exe, &[calls], extra);
                assert!(out.status.success(), "{out:?}");
                start.elapsed()
            })
            .min()
            .unwrap()
    };
    let everything = best(&[]);
    let capped = best(&["--buffer-events", "4096"]);
    let tdir = dir.path().join("trace");
    let t = trace::open(&tdir).unwrap();
    let lost: u64 = t.processes[0].threads.iter().map(|th| th.lost).sum();
    assert!(lost > 5_000_000, "only {lost} events lost");
    assert!(
        capped < everything * 3,
        "capped at 4096 events: {capped:?}; keeping all 6 M events: {everything:?}"
    );
}

/// A `latethreads` fixture recorded into a trace directory, driven through
/// its standard input.
struct Driven {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    pid: u32,
}

impl Driven {
    /// Starts `ftail record -d TDIR -- EXE`.
    fn start(tdir: &Path, exe: &Path) -> Driven {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(tdir)
            .arg("--")
            .arg(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let pid = lines.next().unwrap().unwrap().parse().unwrap();
        Driven {
            child,
            stdin,
            lines,
            pid,
        }
    }

    /// Has the program start thread `n` and waits until it has ended.
    fn round(&mut self, n: u32) {
        use std::io::Write;
        writeln!(self.stdin, "{n}").unwrap();
        assert_eq!(self.lines.next().unwrap().unwrap(), format!("done {n}"));
    }

    /// Ends the program; returns what `ftail record` said on standard
    /// error.
    fn end(self) -> String {
        use std::io::Read;
        let Driven {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        assert!(child.wait().unwrap().success());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    }
}

/// The process a trace directory holds (it must hold one): its pid, its
/// threads, and how many times `late_work` ran.
fn late_threads_of(tdir: &Path) -> (u32, usize, usize) {
    let t = trace::open(tdir).unwrap_or_else(|e| panic!("{}: {e}", tdir.display()));
    assert_eq!(t.processes.len(), 1, "{}", tdir.display());
    assert_balanced(&t);
    let p = &t.processes[0];
    let calls = replay_lines(tdir)
        .iter()
        .filter(|l| l.trim_start().starts_with("late_work"))
        .count();
    (p.pid, p.threads.len(), calls)
}

/// Issue 17: recording into a directory while the program of the trace
/// there still runs. The trace becomes `trace.old` and the runtime
/// follows it: threads the first program starts later are recorded in
/// its own trace (before: in the new `trace`, which has no `.info` for
/// them), each trace reads as its own program's; a third recording
/// refuses to remove `trace.old` while its program runs, and rotates as
/// usual once it has ended.
#[test]
fn recording_again_while_the_first_program_runs_keeps_both_traces() {
    let dir = scratch();
    let exe = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("latethreads.c")],
        "latethreads",
    );
    let small = build(
        dir.path(),
        "gcc",
        &["-O2"],
        &[fixture("manycalls.c")],
        "manycalls",
    );
    let tdir = dir.path().join("trace");
    let old = dir.path().join("trace.old");
    let mut first = Driven::start(&tdir, &exe);
    first.round(1);
    let mut second = Driven::start(&tdir, &exe);
    assert!(old.is_dir());
    second.round(1);
    first.round(2);
    first.round(3);
    let third = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&tdir)
        .arg("--")
        .arg(&small)
        .arg("10"));
    assert_eq!(third.status.code(), Some(2), "{third:?}");
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        err.contains(&format!(
            "{} holds the trace of process {}, which still runs",
            old.display(),
            first.pid
        )),
        "{err}"
    );
    second.round(2);
    let (first_pid, second_pid) = (first.pid, second.pid);
    let said = first.end();
    assert!(
        said.contains(&format!("trace written to {}", old.display())),
        "{said}"
    );
    second.end();
    assert_eq!(late_threads_of(&old), (first_pid, 4, 3));
    assert_eq!(late_threads_of(&tdir), (second_pid, 3, 2));
    // Its program has ended: trace.old gives way.
    let (out, _) = record(dir.path(), &small, &["10"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(late_threads_of(&old).0, second_pid);
}
