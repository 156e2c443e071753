//! Real code, untouched behaviour: Lua (as C and as C++, with gcc and
//! clang 19), jq, SQLite, zstd and zlib are built through `ftail cc` and pass
//! their own test suites with every site unpatched; `ftail sites` then
//! verifies every binary they produced with zero mismatches.
//!
//! Slow (tens of minutes), so they run only with `FTAIL_CORPUS=1`, which
//! `scripts/test-all` and CI always set. Sources are fetched once into
//! `corpus/.cache`; builds go to `target/corpus/NAME-VARIANT` and each
//! leaves `sites.txt` there with the summary line of every binary.

mod common;

use std::process::Command;

use common::*;

fn corpus(name: &str, variant: &str, cc: &str) {
    if !full_suite() {
        eprintln!("skipping the {name} corpus build: set FTAIL_CORPUS=1 (scripts/test-all does)");
        return;
    }
    let compiler = cc.split_whitespace().next().unwrap();
    assert!(have(compiler), "{compiler} is not installed");
    let root = repo();
    let dir = root.join("target/corpus").join(format!("{name}-{variant}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.with_extension("log");
    let out = run(Command::new("bash")
        .arg(root.join("corpus/build.sh"))
        .arg(name)
        .arg(&dir)
        .env("CC", format!("{} cc {cc}", ftail().display()))
        .env("FTAIL_VERBOSE", "1"));
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
}

#[test]
fn lua_gcc_c() {
    corpus("lua54", "gcc", "gcc");
}

#[test]
fn lua_gcc_cxx() {
    corpus("lua54", "g++", "g++");
}

#[test]
fn lua_clang_c() {
    corpus("lua54", "clang-19", "clang-19");
}

#[test]
fn lua_clang_cxx() {
    corpus("lua54", "clang++-19", "clang++-19");
}

#[test]
fn jq() {
    corpus("jq", "gcc", "gcc");
}

#[test]
fn sqlite() {
    corpus("sqlite", "gcc", "gcc");
}

#[test]
fn zstd() {
    corpus("zstd", "gcc", "gcc");
}

#[test]
fn zlib() {
    corpus("zlib", "gcc", "gcc");
}
