//! Where exports may be written: never through a planted link, never into
//! another user's file or directory, private whatever the umask, replaced
//! atomically, and only the last component of a new directory created.

mod common;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A trace of the small program, in `dir/trace`.
fn small_trace(dir: &Path) -> PathBuf {
    let exe = small_program(dir);
    let trace = dir.join("trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&trace)
        .arg(&exe));
    assert!(out.status.code().is_some(), "{out:?}");
    trace
}

/// `ftail ARGS -d TRACE` under umask 000 (so nothing private comes from
/// the umask).
fn ftail_on(trace: &Path, args: &[&str], out_arg: &Path) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(ftail())
        .args(args)
        .arg(out_arg)
        .arg("-d")
        .arg(trace);
    run(&mut cmd)
}

/// Every single-file export: the arguments before the output path.
const SINGLE_FILE: [&[&str]; 5] = [
    &["dump", "--chrome", "-o"],
    &["dump", "--perfetto", "-o"],
    &["dump", "--speedscope", "-o"],
    &["dump", "--flame-graph", "-o"],
    &["flame", "-o"],
];

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr_of(out));
    assert!(
        stderr_of(out).contains("ftail: error:"),
        "{what}: {}",
        stderr_of(out)
    );
}

#[test]
fn single_file_exports_never_write_through_a_link() {
    let dir = scratch();
    let trace = small_trace(dir.path());
    let victim = dir.path().join("bashrc");
    std::fs::write(&victim, "alias ls='ls -F'\n").unwrap();
    for args in SINGLE_FILE {
        let out_path = dir.path().join("out");
        let _ = std::fs::remove_file(&out_path);
        symlink(&victim, &out_path).unwrap();
        let out = ftail_on(&trace, args, &out_path);
        refused(&out, &args.join(" "));
        assert!(
            stderr_of(&out).contains("not a regular file"),
            "{}",
            stderr_of(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "alias ls='ls -F'\n"
        );
        assert!(std::fs::symlink_metadata(&out_path)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn exports_are_private_whatever_the_umask() {
    let dir = scratch();
    let trace = small_trace(dir.path());
    for (i, args) in SINGLE_FILE.iter().enumerate() {
        let out_path = dir.path().join(format!("out{i}"));
        // Once new, once replacing a world-readable file of ours.
        for _ in 0..2 {
            let out = ftail_on(&trace, args, &out_path);
            assert!(
                out.status.success(),
                "{}: {}",
                args.join(" "),
                stderr_of(&out)
            );
            assert_eq!(mode(&out_path), 0o600, "{}", args.join(" "));
            std::fs::set_permissions(&out_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let pq = dir.path().join("pq");
    let out = ftail_on(&trace, &["export", "--parquet"], &pq);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut seen = 0;
    for entry in walk(&pq) {
        let m = std::fs::symlink_metadata(&entry).unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m.mode() & 0o7777, want, "{}", entry.display());
        seen += 1;
    }
    assert!(seen >= 7, "{seen} entries");
    // No temporary file is left behind.
    assert!(walk(dir.path())
        .iter()
        .all(|p| !p.to_string_lossy().contains(".ftail-")));
}

#[test]
fn a_replaced_export_is_renamed_into_place() {
    let dir = scratch();
    let trace = small_trace(dir.path());
    // A second name for the old file keeps the old contents: the new file
    // is a new inode, written beside and renamed over.
    let out_path = dir.path().join("trace.json");
    let twin = dir.path().join("twin");
    std::fs::write(&out_path, "old\n").unwrap();
    std::fs::hard_link(&out_path, &twin).unwrap();
    let out = ftail_on(&trace, &["dump", "--chrome", "-o"], &out_path);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&twin).unwrap(), "old\n");
    assert!(std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("traceEvents"));
    // A failed export leaves the old file as it was: a trace that is not
    // there.
    let out = ftail_on(
        &dir.path().join("missing"),
        &["dump", "--chrome", "-o"],
        &out_path,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("traceEvents"));
}

#[test]
fn an_export_creates_only_the_last_component() {
    let dir = scratch();
    let trace = small_trace(dir.path());
    let deep = dir.path().join("a/b/c");
    let out = ftail_on(&trace, &["export", "--parquet"], &deep);
    refused(&out, "parquet");
    assert!(
        stderr_of(&out).contains("parent directory does not exist"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.path().join("a").exists());
    let out = ftail_on(
        &trace,
        &["dump", "--chrome", "-o"],
        &dir.path().join("x/y.json"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!dir.path().join("x").exists());
    // One missing component is made, as mkdir makes it.
    let out = ftail_on(&trace, &["export", "--parquet"], &dir.path().join("pq"));
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn parquet_never_follows_a_link_inside_its_directory() {
    let dir = scratch();
    let trace = small_trace(dir.path());
    let pq = dir.path().join("pq");
    let out = ftail_on(&trace, &["export", "--parquet"], &pq);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Links where the tables go: at a file, and at a whole table.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "mine\n").unwrap();
    let threads = walk(&pq)
        .into_iter()
        .find(|p| p.ends_with("threads.parquet"))
        .unwrap();
    std::fs::remove_file(&threads).unwrap();
    symlink(&victim, &threads).unwrap();
    let out = ftail_on(&trace, &["export", "--parquet"], &pq);
    refused(&out, "a linked table file");
    assert!(
        stderr_of(&out).contains("not a regular file"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir_all(pq.join("calls")).unwrap();
    symlink(&elsewhere, pq.join("calls")).unwrap();
    let out = ftail_on(&trace, &["export", "--parquet"], &pq);
    refused(&out, "a linked table");
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        stderr_of(&out)
    );
    assert!(walk(&elsewhere).is_empty());
    // The output directory itself a link.
    let link = dir.path().join("pq-link");
    symlink(&elsewhere, &link).unwrap();
    refused(
        &ftail_on(&trace, &["export", "--parquet"], &link),
        "a linked directory",
    );
    assert!(walk(&elsewhere).is_empty());
}

#[test]
fn exports_never_go_into_another_users_files_or_directories() {
    if !root() {
        return;
    }
    let dir = scratch();
    let trace = small_trace(dir.path());
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "mine\n").unwrap();
    // A Parquet directory someone else made, with a link planted where a
    // table goes.
    let theirs = dir.path().join("theirs");
    let part = theirs.join("threads/image=1");
    std::fs::create_dir_all(&part).unwrap();
    symlink(&victim, part.join("threads.parquet")).unwrap();
    give_away(&theirs);
    let out = ftail_on(&trace, &["export", "--parquet"], &theirs);
    refused(&out, "another user's directory");
    assert!(
        stderr_of(&out).contains("another user's"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
    // A file of someone else's at the output path.
    let file = dir.path().join("theirs.json");
    std::fs::write(&file, "theirs\n").unwrap();
    give_away(&file);
    refused(
        &ftail_on(&trace, &["dump", "--chrome", "-o"], &file),
        "another user's file",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "theirs\n");
    // A directory of someone else's, and one anyone may write (not sticky).
    let their_dir = dir.path().join("their-dir");
    std::fs::create_dir(&their_dir).unwrap();
    give_away(&their_dir);
    refused(
        &ftail_on(&trace, &["flame", "-o"], &their_dir.join("f.svg")),
        "another user's directory",
    );
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(
        &ftail_on(&trace, &["flame", "-o"], &open_dir.join("f.svg")),
        "a shared directory",
    );
    assert!(walk(&open_dir).is_empty() && walk(&their_dir).is_empty());
    // A sticky shared directory (as /tmp) is fine.
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = ftail_on(&trace, &["flame", "-o"], &open_dir.join("f.svg"));
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// Every path under `dir` (not following links), `dir` excluded.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
