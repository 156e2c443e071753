//! What the views print is the trace's, never the traced program's to
//! shape: names, thread names and command lines with control characters
//! reach no output raw and forge no line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The names the program's two functions get once their binary is
/// patched: a newline that would start a fake folded line of weight
/// 99999, and an escape sequence that would colour the terminal.
const EVIL: &[u8] = b"evil\n1;fake 99999";
const ESC: &[u8] = b"esc\x1b[31mRED";

/// Placeholders of the same lengths, which the assembler accepts.
const EVIL_AS: &[u8] = b"evilQ1QfakeQ99999";
const ESC_AS: &[u8] = b"escQQ31mRED";

/// Replaces every `from` in `bytes` by `to` (of the same length); returns
/// how many there were.
fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

/// A program whose functions are named [`EVIL`] and [`ESC`] in every
/// table a reader names them from (symbols, site tables, debug strings).
fn build_evil(dir: &Path) -> PathBuf {
    let src = dir.join("evil.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n\
         int evil(int x) __asm__(\"evilQ1QfakeQ99999\");\n\
         int esc(int x) __asm__(\"escQQ31mRED\");\n\
         __attribute__((noinline)) int evil(int x) { return x + 1; }\n\
         __attribute__((noinline)) int esc(int x) { return evil(x) * 2; }\n\
         int main(int argc, char **argv) { (void)argv; printf(\"%d\\n\", esc(argc)); return 0; }\n",
    )
    .unwrap();
    let exe = dir.join("evil");
    run_ok(
        ftail_cc("gcc")
            .args(["-O1", "-g", "-o"])
            .arg(&exe)
            .arg(&src),
    );
    let mut bytes = std::fs::read(&exe).unwrap();
    assert!(replace_all(&mut bytes, EVIL_AS, EVIL) > 0);
    assert!(replace_all(&mut bytes, ESC_AS, ESC) > 0);
    std::fs::write(&exe, bytes).unwrap();
    exe
}

fn ftail_out(args: &[&str], trace: &Path) -> String {
    let out = run(Command::new(ftail()).args(args).arg("-d").arg(trace));
    assert!(out.status.success(), "ftail {args:?}: {out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_printable(&format!("ftail {args:?}"), &text);
    text
}

/// Fails unless `text` holds no control character but newlines and tabs.
fn assert_printable(what: &str, text: &str) {
    let raw = text
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t');
    assert_eq!(raw, None, "{what} printed a control character:\n{text}");
}

#[test]
fn names_and_command_lines_reach_no_output_raw() {
    let dir = scratch();
    let exe = build_evil(dir.path());
    let trace = dir.path().join("t");
    // The names that matter are the program's; its printf is left out.
    let (out, _) = record_trace(
        &trace,
        &exe,
        &["arg\x1b]0;title\x07", "two words"],
        &["--no-libcall"],
    );
    assert!(out.status.success(), "{out:?}");

    let replay = ftail_out(&["replay"], &trace);
    assert!(replay.contains(r"evil\n1;fake 99999("), "{replay}");
    assert!(replay.contains(r"esc\x1b[31mRED("), "{replay}");
    // The command line as a shell would need it typed.
    assert!(
        replay.contains(r"$'arg\x1b]0;title\x07' 'two words'"),
        "{replay}"
    );
    let report = ftail_out(&["report"], &trace);
    assert!(report.contains(r"evil\n1;fake 99999"), "{report}");
    let info = ftail_out(&["info"], &trace);
    assert!(
        info.contains(r"$'arg\x1b]0;title\x07' 'two words'"),
        "{info}"
    );
    ftail_out(&["graph"], &trace);
    let sites = run_ok(Command::new(ftail()).arg("sites").arg(&exe));
    assert_printable("ftail sites", &sites);
    assert!(sites.contains(r"evil\n1;fake 99999 entry=1"), "{sites}");

    // One folded line per call path, main → esc → evil, and no weight
    // taken from a name.
    let folded = ftail_out(
        &["dump", "--flame-graph", "--weight", "calls", "-o", "-"],
        &trace,
    );
    let lines: Vec<&str> = folded
        .lines()
        .filter(|l| !l.starts_with("ftail:"))
        .collect();
    assert_eq!(lines.len(), 3, "{folded}");
    let leaf = lines
        .iter()
        .find(|l| l.contains("evil"))
        .unwrap_or_else(|| panic!("{folded}"));
    assert_eq!(*leaf, r"main;esc\x1b[31mRED;evil\n1,fake_99999 1");
}

/// A program that uses some memory, then exits with status 3, kills
/// itself with SIGKILL (`k`) or calls `_exit(5)` (`_`).
fn build_ending(dir: &Path) -> PathBuf {
    let src = dir.join("ending.c");
    std::fs::write(
        &src,
        "#include <signal.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n\
         int work(char *p, int n) { memset(p, 1, n); return p[n - 1]; }\n\
         int main(int argc, char **argv) {\n\
           int n = 16 << 20; char *p = malloc(n); work(p, n);\n\
           if (argc > 1 && argv[1][0] == 'k') raise(SIGKILL);\n\
           if (argc > 1 && argv[1][0] == '_') _exit(5);\n\
           return 3;\n\
         }\n",
    )
    .unwrap();
    let exe = dir.join("ending");
    run_ok(ftail_cc("gcc").args(["-O1", "-o"]).arg(&exe).arg(&src));
    exe
}

/// The `info` line that starts with `label`, without it.
fn info_line(info: &str, label: &str) -> String {
    info.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(|l| l.trim_start_matches([' ', ':']).to_string())
        .unwrap_or_else(|| panic!("no {label} in:\n{info}"))
}

#[test]
fn info_says_how_each_process_ended_and_what_it_used() {
    let dir = scratch();
    let exe = build_ending(dir.path());
    for (arg, code, ended) in [
        ("r", Some(3), "exited with status 3"),
        ("_", Some(5), "exited with status 5"),
        ("k", None, "killed by signal 9 (SIGKILL)"),
    ] {
        let trace = dir.path().join(format!("t{arg}"));
        // `output` returns once the watcher, which holds standard error,
        // has written its summary.
        let (out, _) = record_trace(&trace, &exe, &[arg], &[]);
        assert_eq!(out.status.code(), code, "{out:?}");
        let info = ftail_out(&["info"], &trace);
        assert_eq!(info_line(&info, "ended"), ended, "{info}");
        let used = info_line(&info, "resources");
        if code.is_some() {
            // 16 MiB were touched: the largest resident set is above it.
            let mib: f64 = used
                .split("at most ")
                .nth(1)
                .and_then(|r| r.strip_suffix(" MiB resident"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{info}"));
            assert!(mib > 16.0, "{info}");
            assert!(used.contains(" s CPU in user mode"), "{info}");
        } else {
            assert!(used.starts_with("not recorded"), "{info}");
        }
        let started = info_line(&info, "started");
        assert!(started.contains(" UTC (unix time "), "{info}");
    }
}

#[test]
fn the_summary_is_printed_before_the_caller_goes_on() {
    let dir = scratch();
    let exe = build_ending(dir.path());
    let trace = dir.path().join("t");
    // What a user sees at a shell prompt: the summary, then the status.
    let script = r#""$1" record -d "$2" -- "$3" r 2>&1; echo "rc=$?""#;
    for _ in 0..5 {
        let out = run_ok(
            Command::new("sh")
                .args(["-c", script, "sh"])
                .arg(ftail())
                .arg(&trace)
                .arg(&exe),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("ftail: trace written to "), "{out}");
        assert_eq!(lines[1], "rc=3", "{out}");
    }
}
