//! How `ftail` behaves around its user's files, other users and the
//! programs it runs: closed pipes, trace directories it must not touch,
//! bad values, planted files, squatted sockets, and the pid a caller
//! starts.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A pipe whose reading end is already closed: every write to it fails
/// with EPIPE, as `| head` does once `head` has gone.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    Stdio::from(writer)
}

/// Runs `ftail ARGS` with standard output (and standard error, when
/// `both`) going to a closed pipe.
fn ftail_into_closed_pipe(args: &[&std::ffi::OsStr], both: bool) -> Output {
    let mut cmd = Command::new(ftail());
    cmd.args(args).stdout(closed_pipe());
    if both {
        cmd.stderr(closed_pipe());
    }
    run(&mut cmd)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("trace");
    run_ok(
        Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&trace)
            .arg(&exe),
    );
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["sites".as_ref(), exe.as_ref()],
        vec!["sites".as_ref(), "--json".as_ref(), exe.as_ref()],
        vec!["replay".as_ref(), "-d".as_ref(), trace.as_ref()],
        vec!["report".as_ref(), "-d".as_ref(), trace.as_ref()],
        vec!["--help".as_ref()],
        vec!["record".as_ref(), "--help".as_ref()],
        vec!["--version".as_ref()],
    ];
    for args in &cases {
        let out = ftail_into_closed_pipe(args, false);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr_of(&out));
        assert_eq!(stderr_of(&out), "", "{args:?}");
    }
    // An error with standard error closed too: the status says it, and
    // nothing panics.
    let missing = dir.path().join("missing");
    let out = ftail_into_closed_pipe(&["sites".as_ref(), missing.as_ref()], true);
    assert_eq!(out.status.code(), Some(2));
}

/// A replay longer than the blocks a second thread writes (output to a
/// file or a pipe): a closed pipe still ends it quietly, a full disk
/// still with an error that says so.
#[test]
fn a_long_replay_ends_quietly_at_a_closed_pipe_and_loudly_at_a_full_disk() {
    let dir = scratch();
    let src = dir.path().join("many.c");
    std::fs::write(
        &src,
        "__attribute__((noinline)) int leaf(int i) { return i & 1; }\n\
         int main(void) { int s = 0; for (int i = 0; i < 200000; i++) s += leaf(i); \
         return s == 100000 ? 0 : 1; }\n",
    )
    .unwrap();
    let exe = dir.path().join("many");
    run_ok(ftail_cc("gcc").args(["-O0", "-o"]).arg(&exe).arg(&src));
    let trace = dir.path().join("trace");
    run_ok(
        Command::new(ftail())
            .args(["record", "--no-sched", "--no-libcall", "-d"])
            .arg(&trace)
            .arg(&exe),
    );
    let replay = ["replay".as_ref(), "-d".as_ref(), trace.as_os_str()];
    let whole = run_ok(Command::new(ftail()).args(replay));
    assert!(whole.len() > 4 << 20, "{} bytes", whole.len());
    let out = ftail_into_closed_pipe(&replay, false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out), "");
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipping the full disk: no /dev/full");
        return;
    };
    let out = run(Command::new(ftail()).args(replay).stdout(full));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("writing the output: No space left on device"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_closed_pipe_ends_ftail_ctl_quietly() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    // A stand-in for the control agent of this very process.
    let pid = std::process::id();
    let addr = SocketAddr::from_abstract_name(format!("ftail-ctl-{pid}")).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let agent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(b"ok tracing=on filter= exclude= functions=1 sites=2\n")
            .unwrap();
        line
    });
    let out = ftail_into_closed_pipe(&["ctl".as_ref(), pid.to_string().as_ref()], false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out), "");
    assert_eq!(agent.join().unwrap(), "status\n");
}

/// Runs `ftail record -d DIR EXE`.
fn record_into(dir: &Path, exe: &Path) -> Output {
    run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(dir)
        .arg(exe))
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_directory_old_that_is_not_a_trace_is_never_removed() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("proj");
    assert!(record_into(&trace, &exe).status.success());
    let before = names(&trace);
    // The user's own proj.old, and one that merely has a .info file in it.
    let old = dir.path().join("proj.old");
    for extra in ["src/main.c", "4242.info"] {
        let _ = std::fs::remove_dir_all(&old);
        let file = old.join(extra);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "int main(void) { return 0; }\n").unwrap();
        std::fs::write(old.join("notes.txt"), "mine\n").unwrap();
        let out = record_into(&trace, &exe);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(
            err.starts_with("ftail: error: ") && err.contains(&old.display().to_string()),
            "{err}"
        );
        assert!(file.is_file(), "{extra} was removed");
        assert_eq!(names(&trace), before, "the current trace was touched");
    }
}

/// Issue 17: a `proj.old` whose only file is the user's own `budget` is
/// not a trace (before: rotation removed it, taking the name for proof);
/// only the budget file `ftail record` wrote proves one.
#[test]
fn a_directory_old_holding_only_a_file_named_budget_is_never_removed() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("proj");
    assert!(record_into(&trace, &exe).status.success());
    let before = names(&trace);
    let old = dir.path().join("proj.old");
    std::fs::create_dir(&old).unwrap();
    let budget = old.join("budget");
    // The user's data, even of a budget file's size.
    let data = "rent 900\nfood 300\n".repeat(4)[..64].to_string();
    std::fs::write(&budget, &data).unwrap();
    let out = record_into(&trace, &exe);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&old.display().to_string())
            && err.contains("no budget file written by ftail record"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&budget).unwrap(), data);
    assert_eq!(names(&trace), before, "the current trace was touched");
    // A trace's own budget file still proves it: the old trace gives way.
    std::fs::remove_dir_all(&old).unwrap();
    assert!(record_into(&trace, &exe).status.success());
    assert_eq!(names(&old), before);
    let now = names(&trace);
    assert!(record_into(&trace, &exe).status.success());
    assert_eq!(names(&old), now);
}

#[test]
fn an_empty_directory_is_not_taken_for_a_trace() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("t");
    let old = dir.path().join("t.old");
    // t.old is a real trace; t is empty.
    assert!(record_into(&old, &exe).status.success());
    let kept = names(&old);
    std::fs::create_dir(&trace).unwrap();
    let out = record_into(&trace, &exe);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(names(&old), kept, "the older trace was replaced by nothing");
    assert!(names(&trace).iter().any(|n| n.ends_with(".info")));
    // An empty t.old gives way to the trace in t.
    std::fs::remove_dir_all(&old).unwrap();
    std::fs::create_dir(&old).unwrap();
    let now = names(&trace);
    assert!(record_into(&trace, &exe).status.success());
    assert_eq!(names(&old), now);
}

#[test]
fn a_new_trace_directory_is_private() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("deeper/trace");
    assert!(record_into(&trace, &exe).status.success());
    assert_eq!(mode(&trace), 0o700);
    // Rotated: the new one is private too.
    assert!(record_into(&trace, &exe).status.success());
    assert_eq!(mode(&trace), 0o700);
    assert!(dir.path().join("deeper/trace.old").is_dir());
}

#[test]
fn a_trace_directory_of_another_user_is_refused() {
    if !root() {
        return;
    }
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("t");
    let old = dir.path().join("t.old");
    // t belongs to someone else.
    assert!(record_into(&trace, &exe).status.success());
    give_away(&trace);
    let theirs = names(&trace);
    let out = record_into(&trace, &exe);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{} is owned by uid {NOBODY}", trace.display())),
        "{err}"
    );
    assert_eq!(names(&trace), theirs);
    assert!(!old.exists());
    // t is ours, t.old (which it would replace) is someone else's.
    std::fs::rename(&trace, &old).unwrap();
    assert!(record_into(&trace, &exe).status.success());
    let ours = names(&trace);
    let out = record_into(&trace, &exe);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{} is owned by uid {NOBODY}", old.display())),
        "{err}"
    );
    assert_eq!(names(&old), theirs);
    assert_eq!(names(&trace), ours);
    // An empty directory of someone else's is not used either.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    give_away(&empty);
    assert_eq!(record_into(&empty, &exe).status.code(), Some(2));
    assert!(names(&empty).is_empty());
}

#[test]
fn a_symbolic_link_for_a_trace_directory_is_refused() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    assert!(record_into(&elsewhere, &exe).status.success());
    let there = names(&elsewhere);
    let trace = dir.path().join("t");
    let old = dir.path().join("t.old");
    std::os::unix::fs::symlink(&elsewhere, &trace).unwrap();
    let out = record_into(&trace, &exe);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        stderr_of(&out)
    );
    assert!(!old.exists());
    // t.old, which a rotation would remove, is a link.
    std::fs::remove_file(&trace).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &old).unwrap();
    assert!(record_into(&trace, &exe).status.success());
    let out = record_into(&trace, &exe);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains(&old.display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(names(&elsewhere), there);
    assert!(std::fs::symlink_metadata(&old)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn an_empty_directory_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let exe = small_program(dir.path());
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = record_into(&shared, &exe);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("writable by other users"),
        "{}",
        stderr_of(&out)
    );
    assert!(names(&shared).is_empty());
}

#[test]
fn out_of_range_buffer_sizes_and_depths_are_refused() {
    let dir = scratch();
    let exe = small_program(dir.path());
    let trace = dir.path().join("t");
    for (flag, value) in [
        ("--buffer-events", "1152921504606846976"),
        ("--buffer-events", "4294967297"),
        ("--buffer-events", "15"),
        ("--buffer-events", "64Mi"),
        ("--max-size", "1K"),
        ("--max-size", "0%"),
        ("--max-size", "101%"),
        ("--max-size", "1.5G"),
        ("--max-size", "99999999999T"),
        ("-D", "0"),
    ] {
        let out = run(Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&trace)
            .args([flag, value])
            .arg(&exe));
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("invalid value '{value}'")) && err.contains("must be"),
            "{flag} {value}: {err}"
        );
        assert!(
            !trace.exists(),
            "{flag} {value}: a trace directory was made"
        );
    }
    let help = run_ok(Command::new(ftail()).args(["record", "--help"]));
    assert!(help.contains("16 to 2^32"), "{help}");
    // The smallest size still records a balanced trace.
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--buffer-events", "16", "-D", "1"])
        .arg(&exe));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert!(t.processes[0].threads[0].balance().is_balanced());
}

#[test]
fn the_program_gets_the_runtime_settings_of_the_command_line_only() {
    let dir = scratch();
    let trace = dir.path().join("t");
    // Left over in the caller's environment: each would change the trace
    // (or, for the sizes, overflow the runtime's arithmetic).
    let stray = [
        ("FTAIL_STACK_ENTRIES", "1152921504606846976"),
        ("FTAIL_BUFFER_EVENTS", "1152921504606846976"),
        ("FTAIL_MAX_SIZE", "1"),
        ("FTAIL_DEPTH", "1"),
        ("FTAIL_FILTER", "nothing"),
        ("FTAIL_OFF", "1"),
        ("FTAIL_CTL", "1"),
    ];
    let out = run(Command::new(ftail())
        .envs(stray)
        .env_remove("FTAIL_CORPUS") // the test suite's switch, not the runtime's
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--buffer-events", "1000", "--max-size", "3M", "--", "env"]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let env = String::from_utf8_lossy(&out.stdout);
    let mut runtime: Vec<&str> = env
        .lines()
        .filter(|l| {
            l.starts_with("FTAIL_") && !l.starts_with("FTAIL_DIR") && !l.starts_with("FTAIL_WATCH=")
        })
        .collect();
    // The trace directory's identity, and where the watcher that prints
    // the summary listens (a random name, different each run).
    for var in ["FTAIL_DIR_ID=", "FTAIL_WATCH="] {
        assert_eq!(
            env.lines().filter(|l| l.starts_with(var)).count(),
            1,
            "{env}"
        );
    }
    runtime.sort();
    let owner = format!("FTAIL_CTL_UID={}", euid());
    assert_eq!(
        runtime,
        [
            "FTAIL_BUFFER_EVENTS=1000",
            "FTAIL_CTL=0",
            &owner,
            "FTAIL_EXCLUDE=",
            "FTAIL_FILTER=",
            "FTAIL_LIBCALL=1",
            "FTAIL_MAX_SIZE=3145728",
            "FTAIL_OFF=0",
            "FTAIL_TAIL=auto",
        ]
    );
    // An instrumented program under the same environment records as asked.
    let exe = small_program(dir.path());
    let out = run(Command::new(ftail())
        .envs(stray)
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .arg(&exe));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let t = ftail_trace::trace::open(&trace).unwrap();
    let th = &t.processes[0].threads[0];
    assert_eq!((th.balance().entries, th.lost), (2, 0), "{:?}", th.damage);
}

/// FNV-1a, which names ftail's shim directory after ftail's own path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The name of the shim directory of the `ftail` under test.
fn shim_name() -> String {
    let exe = ftail().canonicalize().unwrap();
    format!("shim-{:016x}", fnv1a(exe.as_os_str().as_encoded_bytes()))
}

/// Plants, in `dir`, an `as` (under both names a compiler looks for) that
/// leaves `marker` behind when it runs.
fn plant_assembler(dir: &Path, marker: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for name in ["as", "x86_64-linux-gnu-as"] {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `ftail cc gcc -c` of a small file with `env` applied; returns its output
/// and whether it made the object file.
fn compile_with(dir: &Path, env: &dyn Fn(&mut Command)) -> (Output, bool) {
    let src = dir.join("unit.c");
    std::fs::write(&src, "int unit(int x) { return x * 3; }\n").unwrap();
    let obj = dir.join("unit.o");
    let _ = std::fs::remove_file(&obj);
    let mut cmd = ftail_cc("gcc");
    cmd.args(["-O2", "-c", "-o"]).arg(&obj).arg(&src);
    env(&mut cmd);
    let out = run(&mut cmd);
    (out, obj.is_file())
}

#[test]
fn without_home_no_planted_assembler_is_run() {
    let dir = scratch();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let marker = dir.path().join("planted-as-ran");
    let private = tmp.join(format!("ftail-{}", euid()));
    let no_home = |c: &mut Command| {
        c.env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .env("TMPDIR", &tmp);
    };
    // Planted where ftail used to look, and in a per-user directory that
    // anyone may write into.
    plant_assembler(&tmp.join("ftail").join(shim_name()), &marker);
    plant_assembler(&private.join(shim_name()), &marker);
    set_mode(&private, 0o777);
    let (out, built) = compile_with(dir.path(), &no_home);
    assert!(!marker.exists(), "the planted as ran");
    assert!(!built && out.status.code() == Some(2));
    let err = stderr_of(&out);
    assert!(
        err.starts_with("ftail: error: ")
            && err.contains(&format!("{} is not a private directory", private.display())),
        "{err}"
    );
    // Mode 0700 but another user's.
    if root() {
        set_mode(&private, 0o700);
        give_away(&private);
        let (out, built) = compile_with(dir.path(), &no_home);
        assert!(!marker.exists(), "the planted as ran");
        assert!(
            !built && out.status.code() == Some(2),
            "{}",
            stderr_of(&out)
        );
        assert!(stderr_of(&out).contains(&format!("owner uid {NOBODY}")));
        run_ok(Command::new("chown").arg("-R").arg("0:0").arg(&private));
    }
    // Private, but the shim inside is not ftail's links.
    set_mode(&private, 0o700);
    let (out, built) = compile_with(dir.path(), &no_home);
    assert!(!marker.exists(), "the planted as ran");
    assert!(
        !built && out.status.code() == Some(2),
        "{}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("is not ftail's link"),
        "{}",
        stderr_of(&out)
    );
    // Nothing there: ftail makes its own private directory and builds.
    std::fs::remove_dir_all(&private).unwrap();
    let (out, built) = compile_with(dir.path(), &no_home);
    assert!(built, "{}", stderr_of(&out));
    assert!(!marker.exists());
    assert_eq!(mode(&private), 0o700);
}

#[test]
fn a_cache_directory_others_can_change_is_never_used() {
    let dir = scratch();
    let marker = dir.path().join("planted-as-ran");
    // $HOME/.cache/ftail that anyone may write into.
    let home = dir.path().join("home");
    let cache = home.join(".cache/ftail");
    plant_assembler(&cache.join(shim_name()), &marker);
    set_mode(&cache, 0o777);
    let with_home = |c: &mut Command| {
        c.env("HOME", &home).env_remove("XDG_CACHE_HOME");
    };
    let (out, built) = compile_with(dir.path(), &with_home);
    assert!(!marker.exists(), "the planted as ran");
    assert!(!built && out.status.code() == Some(2));
    assert!(stderr_of(&out).contains(&format!("{} is not a private directory", cache.display())));
    if !root() {
        return;
    }
    // $XDG_CACHE_HOME/ftail of another user's.
    let xdg = dir.path().join("xdg");
    plant_assembler(&xdg.join("ftail").join(shim_name()), &marker);
    give_away(&xdg.join("ftail"));
    let with_xdg = |c: &mut Command| {
        c.env("XDG_CACHE_HOME", &xdg);
    };
    let (out, built) = compile_with(dir.path(), &with_xdg);
    assert!(!marker.exists(), "the planted as ran");
    assert!(
        !built && out.status.code() == Some(2),
        "{}",
        stderr_of(&out)
    );
    // A private cache whose shim link belongs to another user.
    std::fs::remove_dir_all(&xdg).unwrap();
    let (out, built) = compile_with(dir.path(), &with_xdg);
    assert!(built, "{}", stderr_of(&out));
    let link = xdg.join("ftail").join(shim_name()).join("as");
    run_ok(
        Command::new("chown")
            .arg("-h")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(&link),
    );
    let (out, built) = compile_with(dir.path(), &with_xdg);
    assert!(
        !built && out.status.code() == Some(2),
        "{}",
        stderr_of(&out)
    );
    assert!(stderr_of(&out).contains(&link.display().to_string()));
}

#[test]
fn the_embedded_runtime_is_used_only_when_ours_and_intact() {
    use std::os::unix::fs::MetadataExt;
    // As after `cargo install`: the binary alone, no runtime beside it.
    let dir = scratch();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let alone = bin.join("ftail");
    std::fs::copy(ftail(), &alone).unwrap();
    let exe = small_program(dir.path());
    let trace = dir.path().join("trace");
    let cache = dir.path().join("cache");
    let record = |env: &dyn Fn(&mut Command)| -> Output {
        let mut cmd = Command::new(&alone);
        cmd.env_remove("FTAIL_RUNTIME");
        env(&mut cmd);
        run(cmd
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&trace)
            .arg(&exe))
    };
    let with_cache = |c: &mut Command| {
        c.env("XDG_CACHE_HOME", &cache);
    };
    let traced = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(out));
        let t =
            ftail_trace::trace::open(&trace).unwrap_or_else(|e| panic!("{e}: {}", stderr_of(out)));
        assert_eq!(t.processes[0].threads[0].balance().entries, 2);
    };
    traced(&record(&with_cache));
    let copies: Vec<PathBuf> = std::fs::read_dir(cache.join("ftail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let lib = &copies[0];
    let good = std::fs::read(lib).unwrap();
    assert_eq!(mode(lib) & 0o022, 0);
    // Replaced by something else that anyone may write: rewritten.
    std::fs::write(lib, b"not a library").unwrap();
    set_mode(lib, 0o666);
    traced(&record(&with_cache));
    assert_eq!(std::fs::read(lib).unwrap(), good);
    assert_eq!(mode(lib) & 0o022, 0);
    if root() {
        // Another user's file: rewritten as ours.
        std::fs::write(lib, b"not a library").unwrap();
        set_mode(lib, 0o644);
        give_away(lib);
        traced(&record(&with_cache));
        assert_eq!(std::fs::read(lib).unwrap(), good);
        assert_eq!(std::fs::metadata(lib).unwrap().uid(), euid());
        // Another user's cache directory: refused.
        give_away(&cache.join("ftail"));
        let out = record(&with_cache);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr_of(&out).contains("is not a private directory"));
    }
    // No HOME: a private directory of this user's in TMPDIR.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    traced(&record(&|c: &mut Command| {
        c.env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .env("TMPDIR", &tmp);
    }));
    let private = tmp.join(format!("ftail-{}", euid()));
    assert_eq!(mode(&private), 0o700);
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 1);
}

/// A python3 that another user can run too.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Binds the control socket name of process `target` (its own pid when
/// `None`) and answers every connection like an agent would. Runs as
/// `nobody` when `other_user`. Returns the squatter and its pid.
fn squat_control_socket(target: Option<u32>, other_user: bool) -> (std::process::Child, u32) {
    use std::io::{BufRead, BufReader};
    let script = "import os, socket, sys\n\
                  name = sys.argv[1] if len(sys.argv) > 1 else str(os.getpid())\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                  s.bind('\\0ftail-ctl-' + name)\n\
                  s.listen(4)\n\
                  print(os.getpid(), flush=True)\n\
                  while True:\n    \
                      c, _ = s.accept()\n    \
                      try:\n        \
                          c.recv(1000)\n        \
                          c.sendall(b'ok tracing=on filter= exclude= functions=0 sites=0\\n')\n    \
                      except OSError:\n        \
                          pass\n    \
                      c.close()\n";
    let mut cmd = if other_user {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", python()]);
        c
    } else {
        Command::new(python())
    };
    cmd.arg("-c").arg(script).current_dir("/");
    if let Some(t) = target {
        cmd.arg(t.to_string());
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the squatter did not start: {line:?}"));
    (child, pid)
}

/// Kills and reaps a process the test started.
fn end(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn ftail_ctl_talks_only_to_the_process_itself() {
    // A program of ours, whose socket name another process took first.
    let mut target = Command::new("sleep").arg("60").spawn().unwrap();
    let (squatter, squatter_pid) = squat_control_socket(Some(target.id()), false);
    let out = run(Command::new(ftail())
        .arg("ctl")
        .arg(target.id().to_string())
        .arg("on"));
    end(squatter);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.stdout, b"");
    let err = stderr_of(&out);
    assert!(
        err.starts_with("ftail: error: ")
            && err.contains(&format!("held by process {squatter_pid}")),
        "{err}"
    );
    if root() {
        // The same, the squatter being another user.
        let (squatter, squatter_pid) = squat_control_socket(Some(target.id()), true);
        let out = run(Command::new(ftail())
            .arg("ctl")
            .arg(target.id().to_string())
            .arg("on"));
        end(squatter);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr_of(&out).contains(&format!("held by process {squatter_pid} (uid {NOBODY})")));
        // Another user's process answering on its own socket name.
        let (other, other_pid) = squat_control_socket(None, true);
        let out = run(Command::new(ftail())
            .arg("ctl")
            .arg(other_pid.to_string())
            .arg("status"));
        end(other);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("runs as uid {NOBODY}, not as you")),
            "{err}"
        );
    }
    let _ = target.kill();
    let _ = target.wait();
}

/// `tests/runtime/ownpid.c`, built through `ftail cc`.
fn ownpid(dir: &Path) -> PathBuf {
    let exe = dir.join("ownpid");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/runtime/ownpid.c")),
    );
    exe
}

/// Kills process `pid` if the test fails while the program still waits.
struct KillOnPanic(i32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Starts `ftail record -d DIR EXE wait` (in its own process group when
/// `group`); returns it, the pid its first line reports, and its stdout.
fn start_waiting(
    dir: &Path,
    exe: &Path,
    group: bool,
) -> (
    std::process::Child,
    KillOnPanic,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(ftail());
    cmd.arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(dir)
        .arg("--")
        .arg(exe)
        .arg("wait")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if group {
        cmd.process_group(0);
    }
    // Ctrl-C must reach the program as from a terminal, even when the
    // tests themselves run with SIGINT ignored (a background job of a
    // non-interactive shell), which ftail rightly passes on.
    // SAFETY: the closure only makes system calls (no allocation, no
    // locks), as a child between fork and exec may.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let pid: i32 = first.strip_prefix("pid ").unwrap().parse().unwrap();
    let guard = KillOnPanic(pid);
    // The program has made its traced calls once it says "sum".
    for line in lines.by_ref() {
        if line.unwrap().starts_with("sum ") {
            break;
        }
    }
    (child, guard, lines)
}

fn read_stderr(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn the_pid_a_caller_starts_is_the_programs() {
    let dir = scratch();
    let exe = ownpid(dir.path());
    let trace = dir.path().join("t");
    let plain = run(Command::new(&exe).args(["calls", "100"]));
    let child = Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .args(["--buffer-events", "16", "--"])
        .arg(&exe)
        .args(["calls", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, rest) = text.split_once('\n').unwrap();
    assert_eq!(first, format!("pid {started}"));
    // No extra child, SIGCHLD or descriptor: what the untraced run sees.
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(rest, plain.split_once('\n').unwrap().1);
    assert!(
        rest.starts_with("children none\nsigchld none\nfds 0 1 2"),
        "{rest}"
    );
    // The summary comes on standard error once the program has ended.
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("ftail: trace written to {}\n", trace.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("ftail: process {started} thread {started}: "))
            && err.contains(" events lost: its buffer was full"),
        "{err}"
    );
    let t = ftail_trace::trace::open(&trace).unwrap();
    assert_eq!(t.processes[0].pid, started);
}

#[test]
fn sigterm_to_that_pid_ends_the_program_and_keeps_its_trace() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch();
    let exe = ownpid(dir.path());
    let trace = dir.path().join("t");
    let (mut child, guard, _out) = start_waiting(&trace, &exe, false);
    assert_eq!(
        guard.0,
        child.id() as i32,
        "the started pid is not the program's"
    );
    // SAFETY: kill takes a pid and a signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    let err = read_stderr(&mut child);
    assert!(err.contains("ftail: trace written to "), "{err}");
    let t = ftail_trace::trace::open(&trace).unwrap();
    // Three calls of leaf() recorded, and main() was still running, in
    // the library call it waits in.
    let b = t.processes[0].threads[0].balance();
    assert_eq!(b.open_at_end, 2, "{b:?}");
    let text = ftail_trace::replay::render(&t);
    assert_eq!(text.matches("leaf();").count(), 3, "{text}");
}

#[test]
fn ctrl_c_stops_the_program_and_the_summary_still_comes() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch();
    let exe = ownpid(dir.path());
    let trace = dir.path().join("t");
    let (mut child, guard, _out) = start_waiting(&trace, &exe, true);
    assert_eq!(
        guard.0,
        child.id() as i32,
        "the started pid is not the program's"
    );
    // As the terminal does: to the whole process group.
    // SAFETY: kill takes a (negated) process group and a signal number.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    let err = read_stderr(&mut child);
    assert!(err.contains("ftail: trace written to "), "{err}");
}

#[test]
fn a_program_that_reaps_orphans_gets_no_extra_child() {
    use std::os::unix::process::CommandExt;
    // A child subreaper (a service manager, a container's init) stays one
    // across exec: whatever ftail leaves behind must not become its child.
    let dir = scratch();
    let exe = ownpid(dir.path());
    let mut cmd = Command::new(ftail());
    cmd.arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(dir.path().join("t"))
        .arg(&exe);
    // SAFETY: the closure only makes a system call (no allocation, no
    // locks), as a child between fork and exec may.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nchildren none\n"), "{text}");
    assert!(stderr_of(&out).contains("ftail: trace written to "));
}

/// `ftail ctl PID ARGS` retried for a few seconds (the agent starts with
/// the program); its output once it succeeds, or the last failure.
fn ctl_retrying(pid: &str, args: &[&str]) -> Output {
    let mut out = run(Command::new(ftail()).arg("ctl").arg(pid).args(args));
    for _ in 0..60 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = run(Command::new(ftail()).arg("ctl").arg(pid).args(args));
    }
    out
}

/// Sends `line` to process `pid`'s control agent as `nobody`, as any
/// client of that user could (no `ftail ctl` needed); returns the
/// agent's first answer line, or what came before it closed.
fn agent_as_nobody(pid: &str, line: &str) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                  s.connect('\\0ftail-ctl-' + sys.argv[1])\n\
                  try:\n    \
                      s.sendall(sys.argv[2].encode() + b'\\n')\n\
                  except BrokenPipeError:\n    \
                      pass\n\
                  data = b''\n\
                  while b'\\n' not in data:\n    \
                      d = s.recv(1000)\n    \
                      if not d:\n        \
                          break\n    \
                      data += d\n\
                  print(data.decode(errors='replace'), end='')\n";
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", python()])
        .arg("-c")
        .arg(script)
        .args([pid, line])
        .current_dir("/"));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 17: a program started by root under `--ctl` that becomes
/// `nobody` keeps root's recording: the agent refuses `nobody` (before:
/// `nobody` could switch tracing off) and answers root (before: refused,
/// as not the user the program runs as now).
#[test]
fn the_control_agent_answers_the_user_who_started_the_recording() {
    use std::io::{BufRead, BufReader, Write};
    if !root() {
        return;
    }
    let dir = scratch();
    let exe = dir.path().join("dropuid");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(repo().join("tests/runtime/dropuid.c")),
    );
    let tdir = dir.path().join("trace");
    let mut child = Command::new(ftail())
        .args(["record", "--no-sched", "--ctl", "-d"])
        .arg(&tdir)
        .arg("--")
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    // The agent listens (as root) before the program drops.
    let before = ctl_retrying(&pid, &["status"]);
    assert!(before.status.success(), "{}", stderr_of(&before));
    writeln!(stdin, "drop").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "dropped");
    let refused = agent_as_nobody(&pid, "off");
    assert!(
        refused.starts_with("error only the user who started the recording"),
        "{refused:?}"
    );
    let status = ctl_retrying(&pid, &["status"]);
    assert!(status.status.success(), "{}", stderr_of(&status));
    let answer = String::from_utf8_lossy(&status.stdout);
    assert!(answer.starts_with("tracing=on"), "{answer}");
    writeln!(stdin, "1").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done 1");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let replay = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(&tdir),
    );
    assert!(replay.contains("round_of_calls"), "{replay}");
}
