//! `ftail record -p PID`: attaching to a running program built with
//! `ftail cc`, recording, detaching, attaching again; the program's
//! output, exit status and code are as if nothing happened; the refusals.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use common::*;

fn fixture() -> PathBuf {
    repo().join("tests/runtime/attach.c")
}

fn build(dir: &Path, cc: &str) -> PathBuf {
    let exe = dir.join("attach");
    run_ok(
        ftail_cc(cc)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(fixture())
            .arg("-lpthread"),
    );
    exe
}

/// The fixture, started by `cmd`, once it says it is ready.
struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        Running { child, out }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends it `line`, then waits for it to answer `answer`.
    fn ask(&mut self, line: &str, answer: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut got = String::new();
        self.out.read_line(&mut got).unwrap();
        assert_eq!(got.trim_end(), answer);
    }

    /// Tells it to finish; its remaining output and exit code.
    fn finish(mut self) -> (String, Option<i32>) {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (rest, status.code())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attach(pid: &str, trace: &Path, extra: &[&str]) -> Output {
    run(Command::new(ftail())
        .args(["record", "--no-sched", "-p", pid, "-d"])
        .arg(trace)
        .args(extra))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every byte of the code of `exe` (an executable or a library) in the
/// running process is the file's: every site is back to what the
/// compiler wrote.
fn assert_code_unchanged(pid: &str, exe: &Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::read(exe).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let exe = exe.canonicalize().unwrap();
    let mut checked = 0;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || Path::new(f[5]) != exe {
            continue;
        }
        let (start, end) = f[0].split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let offset = usize::from_str_radix(f[2], 16).unwrap();
        let len = ((end - start) as usize).min(file.len() - offset);
        let mut now = vec![0u8; len];
        mem.read_exact_at(&mut now, start).unwrap();
        assert!(
            now == file[offset..offset + len],
            "the code of {} differs from its file after detaching",
            exe.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no code mapping of {} found", exe.display());
}

/// How many times the runtime is mapped at offset 0 (loaded).
fn runtime_loads(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("libftail_runtime") && l.split_whitespace().nth(2) == Some("00000000")
        })
        .count()
}

fn assert_balanced(t: &ftail_trace::trace::Trace) {
    for p in &t.processes {
        for th in &p.threads {
            let b = th.balance();
            assert!(b.is_balanced(), "pid {} tid {}: {b:?}", p.pid, th.tid);
            assert!(th.damage.is_none(), "{:?}", th.damage);
        }
    }
}

/// The names of the functions with calls in the trace.
fn called(t: &ftail_trace::trace::Trace) -> std::collections::BTreeSet<String> {
    ftail_trace::replay::render(t)
        .lines()
        .filter_map(|l| {
            let f = l.split('|').nth(1)?.trim();
            Some(
                f.split('(')
                    .next()?
                    .trim_start_matches('}')
                    .trim()
                    .to_string(),
            )
        })
        .filter(|n| !n.is_empty() && !n.starts_with("/*"))
        .collect()
}

fn attach_detach_attach(cc: &str) {
    if !have(cc) {
        return;
    }
    let dir = scratch();
    let exe = build(dir.path(), cc);
    let untraced = Running::start(Command::new(&exe).arg("2"));
    let expected = untraced.finish();
    assert_eq!(expected.1, Some(3));

    let prog = Running::start(Command::new(&exe).arg("2"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    // `step` is most of the calls: left out, the trace stays small.
    let out = attach(&pid, &trace, &["--duration", "1", "-N", "step"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("detached from process"),
        "{}",
        stderr_of(&out)
    );
    assert_code_unchanged(&pid, &exe);
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let names = called(&t);
    for f in ["work", "in_handler", "short_lived"] {
        assert!(names.contains(f), "{f} not traced: {names:?}");
    }
    assert!(
        !names.contains("step"),
        "{names:?}\n{}",
        ftail_trace::replay::render(&t)
    );
    let first_events: usize = t.processes[0]
        .threads
        .iter()
        .map(|th| th.events.len())
        .sum();

    // Again: the runtime already there is switched on, not loaded again.
    let out = attach(&pid, &trace, &["--duration", "0.5"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        !stderr_of(&out).contains("loaded the runtime"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(runtime_loads(&pid), 1);
    assert_code_unchanged(&pid, &exe);
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let again: usize = t.processes[0]
        .threads
        .iter()
        .map(|th| th.events.len())
        .sum();
    assert!(
        again > first_events,
        "{again} events after attaching again, {first_events} before"
    );
    assert!(
        called(&t).contains("step"),
        "the second attach traces everything"
    );

    assert_eq!(prog.finish(), expected);
}

#[test]
fn attach_detach_and_attach_again_gcc() {
    attach_detach_attach("gcc");
}

#[test]
fn attach_detach_and_attach_again_clang() {
    attach_detach_attach("clang-19");
}

#[test]
fn a_program_started_with_tracing_off_is_attached_through_its_agent() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let trace = dir.path().join("trace");
    let prog = Running::start(
        Command::new(ftail())
            .args(["record", "--no-sched", "--off", "-d"])
            .arg(&trace)
            .arg("--")
            .arg(&exe)
            .arg("2"),
    );
    let pid = prog.pid();
    // No --duration: recording ends when ftail is told to stop.
    let recording = Command::new(ftail())
        .args(["record", "--no-sched", "-p", &pid, "-F", "work", "-d"])
        .arg(dir.path().join("elsewhere"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: a signal to the child just started (not yet waited for).
    unsafe { libc::kill(recording.id() as i32, libc::SIGTERM) };
    let out = recording.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("detached"), "{}", stderr_of(&out));
    let text = stderr_of(&out);
    assert!(text.contains("recording there"), "{text}");
    assert_code_unchanged(&pid, &exe);
    let (rest, code) = prog.finish();
    assert_eq!(code, Some(3), "{rest}");
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    assert!(called(&t).contains("work"));
    assert!(!dir.path().join("elsewhere").exists());
}

fn refused(pid: &str, dir: &Path) -> String {
    let out = attach(pid, &dir.join("trace"), &["--duration", "0.2"]);
    assert!(!out.status.success(), "attached to {pid}");
    assert!(
        !dir.join("trace").exists(),
        "a refusal left a trace directory"
    );
    stderr_of(&out)
}

#[test]
fn attaching_is_refused_with_the_reason() {
    let dir = scratch();
    // No such process.
    let text = refused("999999999", dir.path());
    assert!(text.contains("there is no process 999999999"), "{text}");

    // A program not built through `ftail cc`.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let text = refused(&sleeper.id().to_string(), dir.path());
    assert!(
        text.contains("runs no code built with `ftail cc`"),
        "{text}"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // Already traced by ftail: `ftail ctl` is the way.
    let exe = build(dir.path(), "gcc");
    let traced = dir.path().join("traced");
    let prog = Running::start(
        Command::new(ftail())
            .args(["record", "--no-sched", "--ctl", "-N", "step", "-d"])
            .arg(&traced)
            .arg("--")
            .arg(&exe)
            .arg("1"),
    );
    let pid = prog.pid();
    let text = refused(&pid, dir.path());
    assert!(text.contains("already being traced by ftail"), "{text}");
    assert!(text.contains(&format!("ftail ctl {pid} off")), "{text}");
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));
}

#[test]
fn another_users_process_is_refused() {
    if !root() {
        return;
    }
    let dir = scratch();
    let mut other = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    // setpriv execs sleep in the same process.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = refused(&other.id().to_string(), dir.path());
    assert!(
        text.contains("runs as uid 65534, not as you (uid 0)"),
        "{text}"
    );
    assert!(text.contains("runuser"), "{text}");
    let _ = other.kill();
    let _ = other.wait();
}

/// The replay lines of thread `tid`: the part after `|`, indented.
fn thread_lines(text: &str, tid: u32) -> Vec<String> {
    let column = format!("[{tid:>6}]");
    text.lines()
        .filter(|l| l.contains(&column))
        .filter_map(|l| Some(l.split_once('|')?.1.to_string()))
        .collect()
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[test]
fn frames_open_at_attach_close_marked_from_the_attach() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let prog = Running::start(Command::new(&exe).arg("1"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    // No --duration: recording ends with the program.
    let mut recording = Command::new(ftail())
        .args(["record", "--no-sched", "--no-libcall", "-N", "step", "-p"])
        .arg(&pid)
        .arg("-d")
        .arg(&trace)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(recording.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("ftail: recording process") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("ftail ended before recording: {said}");
        }
        said.push_str(&line);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));
    std::io::Read::read_to_string(&mut err, &mut said).unwrap();
    assert!(recording.wait().unwrap().success(), "{said}");
    assert!(said.contains("ended"), "{said}");

    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let text = ftail_trace::replay::render(&t);
    let main = thread_lines(&text, pid.parse().unwrap());
    // main was waiting for its input when tracing began: it opens the
    // thread, marked, and closes at its return.
    assert!(
        main.first()
            .is_some_and(|l| l.trim() == "main() { /* began before tracing */"),
        "{text}"
    );
    assert!(
        main.iter()
            .any(|l| l.trim() == "} /* main (began before tracing) */"),
        "{text}"
    );
    // The reader thread was blocked in wait_for_data (which reader
    // tail-calls, so it is the frame); the handler thread was in a signal
    // handler called from signalled: nested.
    let thread = |name: &str| {
        let th = t.processes[0].threads.iter().find(|th| th.name == name);
        thread_lines(&text, th.unwrap_or_else(|| panic!("no {name} thread")).tid)
    };
    let trimmed = |lines: &[String], n: usize| -> Vec<String> {
        lines.iter().take(n).map(|l| l.trim().to_string()).collect()
    };
    assert_eq!(
        trimmed(&thread("reader"), 2),
        [
            "wait_for_data() { /* began before tracing */",
            "} /* wait_for_data (began before tracing) */"
        ],
        "{text}"
    );
    let handler = thread("handler");
    assert_eq!(
        trimmed(&handler, 2),
        [
            "signalled() { /* began before tracing */",
            "on_usr1() { /* began before tracing */"
        ],
        "{text}"
    );
    assert!(indent_of(&handler[1]) > indent_of(&handler[0]), "{text}");
    // The busy thread's calls made after the attach nest under busy.
    let lines = thread("busy");
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some("busy() { /* began before tracing */"),
        "{text}"
    );
    let calls: Vec<&String> = lines.iter().filter(|l| l.trim() == "work();").collect();
    assert!(!calls.is_empty(), "{text}");
    assert!(
        calls.iter().all(|l| indent_of(l) > indent_of(&lines[0])),
        "{text}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.trim() == "} /* busy (began before tracing) */"),
        "{text}"
    );
    // Every thread that was running then says so; none lost a frame.
    for th in &t.processes[0].threads {
        let b = th.balance();
        assert_eq!(b.unmatched, 0, "tid {}: {b:?}", th.tid);
    }
}

/// An event-loop server idle in `epoll_wait` (no thread ever runs its
/// code) is attached to, and its `epoll_wait` is never seen to fail
/// with `EINTR`: a call a stop interrupts is resumed as the kernel
/// resumes `poll`'s.
#[test]
fn an_idle_server_waiting_in_epoll_is_attached_without_noticing() {
    let dir = scratch();
    let exe = dir.path().join("epoll_idle");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/runtime/epoll_idle.c")),
    );
    let mut prog = Running::start(&mut Command::new(&exe));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let out = attach(&pid, &trace, &["--no-libcall", "--duration", "0.3"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(runtime_loads(&pid), 1);
    assert_code_unchanged(&pid, &exe);
    let stdin = prog.child.stdin.as_mut().unwrap();
    stdin.write_all(b"one\ntwo\n").unwrap();
    stdin.flush().unwrap();
    let (rest, code) = prog.finish();
    assert_eq!(rest, "served 2, interrupted 0\n");
    assert_eq!(code, Some(0));
}

/// What the fixture's `work(x)` returns.
fn work_of(mut x: i64) -> i64 {
    for i in 0..100 {
        x = (x + i) * 2654435761 % 1000003;
    }
    x
}

/// The `(argument, return value)` of every call of `work` replay shows
/// with both.
fn work_values(text: &str) -> Vec<(i64, i64)> {
    text.lines()
        .filter_map(|l| {
            let call = l.split_once("| ")?.1.trim();
            let rest = call.strip_prefix("work(")?;
            let (arg, rest) = rest.split_once(')')?;
            let ret = rest.strip_prefix(" = ")?.strip_suffix(';')?;
            Some((arg.parse().ok()?, ret.parse().ok()?))
        })
        .collect()
}

fn values_are_recorded_when_attached(cc: &str) {
    if !have(cc) {
        return;
    }
    let dir = scratch();
    let exe = build(dir.path(), cc);
    let prog = Running::start(Command::new(&exe).arg("1"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let specs = [
        "-A",
        "work@arg1/i64",
        "-R",
        "work@i64",
        "-N",
        "step",
        "--no-libcall",
    ];
    let out = attach(&pid, &trace, &[&["--duration", "0.5"][..], &specs].concat());
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_code_unchanged(&pid, &exe);
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let text = ftail_trace::replay::render(&t);
    let calls = work_values(&text);
    assert!(
        calls.len() >= 10,
        "{} calls with values:\n{text}",
        calls.len()
    );
    for (arg, ret) in &calls {
        assert_eq!(*ret, work_of(*arg), "work({arg}) = {ret}");
    }

    // Attaching again with the same rules is fine; with others it is
    // refused, saying why.
    let out = attach(&pid, &trace, &[&["--duration", "0.2"][..], &specs].concat());
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = attach(&pid, &trace, &["--duration", "0.2", "-A", "step@arg1"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("can only repeat those"),
        "{}",
        stderr_of(&out)
    );
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));
}

#[test]
fn values_are_recorded_when_attached_gcc() {
    values_are_recorded_when_attached("gcc");
}

#[test]
fn values_are_recorded_when_attached_clang() {
    values_are_recorded_when_attached("clang-19");
}

/// `ftail record -p` on `pid`, recording until it is ended; returns once
/// it says it records.
fn start_recording(
    pid: &str,
    trace: &Path,
    extra: &[&str],
) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut recording = Command::new(ftail())
        .args(["record", "--no-sched", "-p", pid, "-d"])
        .arg(trace)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(recording.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("ftail: recording process") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("ftail ended before recording: {said}");
        }
        said.push_str(&line);
    }
    (recording, err)
}

/// Ends a recording started by [`start_recording`] as Ctrl-C would.
fn stop_recording(mut recording: Child, mut err: BufReader<std::process::ChildStderr>) {
    // SAFETY: a signal to the child just started (not yet waited for).
    unsafe { libc::kill(recording.id() as i32, libc::SIGINT) };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut err, &mut said).unwrap();
    assert!(recording.wait().unwrap().success(), "{said}");
    assert!(said.contains("detached from process"), "{said}");
}

#[test]
fn a_library_loaded_after_the_attach_is_traced() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let lib = dir.path().join("libplugin.so");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(repo().join("tests/runtime/plugin.c")),
    );
    let mut prog = Running::start(Command::new(&exe).arg("1").arg(&lib));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let (recording, err) = start_recording(&pid, &trace, &["--no-libcall", "-N", "step"]);
    prog.ask("load", "loaded");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop_recording(recording, err);
    assert_code_unchanged(&pid, &exe);
    assert_code_unchanged(&pid, &lib);
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let text = ftail_trace::replay::render(&t);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| Some(l.split_once('|')?.1))
        .collect();
    let calls = lines
        .iter()
        .filter(|l| l.trim() == "plugin_entry() {")
        .count();
    assert!(calls > 10, "{calls} calls of plugin_entry:\n{text}");
    assert!(
        lines.iter().any(|l| l.trim() == "plugin_helper();"),
        "{text}"
    );
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));
}

/// The durations and notes of the closes of `name` in replay lines.
fn closes_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let close = format!("}} /* {name}");
    text.lines().filter(|l| l.contains(&close)).collect()
}

/// A line's duration, in milliseconds.
fn duration_ms(line: &str) -> f64 {
    let mut fields = line.split_whitespace();
    let (n, unit) = (fields.next(), fields.next().unwrap_or_default());
    let n: f64 = n
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    match unit {
        "ns" => n / 1e6,
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        _ => panic!("unit {unit:?} in {line:?}"),
    }
}

/// Frames open when tracing went off do not carry over into the next
/// attach: the first session's close as detached, and a function entered
/// between the two attaches that returns during the second begins, marked,
/// at the second.
#[test]
fn a_second_attach_starts_from_a_clean_slate() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let mut prog = Running::start(Command::new(&exe).arg("1"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let quiet = ["--no-libcall", "-N", "step"];
    // Entered during the first attach, open when it detaches.
    let (recording, err) = start_recording(&pid, &trace, &quiet);
    prog.ask("enter", "entered");
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop_recording(recording, err);
    // Returns, and is entered again at the same depth, between the two.
    prog.ask("go", "returned");
    prog.ask("enter", "entered");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = std::time::Instant::now();
    let (recording, err) = start_recording(&pid, &trace, &quiet);
    std::thread::sleep(std::time::Duration::from_millis(200));
    prog.ask("go", "returned");
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop_recording(recording, err);
    let second = second.elapsed().as_secs_f64() * 1e3;
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));

    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let text = ftail_trace::replay::render(&t);
    let main = thread_lines(&text, pid.parse().unwrap()).join("\n");
    let closes = closes_of(&main, "wait_for_line");
    assert_eq!(
        closes
            .iter()
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>(),
        [
            "} /* wait_for_line (detached: exit not recorded) */",
            "} /* wait_for_line (began before tracing) */"
        ],
        "{text}"
    );
    assert!(
        main.contains("wait_for_line() { /* began before tracing */"),
        "{text}"
    );
    // No call of the second attach began in the first: none lasts longer
    // than the second attach did.
    for close in closes_of(&text, "") {
        let ms = duration_ms(close);
        assert!(
            ms < second,
            "{close}: {ms} ms, the second attach {second} ms\n{text}"
        );
    }
    let wait = text
        .lines()
        .find(|l| l.contains("} /* wait_for_line (began before tracing) */"))
        .unwrap();
    assert!(duration_ms(wait) >= 150.0, "{wait}\n{text}");
}

/// `-T` rules reach a program attached to, several at once: `work`'s
/// callees are not recorded (`depth=1`), nor the signal handler's calls
/// (`notrace`).
#[test]
fn trigger_rules_apply_to_a_program_attached_to() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let prog = Running::start(Command::new(&exe).arg("1"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let rules = ["-T", "work@depth=1", "-T", "in_handler@notrace"];
    let out = attach(
        &pid,
        &trace,
        &[&["--no-libcall", "--duration", "0.3"][..], &rules].concat(),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Attaching again cannot change them: said, not ignored.
    let again = attach(&pid, &trace, &[&["--duration", "0.1"][..], &rules].concat());
    assert!(!again.status.success());
    assert!(
        stderr_of(&again).contains("apply only to the first attach"),
        "{}",
        stderr_of(&again)
    );
    let (_, code) = prog.finish();
    assert_eq!(code, Some(3));
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_balanced(&t);
    let names = called(&t);
    assert!(!names.contains("in_handler"), "{names:?}");
    // Calls of work seen from their entry show no callees (one open at
    // the detach closes right after); only those running at the attach
    // (the trigger acts at an entry) may.
    let text = ftail_trace::replay::render(&t);
    let mut leaves = 0;
    for th in &t.processes[0].threads {
        let lines = thread_lines(&text, th.tid);
        let lines: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
        leaves += lines.iter().filter(|l| **l == "work();").count();
        for (i, l) in lines.iter().enumerate() {
            if *l == "work() {" {
                assert_eq!(
                    lines.get(i + 1).copied(),
                    Some("} /* work (detached: exit not recorded) */"),
                    "{text}"
                );
            }
        }
    }
    assert!(leaves > 10, "{leaves} calls of work:\n{text}");
}

/// The runtime is loaded from a thread that loses nothing by being
/// borrowed: the fixture's busy threads run its code, but its reader
/// waits in `read` on a pipe (and its main thread on its input), and one
/// of those is borrowed; the read is restarted and the program's output
/// and exit status are as without ftail.
#[test]
fn a_thread_waiting_in_a_read_is_borrowed_before_a_busy_one() {
    if !have("gcc") {
        return;
    }
    let dir = scratch();
    let exe = build(dir.path(), "gcc");
    let expected = Running::start(Command::new(&exe).arg("4")).finish();
    let prog = Running::start(Command::new(&exe).arg("4"));
    let pid = prog.pid();
    let trace = dir.path().join("trace");
    let out = attach(&pid, &trace, &["--duration", "0.3", "-N", "step"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("(waiting in a system call) stopped for"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(prog.finish(), expected);
}
