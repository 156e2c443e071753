//! Builds `tests/shapes` with gcc 12, clang 19 and clang 16 at every flag set
//! the compiler side must handle, through `ftail cc`: each build must link
//! with `-z text` (no text relocations), print exactly what a plain build
//! prints, and pass `ftail sites` verification with zero mismatches.

mod common;

use std::process::Command;

use common::*;

/// (name, flags for gcc, flags for clang, or None when not applicable).
const CONFIGS: &[(&str, &str, Option<&str>)] = &[
    ("O0", "-O0", Some("-O0")),
    ("O2", "-O2", Some("-O2")),
    ("O3", "-O3", Some("-O3")),
    ("Os", "-Os", Some("-Os")),
    (
        "no-pie",
        "-O2 -fno-pie -no-pie",
        Some("-O2 -fno-pie -no-pie"),
    ),
    (
        "cf-protection",
        "-O2 -fcf-protection=full",
        Some("-O2 -fcf-protection=full"),
    ),
    (
        "harden-sls",
        "-O2 -mharden-sls=all",
        Some("-O2 -mharden-sls=all"),
    ),
    (
        "function-sections",
        "-O2 -ffunction-sections -Wl,--gc-sections",
        Some("-O2 -ffunction-sections -Wl,--gc-sections"),
    ),
    ("partition", "-O2 -freorder-blocks-and-partition", None),
    (
        "thunk-extern",
        "-O2 -mindirect-branch=thunk-extern -mfunction-return=thunk-extern",
        Some("-O2 -mretpoline -mretpoline-external-thunk -mfunction-return=thunk-extern"),
    ),
    ("debug", "-O2 -g", Some("-O2 -g")),
    (
        "O3-debug-cf",
        "-O3 -g -fcf-protection=full",
        Some("-O3 -g -fcf-protection=full"),
    ),
];

fn check_compiler(cc: &str) {
    if !have(cc) {
        return;
    }
    let dir = scratch();
    let shapes = repo().join("tests/shapes");
    let plain = dir.path().join("plain");
    run_ok(
        Command::new(cc)
            .args(["-O2", "-o"])
            .arg(&plain)
            .arg(shapes.join("shapes.c"))
            .arg(shapes.join("shapes_main.c")),
    );
    let expected = run_ok(&mut Command::new(&plain));
    let clang = cc.contains("clang");
    let mut failures = Vec::new();
    for &(name, gcc_flags, clang_flags) in CONFIGS {
        let flags = if clang { clang_flags } else { Some(gcc_flags) };
        let Some(flags) = flags else { continue };
        let exe = dir.path().join(name);
        let mut cmd = ftail_cc(cc);
        cmd.args(flags.split_whitespace())
            .arg("-Wl,-z,text")
            .arg("-o")
            .arg(&exe)
            .arg(shapes.join("shapes.c"))
            .arg(shapes.join("shapes_main.c"));
        if name == "thunk-extern" {
            cmd.arg(shapes.join("thunks.s"));
        }
        let out = run(&mut cmd);
        if !out.status.success() {
            failures.push(format!(
                "{cc} {name}: build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got = run_ok(&mut Command::new(&exe));
        if got != expected {
            failures.push(format!(
                "{cc} {name}: output differs:\n{got}\nexpected:\n{expected}"
            ));
        }
        let (ok, report) = sites(&exe);
        if !ok || !report.contains(" 0 mismatches") {
            failures.push(format!("{cc} {name}: ftail sites:\n{report}"));
        }
        // Every shape function must be instrumented, not skipped.
        let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
        for f in [
            "tail_direct",
            "tail_cond",
            "tail_reg",
            "table_switch",
            "computed_goto",
            "only_tails",
        ] {
            if !listing
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(f))
            {
                failures.push(format!("{cc} {name}: {f} has no sites"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shapes_gcc() {
    check_compiler("gcc");
}

#[test]
fn shapes_clang_19() {
    check_compiler("clang-19");
}

#[test]
fn shapes_clang_16() {
    check_compiler("clang-16");
}

/// A shared library built from the shapes links with `-z text` and verifies.
#[test]
fn shared_library_has_no_text_relocations() {
    for cc in ["gcc", "clang-19"] {
        if !have(cc) {
            continue;
        }
        let dir = scratch();
        let lib = dir.path().join("libshapes.so");
        run_ok(
            ftail_cc(cc)
                .args(["-O2", "-fPIC", "-shared", "-Wl,-z,text", "-o"])
                .arg(&lib)
                .arg(repo().join("tests/shapes/shapes.c")),
        );
        let (ok, report) = sites(&lib);
        assert!(ok, "{cc}: {report}");
        let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&lib));
        assert!(!dynamic.contains("TEXTREL"), "{cc}: {dynamic}");
    }
}

/// gcc's jump from a cold part back to the label at the very end of the
/// hot part, after a call of a noreturn function (`tests/shapes/
/// cold_end_label.s`): the rewriter keeps it inside the function (its
/// target is one of the function's labels), and `ftail sites` agrees
/// (before: "jump out of the function … without a tail site"); the
/// program runs traced with a balanced trace.
#[test]
fn a_cold_jump_to_the_end_of_the_hot_part_stays_inside() {
    if !have("gcc") {
        return;
    }
    let dir = scratch();
    let exe = dir.path().join("cold_end");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/shapes/cold_end_label.s")),
    );
    let (ok, text) = sites(&exe);
    assert!(ok, "{text}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" check ") && l.contains("cold")),
        "check has no cold part in its site table:\n{listing}"
    );
    let trace = dir.path().join("trace");
    let (out, t) = record_trace(&trace, &exe, &[], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "23\n");
    let thread = &t.processes[0].threads[0];
    assert!(thread.balance().is_balanced());
}
