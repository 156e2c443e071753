//! Scheduler events: `ftail record` (and `record -p`) notes when each
//! traced thread is switched out and back in, and `replay` shows the time
//! off the CPU as `linux:schedule` inside the call that was running; where
//! the kernel refuses, the trace is whole and says why.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// `sleeper` blocks for 20 ms; `spinner` runs for 20 ms without a system
/// call (the vDSO's clock). With an argument, it says `ready` and calls
/// `sleeper` for that many ms (to be attached to), on two threads.
const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
__attribute__((noinline)) void sleeper(void) { usleep(20000); }
__attribute__((noinline)) void spinner(void) {
  double end = now() + 0.02;
  while (now() < end) {
  }
}
static double end;
static void *sleeping(void *arg) {
  while (now() < end)
    sleeper();
  return arg;
}
int main(int argc, char **argv) {
  if (argc > 1) {
    pthread_t other;
    end = now() + atoi(argv[1]) * 1e-3;
    pthread_create(&other, 0, sleeping, 0);
    printf("ready\n");
    fflush(stdout);
    sleeping(0);
    pthread_join(other, 0);
    return 0;
  }
  sleeper();
  spinner();
  return 0;
}
"#;

fn build(dir: &Path) -> PathBuf {
    let src = dir.join("sched.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join("sched");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .arg("-lpthread"),
    );
    exe
}

/// A `linux:schedule` line of replay: the call it is in, how long the
/// thread was off the CPU (ms), and whether it was preempted.
#[derive(Debug)]
struct OffCpu {
    inside: String,
    ms: f64,
    preempted: bool,
}

/// Replay's `linux:schedule` lines and each call's duration (ms, the
/// longest of each function).
fn replayed(trace: &Path, as_nobody: bool) -> (Vec<OffCpu>, Vec<(String, f64)>) {
    let mut cmd = user_command(as_nobody);
    let text = run_ok(
        cmd.args(["replay", "--no-pager", "-f", "duration", "-d"])
            .arg(trace),
    );
    let mut open: Vec<String> = Vec::new();
    let mut off = Vec::new();
    let mut calls = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((duration, call)) = line.split_once('|') else {
            continue;
        };
        let call = call.trim();
        let ms = || -> f64 {
            let mut parts = duration.split_whitespace();
            let n: f64 = parts.next().unwrap().parse().unwrap();
            n * match parts.next().unwrap() {
                "ns" => 1e-6,
                "us" => 1e-3,
                "ms" => 1.0,
                "s" => 1e3,
                u => panic!("unit {u} in {line}"),
            }
        };
        if call.starts_with("linux:schedule();") {
            off.push(OffCpu {
                inside: open.last().cloned().unwrap_or_default(),
                ms: ms(),
                preempted: call.contains("preempted"),
            });
        } else if let Some(name) = call.strip_suffix("() {") {
            open.push(name.to_string());
        } else if call.starts_with('}') {
            let name = open.pop().unwrap();
            calls.push((name, ms()));
        } else if let Some((name, _)) = call.split_once("();") {
            calls.push((name.to_string(), ms()));
        }
    }
    (off, calls)
}

/// `ftail` run as this user, or as `nobody`.
fn user_command(as_nobody: bool) -> Command {
    if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(ftail());
        c
    } else {
        Command::new(ftail())
    }
}

fn sleeping_and_spinning(as_nobody: bool) {
    let tmp = scratch();
    let exe = build(tmp.path());
    if as_nobody {
        give_away(tmp.path());
    }
    let trace = tmp.path().join("trace");
    let out = run(user_command(as_nobody)
        .args(["record", "--no-libcall", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(!err.contains("not recorded"), "{err}");
    let (off, calls) = replayed(&trace, as_nobody);
    let blocked = |f: &str| -> f64 {
        off.iter()
            .filter(|o| o.inside == f && !o.preempted)
            .map(|o| o.ms)
            .sum()
    };
    let longest = off
        .iter()
        .filter(|o| o.inside == "sleeper" && !o.preempted)
        .map(|o| o.ms)
        .fold(0.0, f64::max);
    assert!(longest >= 15.0, "sleeper off the CPU {longest} ms: {off:?}");
    // The machine may be busy: the spinner may be preempted (shown as
    // such), but it never blocks.
    let spinner = calls.iter().find(|(n, _)| n == "spinner").unwrap().1;
    assert!(
        blocked("spinner") < spinner / 2.0,
        "spinner ({spinner} ms) blocked {} ms: {off:?}",
        blocked("spinner")
    );
    let sched = std::fs::read_dir(&trace)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("sched."))
        .expect("a sched.PID file");
    assert_eq!(mode(&sched.path()), 0o600);
}

#[test]
fn a_sleeping_function_shows_its_time_off_the_cpu_and_a_spinning_one_does_not() {
    sleeping_and_spinning(false);
}

#[test]
fn another_user_records_their_own_context_switches() {
    if !root() {
        return;
    }
    sleeping_and_spinning(true);
}

#[test]
fn refused_scheduler_events_leave_the_trace_whole_and_say_why() {
    let tmp = scratch();
    let exe = build(tmp.path());
    let trace = tmp.path().join("trace");
    let out = run(Command::new(ftail())
        .env("FTAIL_TEST_SCHED_ERRNO", libc::EACCES.to_string())
        .args(["record", "--no-libcall", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("scheduler events were not recorded").count(),
        1,
        "{err}"
    );
    assert!(err.contains("perf_event_paranoid"), "{err}");
    let info = run_ok(Command::new(ftail()).args(["info", "-d"]).arg(&trace));
    assert!(
        info.contains("scheduler events were not recorded: perf_event_open refused them"),
        "{info}"
    );
    let (off, calls) = replayed(&trace, false);
    assert!(off.is_empty(), "{off:?}");
    for f in ["main", "sleeper", "spinner"] {
        assert!(calls.iter().any(|(n, _)| n == f), "{f}: {calls:?}");
    }

    let trace = tmp.path().join("unasked");
    let out = run(Command::new(ftail())
        .args(["record", "--no-libcall", "--no-sched", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("scheduler"));
    let (off, calls) = replayed(&trace, false);
    assert!(off.is_empty(), "{off:?}");
    assert!(calls.iter().any(|(n, _)| n == "sleeper"), "{calls:?}");
    let names: Vec<String> = std::fs::read_dir(&trace)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("sched.")), "{names:?}");
}

#[test]
fn an_attached_recording_has_the_context_switches_too() {
    let tmp = scratch();
    let exe = build(tmp.path());
    let mut child = Command::new(&exe)
        .arg("3000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let trace = tmp.path().join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-libcall", "--duration", "0.4", "-p"])
        .arg(child.id().to_string())
        .arg("-d")
        .arg(&trace));
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{out:?}");
    // Both threads, each with its own times off the CPU.
    for tid in [&child_tid(&trace, 0), &child_tid(&trace, 1)] {
        let text = run_ok(
            Command::new(ftail())
                .args(["replay", "--no-pager", "-f", "duration", "--tid", tid, "-d"])
                .arg(&trace),
        );
        let slept = text
            .lines()
            .filter(|l| l.contains("linux:schedule"))
            .count();
        assert!(slept >= 3, "thread {tid}:\n{text}");
    }
}

/// The id of the `n`-th thread of the trace's one process.
fn child_tid(trace: &Path, n: usize) -> String {
    let t = ftail_trace::trace::open(trace).unwrap();
    let mut tids: Vec<u32> = t.processes[0].threads.iter().map(|t| t.tid).collect();
    tids.sort();
    assert!(tids.len() >= 2, "{tids:?}");
    tids[n].to_string()
}

/// `report`'s rows as (function, total ms, off-CPU ms).
fn report(trace: &Path, extra: &[&str]) -> Vec<(String, f64, f64)> {
    let text = run_ok(
        Command::new(ftail())
            .args(["report", "--no-pager", "-f", "total,off-cpu", "-d"])
            .arg(trace)
            .args(extra),
    );
    let ms = |n: &str, unit: &str| -> f64 {
        n.parse::<f64>().unwrap()
            * match unit {
                "ns" => 1e-6,
                "us" => 1e-3,
                "ms" => 1.0,
                "s" => 1e3,
                u => panic!("unit {u}"),
            }
    };
    text.lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[4].to_string(), ms(w[0], w[1]), ms(w[2], w[3]))
        })
        .collect()
}

/// The fixture built in `dir` and recorded, scheduler events included,
/// into `dir/trace`.
fn recorded(dir: &Path) -> PathBuf {
    let exe = build(dir);
    let trace = dir.join("trace");
    let out = run(Command::new(ftail())
        .args(["record", "--no-libcall", "-d"])
        .arg(&trace)
        .arg("--")
        .arg(&exe));
    assert!(out.status.success(), "{out:?}");
    trace
}

#[test]
fn report_shows_the_time_off_the_cpu_and_can_leave_it_out() {
    let tmp = scratch();
    let trace = recorded(tmp.path());
    let row = |rows: &[(String, f64, f64)], f: &str| {
        rows.iter()
            .find(|r| r.0 == f)
            .cloned()
            .unwrap_or_else(|| panic!("{f}: {rows:?}"))
    };
    let with = report(&trace, &[]);
    let (_, total, off) = row(&with, "sleeper");
    assert!(off >= 15.0 && off <= total, "{with:?}");
    let without = report(&trace, &["--no-sleep-time"]);
    let (_, total_on_cpu, _) = row(&without, "sleeper");
    assert!(total_on_cpu <= total - 15.0, "{with:?} {without:?}");
    // By default, the column follows the others where there are events.
    let text = run_ok(
        Command::new(ftail())
            .args(["report", "--no-pager", "-d"])
            .arg(&trace),
    );
    assert!(text.lines().next().unwrap().contains("OFF-CPU"), "{text}");
}

/// The calls of `trace`'s one thread as Perfetto's own schema reads them
/// from `ftail dump --perfetto`: `[depth, name, duration_ns, ...]` in
/// order of entry; `None` (the check skipped) where the schema is not
/// installed.
fn perfetto_calls(dir: &Path, trace: &Path) -> Option<Vec<serde_json::Value>> {
    let pb = dir.join("t.perfetto-trace");
    run_ok(
        Command::new(ftail())
            .args(["dump", "--perfetto", "-o"])
            .arg(&pb)
            .arg("-d")
            .arg(trace),
    );
    let python_path = repo().join("tests/.cache/python");
    let decoded = Command::new("python3")
        .env("PYTHONPATH", &python_path)
        .arg(repo().join("tests/export/perfetto_check.py"))
        .arg(&pb)
        .output()
        .unwrap();
    if !decoded.status.success() && !python_path.join("perfetto").is_dir() {
        eprintln!("skipping the decoding: Perfetto's schema is missing (scripts/install-deps)");
        assert!(String::from_utf8_lossy(&std::fs::read(&pb).unwrap()).contains("linux:schedule"));
        return None;
    }
    assert!(decoded.status.success(), "{decoded:?}");
    let v: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    let calls = v["calls"].as_object().unwrap().values().next().unwrap();
    Some(calls.as_array().unwrap().clone())
}

#[test]
fn perfetto_shows_the_time_off_the_cpu_as_a_slice_inside_the_call() {
    let tmp = scratch();
    let trace = recorded(tmp.path());
    let Some(calls) = perfetto_calls(tmp.path(), &trace) else {
        return;
    };
    let at = calls.iter().position(|c| c[1] == "sleeper").unwrap();
    let next = &calls[at + 1];
    assert_eq!(next[1], "linux:schedule", "{calls:?}");
    assert_eq!(next[0].as_u64(), calls[at][0].as_u64().map(|d| d + 1));
    assert!(next[2].as_f64().unwrap() >= 15e6, "{calls:?}");
}

/// The scheduler-event file of `trace`, its longest slice's ends moved
/// by `start` and `end` ms, as a clock that misses would place them.
fn move_longest_slice(trace: &Path, start: f64, end: f64) {
    let info = std::fs::read_dir(trace)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".info"))
        .expect("a PID.info file");
    let hz: f64 = std::fs::read_to_string(info.path())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("tsc_hz="))
        .expect("tsc_hz")
        .parse()
        .unwrap();
    let ticks = |ms: f64| (ms * hz / 1e3) as i64;
    let path = std::fs::read_dir(trace)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sched.")
        })
        .expect("a sched.PID file");
    let mut bytes = std::fs::read(&path).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let longest = (64..bytes.len())
        .step_by(32)
        .max_by_key(|&at| u64_at(&bytes, at + 16) - u64_at(&bytes, at + 8))
        .expect("a slice");
    for (at, by) in [(longest + 8, ticks(start)), (longest + 16, ticks(end))] {
        let moved = u64_at(&bytes, at).checked_add_signed(by).unwrap();
        bytes[at..at + 8].copy_from_slice(&moved.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
}

/// A time off the CPU whose times miss a little (the kernel's clock
/// turned into the counter's) never reaches out of the call that holds
/// it: cut at the call's end, or moved into the call it mostly lies in.
#[test]
fn a_time_off_the_cpu_reaching_over_an_event_stays_inside_its_call() {
    let tmp = scratch();
    let trace = recorded(tmp.path());
    let sleeper_ms =
        |calls: &[(String, f64)]| calls.iter().find(|(n, _)| n == "sleeper").unwrap().1;
    // Switched back in 4 ms after sleeper's end.
    move_longest_slice(&trace, 0.0, 4.0);
    let (off, calls) = replayed(&trace, false);
    let sleep: Vec<&OffCpu> = off.iter().filter(|o| o.inside == "sleeper").collect();
    assert_eq!(sleep.len(), 1, "{off:?}");
    assert!(sleep[0].ms <= sleeper_ms(&calls), "{off:?} {calls:?}");
    replay_paths_agree(&trace);
    if let Some(calls) = perfetto_calls(tmp.path(), &trace) {
        let at = calls.iter().position(|c| c[1] == "sleeper").unwrap();
        assert_eq!(calls[at + 1][1], "linux:schedule", "{calls:?}");
        assert!(
            calls[at + 1][2].as_f64() <= calls[at][2].as_f64(),
            "{calls:?}"
        );
    }
    // Switched out a little before sleeper was entered: still inside it.
    move_longest_slice(&trace, -2.0, -4.0);
    let (off, calls) = replayed(&trace, false);
    let sleep: Vec<&OffCpu> = off.iter().filter(|o| o.inside == "sleeper").collect();
    assert_eq!(sleep.len(), 1, "{off:?}");
    assert!(sleep[0].ms >= 10.0, "{off:?}");
    assert!(sleep[0].ms <= sleeper_ms(&calls), "{off:?} {calls:?}");
    replay_paths_agree(&trace);
}

/// Plain replay's fused path places the times off the CPU as the general
/// path does: inside the call running, a one-line call split around them.
#[test]
fn plain_replay_places_the_time_off_the_cpu_as_the_general_path_does() {
    let tmp = scratch();
    let trace = recorded(tmp.path());
    let text = replay_paths_agree(&trace);
    assert!(
        text.contains("linux:schedule();") || text.contains("scheduler events were not recorded"),
        "{text}"
    );
}
