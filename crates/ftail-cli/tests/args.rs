//! Arguments and return values (`ftail record -A/-R/-a`): the fixture
//! (`tests/args/args.c`) prints each call it makes with what it passed and
//! what it got back, as `replay` shows a call; every such line must be
//! what the trace recorded, built with gcc and clang, at -O0 and -O2, in
//! every tail mode, directly, through tail calls, pointers and threads.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// The specs that make `replay` show the calls as the fixture prints
/// them.
const SPECS: &[&str] = &[
    "-A",
    "add@arg1/i32,arg2/i32",
    "-R",
    "add@i32",
    "-A",
    "mix@arg1/u8,arg2/i16,arg3/d,arg4/u32",
    "-R",
    "mix",
    "-A",
    "scale@fparg1,fparg2/f32",
    "-R",
    "scale@f64",
    "-A",
    "halve@fparg1/f32",
    "-R",
    "halve@f32",
    "-A",
    "is_odd@arg1/i32",
    "-R",
    "is_odd@b",
    "-A",
    "upper@arg1/c",
    "-R",
    "upper@c",
    "-A",
    "length@arg1/s",
    "-R",
    "length@u64",
    "-A",
    "keep@arg1/s,arg2/i32",
    "-R",
    "keep@i32",
    "-A",
    "next_colour@arg1/i32",
    "-R",
    "next_colour@i32",
    "-A",
    "self@arg1/p",
    "-R",
    "self@p",
    "-A",
    "eight@arg1,arg2,arg3,arg4,arg5,arg6,arg7,arg8",
    "-R",
    "eight",
    "-A",
    "chain@arg1/i32",
    "-R",
    "chain@i32",
    "-A",
    "twice@arg1/i32,arg2/i32",
    "-R",
    "twice@i32",
    "-A",
    "via_plain@arg1/i32",
    "-R",
    "via_plain@i32",
];

fn build(dir: &Path, cc: &str, opt: &str) -> std::path::PathBuf {
    let exe = dir.join(format!("args-{cc}{opt}"));
    run_ok(
        ftail_cc(cc)
            .args([opt, "-g", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/args/args.c"))
            .arg("-lpthread"),
    );
    exe
}

/// Every call of a replay as one line, `name(args) = ret` (or without
/// ` = ret`), per thread: leaves as they are, and a call shown over
/// several lines joined with its closing line.
fn calls(replay: &str) -> Vec<String> {
    let mut open: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for line in replay.lines().filter(|l| !l.starts_with('#')) {
        let Some((fields, call)) = line.split_once("| ") else {
            continue;
        };
        let tid = fields
            .rsplit_once('[')
            .map_or("", |(_, t)| t.trim_end_matches([']', ' ']))
            .to_string();
        let call = call.trim();
        let stack = open.entry(tid).or_default();
        if let Some(head) = call.strip_suffix(" {") {
            stack.push(head.to_string());
        } else if let Some(rest) = call.strip_prefix('}') {
            let head = stack.pop().unwrap_or_default();
            match rest.split_once(';') {
                Some((ret, _)) if ret.starts_with(" = ") => out.push(format!("{head}{ret}")),
                _ => out.push(head),
            }
        } else if let Some(leaf) = call.strip_suffix(';') {
            out.push(leaf.to_string());
        } else if let Some((leaf, _)) = call.split_once("; /* tail call */") {
            // A tail call into untraced code, on one line.
            out.push(leaf.to_string());
        }
    }
    out
}

fn check(cc: &str, opt: &str, tail: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc, opt);
    let trace = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-d"])
        .arg(&trace)
        .args(["--tail", tail])
        .args(SPECS)
        .arg("--")
        .arg(&exe));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let replay = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(&trace),
    );
    let recorded = calls(&replay);
    for line in printed.lines() {
        // In mark mode a tail call to an untraced function (strlen) ends
        // only at the next traced return: its value is not its own.
        if tail == "mark" && line.starts_with("length") {
            continue;
        }
        assert!(
            recorded.iter().any(|c| c == line),
            "{cc} {opt} --tail {tail}: {line:?} not recorded; replay:\n{replay}"
        );
    }
    // The tail chain chain -> twice -> add: the value once, every frame.
    for want in ["twice(5, 6) = 16", "add(10, 6) = 16", "add(0, 100) = 100"] {
        assert!(recorded.iter().any(|c| c == want), "{want:?}:\n{replay}");
    }
    assert!(replay.contains("= 16; /* chain"), "{replay}");
}

#[test]
fn values_match_what_the_program_printed_gcc() {
    for opt in ["-O0", "-O2"] {
        for tail in ["auto", "mark", "convert"] {
            check("gcc", opt, tail);
        }
    }
}

#[test]
fn values_match_what_the_program_printed_clang() {
    if !have("clang-19") {
        return;
    }
    for opt in ["-O0", "-O2"] {
        for tail in ["auto", "convert"] {
            check("clang-19", opt, tail);
        }
    }
}

#[test]
fn bad_specs_are_refused_with_a_reason() {
    let out =
        run(Command::new(ftail()).args(["record", "--no-sched", "-A", "foo@arg1/q", "--", "true"]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown format \"q\""), "{err}");
    let out = run(Command::new(ftail()).args([
        "record",
        "--no-sched",
        "-R",
        "foo@retval%rax",
        "--",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(2));
}

/// `-a`: the specs come from DWARF. At -O0 every parameter is where the
/// ABI puts it at entry; at -O2 where the location lists say, and a
/// value is either right or shown as optimised out, never wrong.
fn check_auto(cc: &str, opt: &str) {
    let dir = scratch();
    let exe = build(dir.path(), cc, opt);
    let trace = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-a", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(&trace),
    );
    let recorded = calls(&replay);
    let ok = |want: &str| recorded_as(&recorded, want);
    for want in [
        "add(1, 2) = 3",
        "scale(1.5, 0.25) = 0.375",
        "halve(3.0) = 1.5",
        "is_odd(7) = true",
        "upper('q') = 'Q'",
        "length(\"hello\") = 5",
        "keep(NULL, 10) = 10",
        "next_colour(GREEN) = BLUE",
        "eight(1, 2, 3, 4, 5, 6, 7, 8) = 204",
        "twice(5, 6) = 16",
        "add(20, 22) = 42",
        "add(2, 100) = 102",
    ] {
        assert!(ok(want), "{cc} {opt} -a: {want:?} not recorded:\n{replay}");
    }
    assert!(replay.contains("keep((bad pointer 0x"), "{replay}");
}

/// Whether `want` (`name(args) = ret`) is among the `recorded` calls,
/// each argument either as wanted or optimised out.
fn recorded_as(recorded: &[String], want: &str) -> bool {
    let (wname, wrest) = want.split_once('(').unwrap();
    let (wargs, wret) = wrest.rsplit_once(')').unwrap();
    recorded.iter().any(|c| {
        let Some((name, rest)) = c.split_once('(') else {
            return false;
        };
        let Some((args, ret)) = rest.rsplit_once(')') else {
            return false;
        };
        name == wname
            && ret == wret
            && args.split(", ").count() == wargs.split(", ").count()
            && args
                .split(", ")
                .zip(wargs.split(", "))
                .all(|(a, w)| a == w || a == "<optimised out>")
    })
}

#[test]
fn auto_args_come_from_the_debug_info() {
    for opt in ["-O0", "-O2"] {
        check_auto("gcc", opt);
        if have("clang-19") {
            check_auto("clang-19", opt);
        }
    }
}

/// `ftail report --args`'s rows: function column (the call as replay
/// shows one) to calls.
fn report_calls(trace: &Path, extra: &[&str]) -> HashMap<String, u64> {
    let text = run_ok(
        Command::new(ftail())
            .args(["report", "-d"])
            .arg(trace)
            .args(extra),
    );
    text.lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // TOTAL, SELF (12 wide), CALLS (10), AVERAGE, MIN, MAX (12),
            // two spaces after each, then the function.
            let calls = l[28..38].trim().parse().unwrap();
            (l[82..].to_string(), calls)
        })
        .collect()
}

#[test]
fn report_groups_calls_by_their_values() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", "-O2");
    let trace = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-d"])
        .arg(&trace)
        .args(SPECS)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows = report_calls(&trace, &["--args"]);
    // Every call the program printed is a row of its own, once.
    for line in printed.lines() {
        let want = match line {
            // Called directly and at the end of chain()'s tail chain.
            "twice(5, 6) = 16" => 2,
            _ => 1,
        };
        assert_eq!(rows.get(line), Some(&want), "{line:?}: {rows:#?}");
    }
    assert_eq!(rows.get("add(10, 6) = 16"), Some(&2), "{rows:#?}");
    // Functions without values keep their plain name.
    assert_eq!(rows.get("main"), Some(&1), "{rows:#?}");
    assert_eq!(rows.get("worker"), Some(&3), "{rows:#?}");
    // The rows of a function add up to its plain row.
    let plain = report_calls(&trace, &[]);
    let adds: u64 = rows
        .iter()
        .filter(|(k, _)| k.starts_with("add("))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(adds, plain["add"]);
    assert_eq!(adds, 7);
    // Filters apply as without values.
    let only = report_calls(&trace, &["--args", "-F", "chain"]);
    let mut names: Vec<&str> = only.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["add(10, 6) = 16", "chain(5) = 16", "twice(5, 6) = 16"]
    );
}

/// `-a` also reads the libraries the program loads at start-up (found as
/// the loader finds them: here through `$ORIGIN` in its run path), each
/// with its own enums: the library's `TRIANGLE` and the program's `ANGRY`
/// are both named right (before: the library's functions recorded
/// nothing).
#[test]
fn auto_args_come_from_the_libraries_debug_info_too() {
    let dir = scratch();
    let src = repo().join("tests/args");
    let lib = dir.path().join("libshape.so");
    run_ok(
        ftail_cc("gcc")
            .args(["-g", "-O2", "-fPIC", "-shared", "-o"])
            .arg(&lib)
            .arg(src.join("shape.c")),
    );
    let exe = dir.path().join("uses_shape");
    run_ok(
        ftail_cc("gcc")
            .args(["-g", "-O2", "-o"])
            .arg(&exe)
            .arg(src.join("uses_shape.c"))
            .arg("-L")
            .arg(dir.path())
            .args(["-lshape", "-Wl,-rpath,$ORIGIN"]),
    );
    let trace = dir.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-a", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3 42 1\n");
    let replay = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(&trace),
    );
    let recorded = calls(&replay);
    for want in [
        "sides(TRIANGLE) = 3",
        "area(6, 7) = 42",
        "flip(CALM) = ANGRY",
    ] {
        assert!(
            recorded.iter().any(|c| c == want),
            "{want:?} not recorded:\n{replay}"
        );
    }
}

/// Records `exe` with `opts`; its replay.
fn replay_of(dir: &Path, exe: &Path, opts: &[&str]) -> String {
    let trace = dir.join("trace");
    let _ = std::fs::remove_dir_all(&trace);
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-d"])
        .arg(&trace)
        .args(opts)
        .arg("--")
        .arg(exe));
    assert!(out.status.success(), "{out:?}");
    run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(&trace),
    )
}

/// The options of `-A`/`-R` whose values the default format and two
/// specs for one function decide.
const MERGED: &[&str] = &[
    "-A",
    "mul@arg2/x",
    "-A",
    "mul@arg1",
    "-A",
    "inc@arg1",
    "-R",
    "inc",
    "-A",
    "linc@arg1",
    "-R",
    "linc",
];

/// Two `-A` for one function merge in the order given, a later one for
/// the same argument taking its place; an integer without a format shows
/// as uftrace's default shows it (an `int` of -1 as -1, not 4294967295;
/// large numbers in hexadecimal) — the same lines as uftrace's, when it
/// is installed (before: `mul(0x3)` and `inc(4294967295)`).
#[test]
fn specs_merge_and_default_to_uftraces_format() {
    let dir = scratch();
    let src = repo().join("tests/args/values.c");
    let exe = dir.path().join("values");
    run_ok(
        ftail_cc("gcc")
            .args(["-O0", "-g", "-o"])
            .arg(&exe)
            .arg(&src),
    );
    let replay = replay_of(dir.path(), &exe, MERGED);
    let recorded = calls(&replay);
    let want = [
        "mul(0x3, 4)",
        "inc(-1) = 0",
        "linc(0x123456789) = 0x12345678a",
    ];
    for w in want {
        assert!(recorded.iter().any(|c| c == w), "{w:?}:\n{replay}");
    }
    let mut later = MERGED.to_vec();
    later.extend(["-A", "mul@arg2/d32"]);
    let recorded = calls(&replay_of(dir.path(), &exe, &later));
    assert!(recorded.iter().any(|c| c == "mul(3, 4)"), "{recorded:?}");
    if !have("uftrace") {
        return;
    }
    let pg = dir.path().join("values-pg");
    run_ok(
        Command::new("gcc")
            .args(["-O0", "-g", "-pg", "-mfentry", "-o"])
            .arg(&pg)
            .arg(&src),
    );
    let udir = dir.path().join("uftrace.data");
    run_ok(
        Command::new("uftrace")
            .arg("record")
            .arg("-d")
            .arg(&udir)
            .args(MERGED)
            .arg(&pg),
    );
    let theirs = run_ok(
        Command::new("uftrace")
            .args(["replay", "--no-pager", "-d"])
            .arg(&udir),
    );
    for w in want {
        assert!(
            theirs.lines().any(|l| l.ends_with(&format!(" {w};"))),
            "uftrace differs on {w:?}:\n{theirs}"
        );
    }
}

/// `-a` with structs passed and returned by value, an enumerator past
/// `INT_MAX` and a `void` function that ends in a tail call: aggregates
/// shown by their name in their place (before: dropped, and the values
/// after them shifted, or all optimised out), the enumerator by its name
/// (before: -65536), and the tail chain's value only on the functions
/// that return it (before: `} = 10; /* forward (tail call) */`).
#[test]
fn auto_args_keep_aggregates_in_place_and_values_where_they_belong() {
    let dir = scratch();
    let src = repo().join("tests/args/values.c");
    for cc in ["gcc", "clang-19"] {
        if !have(cc) {
            continue;
        }
        for opt in ["-O0", "-O2"] {
            let exe = dir.path().join(format!("values-{cc}{opt}"));
            run_ok(ftail_cc(cc).args([opt, "-g", "-o"]).arg(&exe).arg(&src));
            let replay = replay_of(dir.path(), &exe, &["-a"]);
            let recorded = calls(&replay);
            for want in [
                "mul(4, 3) = 12",
                "inc(-1) = 0",
                "is_high(HIGH) = 1",
                "around(1, point{...}, 2) = 14",
                "boxed(1, box{...}, 2) = 19",
                "blend(mixed{...}, 2.0, 4) = 8.0",
                "make(3) = point{...}",
                "make_box(3) = box{...}",
                "sink(5) = 10",
                "forward(4)",
            ] {
                assert!(
                    recorded_as(&recorded, want),
                    "{cc} {opt} -a: {want:?} not recorded:\n{replay}"
                );
            }
            assert!(!replay.contains("; /* forward"), "{cc} {opt}:\n{replay}");
        }
    }
}

/// `-a` in C++: a `std::string` by reference, by value and returned is
/// shown as its characters (before: an address, a dropped argument and
/// no return value).
#[test]
fn auto_args_show_std_strings() {
    if !have("g++") {
        return;
    }
    let dir = scratch();
    for opt in ["-O0", "-O2"] {
        let exe = dir.path().join(format!("strings{opt}"));
        run_ok(
            ftail_cc("g++")
                .args([opt, "-g", "-o"])
                .arg(&exe)
                .arg(repo().join("tests/args/strings.cc")),
        );
        let replay = replay_of(dir.path(), &exe, &["-a"]);
        let recorded = calls(&replay);
        for want in [
            "greet(\"world\", 3) = \"hi world3\"",
            "append(\"world\", point{...}, 4) = \"world5\"",
            "size(\"hi world3\") = 9",
        ] {
            assert!(
                recorded_as(&recorded, want),
                "{opt} -a: {want:?} not recorded:\n{replay}"
            );
        }
    }
}
