//! Rust programs built through `ftail cargo`: the checked-in fixture crate
//! (`tests/rust/shapes`, no dependencies, built offline into a scratch
//! target directory) passes its tests with sites placed, verifies with
//! `ftail sites`, and traces with every thread balanced, panics that
//! unwind closed as unwound, and per-function call counts equal to
//! callgrind's. A workspace fixture (`tests/rust/work`: a library, a
//! program using it, a doc test) covers `--workspace`, doc tests,
//! incremental rebuilds, split debug information and response files.
//! With `FTAIL_CORPUS=1`, a crate from crates.io (semver, a parser
//! library, fetched by cargo) does the same with its own suite, and
//! `tests/rust/pool` runs rayon's and tokio's thread pools.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ftail_abi::trace::EventKind;
use ftail_trace::trace::{self, Symbols};

type Counts = BTreeMap<String, u64>;

fn shapes_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/shapes/Cargo.toml")
}

/// `ftail cargo ARGS… --target-dir TARGET` for the crate of `manifest`.
fn ftail_cargo(manifest: &Path, target: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(ftail());
    c.arg("cargo")
        .args(args)
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target);
    c
}

/// Calls per function (demangled, without hash) in every thread of the
/// trace at `tdir`; asserts every thread is balanced.
fn trace_counts(tdir: &Path) -> (Counts, u64) {
    let t = trace::open(tdir).unwrap();
    let (mut counts, mut unwound) = (Counts::new(), 0);
    for p in &t.processes {
        let syms = Symbols::load(p);
        for th in &p.threads {
            let b = th.balance();
            assert!(b.is_balanced(), "thread {} unbalanced: {b:?}", th.tid);
            assert_eq!(th.lost, 0);
            unwound += b.unwound;
            for e in &th.events {
                if e.kind() == Some(EventKind::Entry) {
                    *counts.entry(syms.name(e.addr(), e.tsc)).or_default() += 1;
                }
            }
        }
    }
    (counts, unwound)
}

/// Calls per function by callgrind (`calls=` lines, tail jumps included),
/// names demangled as ftail shows them.
fn callgrind_counts(dir: &Path, exe: &Path, args: &[&str]) -> Counts {
    let out = dir.join("callgrind.out");
    run_ok(
        Command::new("valgrind")
            .args(["--tool=callgrind", "--demangle=no"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(exe)
            .args(args)
            .current_dir(dir),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let (mut names, mut counts) = (BTreeMap::new(), Counts::new());
    let mut callee = String::new();
    for line in text.lines() {
        let named = line
            .strip_prefix("fn=(")
            .map(|r| (false, r))
            .or_else(|| line.strip_prefix("cfn=(").map(|r| (true, r)));
        if let Some((is_callee, rest)) = named {
            let (id, name) = rest.split_once(')').unwrap();
            if let Some(name) = name.strip_prefix(' ') {
                // Recursion levels are told apart as `name'2`.
                let name = name.split('\'').next().unwrap();
                names.insert(id.to_string(), trace::demangle(name));
            }
            if is_callee {
                callee = names[id].clone();
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            let n: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
            *counts.entry(callee.clone()).or_default() += n;
        }
    }
    counts
}

/// Every function of `krate` that ftail traced has callgrind's count.
fn compare_with_callgrind(dir: &Path, exe: &Path, args: &[&str], ours: &Counts, krate: &str) {
    let theirs = callgrind_counts(dir, exe, args);
    let prefix = format!("{krate}::");
    let mine: Counts = ours
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(n, &c)| (n.clone(), c))
        .collect();
    assert!(
        mine.len() >= 5,
        "too few {krate} functions traced: {mine:?}"
    );
    let differ: Vec<_> = mine
        .iter()
        .filter(|(n, &c)| theirs.get(*n) != Some(&c))
        .map(|(n, c)| format!("{n}: ftail {c}, callgrind {:?}", theirs.get(n)))
        .collect();
    assert!(differ.is_empty(), "counts differ:\n{}", differ.join("\n"));
}

/// The caller of each call of a function whose name `pick` accepts, in
/// every thread of the trace at `tdir`: (callee, caller) names.
fn callers(tdir: &Path, pick: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let t = trace::open(tdir).unwrap();
    let mut out = Vec::new();
    for p in &t.processes {
        let syms = Symbols::load(p);
        for th in &p.threads {
            let mut stack: Vec<String> = Vec::new();
            for e in &th.events {
                match e.kind() {
                    Some(EventKind::Entry | EventKind::Resumed | EventKind::Earlier) => {
                        let name = syms.name(e.addr(), e.tsc);
                        if e.kind() == Some(EventKind::Entry) && pick(&name) {
                            let caller = stack.last().cloned().unwrap_or_default();
                            out.push((name.clone(), caller));
                        }
                        stack.push(name);
                    }
                    Some(_) => {
                        stack.pop();
                    }
                    None => {}
                }
            }
        }
    }
    out
}

/// `exe`'s sites verify with no mismatch and it runs traced into `tdir`;
/// what it printed, and its calls per function.
fn verified_trace(exe: &Path, tdir: &Path) -> (Vec<u8>, Counts) {
    let (ok, text) = sites(exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let traced = record(tdir, exe, &[]);
    assert!(traced.status.success(), "{traced:?}");
    (traced.stdout, trace_counts(tdir).0)
}

fn record(tdir: &Path, exe: &Path, args: &[&str]) -> std::process::Output {
    record_with(tdir, exe, args, &[])
}

fn record_with(tdir: &Path, exe: &Path, args: &[&str], opts: &[&str]) -> std::process::Output {
    run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(tdir)
        .args(opts)
        .arg("--")
        .arg(exe)
        .args(args))
}

#[test]
fn shapes_build_test_verify_and_trace_through_ftail_cargo() {
    let dir = scratch();
    let target = dir.path().join("target");
    let manifest = shapes_manifest();
    run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["test", "--release", "--offline"],
    ));
    run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["build", "--release", "--offline"],
    ));
    let exe = target.join("release/shapes");
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    assert!(text.contains("local indirect"), "{text}");

    let plain = run(&mut Command::new(&exe));
    let tdir = dir.path().join("trace");
    let traced = record(&tdir, &exe, &[]);
    assert!(traced.status.success(), "{traced:?}");
    assert_eq!(plain.stdout, traced.stdout);
    let (counts, unwound) = trace_counts(&tdir);
    // Two panics unwind through deeper and may_panic each.
    assert!(unwound >= 4, "{unwound} frames closed as unwound");
    assert_eq!(counts.get("shapes::catch"), Some(&4), "{counts:?}");
    // The standard library stays uninstrumented (but for its generic
    // functions instantiated in the program's crates): its functions show
    // as library calls, nested where the program calls them — println!'s
    // `_print` once per line printed, the allocator under the program's
    // functions.
    let lines = plain.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(
        counts.get("std::io::stdio::_print"),
        Some(&lines),
        "{counts:?}"
    );
    let prints = callers(&tdir, |n| n == "std::io::stdio::_print");
    assert!(
        prints.iter().all(|(_, caller)| caller == "shapes::main"),
        "{prints:?}"
    );
    let allocs = callers(&tdir, |n| {
        n.ends_with("__rust_alloc") || n.ends_with("__rdl_alloc")
    });
    assert!(
        allocs
            .iter()
            .any(|(_, caller)| caller.starts_with("shapes::")),
        "{allocs:?}"
    );
    assert!(
        counts.contains_key("std::rt::lang_start::{{closure}}"),
        "{counts:?}"
    );
    // Without library calls the standard library's functions stay out.
    let bare = dir.path().join("bare");
    let traced = record_with(&bare, &exe, &[], &["--no-libcall"]);
    assert!(traced.status.success(), "{traced:?}");
    let (counts, _) = trace_counts(&bare);
    assert!(!counts.contains_key("std::io::stdio::_print"), "{counts:?}");
    assert!(
        !counts.keys().any(|n| n.ends_with("__rust_alloc")),
        "{counts:?}"
    );
    if have("valgrind") {
        compare_with_callgrind(dir.path(), &exe, &[], &counts, "shapes");
    }
}

/// The dev profile: debug line tables (LLVM's `.file N "DIR" "NAME"`),
/// incremental compilation, no optimisation.
#[test]
fn dev_profile_builds_and_traces() {
    let dir = scratch();
    let target = dir.path().join("target");
    run_ok(&mut ftail_cargo(
        &shapes_manifest(),
        &target,
        &["build", "--offline"],
    ));
    let exe = target.join("debug/shapes");
    let (_, counts) = verified_trace(&exe, &dir.path().join("trace"));
    assert_eq!(counts.get("shapes::catch"), Some(&4), "{counts:?}");
}

/// A statically linked program never runs the dynamic loader that would
/// load ftail's runtime: refused when built, not found untraceable later.
#[test]
fn a_static_program_is_refused_with_a_reason() {
    let dir = scratch();
    let target = dir.path().join("target");
    let out = run(
        ftail_cargo(&shapes_manifest(), &target, &["build", "--offline"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("build it dynamically linked"), "{err}");
}

/// Symbols mangled as v0 (`-C symbol-mangling-version=v0`): the trace
/// names them with their generic arguments and numbered closures, and
/// counts them as callgrind does.
#[test]
fn v0_mangled_names_are_demangled() {
    let dir = scratch();
    let target = dir.path().join("target");
    run_ok(
        ftail_cargo(
            &shapes_manifest(),
            &target,
            &["build", "--release", "--offline"],
        )
        .env("RUSTFLAGS", "-C symbol-mangling-version=v0"),
    );
    let exe = target.join("release/shapes");
    let (_, counts) = verified_trace(&exe, &dir.path().join("trace"));
    let mangled: Vec<_> = counts.keys().filter(|n| n.starts_with("_R")).collect();
    assert!(mangled.is_empty(), "left mangled: {mangled:?}");
    assert_eq!(counts.get("shapes::catch"), Some(&4), "{counts:?}");
    assert_eq!(counts.get("shapes::generic::<u8>"), Some(&10), "{counts:?}");
    assert_eq!(
        counts.get("shapes::generic::<u32>"),
        Some(&10),
        "{counts:?}"
    );
    // Legacy names would say `shapes::apply` and `{{closure}}`.
    assert!(
        counts.contains_key("shapes::apply::<shapes::main::{closure#2}>"),
        "{counts:?}"
    );
    if have("valgrind") {
        compare_with_callgrind(dir.path(), &exe, &[], &counts, "shapes");
    }
}

#[test]
fn panic_abort_builds_and_aborts_as_it_would_untraced() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch();
    let target = dir.path().join("target");
    run_ok(&mut ftail_cargo(
        &shapes_manifest(),
        &target,
        &["build", "--profile", "abort", "--offline"],
    ));
    let exe = target.join("abort/shapes");
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let tdir = dir.path().join("trace");
    let traced = record(&tdir, &exe, &["panic"]);
    let plain = run(Command::new(&exe).arg("panic"));
    assert_eq!(plain.status.signal(), Some(libc::SIGABRT), "{plain:?}");
    assert_eq!(traced.status.signal(), plain.status.signal(), "{traced:?}");
    assert_eq!(traced.stdout, plain.stdout);
}

#[test]
fn lto_is_refused_with_a_reason() {
    let dir = scratch();
    let target = dir.path().join("target");
    let out = run(ftail_cargo(
        &shapes_manifest(),
        &target,
        &["build", "--release", "--offline"],
    )
    .env("CARGO_PROFILE_RELEASE_LTO", "fat"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("build without LTO"), "{err}");
}

/// A workspace of a library and a program using it (no dependencies):
/// `--workspace` builds both members with sites, their tests pass, and
/// the doc tests, which rustdoc compiles itself (no `RUSTC_WRAPPER`) and
/// links against the library's instrumented archive, pass and trace the
/// library's calls.
#[test]
fn workspace_members_carry_sites_and_doc_tests_run_against_them() {
    let dir = scratch();
    let target = dir.path().join("target");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/work/Cargo.toml");
    let tests = run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["test", "--workspace", "--release", "--offline"],
    ));
    for passed in [
        "tests::closed_form ... ok",
        "tally::tests::reports_the_sum ... ok",
        "calc/src/lib.rs - square (line 5) ... ok",
    ] {
        assert!(tests.contains(passed), "{tests}");
    }
    run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["build", "--workspace", "--release", "--offline"],
    ));
    let exe = target.join("release/app");
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let plain = run(&mut Command::new(&exe));
    let tdir = dir.path().join("trace");
    let traced = record(&tdir, &exe, &[]);
    assert!(traced.status.success(), "{traced:?}");
    assert_eq!(plain.stdout, traced.stdout);
    let (counts, _) = trace_counts(&tdir);
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(count("app::tally::report"), 10, "{counts:?}");
    assert_eq!(count("calc::sum_of_squares"), 10, "{counts:?}");
    assert_eq!(count("calc::square"), 55, "{counts:?}");

    // The doc test's program is gone once rustdoc has run it: its
    // functions are told apart by address. It calls square once, then
    // sum_of_squares(3), which calls square three times.
    let tdir = dir.path().join("doc-trace");
    run_ok(
        Command::new(ftail())
            .args(["record", "--no-libcall", "-d"])
            .arg(&tdir)
            .arg("--")
            .arg(ftail())
            .arg("cargo")
            .args(["test", "--doc", "-p", "calc", "--release", "--offline"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target),
    );
    let t = trace::open(&tdir).unwrap();
    let mut by_addr = BTreeMap::<u64, u64>::new();
    for th in t.processes.iter().flat_map(|p| &p.threads) {
        assert!(th.balance().is_balanced(), "{:?}", th.balance());
        for e in th
            .events
            .iter()
            .filter(|e| e.kind() == Some(EventKind::Entry))
        {
            *by_addr.entry(e.addr()).or_default() += 1;
        }
    }
    let mut calls: Vec<u64> = by_addr.into_values().collect();
    calls.sort();
    assert_eq!(calls, [1, 4], "calls per function of the doc test");
}

/// The dev profile builds incrementally: after an edit that adds a
/// function called from main, the rebuilt program is traced with it and
/// its tables match its code (every codegen unit is compiled anew, none
/// taken from rustc's incremental cache without its assembly).
#[test]
fn incremental_rebuild_traces_the_edited_program() {
    let dir = scratch();
    let work = dir.path().join("work");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/work"))
            .arg(&work),
    );
    let manifest = work.join("Cargo.toml");
    let target = dir.path().join("target");
    let build = || {
        run_ok(&mut ftail_cargo(
            &manifest,
            &target,
            &["build", "--workspace", "--offline"],
        ))
    };
    build();
    let main_rs = work.join("app/src/main.rs");
    let text = std::fs::read_to_string(&main_rs).unwrap();
    let edited = text.replace(
        "    println!(\"total {total}\");",
        "    println!(\"total {total} added {}\", added(total));",
    ) + "\n#[inline(never)]\nfn added(x: u64) -> u64 {\n    calc::square(x % 5)\n}\n";
    assert_ne!(text, edited);
    std::fs::write(&main_rs, edited).unwrap();
    build();
    let exe = target.join("debug/app");
    let (stdout, counts) = verified_trace(&exe, &dir.path().join("trace"));
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(stdout.contains("total 1210 added 0"), "{stdout}");
    assert_eq!(counts.get("app::added"), Some(&1), "{counts:?}");
    // From the codegen unit the edit left alone.
    assert_eq!(counts.get("app::tally::report"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("calc::square"), Some(&56), "{counts:?}");
}

/// A link line longer than the system takes: rustc passes it to the
/// linker in a response file (`@FILE`), which ftail-link reads to find
/// the objects it assembles. 12,000 `-Wl,-O1` make the line longer than
/// the 128 KiB that a 256 KiB stack allows; they come to rustc in a
/// response file of its own, so that rustc itself still starts.
#[test]
fn a_link_line_in_a_response_file_is_instrumented() {
    let dir = scratch();
    let flags = dir.path().join("flags");
    std::fs::write(&flags, "-C\nlink-arg=-Wl,-O1\n".repeat(12_000)).unwrap();
    let target = dir.path().join("target");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/work/Cargo.toml");
    let cargo = ftail_cargo(&manifest, &target, &["build", "-p", "app", "--offline"]);
    run_ok(
        Command::new("sh")
            .args(["-c", "ulimit -s 256 && exec \"$0\" \"$@\""])
            .arg(cargo.get_program())
            .args(cargo.get_args())
            .env("RUSTFLAGS", format!("@{}", flags.display())),
    );
    let exe = target.join("debug/app");
    let (_, counts) = verified_trace(&exe, &dir.path().join("trace"));
    assert_eq!(counts.get("app::tally::report"), Some(&10), "{counts:?}");
}

/// Split debug information (`split-debuginfo`, packed into a `.dwp` or
/// left in `.dwo` files): the build links, traces, and the split units
/// describe the rewritten code (a function's length is its symbol's size).
#[test]
fn split_debuginfo_describes_the_rewritten_code() {
    let dir = scratch();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/work/Cargo.toml");
    for split in ["packed", "unpacked"] {
        let target = dir.path().join(split);
        run_ok(
            ftail_cargo(&manifest, &target, &["build", "--workspace", "--offline"])
                .env("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", split),
        );
        let exe = target.join("debug/app");
        let (ok, text) = sites(&exe);
        assert!(ok && text.contains(" 0 mismatches"), "{text}");
        let tdir = dir.path().join(format!("trace-{split}"));
        let traced = record(&tdir, &exe, &[]);
        assert!(traced.status.success(), "{traced:?}");
        let (counts, _) = trace_counts(&tdir);
        assert_eq!(counts.get("calc::square"), Some(&55), "{counts:?}");
        let units: Vec<PathBuf> = if split == "packed" {
            vec![target.join("debug/app.dwp")]
        } else {
            std::fs::read_dir(target.join("debug/deps"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "dwo"))
                .collect()
        };
        let nm = run_ok(Command::new("nm").arg("-S").arg(&exe));
        for function in ["4calc6square", "3app5tally6report"] {
            let (name, size) = nm
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[3].contains(function)).then(|| (f[3], f[1]))
                })
                .next()
                .unwrap_or_else(|| panic!("no {function} in {nm}"));
            let size = u64::from_str_radix(size, 16).unwrap();
            assert_eq!(split_unit_length(&units, name), size, "{split}: {name}");
        }
    }
}

/// The length (`DW_AT_high_pc`) that the split units in `files` give the
/// function whose linkage name is `name`.
fn split_unit_length(files: &[PathBuf], name: &str) -> u64 {
    let info = run_ok(Command::new("readelf").arg("--debug-dump=info").args(files));
    let mut high_pc = None;
    for line in info.lines() {
        if line.contains("DW_TAG_") {
            high_pc = None;
        } else if let Some((_, v)) = line.split_once("DW_AT_high_pc") {
            let v = v.trim_start_matches([' ', ':']).trim();
            high_pc = u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        } else if line.contains("DW_AT_linkage_name") && line.trim_end().ends_with(name) {
            return high_pc.unwrap_or_else(|| panic!("{name}: no DW_AT_high_pc"));
        }
    }
    panic!("{name} not in the split units {files:?}")
}

/// rayon's pool and tokio's multi-threaded runtime (from crates.io, at the
/// fixture's locked versions): every thread balanced, the fixture's own
/// functions called as often as the program makes them, and the pools'
/// own functions traced.
#[test]
fn rayon_and_tokio_balance_per_thread() {
    if !full_suite() {
        eprintln!("skipping the crates.io build: set FTAIL_CORPUS=1");
        return;
    }
    let dir = scratch();
    let target = dir.path().join("target");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rust/pool/Cargo.toml");
    run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["build", "--release", "--locked"],
    ));
    let exe = target.join("release/pool");
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let plain = run(&mut Command::new(&exe));
    assert!(plain.status.success(), "{plain:?}");
    let tdir = dir.path().join("trace");
    let traced = record(&tdir, &exe, &[]);
    assert!(traced.status.success(), "{traced:?}");
    assert_eq!(plain.stdout, traced.stdout);
    let (counts, _) = trace_counts(&tdir);
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    // 1000 leaves over rayon's pool; a task tree of 1 + 3 + 9 + 27 + 81
    // nodes, each visited once, and 8 more visits from tokio::main.
    assert_eq!(count("pool::leaf"), 1000, "{counts:?}");
    assert_eq!(count("pool::spread"), 1);
    assert_eq!(count("pool::node"), 121, "{counts:?}");
    assert_eq!(count("pool::visit"), 121 + 8, "{counts:?}");
    // tokio::main's async body: polled at least once (how often depends
    // on when its tasks finish).
    assert!(count("pool::run_macro::{{closure}}") >= 1, "{counts:?}");
    for krate in ["rayon_core::", "tokio::"] {
        assert!(
            counts.keys().any(|n| n.starts_with(krate)),
            "no {krate} function traced: {counts:?}"
        );
    }
}

/// semver, fetched by cargo, copied out of the registry and tested:
/// plainly, through `ftail cargo`, and each test binary again under
/// `ftail record`; `semver::` functions called as callgrind counts.
#[test]
fn semver_from_crates_io_passes_its_suite_traced() {
    if !full_suite() {
        eprintln!("skipping the crates.io build: set FTAIL_CORPUS=1");
        return;
    }
    let dir = scratch();
    let src = fetch_crate(dir.path(), "semver", "=1.0.28");
    let target = dir.path().join("target");
    let manifest = src.join("Cargo.toml");
    run_ok(
        Command::new("cargo")
            .args(["test", "--release", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target),
    );
    let json = run_ok(&mut ftail_cargo(
        &manifest,
        &target,
        &["test", "--release", "--no-run", "--message-format=json"],
    ));
    let exes = test_executables(&json);
    assert!(exes.len() >= 3, "{exes:?}");
    for exe in &exes {
        let (ok, text) = sites(exe);
        assert!(ok && text.contains(" 0 mismatches"), "{text}");
        let tdir = dir.path().join("trace");
        let out = record(&tdir, exe, &["--test-threads", "1"]);
        assert!(out.status.success(), "{exe:?}: {out:?}");
        let (counts, _) = trace_counts(&tdir);
        if exe
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("test_version-")
        {
            assert!(have("valgrind"));
            compare_with_callgrind(dir.path(), exe, &["--test-threads", "1"], &counts, "semver");
        }
    }
}

/// Fetches `name` `version` with cargo (a throwaway crate that depends on
/// it) and copies its source out of the registry; returns the copy.
fn fetch_crate(dir: &Path, name: &str, version: &str) -> PathBuf {
    let probe = dir.join("probe");
    std::fs::create_dir_all(probe.join("src")).unwrap();
    std::fs::write(probe.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        probe.join("Cargo.toml"),
        format!(
            "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [workspace]\n[dependencies]\n{name} = \"{version}\"\n"
        ),
    )
    .unwrap();
    let manifest = probe.join("Cargo.toml");
    run_ok(
        Command::new("cargo")
            .arg("fetch")
            .arg("--manifest-path")
            .arg(&manifest),
    );
    let meta = run_ok(
        Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest),
    );
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let path = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .map(PathBuf::from)
        .unwrap();
    let copy = dir.join(name);
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(path.parent().unwrap())
            .arg(&copy),
    );
    let manifest = copy.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, without_benchmarks(&text)).unwrap();
    copy
}

/// A manifest without its benchmarks and their harness (criterion and its
/// dozens of crates, which the tests do not use and which would take most
/// of the build).
fn without_benchmarks(manifest: &str) -> String {
    let mut out = String::new();
    let mut dropping = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            dropping = line.contains("bench") || line.contains("criterion");
        }
        if !dropping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The test executables cargo's JSON messages name.
fn test_executables(json: &str) -> Vec<PathBuf> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect()
}
