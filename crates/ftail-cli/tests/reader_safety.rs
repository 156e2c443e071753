//! What the readers do with what a trace names or holds that another user
//! may have placed: module paths that lead to FIFOs or devices.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Records the small program into `dir/trace`; returns the trace and the
/// program's path.
fn small_trace(dir: &Path) -> (PathBuf, PathBuf) {
    let exe = small_program(dir);
    let trace = dir.join("trace");
    run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .arg(&exe));
    (trace, exe)
}

/// Points every module line naming `from` at `to`.
fn repoint_modules(trace: &Path, from: &Path, to: &Path) {
    let mut done = 0;
    for e in std::fs::read_dir(trace).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "modules") {
            let text = std::fs::read_to_string(&p).unwrap();
            let from = from.display().to_string();
            done += text.matches(&from).count();
            std::fs::write(&p, text.replace(&from, &to.display().to_string())).unwrap();
        }
    }
    assert!(done > 0, "no module line names {}", from.display());
}

/// `ftail CMD -d TRACE` with a time limit and 2 GiB of address space.
fn bounded(trace: &Path, cmd: &str) -> Output {
    run(Command::new("timeout")
        .args(["-s", "KILL", "30", "prlimit", "--as=2147483648", "--"])
        .arg(ftail())
        .arg(cmd)
        .arg("-d")
        .arg(trace))
}

#[test]
fn module_paths_that_are_not_regular_files_are_not_read() {
    let dir = scratch();
    let (trace, exe) = small_trace(dir.path());
    let fifo = dir.path().join("fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let mut current = exe;
    for target in [fifo, zero] {
        repoint_modules(&trace, &current, &target);
        current = target;
        for cmd in ["report", "replay", "info"] {
            let out = bounded(&trace, cmd);
            let err = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{cmd} with {}: {err}",
                current.display()
            );
            if cmd != "info" {
                assert!(err.contains("not a regular file"), "{cmd}: {err}");
            }
        }
    }
}
