//! Rust programs built through `ftail cargo`: the checked-in fixture crate
//! (`tests/rust/shapes`, no dependencies, built offline into a scratch
//! target directory) passes its tests with sites placed, verifies with
//! `ftail sites`, and traces with every thread balanced, panics that
//! unwind closed as unwound, and per-function call counts equal to
//! callgrind's. With `FTAIL_CORPUS=1`, a crate from crates.io (semver, a
//! parser library, fetched by cargo) does the same with its own suite.

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

fn record(tdir: &Path, exe: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(tdir)
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
    // functions instantiated in the program's crates): println!'s `_print`
    // runs, untraced.
    assert!(!counts.contains_key("std::io::stdio::_print"), "{counts:?}");
    assert!(
        counts.contains_key("std::rt::lang_start::{{closure}}"),
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
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let tdir = dir.path().join("trace");
    let traced = record(&tdir, &exe, &[]);
    assert!(traced.status.success(), "{traced:?}");
    let (counts, _) = trace_counts(&tdir);
    assert_eq!(counts.get("shapes::catch"), Some(&4), "{counts:?}");
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
