//! `ftail cc` and `ftail as` as a build tool sees them: flags, pipes,
//! temporary files, gcc and clang LTO, refusals, diagnostics and CMake.

mod common;

use std::process::Command;

use common::*;

fn shapes(file: &str) -> std::path::PathBuf {
    repo().join("tests/shapes").join(file)
}

fn build_and_verify(cc: &str, extra: &[&str]) -> String {
    let dir = scratch();
    let exe = dir.path().join("prog");
    run_ok(
        ftail_cc(cc)
            .args(extra)
            .arg("-o")
            .arg(&exe)
            .arg(shapes("shapes.c"))
            .arg(shapes("shapes_main.c")),
    );
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    report
}

#[test]
fn pipe_sends_assembly_through_stdin() {
    let report = build_and_verify("gcc", &["-O2", "-pipe"]);
    assert!(report.contains("functions"), "{report}");
}

#[test]
fn save_temps_never_edits_the_users_assembly() {
    let dir = scratch();
    run_ok(
        ftail_cc("gcc")
            .current_dir(dir.path())
            .args(["-O2", "-save-temps", "-c"])
            .arg(shapes("shapes.c")),
    );
    let kept = std::fs::read_to_string(dir.path().join("shapes.s")).unwrap();
    assert!(kept.contains(".ident\t\"GCC:"));
    assert!(
        !kept.contains(".Lftail_"),
        "the -save-temps file was instrumented in place"
    );
    let obj = run_ok(
        Command::new("readelf")
            .args(["-S"])
            .arg(dir.path().join("shapes.o")),
    );
    assert!(obj.contains(".note.ftail"), "{obj}");
}

#[test]
fn gcc_lto_is_instrumented_when_linking_through_ftail() {
    let dir = scratch();
    let obj = dir.path().join("shapes.o");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-flto", "-c", "-o"])
            .arg(&obj)
            .arg(shapes("shapes.c")),
    );
    let exe = dir.path().join("prog");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-flto", "-o"])
            .arg(&exe)
            .arg(&obj)
            .arg(shapes("shapes_main.c")),
    );
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert!(listing.contains("computed_goto"), "{listing}");
}

/// Builds shapes.c into a bitcode archive and shapes_main.c into a bitcode
/// object with clang `lto` (`-flto=thin` or `-flto`), links them through
/// `ftail cc` with lld, and checks the program against a plain clang build.
fn clang_lto_shapes(lto: &str) {
    if !have("clang-19") || !have("ld.lld-19") {
        eprintln!("skipping: needs clang-19 and lld-19");
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let plain = d.join("plain");
    run_ok(
        Command::new("clang-19")
            .args(["-O2", "-o"])
            .arg(&plain)
            .arg(shapes("shapes.c"))
            .arg(shapes("shapes_main.c")),
    );
    let lib = d.join("libshapes.a");
    let objs = [("shapes.o", "shapes.c"), ("main.o", "shapes_main.c")];
    for (obj, src) in objs {
        run_ok(
            ftail_cc("clang-19")
                .args(["-O2", "-g", lto, "-c", "-o"])
                .arg(d.join(obj))
                .arg(shapes(src)),
        );
        let head = std::fs::read(d.join(obj)).unwrap();
        assert!(head.starts_with(b"BC\xC0\xDE"), "{obj} is not bitcode");
    }
    run_ok(
        Command::new("ar")
            .arg("rc")
            .arg(&lib)
            .arg(d.join("shapes.o")),
    );
    let exe = d.join("prog");
    run_ok(ftail_cc("clang-19").current_dir(d).args([
        "-O2",
        lto,
        "-fuse-ld=lld",
        "-o",
        "prog",
        "main.o",
        "-L.",
        "-lshapes",
    ]));
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    for f in ["computed_goto", "fib", "main"] {
        assert!(listing.contains(f), "{f} has no sites:\n{listing}");
    }
    assert_eq!(
        run_ok(&mut Command::new(&exe)),
        run_ok(&mut Command::new(&plain))
    );
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".s") || n.contains(".lto."))
        .collect();
    assert!(left.is_empty(), "the LTO link left {left:?} behind");
}

#[test]
fn clang_thin_lto_is_instrumented_when_linking_through_ftail() {
    clang_lto_shapes("-flto=thin");
}

#[test]
fn clang_full_lto_is_instrumented_when_linking_through_ftail() {
    clang_lto_shapes("-flto");
}

/// Functions that no build may inline, called a known number of times
/// across three files, one of them in an archive.
const COUNTED: [(&str, &str); 3] = [
    (
        "leaf.c",
        "__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }\n\
         __attribute__((noinline)) int walk(int n) { return n ? leaf(walk(n - 1)) : 0; }\n",
    ),
    (
        "mid.c",
        "int leaf(int), walk(int);\n\
         __attribute__((noinline)) int mid(int n) { return walk(n) - leaf(n); }\n",
    ),
    (
        "main.c",
        "#include <stdio.h>\nint mid(int);\n\
         int main(void) { int s = 0; for (int i = 0; i < 10; i++) s += mid(i); \
         printf(\"%d\\n\", s); return 0; }\n",
    ),
];

/// Entries recorded per function name.
fn entry_counts(
    tdir: &std::path::Path,
    exe: &std::path::Path,
) -> std::collections::HashMap<String, u64> {
    let (out, t) = record_trace(tdir, exe, &[], &[]);
    assert!(out.status.success(), "{out:?}");
    let mut counts = std::collections::HashMap::new();
    for p in &t.processes {
        let syms = ftail_trace::trace::Symbols::load(p);
        for th in &p.threads {
            assert!(th.balance().is_balanced(), "{:?}", th.balance());
            for e in &th.events {
                if e.kind() == Some(ftail_abi::trace::EventKind::Entry) {
                    *counts.entry(syms.name(e.addr(), e.tsc)).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn clang_lto_call_counts_equal_the_plain_builds() {
    if !have("clang-19") || !have("ld.lld-19") {
        eprintln!("skipping: needs clang-19 and lld-19");
        return;
    }
    let dir = scratch();
    let d = dir.path();
    for (name, text) in COUNTED {
        std::fs::write(d.join(name), text).unwrap();
    }
    let build = |tag: &str, flags: &[&str]| {
        let sub = d.join(tag);
        std::fs::create_dir(&sub).unwrap();
        for (name, _) in COUNTED {
            run_ok(
                ftail_cc("clang-19")
                    .current_dir(&sub)
                    .args(["-O2", "-c"])
                    .args(flags)
                    .arg(d.join(name)),
            );
        }
        run_ok(
            Command::new("ar")
                .current_dir(&sub)
                .args(["rc", "libleaf.a", "leaf.o"]),
        );
        run_ok(
            ftail_cc("clang-19")
                .current_dir(&sub)
                .args([
                    "-O2",
                    "-fuse-ld=lld",
                    "-o",
                    "prog",
                    "main.o",
                    "mid.o",
                    "libleaf.a",
                ])
                .args(flags),
        );
        let exe = sub.join("prog");
        let (ok, report) = sites(&exe);
        assert!(ok && report.contains(" 0 mismatches"), "{report}");
        entry_counts(&sub.join("trace"), &exe)
    };
    let plain = build("plain", &[]);
    let thin = build("thin", &["-flto=thin"]);
    let full = build("full", &["-flto"]);
    let pick = |c: &std::collections::HashMap<String, u64>| {
        ["main", "mid", "walk", "leaf"].map(|f| (f, c.get(f).copied().unwrap_or(0)))
    };
    assert_eq!(
        pick(&plain),
        [("main", 1), ("mid", 10), ("walk", 55), ("leaf", 55)]
    );
    assert_eq!(pick(&thin), pick(&plain), "ThinLTO");
    assert_eq!(pick(&full), pick(&plain), "full LTO");
}

/// Compiles shapes.c and shapes_main.c with clang `-O2 -flto=thin` into
/// `dir` through `ftail cc`; returns the objects.
fn thin_lto_objects(dir: &std::path::Path) -> [std::path::PathBuf; 2] {
    ["shapes", "shapes_main"].map(|name| {
        let obj = dir.join(format!("{name}.o"));
        run_ok(
            ftail_cc("clang-19")
                .args(["-O2", "-flto=thin", "-c", "-o"])
                .arg(&obj)
                .arg(shapes(&format!("{name}.c"))),
        );
        obj
    })
}

#[test]
fn clang_lto_objects_named_in_a_response_file_are_instrumented() {
    if !have("clang-19") || !have("ld.lld-19") {
        eprintln!("skipping: needs clang-19 and lld-19");
        return;
    }
    let dir = scratch();
    let [lib, main] = thin_lto_objects(dir.path());
    let rsp = dir.path().join("objects.rsp");
    std::fs::write(&rsp, format!("'{}'\n'{}'\n", main.display(), lib.display())).unwrap();
    let exe = dir.path().join("prog");
    run_ok(
        ftail_cc("clang-19")
            .args(["-O2", "-flto=thin", "-fuse-ld=lld", "-o"])
            .arg(&exe)
            .arg(format!("@{}", rsp.display())),
    );
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert!(listing.contains("computed_goto"), "{listing}");
}

/// A build that runs ThinLTO's back ends itself: the index-only link
/// passes through, each back end is a compile line through ftail's
/// assembler, the final link takes native objects.
#[test]
fn clang_distributed_thin_lto_back_ends_are_instrumented() {
    if !have("clang-19") || !have("ld.lld-19") {
        eprintln!("skipping: needs clang-19 and lld-19");
        return;
    }
    let dir = scratch();
    let objs = thin_lto_objects(dir.path());
    run_ok(
        ftail_cc("clang-19")
            .args([
                "-O2",
                "-flto=thin",
                "-fuse-ld=lld",
                "-Wl,--thinlto-index-only",
                "-o",
            ])
            .arg(dir.path().join("prog"))
            .args(&objs),
    );
    let mut natives = Vec::new();
    for obj in &objs {
        let native = obj.with_extension("native.o");
        let mut index = obj.clone().into_os_string();
        index.push(".thinlto.bc");
        let mut flag = std::ffi::OsString::from("-fthinlto-index=");
        flag.push(&index);
        run_ok(
            ftail_cc("clang-19")
                .args(["-O2", "-c", "-x", "ir"])
                .arg(obj)
                .arg(flag)
                .arg("-o")
                .arg(&native),
        );
        natives.push(native);
    }
    let exe = dir.path().join("prog");
    run_ok(
        ftail_cc("clang-19")
            .args(["-fuse-ld=lld", "-o"])
            .arg(&exe)
            .args(&natives),
    );
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert!(listing.contains("computed_goto"), "{listing}");
}

#[test]
fn clang_lto_without_lld_is_refused_with_a_reason() {
    if !have("clang-19") {
        return;
    }
    let dir = scratch();
    let obj = dir.path().join("shapes.o");
    run_ok(
        ftail_cc("clang-19")
            .args(["-O2", "-flto=thin", "-c", "-o"])
            .arg(&obj)
            .arg(shapes("shapes.c")),
    );
    let out = run(ftail_cc("clang-19")
        .args(["-O2", "-flto=thin", "-fuse-ld=bfd", "-o"])
        .arg(dir.path().join("prog"))
        .arg(&obj)
        .arg(shapes("shapes_main.c")));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ftail: error: clang LTO links"), "{err}");
    assert!(err.contains("add -fuse-ld=lld"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn intel_syntax_is_refused() {
    let dir = scratch();
    let out = run(ftail_cc("gcc")
        .args(["-O2", "-masm=intel", "-c", "-o"])
        .arg(dir.path().join("x.o"))
        .arg(shapes("shapes.c")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Intel syntax"), "{err}");
}

#[test]
fn compiler_diagnostics_and_status_pass_through() {
    let dir = scratch();
    let bad = dir.path().join("bad.c");
    std::fs::write(&bad, "int f(void) { return undefined_name; }\n").unwrap();
    let plain = run(Command::new("gcc")
        .current_dir(dir.path())
        .args(["-c", "bad.c"]));
    let ours = run(ftail_cc("gcc")
        .current_dir(dir.path())
        .args(["-c", "bad.c"]));
    assert_eq!(plain.status.code(), ours.status.code());
    assert_eq!(plain.stderr, ours.stderr);
    assert!(!plain.status.success());
}

#[test]
fn default_compiler_is_used_without_one_named() {
    let dir = scratch();
    let obj = dir.path().join("x.o");
    run_ok(
        Command::new(ftail())
            .args(["cc", "-O2", "-c", "-o"])
            .arg(&obj)
            .arg(shapes("shapes.c")),
    );
    let sections = run_ok(Command::new("readelf").arg("-S").arg(&obj));
    assert!(sections.contains(".note.ftail"), "{sections}");
}

#[test]
fn handwritten_assembly_passes_through_unchanged() {
    let dir = scratch();
    let ours = dir.path().join("ours.o");
    let plain = dir.path().join("plain.o");
    run_ok(
        Command::new(ftail())
            .args(["as", "--64", "-o"])
            .arg(&ours)
            .arg(shapes("thunks.s")),
    );
    run_ok(
        Command::new("as")
            .args(["--64", "-o"])
            .arg(&plain)
            .arg(shapes("thunks.s")),
    );
    assert_eq!(std::fs::read(ours).unwrap(), std::fs::read(plain).unwrap());
}

#[test]
fn verbose_mode_names_functions_left_alone() {
    let dir = scratch();
    let src = dir.path().join("asm.c");
    std::fs::write(
        &src,
        "int plain(int x) { return x + 1; }\n\
         int escapes(int x) { __asm__ volatile(\"test %0,%0; jz 1f; ret; 1:\" :: \"r\"(x)); return x; }\n",
    )
    .unwrap();
    let out = run(ftail_cc("gcc")
        .env("FTAIL_VERBOSE", "1")
        .args(["-O2", "-c", "-o"])
        .arg(dir.path().join("asm.o"))
        .arg(&src));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("escapes: not instrumented: line"), "{err}");
    assert!(err.contains("inline assembly returns"), "{err}");
    assert!(err.contains("1 functions instrumented, 1 skipped"), "{err}");
}

#[test]
fn cmake_compiler_launcher() {
    if !have("cmake") {
        return;
    }
    let dir = scratch();
    let launcher = format!("{};cc", ftail().display());
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(repo().join("tests/cmake-project"))
            .arg("-B")
            .arg(dir.path())
            .arg(format!("-DCMAKE_C_COMPILER_LAUNCHER={launcher}"))
            .arg("-DCMAKE_C_FLAGS=-O2"),
    );
    run_ok(Command::new("cmake").arg("--build").arg(dir.path()));
    let exe = dir.path().join("shapes_main");
    let out = run_ok(&mut Command::new(&exe));
    assert!(out.starts_with("102 128 105 2 8 -6 -7"), "{out}");
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
    let listing = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert!(
        listing.contains(" tail_cond ") && listing.contains(" main "),
        "{listing}"
    );
}

#[test]
fn sites_rejects_files_without_tables() {
    let out = run(Command::new(ftail()).arg("sites").arg("/bin/true"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/bin/true: no ftail site tables"), "{err}");
    let out = run(Command::new(ftail())
        .arg("sites")
        .arg(repo().join("README.md")));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ELF file"));
}

/// Builds the shapes with gcc -O2 into `dir`, returning the executable.
fn built_shapes(dir: &std::path::Path) -> std::path::PathBuf {
    let exe = dir.join("prog");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(shapes("shapes.c"))
            .arg(shapes("shapes_main.c")),
    );
    exe
}

/// File offset of the first ftail note's descriptor.
fn note_desc_offset(data: &[u8]) -> usize {
    let at = data
        .windows(6)
        .position(|w| w == b"ftail\0")
        .expect("no ftail note");
    at + 8 // name padded to 8 bytes
}

#[test]
fn sites_json_lists_functions_and_kinds() {
    let dir = scratch();
    let exe = built_shapes(dir.path());
    let json = run_ok(Command::new(ftail()).args(["sites", "--json"]).arg(&exe));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let funcs = v["functions"].as_array().unwrap();
    let f = funcs
        .iter()
        .find(|f| f["name"] == "tail_member")
        .expect("tail_member listed");
    let kinds: Vec<&str> = f["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["entry", "tail-indirect"]);
    let sw = funcs.iter().find(|f| f["name"] == "table_switch").unwrap();
    assert!(sw["sites"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["kind"] == "local-indirect"));
    assert_eq!(
        v["summary"]["functions"].as_u64().unwrap() as usize,
        funcs.len()
    );
}

#[test]
fn sites_reports_damage_precisely() {
    let dir = scratch();
    let exe = built_shapes(dir.path());
    let data = std::fs::read(&exe).unwrap();

    // A site whose bytes were overwritten is a mismatch (exit 1), not a
    // crash: an entry's nop, an exit's int3 padding.
    for (pattern, at, why) in [
        (&[0x0f, 0x1f, 0x44, 0x00, 0x00][..], 0, "not the 5-byte nop"),
        (
            &[0xc3, 0xcc, 0xcc, 0xcc, 0xcc][..],
            2,
            "not padded with int3",
        ),
    ] {
        let mut broken = data.clone();
        let site = broken
            .windows(5)
            .position(|w| w == pattern)
            .expect("a site");
        broken[site + at] = 0x90;
        let path = dir.path().join("broken-site");
        std::fs::write(&path, &broken).unwrap();
        let out = run(Command::new(ftail()).args(["sites", "-q"]).arg(&path));
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("mismatch:") && text.contains(why), "{text}");
    }

    // A table of an unknown version is refused with its address.
    let desc = note_desc_offset(&data);
    for (version, why) in [
        (
            99u32,
            "site tables of version 99, from a newer ftail (this one reads versions 3 to 4)",
        ),
        // Tables of the nop-before-ret layout: a clear refusal.
        (
            1,
            "site tables of version 1, from an older ftail (this one reads versions 3 to 4): \
             rebuild the program with this ftail",
        ),
        // Tables without call sites: rebuilt, library calls show.
        (
            2,
            "site tables of version 2, from an older ftail (this one reads versions 3 to 4): \
             rebuild the program with this ftail",
        ),
    ] {
        let mut versioned = data.clone();
        versioned[desc..desc + 4].copy_from_slice(&version.to_le_bytes());
        let path = dir.path().join("bad-version");
        std::fs::write(&path, &versioned).unwrap();
        let out = run(Command::new(ftail()).arg("sites").arg(&path));
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }

    // Version 3 tables (no indirect call sites) are still read.
    let mut v3 = data.clone();
    v3[desc..desc + 4].copy_from_slice(&3u32.to_le_bytes());
    let path = dir.path().join("version-3");
    std::fs::write(&path, &v3).unwrap();
    let (ok, text) = sites(&path);
    assert!(ok, "{text}");

    // A function table pointing outside the file is named, not followed.
    let mut pointing = data.clone();
    pointing[desc + 4..desc + 8].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let path = dir.path().join("bad-pointer");
    std::fs::write(&path, &pointing).unwrap();
    let out = run(Command::new(ftail()).arg("sites").arg(&path));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("function table lies outside the file"),
        "{err}"
    );

    // A truncated file is an error too.
    let path = dir.path().join("truncated");
    std::fs::write(&path, &data[..data.len() / 3]).unwrap();
    let out = run(Command::new(ftail()).arg("sites").arg(&path));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression: a tail site in the last function of `.text` was checked
/// against bytes of a debug section, which also "starts" at address 0.
#[test]
fn tail_site_at_the_end_of_text_verifies_with_debug_info() {
    let dir = scratch();
    let main = dir.path().join("main.c");
    let last = dir.path().join("last.c");
    std::fs::write(
        &main,
        "int last(int);\nint ext(int x) { return x; }\nint main(void) { return last(-1); }\n",
    )
    .unwrap();
    // -g3 with a header makes .debug_str/.debug_macro larger than the
    // address of .text, which is what exposed the bug.
    std::fs::write(
        &last,
        "#include <stdio.h>\nint ext(int);\nint last(int x) { return ext(x + 1); }\n",
    )
    .unwrap();
    let exe = dir.path().join("prog");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-g3", "-o"])
            .arg(&exe)
            .arg(&main)
            .arg(&last),
    );
    let (ok, report) = sites(&exe);
    assert!(ok && report.contains(" 0 mismatches"), "{report}");
}
