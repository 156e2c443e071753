//! The exports end to end, each read back by an independent
//! implementation and compared with `ftail replay` and `ftail report` of
//! the same trace (the fixture `tests/analysis/tour.c`):
//!
//! * Perfetto: decoded with Perfetto's own schema (`perfetto_trace_pb2`,
//!   PyPI `perfetto`) by `tests/export/perfetto_check.py`, which checks
//!   descriptors before events, iids interned before use and balanced
//!   slices per track;
//! * Chrome JSON and speedscope: parsed back by Python
//!   (`tests/export/json_check.py`), and loaded into speedscope's own app
//!   in headless Chromium (`tests/export/browser.mjs`);
//! * flame graphs: the folded stacks' totals against `report`, the SVG
//!   opened in headless Chromium, a frame clicked and a search made;
//! * Parquet: the README's queries run by DuckDB
//!   (`tests/export/parquet_check.py`), calls and self time against
//!   `report`.
//!
//! The readers live in `tests/.cache/` (`scripts/install-deps`); without
//! them these tests skip, except in the full suite (`FTAIL_CORPUS=1`),
//! where they fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The independent readers, as `scripts/install-deps` installs them.
struct Readers {
    python_path: PathBuf,
    node_modules: PathBuf,
    speedscope: PathBuf,
}

/// The readers, or `None` (the test skips) when they are missing outside
/// the full suite.
fn readers() -> Option<Readers> {
    let cache = repo().join("tests/.cache");
    let r = Readers {
        python_path: cache.join("python"),
        node_modules: cache.join("node/node_modules"),
        speedscope: cache.join("node/node_modules/speedscope/dist/release/index.html"),
    };
    let python_ok = Command::new("python3")
        .env("PYTHONPATH", &r.python_path)
        .args([
            "-c",
            "import duckdb; from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = python_ok
        && r.speedscope.is_file()
        && r.node_modules.join("playwright-core").is_dir()
        && have("node")
        && have("chromium");
    if !ok {
        assert!(
            !full_suite(),
            "the export tests' readers are required by the full test suite but are \
             missing from tests/.cache (run scripts/install-deps)"
        );
        eprintln!("skipping: the export tests' readers are missing (scripts/install-deps)");
        return None;
    }
    Some(r)
}

impl Readers {
    fn python(&self, script: &str, args: &[&Path]) -> Value {
        let out = run_ok(
            Command::new("python3")
                .env("PYTHONPATH", &self.python_path)
                .arg(repo().join("tests/export").join(script))
                .args(args),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{script}: {e}: {out}"))
    }

    fn browser(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Value {
        let mut cmd = Command::new("node");
        cmd.env("FTAIL_NODE_MODULES", &self.node_modules)
            .arg(repo().join("tests/export/browser.mjs"));
        for a in args {
            cmd.arg(a);
        }
        let out = run_ok(&mut cmd);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("browser.mjs: {e}: {out}"))
    }
}

/// A recorded fixture.
struct Recorded {
    scratch: tempfile::TempDir,
    trace: PathBuf,
}

fn record(cc: &str, source: &str, name: &str) -> Recorded {
    let scratch = scratch();
    let source = repo().join("tests/analysis").join(source);
    // The figures compared are the program's own calls.
    let trace = build_and_record_with(
        cc,
        &source,
        &["-g"],
        scratch.path(),
        "tour",
        name,
        &["--no-libcall"],
    );
    Recorded { scratch, trace }
}

impl Recorded {
    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// `ftail CMD -d TRACE ARGS…`; its standard output.
    fn ftail(&self, cmd: &str, args: &[&str]) -> String {
        run_ok(
            Command::new(ftail())
                .arg(cmd)
                .arg("-d")
                .arg(&self.trace)
                .args(args),
        )
    }
}

/// A call as every reader prints it: depth, name, duration (ns), how it
/// ended ("" for a return), whether a resumed slice.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    depth: u64,
    name: String,
    ns: f64,
    exit: String,
    resumed: bool,
}

type Calls = BTreeMap<u64, Vec<Call>>;

fn calls_of(v: &Value) -> Calls {
    v["calls"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tid, calls)| {
            let calls = calls
                .as_array()
                .unwrap()
                .iter()
                .map(|c| Call {
                    depth: c[0].as_u64().unwrap(),
                    name: c[1].as_str().unwrap().to_string(),
                    ns: c[2].as_f64().unwrap(),
                    exit: c[3].as_str().unwrap().to_string(),
                    resumed: c[4].as_bool().unwrap(),
                })
                .collect();
            (tid.parse().unwrap(), calls)
        })
        .collect()
}

/// A duration as replay and report print it (`3.916 us`), in ns, and
/// half its last digit (how far the print may be from the value).
fn parse_duration(text: &str) -> (f64, f64) {
    let mut it = text.split_whitespace();
    let v: f64 = it.next().unwrap().parse().unwrap();
    let scale = match it.next().unwrap() {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        u => panic!("unit {u}"),
    };
    (v * scale, 0.0005 * scale)
}

/// `ftail replay --no-merge`, as calls per thread in order of entry,
/// with each duration's precision.
fn replay_calls(r: &Recorded) -> BTreeMap<u64, Vec<(Call, f64)>> {
    let text = r.ftail(
        "replay",
        &["--no-pager", "--no-merge", "-f", "duration,tid"],
    );
    let mut out: BTreeMap<u64, Vec<(Call, f64)>> = BTreeMap::new();
    let mut open: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (left, body) = line.split_once("] | ").unwrap();
        let (dur, tid) = left.split_once('[').unwrap();
        let tid: u64 = tid.trim().parse().unwrap();
        let depth = (body.len() - body.trim_start().len()) as u64 / 2;
        let body = body.trim_start();
        let calls = out.entry(tid).or_default();
        let stack = open.entry(tid).or_default();
        if let Some(rest) = body.strip_prefix("} /* ") {
            let i = stack.pop().unwrap();
            let (ns, precision) = parse_duration(dur.trim());
            let exit = ["tail call", "unwound", "switched out", "buffer full"]
                .into_iter()
                .find(|e| rest.contains(&format!("({e}")))
                .unwrap_or("");
            calls[i].0.ns = ns;
            calls[i].0.exit = exit.to_string();
            calls[i].1 = precision;
        } else {
            let name = body.split("() {").next().unwrap().to_string();
            stack.push(calls.len());
            calls.push((
                Call {
                    depth,
                    name,
                    ns: 0.0,
                    exit: String::new(),
                    resumed: body.contains("/* resumed */"),
                },
                0.0,
            ));
        }
    }
    out
}

/// Compares an export's calls with the replay's: the same calls in the
/// same order and nesting, durations within the export's rounding to
/// whole ns (plus the replay's print), and how calls ended when the
/// format says.
fn assert_same_calls(what: &str, got: &Calls, want: &BTreeMap<u64, Vec<(Call, f64)>>, exits: bool) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: threads"
    );
    for (tid, want) in want {
        let got = &got[tid];
        assert_eq!(got.len(), want.len(), "{what}: calls of thread {tid}");
        for (g, (w, precision)) in got.iter().zip(want) {
            let ctx = format!("{what}: thread {tid}: {g:?} against the replay's {w:?}");
            assert_eq!(
                (g.depth, &g.name, g.resumed),
                (w.depth, &w.name, w.resumed),
                "{ctx}"
            );
            assert!((g.ns - w.ns).abs() <= 1.0 + precision, "{ctx}");
            if exits {
                assert_eq!(g.exit, w.exit, "{ctx}");
            }
        }
    }
}

/// `ftail report -s name`: per function, (calls, total, self) as
/// printed.
fn report_rows(r: &Recorded) -> BTreeMap<String, (u64, String, String)> {
    r.ftail("report", &["-s", "name"])
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // TOTAL (2 words), SELF (2), CALLS, …, FUNCTION (last).
            (
                f.last().unwrap().to_string(),
                (
                    f[4].parse().unwrap(),
                    format!("{} {}", f[0], f[1]),
                    format!("{} {}", f[2], f[3]),
                ),
            )
        })
        .collect()
}

#[test]
fn perfetto_chrome_and_speedscope_agree_with_replay() {
    let Some(readers) = readers() else { return };
    let r = record("gcc", "tour.c", "trace");
    let want = replay_calls(&r);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 17, "{want:?}");

    let perfetto = r.path("t.perfetto-trace");
    r.ftail(
        "dump",
        &["--perfetto", "--srcline", "-o", perfetto.to_str().unwrap()],
    );
    let decoded = readers.python("perfetto_check.py", &[&perfetto]);
    assert_same_calls("perfetto", &calls_of(&decoded), &want, true);

    let chrome = r.path("t.json");
    r.ftail("dump", &["--chrome", "-o", chrome.to_str().unwrap()]);
    let parsed = readers.python("json_check.py", &[Path::new("chrome"), &chrome]);
    assert_same_calls("chrome", &calls_of(&parsed), &want, true);

    let speedscope = r.path("t.speedscope.json");
    r.ftail(
        "dump",
        &["--speedscope", "-o", speedscope.to_str().unwrap()],
    );
    let parsed = readers.python("json_check.py", &[Path::new("speedscope"), &speedscope]);
    assert_same_calls("speedscope", &calls_of(&parsed), &want, false);

    // Interned names keep Perfetto's file well under Chrome JSON's.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&perfetto) * 2 < size(&chrome),
        "{} {}",
        size(&perfetto),
        size(&chrome)
    );

    // Both JSON files open in speedscope's own app, in a real browser:
    // its sandwich view lists every function of the fixture, and the
    // timeline's screenshot is drawn.
    let functions = report_rows(&r);
    for file in [&chrome, &speedscope] {
        let shot = file.with_extension("png");
        let seen = readers.browser(&[&"speedscope", &readers.speedscope, file, &shot]);
        assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
        assert!(
            seen["title"].as_str().unwrap().ends_with(" - speedscope"),
            "{seen}"
        );
        let text = seen["text"].as_str().unwrap();
        for f in functions.keys() {
            assert!(
                text.lines().any(|l| l.trim() == f),
                "{f} not in speedscope: {seen}"
            );
        }
        assert!(
            seen["colours"].as_u64().unwrap() > 20,
            "a blank screenshot: {seen}"
        );
        assert!(shot.is_file());
    }
}

/// An export larger than its viewers load says so and how to keep less
/// of the trace, instead of sending the user to open it (the limits,
/// hundreds of MB, stand lowered here).
#[test]
fn exports_past_what_their_viewer_loads_say_how_to_cut_them() {
    if !have("gcc") {
        return;
    }
    let r = record("gcc", "tour.c", "trace");
    for (format, viewer) in [
        ("--perfetto", "the Perfetto UI"),
        ("--chrome", "chrome://tracing"),
        ("--speedscope", "speedscope"),
    ] {
        let out = r.path("out");
        let dump = |limit: Option<&str>| {
            let mut cmd = Command::new(ftail());
            cmd.args(["dump", format, "-o"])
                .arg(&out)
                .arg("-d")
                .arg(&r.trace);
            if let Some(l) = limit {
                cmd.env("FTAIL_VIEWER_MAX_BYTES", l);
            }
            let o = run(&mut cmd);
            assert!(o.status.success(), "{o:?}");
            String::from_utf8_lossy(&o.stderr).into_owned()
        };
        let small = dump(None);
        assert!(small.contains("; open it "), "{format}: {small}");
        let large = dump(Some("100"));
        assert!(!large.contains("open it at"), "{format}: {large}");
        for hint in [viewer, "--time-range", "-F FUNC", "-D DEPTH"] {
            assert!(large.contains(hint), "{format}: no {hint:?} in {large}");
        }
    }
}

#[test]
fn perfetto_cuts_by_thread_and_time() {
    let Some(readers) = readers() else { return };
    let r = record("gcc", "tour.c", "trace");
    let out = r.path("cut.perfetto-trace");
    let o = out.to_str().unwrap();
    let tid = *replay_calls(&r).keys().next().unwrap();
    r.ftail("dump", &["--perfetto", "-o", o, "--tid", &tid.to_string()]);
    let all = calls_of(&readers.python("perfetto_check.py", &[&out]));
    assert_eq!(all[&tid].len(), 17);
    r.ftail("dump", &["--perfetto", "-o", o, "--tid", "1"]);
    assert!(calls_of(&readers.python("perfetto_check.py", &[&out])).is_empty());
    r.ftail("dump", &["--perfetto", "-o", o, "--time-range", "~0ns"]);
    let none = calls_of(&readers.python("perfetto_check.py", &[&out]));
    assert!(none.values().all(Vec::is_empty), "{none:?}");
    r.ftail("dump", &["--perfetto", "-o", o, "-F", "parse"]);
    let parse = calls_of(&readers.python("perfetto_check.py", &[&out]));
    let names: Vec<&str> = parse[&tid].iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["parse", "helper", "helper"].repeat(3));
}

#[test]
fn cxx_names_are_demangled_in_the_exports() {
    let Some(readers) = readers() else { return };
    if !have("g++") {
        return;
    }
    let r = record("g++", "tour.cc", "trace");
    let out = r.path("t.perfetto-trace");
    r.ftail("dump", &["--perfetto", "-o", out.to_str().unwrap()]);
    let names: Vec<String> = calls_of(&readers.python("perfetto_check.py", &[&out]))
        .into_values()
        .flatten()
        .map(|c| c.name)
        .collect();
    assert!(
        names.iter().any(|n| n == "shapes::twice<double>"),
        "{names:?}"
    );
    let folded = r.ftail("dump", &["--flame-graph"]);
    assert!(folded.contains(";shapes::twice<int> "), "{folded}");
}

#[test]
fn flame_graphs_add_up_to_the_report_and_open_in_a_browser() {
    let Some(readers) = readers() else { return };
    let r = record("gcc", "tour.c", "trace");
    let report = report_rows(&r);
    // Folded stacks: per function, the lines ending in it add up to its
    // self time (each line rounded to whole ns) and to its calls.
    let mut self_ns: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in r.ftail("dump", &["--flame-graph"]).lines() {
        let (stack, w) = line.rsplit_once(' ').unwrap();
        let e = self_ns
            .entry(stack.rsplit(';').next().unwrap().to_string())
            .or_default();
        e.0 += w.parse::<f64>().unwrap();
        e.1 += 0.5;
    }
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    for line in r
        .ftail("dump", &["--flame-graph", "--weight", "calls"])
        .lines()
    {
        let (stack, w) = line.rsplit_once(' ').unwrap();
        *calls
            .entry(stack.rsplit(';').next().unwrap().to_string())
            .or_default() += w.parse::<u64>().unwrap();
    }
    for (f, (n, _, self_text)) in &report {
        let (want, precision) = parse_duration(self_text);
        let (got, rounding) = self_ns[f];
        assert!(
            (got - want).abs() <= rounding + precision,
            "{f}: {got} against {self_text}"
        );
        assert_eq!(calls[f], *n, "{f}");
    }

    // The SVG in a real browser: frames drawn, a click zooms, a search
    // highlights.
    let svg = r.path("flame.svg");
    r.ftail("flame", &["-o", svg.to_str().unwrap()]);
    let shot = r.path("flame.png");
    let seen = readers.browser(&[&"svg", &svg, &shot, &"parse", &"parse"]);
    assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
    let frames: Vec<&str> = seen["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in ["main (", "slow (", "parse ("] {
        assert!(
            frames.iter().any(|t| t.starts_with(f)),
            "{f} not drawn: {seen}"
        );
    }
    assert_eq!(seen["zoomed"], Value::Bool(true), "{seen}");
    assert!(
        seen["matched"].as_str().unwrap().starts_with("Matched: "),
        "{seen}"
    );
    assert!(seen["colours"].as_u64().unwrap() > 5, "{seen}");

    // A differential graph of two runs.
    let other = record("gcc", "tour.c", "before");
    let diff = r.path("diff.svg");
    r.ftail(
        "flame",
        &[
            "--diff",
            other.trace.to_str().unwrap(),
            "-o",
            diff.to_str().unwrap(),
        ],
    );
    let seen = readers.browser(&[&"svg", &diff, &r.path("diff.png"), &"main", &"slow"]);
    assert_eq!(seen["errors"], Value::Array(vec![]), "{seen}");
    assert!(seen["frames"].as_array().unwrap().len() >= 3, "{seen}");
}

#[test]
fn parquet_answers_the_readme_queries_as_report_does() {
    let Some(readers) = readers() else { return };
    let r = record("gcc", "tour.c", "trace");
    let dir = r.path("calls.pq");
    r.ftail("export", &["--parquet", dir.to_str().unwrap()]);
    let got = readers.python("parquet_check.py", &[&dir, &repo().join("README.md")]);
    assert_eq!(
        got["tables"]["calls"],
        serde_json::json!([
            "pid",
            "tid",
            "id",
            "parent",
            "parent_function",
            "depth",
            "function",
            "module",
            "address",
            "start_ns",
            "duration_ns",
            "self_ns",
            "exit",
            "resumed",
            "image"
        ])
    );
    // Top functions by self time: every function, with report's calls,
    // self and total time (to report's digit, give or take the whole ns
    // each call's times are rounded to).
    let report = report_rows(&r);
    let top = got["queries"][0].as_array().unwrap();
    assert_eq!(top.len(), report.len(), "{got}");
    let number = |v: &Value| -> f64 {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("not a number: {v}"))
    };
    for row in top {
        let name = row[0].as_str().unwrap();
        let (calls, total, self_time) = &report[name];
        assert_eq!(row[1].as_u64().unwrap(), *calls, "{name}");
        for (col, want) in [(2, self_time), (3, total)] {
            let got = number(&row[col]);
            let (ns, precision) = parse_duration(want);
            let slack = precision + *calls as f64;
            if col == 3 && name == "depth" {
                // The query sums every call: a recursive function's inner
                // calls again, which report's total, from the outermost
                // calls only, does not.
                assert!(
                    got + slack >= ns,
                    "{name}: {got} ns in Parquet, {want} in the report"
                );
            } else {
                assert!(
                    (got - ns).abs() <= slack,
                    "{name}: {got} ns in Parquet, {want} in the report"
                );
            }
        }
    }
    let selfs: Vec<f64> = top.iter().map(|r| number(&r[2])).collect();
    assert!(selfs.windows(2).all(|w| w[0] >= w[1]), "{selfs:?}");
    // The slowest calls of helper(), with their parents: parse() and the
    // tail call from forward().
    let slowest = got["queries"][1].as_array().unwrap();
    assert_eq!(slowest.len(), report["helper"].0 as usize, "{got}");
    let parents: std::collections::BTreeSet<&str> =
        slowest.iter().map(|r| r[4].as_str().unwrap()).collect();
    assert_eq!(parents, ["forward", "parse"].into_iter().collect());
    // A second export into the same directory replaces the first.
    r.ftail(
        "export",
        &["--parquet", dir.to_str().unwrap(), "-F", "parse"],
    );
    let again = readers.python("parquet_check.py", &[&dir, &repo().join("README.md")]);
    let names: Vec<&str> = again["queries"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{again}");
}

/// The values the exports are checked with: the args fixture's
/// (`tests/args/args.c`) functions of every kind of value.
const VALUE_SPECS: &[&str] = &[
    "-A",
    "add@arg1/i32,arg2/i32",
    "-R",
    "add@i32",
    "-A",
    "scale@fparg1,fparg2/f32",
    "-R",
    "scale@f64",
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
    "chain@arg1/i32",
    "-R",
    "chain@i32",
    "-A",
    "twice@arg1/i32,arg2/i32",
    "-R",
    "twice@i32",
    "-R",
    "next_colour@i32",
];

/// A call and its values as text: name, arguments (`1, 2`; empty when
/// none), return value.
type Valued = (String, String, Option<String>);

/// Parquet's calls carry their parent's function beside the parent's
/// call id (what a self-join on `parent` finds) and integer nanoseconds
/// that agree with replay; a call's self time is its duration less its
/// callees', exactly.
#[test]
fn parquet_has_parent_functions_and_integer_nanoseconds() {
    let Some(readers) = readers() else { return };
    let r = record("gcc", "tour.c", "trace");
    let dir = r.path("calls.pq");
    r.ftail("export", &["--parquet", dir.to_str().unwrap()]);
    let got = readers.python("parquet_calls.py", &[&dir]);
    for column in ["start_ns", "duration_ns", "self_ns"] {
        assert_eq!(got["types"][column], "BIGINT", "{column}: {got}");
    }
    assert_eq!(got["types"]["parent_function"], "INTEGER", "{got}");
    assert_eq!(got["parent_function_mismatches"], 0, "{got}");
    assert!(got["with_parent_function"].as_u64().unwrap() > 0, "{got}");
    assert_same_calls("parquet", &calls_of(&got), &replay_calls(&r), true);
    for (tid, calls) in got["calls"].as_object().unwrap() {
        for c in calls.as_array().unwrap() {
            let int = |i: usize| {
                c[i].as_i64()
                    .unwrap_or_else(|| panic!("thread {tid}: {c}: column {i} is no integer"))
            };
            let (duration, start, self_ns, children) = (int(2), int(5), int(6), int(7));
            assert!(start >= 0 && duration >= 0, "thread {tid}: {c}");
            assert_eq!(self_ns, duration - children, "thread {tid}: {c}");
        }
    }
}

/// The args fixture built with gcc and recorded with [`VALUE_SPECS`];
/// what it printed.
fn record_values() -> (Recorded, String) {
    let scratch = scratch();
    let exe = scratch.path().join("args");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-g", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/args/args.c"))
            .arg("-lpthread"),
    );
    let trace = scratch.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-sched", "-d"])
        .arg(&trace)
        .args(VALUE_SPECS)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    (Recorded { scratch, trace }, printed)
}

/// `ftail replay --no-merge`'s calls with their values, per thread in
/// order of entry.
fn replay_values(r: &Recorded) -> BTreeMap<u64, Vec<Valued>> {
    let text = r.ftail("replay", &["--no-pager", "--no-merge", "-f", "tid"]);
    let mut out: BTreeMap<u64, Vec<Valued>> = BTreeMap::new();
    let mut open: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (tid, body) = line.split_once("] | ").unwrap();
        let tid: u64 = tid.trim_start_matches('[').trim().parse().unwrap();
        let body = body.trim();
        let calls = out.entry(tid).or_default();
        let stack = open.entry(tid).or_default();
        if let Some(rest) = body.strip_prefix('}') {
            let i = stack.pop().unwrap();
            calls[i].2 = rest
                .strip_prefix(" = ")
                .map(|r| r.split_once("; /* ").unwrap().0.to_string());
        } else {
            let head = body.strip_suffix(" {").unwrap_or_else(|| panic!("{line}"));
            let (name, rest) = head.split_once('(').unwrap();
            let args = rest.rsplit_once(')').unwrap().0;
            stack.push(calls.len());
            calls.push((name.to_string(), args.to_string(), None));
        }
    }
    out
}

/// A call as the program printed it: `add(1, 2) = 3`.
fn shown(c: &Valued) -> String {
    match &c.2 {
        Some(r) => format!("{}({}) = {r}", c.0, c.1),
        None => format!("{}({})", c.0, c.1),
    }
}

/// Checks an export's calls with values against the replay's and the
/// program's output.
fn assert_same_values(
    what: &str,
    got: &BTreeMap<u64, Vec<Valued>>,
    want: &BTreeMap<u64, Vec<Valued>>,
    printed: &str,
) {
    assert_eq!(got, want, "{what}: the values are not the replay's");
    let all: Vec<String> = got.values().flatten().map(shown).collect();
    let traced = ["add", "scale", "upper", "length", "keep", "chain", "twice"];
    let mut checked = 0;
    for line in printed.lines() {
        if traced.iter().any(|f| line.starts_with(&format!("{f}("))) {
            assert!(all.iter().any(|c| c == line), "{what}: {line:?}: {all:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "{printed}");
    assert!(all.iter().any(|c| c == "next_colour() = 6"), "{all:?}");
    assert!(all.iter().any(|c| c == "main()"), "{all:?}");
}

#[test]
fn exports_carry_recorded_values_as_replay_shows_them() {
    let (r, printed) = record_values();
    let want = replay_values(&r);

    // Chrome JSON, parsed here: `B` args `arg1`…, `E` args `retval`.
    let chrome = r.path("v.json");
    r.ftail("dump", &["--chrome", "-o", chrome.to_str().unwrap()]);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&chrome).unwrap()).unwrap();
    let mut got: BTreeMap<u64, Vec<Valued>> = BTreeMap::new();
    let mut open: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for e in doc["traceEvents"].as_array().unwrap() {
        let Some(tid) = e["tid"].as_u64() else {
            continue;
        };
        let args = e["args"].as_object();
        let calls = got.entry(tid).or_default();
        let stack = open.entry(tid).or_default();
        match e["ph"].as_str().unwrap() {
            "B" => {
                let mut values = Vec::new();
                if let Some(a) = args {
                    while let Some(v) = a.get(&format!("arg{}", values.len() + 1)) {
                        values.push(v.as_str().unwrap().to_string());
                    }
                    let named = a.keys().filter(|k| k.starts_with("arg")).count();
                    assert_eq!(named, values.len(), "{e}");
                    assert!(!a.contains_key("retval"), "{e}");
                }
                stack.push(calls.len());
                calls.push((
                    e["name"].as_str().unwrap().to_string(),
                    values.join(", "),
                    None,
                ));
            }
            "E" => {
                let i = stack.pop().unwrap();
                calls[i].2 = args
                    .and_then(|a| a.get("retval"))
                    .map(|v| v.as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    got.retain(|_, c| !c.is_empty());
    assert_same_values("chrome", &got, &want, &printed);

    // Perfetto, decoded with its own schema: debug annotations.
    let Some(readers) = readers() else { return };
    let perfetto = r.path("v.perfetto-trace");
    r.ftail("dump", &["--perfetto", "-o", perfetto.to_str().unwrap()]);
    let decoded = readers.python("perfetto_check.py", &[&perfetto]);
    let got: BTreeMap<u64, Vec<Valued>> = decoded["calls"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tid, calls)| {
            let calls = calls
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let args: Vec<&str> = c[5]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap())
                        .collect();
                    (
                        c[1].as_str().unwrap().to_string(),
                        args.join(", "),
                        c[6].as_str().map(str::to_string),
                    )
                })
                .collect();
            (tid.parse().unwrap(), calls)
        })
        .collect();
    assert_same_values("perfetto", &got, &want, &printed);
}
