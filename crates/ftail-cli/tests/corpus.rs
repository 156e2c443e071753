//! Real code, untouched behaviour: Lua (as C and as C++, with gcc and
//! clang 19), jq, SQLite, zstd and zlib are built through `ftail cc` and pass
//! their own test suites with every site unpatched; `ftail sites` then
//! verifies every binary they produced with zero mismatches. zlib is
//! also built with clang ThinLTO and full LTO, and its call counts
//! compared with the plain clang build's.
//!
//! Slow (tens of minutes), so they run only with `FTAIL_CORPUS=1`, which
//! `scripts/test-all` and CI always set. Sources are fetched once into
//! `corpus/.cache`; builds go to `target/corpus/NAME-VARIANT` and each
//! leaves `sites.txt` there with the summary line of every binary.
//!
//! CI traces Lua in every tail mode and the others in `auto`;
//! `FTAIL_CORPUS_MODES=all` traces every suite in every mode (by hand:
//! about half an hour more).

mod common;

use std::process::Command;

use common::*;

fn corpus(name: &str, variant: &str, cc: &str, traced_modes: &[&str]) {
    corpus_with(name, variant, cc, None, traced_modes);
}

/// [`corpus`] with `CFLAGS` for build.sh (its default `-O2 -g` when
/// `None`); returns the build directory, or `None` when skipped.
fn corpus_with(
    name: &str,
    variant: &str,
    cc: &str,
    cflags: Option<&str>,
    traced_modes: &[&str],
) -> Option<std::path::PathBuf> {
    let every_mode = std::env::var("FTAIL_CORPUS_MODES").is_ok_and(|v| v == "all");
    let traced_modes: &[&str] = if every_mode {
        &["auto", "mark", "convert"]
    } else {
        traced_modes
    };
    if !full_suite() {
        eprintln!("skipping the {name} corpus build: set FTAIL_CORPUS=1 (scripts/test-all does)");
        return None;
    }
    let compiler = cc.split_whitespace().next().unwrap();
    assert!(have(compiler), "{compiler} is not installed");
    let root = repo();
    let dir = root.join("target/corpus").join(format!("{name}-{variant}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.with_extension("log");
    let mut build = Command::new("bash");
    build
        .arg(root.join("corpus/build.sh"))
        .arg(name)
        .arg(&dir)
        .env("CC", format!("{} cc {cc}", ftail().display()))
        .env("FTAIL_VERBOSE", "1");
    if let Some(flags) = cflags {
        build.env("CFLAGS", flags);
    }
    let out = run(&mut build);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&log, &text).unwrap();
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    assert!(
        out.status.success() && text.contains(&format!("corpus {name}: PASS")),
        "{name} ({variant}) failed its build or test suite; full log in {}:\n{tail}",
        log.display()
    );
    let binaries: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("binary: "))
        .collect();
    assert!(!binaries.is_empty(), "{name}: the build listed no binaries");
    let mut summary = String::new();
    let mut failures = Vec::new();
    for b in &binaries {
        let (ok, report) = sites(std::path::Path::new(b));
        let last = report.lines().last().unwrap_or("").to_string();
        if !ok || !last.ends_with(" 0 mismatches") || last.contains(" 0 functions") {
            failures.push(format!("{b}:\n{report}"));
        }
        summary.push_str(&last);
        summary.push('\n');
    }
    std::fs::write(dir.join("sites.txt"), &summary).unwrap();
    assert!(
        failures.is_empty(),
        "ftail sites found problems:\n{}",
        failures.join("\n")
    );
    for mode in traced_modes {
        traced(name, variant, &dir, mode);
    }
    Some(dir)
}

/// Runs the test suite again with every process of it traced (the runtime
/// preloaded through the environment, all functions, every site patched,
/// tail mode `mode`): the suite must still pass, the trace must be
/// readable, and every thread's trace must be balanced (a thread whose
/// buffer filled up closes its open frames as `Truncated`). Leaves
/// a summary line in `target/corpus/NAME-VARIANT-trace-MODE.txt`.
fn traced(name: &str, variant: &str, dir: &std::path::Path, mode: &str) {
    let tdir = dir.with_file_name(format!("{name}-{variant}-trace-{mode}"));
    let _ = std::fs::remove_dir_all(&tdir);
    std::fs::create_dir_all(&tdir).unwrap();
    let out = run(Command::new("bash")
        .arg(repo().join("corpus/build.sh"))
        .arg(name)
        .arg(dir)
        .env("TEST_ONLY", "1")
        .env("LD_PRELOAD", runtime())
        .env("FTAIL_DIR", &tdir)
        .env("FTAIL_TAIL", mode)
        // 4 MiB per thread: suites start thousands of processes.
        .env("FTAIL_BUFFER_EVENTS", "262144"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = tdir.with_extension("log");
    std::fs::write(&log, &text).unwrap();
    assert!(
        out.status.success() && text.contains(&format!("corpus {name}: PASS")),
        "{name} ({variant}) failed its test suite traced with --tail={mode}; log in {}",
        log.display()
    );
    let trace = ftail_trace::trace::open(&tdir).unwrap_or_else(|e| panic!("{e}"));
    let (mut events, mut lost, mut threads) = (0u64, 0u64, 0u64);
    let mut unbalanced = Vec::new();
    for p in &trace.processes {
        for th in &p.threads {
            threads += 1;
            events += th.events.len() as u64;
            lost += th.lost;
            assert!(th.damage.is_none(), "{:?}", th.damage);
            let b = th.balance();
            if !b.is_balanced() {
                unbalanced.push(format!("pid {} tid {}: {b:?}", p.pid, th.tid));
            }
        }
    }
    // Bytes written: headers and the records read (the files end at most
    // a page or two beyond).
    let listing = ftail_trace::reader::dir::TraceDir::open(&tdir).unwrap();
    let records: u64 = listing
        .images
        .iter()
        .flat_map(|i| &i.threads)
        .filter_map(|t| {
            let (_, mut e) = ftail_trace::reader::events::Events::open(&t.path).ok()?;
            e.by_ref().for_each(drop);
            Some(e.consumed())
        })
        .sum();
    let bytes = threads * std::mem::size_of::<ftail_abi::trace::EventFileHeader>() as u64 + records;
    let line = format!(
        "{name} {variant} --tail={mode}: {} processes, {threads} threads, {events} events \
         recorded, {lost} lost at the buffer limit, {bytes} bytes of events ({:.2} per \
         event)\n",
        trace.processes.len(),
        records as f64 / events.max(1) as f64
    );
    std::fs::write(tdir.with_extension("txt"), &line).unwrap();
    let _ = std::fs::remove_dir_all(&tdir);
    assert!(events > 0, "nothing was recorded: {line}");
    assert!(
        unbalanced.is_empty(),
        "unbalanced threads:\n{}",
        unbalanced.join("\n")
    );
}

#[test]
fn lua_gcc_c() {
    corpus("lua54", "gcc", "gcc", &["auto", "mark", "convert"]);
}

#[test]
fn lua_gcc_cxx() {
    corpus("lua54", "g++", "g++", &["auto", "mark", "convert"]);
}

#[test]
fn lua_clang_c() {
    corpus("lua54", "clang-19", "clang-19", &["auto"]);
}

#[test]
fn lua_clang_cxx() {
    corpus("lua54", "clang++-19", "clang++-19", &["auto"]);
}

#[test]
fn jq() {
    corpus("jq", "gcc", "gcc", &["auto"]);
}

#[test]
fn sqlite() {
    corpus("sqlite", "gcc", "gcc", &["auto"]);
}

#[test]
fn zstd() {
    corpus("zstd", "gcc", "gcc", &["auto"]);
}

#[test]
fn zlib() {
    corpus("zlib", "gcc", "gcc", &["auto"]);
}

/// zlib built with clang ThinLTO and full LTO through `ftail cc` (lld's
/// LTO assembly rewritten before the final link): both pass zlib's tests
/// untraced and traced, sites verified. Their `minigzip` then compresses
/// the same input as a plain clang build's, traced: functions that stay
/// out of line in every build are called as often in each (ThinLTO's
/// promoted locals, `NAME.llvm.HASH`, counted as `NAME`).
#[test]
fn zlib_clang_lto() {
    // lld refuses a version script naming symbols that are not there
    // (zlib.map names some the build leaves out); GNU ld does not.
    let cflags = |lto: &str| format!("-O2 -g {lto} -fuse-ld=lld -Wl,--undefined-version");
    let Some(plain) = corpus_with("zlib", "clang-19", "clang-19", Some(&cflags("")), &[]) else {
        return;
    };
    let thin = corpus_with(
        "zlib",
        "clang-19-thinlto",
        "clang-19",
        Some(&cflags("-flto=thin")),
        &["auto"],
    )
    .unwrap();
    let full = corpus_with(
        "zlib",
        "clang-19-lto",
        "clang-19",
        Some(&cflags("-flto")),
        &["auto"],
    )
    .unwrap();
    let input = plain.with_file_name("zlib-lto-input");
    let mut text = Vec::new();
    for f in ["deflate.c", "inflate.c", "trees.c", "crc32.c", "gzlib.c"] {
        text.extend(std::fs::read(plain.join(f)).unwrap());
    }
    std::fs::write(&input, &text).unwrap();
    let base = minigzip_counts(&plain, &input);
    for (name, dir) in [("ThinLTO", &thin), ("full LTO", &full)] {
        let counts = minigzip_counts(dir, &input);
        for f in [
            "main",
            "gz_comp",
            "deflate_slow",
            "fill_window",
            "longest_match",
            "_tr_flush_block",
            "compress_block",
            "build_tree",
            "send_tree",
            "init_block",
            "zcalloc",
            "zcfree",
        ] {
            let (a, b) = (base.get(f), counts.get(f));
            assert!(
                a.is_some_and(|&n| n > 0),
                "{f} not called in the plain build"
            );
            assert_eq!(a, b, "{f}: calls in the plain build and with {name}");
        }
    }
    let _ = std::fs::remove_file(&input);
}

/// Entries per function of `DIR/minigzip -c INPUT`, traced.
fn minigzip_counts(
    dir: &std::path::Path,
    input: &std::path::Path,
) -> std::collections::HashMap<String, u64> {
    let tdir = dir.with_extension("minigzip-trace");
    let _ = std::fs::remove_dir_all(&tdir);
    let (out, trace) = record_trace(
        &tdir,
        &dir.join("minigzip"),
        &["-c", input.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let mut counts = std::collections::HashMap::new();
    for p in &trace.processes {
        let syms = ftail_trace::trace::Symbols::load(p);
        for th in &p.threads {
            assert!(th.balance().is_balanced(), "{:?}", th.balance());
            for e in &th.events {
                if e.kind() == Some(ftail_abi::trace::EventKind::Entry) {
                    let name = syms.name(e.addr(), e.tsc);
                    let name = name.split(".llvm.").next().unwrap_or("").to_string();
                    *counts.entry(name).or_insert(0) += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tdir);
    counts
}
