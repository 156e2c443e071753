//! The view options as uftrace users know them, end to end: `-C`, `-H`,
//! `-D` counted again from each `-F` match, patterns that match nothing
//! (`--match=glob|regex`), and `--time-range` taking the times that
//! `replay -f time` prints. Where uftrace is installed, the call trees
//! are compared with its own for a `-pg` build of the same source.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// a → b → c, a → c, then d (2 ms: coloured) and b → c from main.
/// Every function touches `calls`, so none is folded away.
const SOURCE: &str = r#"
#include <unistd.h>
static volatile int calls;
__attribute__((noinline)) int c(int x) { calls++; return x + 1; }
__attribute__((noinline)) int b(int x) { calls++; return c(x) * 2; }
__attribute__((noinline)) int a(int x) { calls++; return b(x) + c(x); }
__attribute__((noinline)) int d(int x) { calls++; usleep(2000); return x - 1; }
int main(void) { int s = a(1) + d(2) + b(3); return s & calls & 0; }
"#;

struct Fixture {
    dir: tempfile::TempDir,
    trace: PathBuf,
}

fn fixture() -> Fixture {
    let dir = scratch();
    let src = dir.path().join("abc.c");
    std::fs::write(&src, SOURCE).unwrap();
    // The views are checked on the program's own calls.
    let trace = build_and_record_with(
        "gcc",
        &src,
        &["-O0"],
        dir.path(),
        "abc",
        "trace",
        &["--no-libcall"],
    );
    Fixture { dir, trace }
}

/// `ftail replay -d TRACE ARGS` (never paged): its status, stdout and
/// stderr.
fn replay(f: &Fixture, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(Command::new(ftail())
        .arg("replay")
        .arg("-d")
        .arg(&f.trace)
        .arg("--no-pager")
        .args(args));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The function column of replay's lines (after `| `), comments and
/// the runtime's own startup calls of a `-pg` build left out.
fn tree(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("| ").map(|(_, f)| f.trim_end().to_string()))
        .filter(|f| !f.trim_start().starts_with("__"))
        .collect()
}

fn ftail_tree(f: &Fixture, args: &[&str]) -> Vec<String> {
    let (code, out, err) = replay(f, args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    tree(&out)
}

/// uftrace's tree for the same options, when uftrace and gcc are here.
fn uftrace_tree(f: &Fixture, args: &[&str]) -> Option<Vec<String>> {
    if !have("uftrace") {
        return None;
    }
    let udata = f.dir.path().join("uftrace.data");
    if !udata.exists() {
        let exe = f.dir.path().join("abc-pg");
        run_ok(
            Command::new("gcc")
                .args(["-O0", "-pg", "-o"])
                .arg(&exe)
                .arg(f.dir.path().join("abc.c")),
        );
        run_ok(
            Command::new("uftrace")
                .args(["record", "--no-libcall", "--no-sched", "-d"])
                .arg(&udata)
                .arg(&exe),
        );
    }
    let out = run_ok(
        Command::new("uftrace")
            .args(["replay", "--no-pager", "-d"])
            .arg(&udata)
            .args(args),
    );
    Some(tree(&out))
}

fn same_as_uftrace(f: &Fixture, args: &[&str], want: &[&str]) {
    let got = ftail_tree(f, args);
    assert_eq!(got, want, "ftail replay {args:?}");
    if let Some(u) = uftrace_tree(f, args) {
        assert_eq!(got, u, "ftail and uftrace differ for {args:?}");
    }
}

#[test]
fn depth_is_counted_again_from_each_filter_match() {
    let f = fixture();
    same_as_uftrace(
        &f,
        &["-F", "a", "-F", "c", "-D", "1"],
        &["a() {", "  c();", "  c();", "} /* a */", "c();"],
    );
}

#[test]
fn caller_filter_shows_the_paths_to_a_function() {
    let f = fixture();
    same_as_uftrace(
        &f,
        &["-C", "b"],
        &[
            "main() {",
            "  a() {",
            "    b();",
            "  } /* a */",
            "  b();",
            "} /* main */",
        ],
    );
}

#[test]
fn hide_keeps_the_callees_one_level_up() {
    let f = fixture();
    same_as_uftrace(
        &f,
        &["-H", "b"],
        &[
            "main() {",
            "  a() {",
            "    c();",
            "    c();",
            "  } /* a */",
            "  d();",
            "  c();",
            "} /* main */",
        ],
    );
}

#[test]
fn a_pattern_that_matches_nothing_is_said_with_how_patterns_are_read() {
    let f = fixture();
    for (args, says) in [
        (&["-F", "lua_["][..], "patterns are globs"),
        (&["-F", "c.*"][..], "looks like a regular expression"),
        (
            &["--match=regex", "-F", "^luaM_.*"][..],
            "patterns are regular expressions",
        ),
    ] {
        let (code, out, err) = replay(&f, args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("matches no function"), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("nothing to show"), "{args:?}: {err}");
    }
    // One -N that matches nothing: said, and the trace shown.
    let (code, out, err) = replay(&f, &["-N", "nosuch"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("-N \"nosuch\" matches no function"), "{err}");
    assert!(out.contains("main() {"), "{out}");
    // A regular expression that does not parse.
    let (code, _, err) = replay(&f, &["--match=regex", "-F", "lua_["]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a regular expression"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Regular expressions as uftrace reads them: found anywhere, a plain
    // name whole.
    let t = ftail_tree(&f, &["--match=regex", "-F", "^[ab]$", "-D", "1"]);
    assert_eq!(t, ["a() {", "  b();", "} /* a */", "b();"]);
    let t = ftail_tree(&f, &["--match=regex", "-F", "d"]);
    assert_eq!(t, ["d();"]);
}

/// Each line of `replay -f time`: its time and its function column.
fn timed_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (time, func) = l.split_once("| ")?;
            Some((time.trim().to_string(), func.trim().to_string()))
        })
        .collect()
}

#[test]
fn a_time_copied_from_replay_selects_its_line() {
    let f = fixture();
    let (_, all, _) = replay(&f, &["-f", "time", "--no-merge"]);
    let lines = timed_lines(&all);
    let entries: Vec<&(String, String)> = lines.iter().filter(|(_, l)| l.ends_with('{')).collect();
    assert!(entries.len() >= 5, "{all}");
    for (time, _) in &entries {
        // Two calls may begin in the same ns (the clock of a VM may step
        // by tens of ns): the range starts at the first of them.
        let func = &entries.iter().find(|(t, _)| t == time).unwrap().1;
        for range in [format!("{time}~"), format!("{time}s~{time}s")] {
            let (code, out, err) =
                replay(&f, &["-f", "time", "--no-merge", "--time-range", &range]);
            assert_eq!(code, Some(0), "{err}");
            let first = timed_lines(&out).into_iter().next();
            assert_eq!(
                first.as_ref(),
                Some(&(time.clone(), func.clone())),
                "--time-range {range} does not start at the line it was copied from:\n{all}\n{out}"
            );
        }
    }
}

#[test]
fn graph_shows_the_paths_to_a_caller_filter() {
    let f = fixture();
    let out = run_ok(
        Command::new(ftail())
            .args(["graph", "--no-pager", "-C", "c", "-d"])
            .arg(&f.trace),
    );
    assert!(out.contains("main\n") && out.contains("`-c\n"), "{out}");
    assert!(!out.contains("-d\n"), "d leads to no c:\n{out}");
}

#[test]
fn no_color_turns_colours_off_on_a_terminal() {
    let f = fixture();
    let t = f.trace.to_str().unwrap();
    let args = ["replay", "--no-pager", "-d", t];
    let coloured = stdout_on_a_terminal(&args, &[]);
    assert!(
        coloured.contains("\x1b[31m"),
        "d's 2 ms in red: {coloured:?}"
    );
    let plain = stdout_on_a_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(plain.contains("d();"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
    // An empty NO_COLOR is as if unset; --color always still colours.
    assert!(stdout_on_a_terminal(&args, &[("NO_COLOR", "")]).contains("\x1b[31m"));
    let always = ["replay", "--no-pager", "--color", "always", "-d", t];
    assert!(stdout_on_a_terminal(&always, &[("NO_COLOR", "1")]).contains("\x1b[31m"));
}

#[test]
fn report_and_graph_are_paged_like_replay() {
    let f = fixture();
    let t = f.trace.to_str().unwrap();
    let pager = [("PAGER", "sed 's/^/paged: /'")];
    for cmd in ["report", "graph", "replay"] {
        let shown = stdout_on_a_terminal(&[cmd, "-d", t], &pager);
        assert!(shown.contains("paged: "), "{cmd}: {shown:?}");
        let direct = stdout_on_a_terminal(&[cmd, "--no-pager", "-d", t], &pager);
        assert!(
            !direct.contains("paged: ") && direct.contains('d'),
            "{cmd}: {direct:?}"
        );
    }
}

#[test]
fn live_takes_the_replay_options() {
    let f = fixture();
    let exe = f.dir.path().join("abc");
    let out = run(Command::new(ftail())
        .args([
            "live",
            "--no-sched",
            "--no-pager",
            "-H",
            "b",
            "-C",
            "c",
            "-f",
            "time",
            "--",
        ])
        .arg(&exe));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("#     TIMESTAMP  FUNCTION"), "{text}");
    assert_eq!(
        tree(&text),
        [
            "main() {",
            "  a() {",
            "    c();",
            "    c();",
            "  } /* a */",
            "  c();",
            "} /* main */"
        ]
    );
}
