//! Helpers shared by the end-to-end tests: running ftail and compilers in
//! scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ftail` binary under test.
pub fn ftail() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ftail"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Whether the full suite is required (set by `scripts/test-all` and CI):
/// then a missing compiler is a failure, not a skip.
pub fn full_suite() -> bool {
    std::env::var_os("FTAIL_CORPUS").is_some_and(|v| v == "1")
}

/// Whether `prog` runs; panics when it does not and the full suite is
/// required.
pub fn have(prog: &str) -> bool {
    let ok = Command::new(prog)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !full_suite(),
            "{prog} is required by the full test suite but is not installed"
        );
        eprintln!("skipping: {prog} is not installed (scripts/install-deps installs it)");
    }
    ok
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `ftail ctl PID ARGS`, tried again until the program's agent (which
/// starts with the program) listens; its stdout.
pub fn ctl_once_listening(pid: &str, args: &[&str]) -> String {
    for _ in 0..100 {
        let out = run(Command::new(ftail()).arg("ctl").arg(pid).args(args));
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("ftail ctl {pid} {args:?} kept failing");
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ftail cc COMPILER ARGS…` as a command.
pub fn ftail_cc(compiler: &str) -> Command {
    let mut c = Command::new(ftail());
    c.arg("cc").arg(compiler);
    c
}

/// Runs `ftail sites -q FILE`; returns (success, output).
pub fn sites(file: &Path) -> (bool, String) {
    let out = run(Command::new(ftail()).args(["sites", "-q"]).arg(file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A fresh scratch directory.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ftail-test-")
        .tempdir()
        .unwrap()
}

/// The runtime library next to the `ftail` binary under test (built by
/// `cargo test --workspace`).
pub fn runtime() -> PathBuf {
    let p = ftail().with_file_name("libftail_runtime.so");
    assert!(
        p.is_file(),
        "{} is missing: run cargo build -p ftail-runtime",
        p.display()
    );
    p
}

/// Runs `ftail record -d TDIR EXTRA -- EXE ARGS`; returns the run's output
/// and the trace (panics with ftail's stderr when there is none).
pub fn record_trace(
    tdir: &Path,
    exe: &Path,
    args: &[&str],
    extra: &[&str],
) -> (Output, ftail_trace::trace::Trace) {
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(tdir)
        .args(extra)
        .arg("--")
        .arg(exe)
        .args(args));
    let t = ftail_trace::trace::open(tdir)
        .unwrap_or_else(|e| panic!("{e}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out, t)
}

/// Builds `source` with `ftail cc CC -O2 FLAGS` into `dir/exe`, then
/// records it into `dir/trace` (which must succeed); returns the trace
/// directory.
pub fn build_and_record(
    cc: &str,
    source: &Path,
    flags: &[&str],
    dir: &Path,
    exe: &str,
    trace: &str,
) -> PathBuf {
    build_and_record_with(cc, source, flags, dir, exe, trace, &[])
}

/// [`build_and_record`] with more `ftail record` options (`--no-libcall`
/// where a test is about the program's own calls only).
pub fn build_and_record_with(
    cc: &str,
    source: &Path,
    flags: &[&str],
    dir: &Path,
    exe: &str,
    trace: &str,
    record_options: &[&str],
) -> PathBuf {
    let exe = dir.join(exe);
    run_ok(
        ftail_cc(cc)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(source)
            .args(flags),
    );
    let trace = dir.join(trace);
    let (out, _) = record_trace(&trace, &exe, &[], record_options);
    assert!(out.status.success(), "{out:?}");
    trace
}

/// A small program built through `ftail cc`.
pub fn small_program(dir: &Path) -> PathBuf {
    let src = dir.join("small.c");
    std::fs::write(
        &src,
        "int add(int a, int b) { return a + b; }\n\
         int main(int argc, char **argv) { (void)argv; return add(argc, -1); }\n",
    )
    .unwrap();
    let exe = dir.join("small");
    run_ok(ftail_cc("gcc").args(["-O0", "-o"]).arg(&exe).arg(&src));
    exe
}

/// Whether this test runs as root, which it needs to act as another user;
/// says so when it does not.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: needs root to act as another user (CI runs as root)");
    }
    root
}

/// The uid and gid of `nobody`, the other user of these tests.
pub const NOBODY: u32 = 65534;

/// Gives `path` and everything under it to `nobody`.
pub fn give_away(path: &Path) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(path),
    );
}

/// The permission bits of `path` itself (a link is not followed).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Runs `ftail ARGS` with standard output on a pseudo-terminal (no
/// pager, no `NO_COLOR` but what `env` sets); what the terminal received.
pub fn stdout_on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    on_a_terminal("stdout=s, stderr=subprocess.DEVNULL", args, env)
}

/// [`stdout_on_a_terminal`] for standard error (standard output goes
/// nowhere).
pub fn stderr_on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    on_a_terminal("stdout=subprocess.DEVNULL, stderr=s", args, env)
}

/// Runs `ftail ARGS` with the streams `streams` names (Python's
/// `Popen` keywords; `s` is the terminal) on a pseudo-terminal.
fn on_a_terminal(streams: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let script = r#"
import os, pty, select, subprocess, sys
m, s = pty.openpty()
p = subprocess.Popen(sys.argv[1:], STREAMS, stdin=s)
os.close(s)
out = b""
while True:
    r, _, _ = select.select([m], [], [], 0.1)
    if r:
        try:
            d = os.read(m, 4096)
        except OSError:
            break
        if not d:
            break
        out += d
    elif p.poll() is not None:
        break
p.wait()
sys.stdout.buffer.write(out)
"#
    .replace("STREAMS", streams);
    // The interpreter itself (not a wrapper script that needs this PATH);
    // the program may get another PATH.
    let python = run_ok(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    let out = run(Command::new(python.trim())
        .arg("-c")
        .arg(&script)
        .arg(ftail())
        .args(args)
        .env_remove("PAGER")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Replays `trace` with the common option sets (the default, each `-f`
/// column, several together, `--no-merge`, `--no-event`) both as `replay`
/// does (plain replay takes a fused path) and by the general path only,
/// and asserts that both write the same bytes; returns the default
/// output.
pub fn replay_paths_agree(trace: &Path) -> String {
    use ftail_trace::replay::{Field, Options};
    let listing = ftail_trace::reader::dir::TraceDir::open(trace).unwrap();
    let names = ftail_trace::names::for_images(&listing.images);
    let mut sets = vec![Options::default()];
    for fields in [
        "time",
        "delta",
        "duration",
        "tid",
        "elapsed",
        "none",
        "+time",
        "elapsed,delta,duration,tid,time",
    ] {
        sets.push(Options {
            fields: Field::parse_list(fields).unwrap(),
            ..Options::default()
        });
    }
    sets.push(Options {
        merge_leaves: false,
        ..Options::default()
    });
    sets.push(Options {
        sched: false,
        ..Options::default()
    });
    sets.push(Options {
        overlap_writes: true,
        ..Options::default()
    });
    let mut first = None;
    for opts in &sets {
        let mut fused = Vec::new();
        ftail_trace::replay::replay(&listing, &names, opts, &mut fused).unwrap();
        let mut general = Vec::new();
        ftail_trace::replay::replay_general(&listing, &names, opts, &mut general).unwrap();
        let (fused, general) = (
            String::from_utf8(fused).unwrap(),
            String::from_utf8(general).unwrap(),
        );
        assert!(general.contains(" {\n"), "{general}");
        if fused != general {
            let at = fused
                .lines()
                .zip(general.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{:?}: the paths differ from line {at}:\n{}\nvs\n{}",
                opts.fields,
                fused
                    .lines()
                    .skip(at)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n"),
                general
                    .lines()
                    .skip(at)
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        first.get_or_insert(fused);
    }
    first.unwrap_or_default()
}

/// The watcher of a recording into `tdir`: a running `ftail record`
/// process (not a zombie) whose arguments name `tdir`, other than
/// `program` (which took the pid `ftail record` started with; 0: none).
pub fn watcher_of(tdir: &Path, program: u32) -> Option<u32> {
    let want = tdir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = args.contains(&want) && args.contains(&&b"record"[..]);
        let zombie = std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        (ours && !zombie && pid != program).then_some(pid)
    })
}
