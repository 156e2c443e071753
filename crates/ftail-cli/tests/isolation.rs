//! The traced program must not notice ftail: not in its allocator, its
//! descriptors, its signals or its exit status. Each test runs a fixture
//! traced and untraced and compares what the program itself observes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use ftail_trace::trace::{self, Trace};

const MODES: [&str; 3] = ["auto", "mark", "convert"];

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/runtime").join(name)
}

fn build(dir: &Path, cc: &str, flags: &[&str], source: &str, name: &str) -> PathBuf {
    let exe = dir.join(name);
    run_ok(
        ftail_cc(cc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(fixture(source))
            .args(["-ldl", "-lpthread"]),
    );
    exe
}

/// Records `exe args` into `dir/trace-TAG`; returns the run's output and
/// the trace.
fn record(dir: &Path, tag: &str, exe: &Path, args: &[&str], extra: &[&str]) -> (Output, Trace) {
    // The counts checked are the program's own calls.
    let mut options = vec!["--no-libcall"];
    options.extend_from_slice(extra);
    record_trace(&dir.join(format!("trace-{tag}")), exe, args, &options)
}

/// Entries of the functions named `names` in process `p` of `t`.
fn entries_of(t: &Trace, p: usize, names: &[&str]) -> usize {
    let text = ftail_trace::replay::render(t);
    let pid = t.processes[p].pid;
    text.lines()
        .filter(|l| l.contains(&format!("[{pid:>6}]")))
        .filter(|l| {
            let call = l.rsplit("| ").next().unwrap_or("").trim_start();
            names.iter().any(|n| {
                call.starts_with(&format!("{n}()")) || call.starts_with(&format!("{n}() {{"))
            })
        })
        .count()
}

/// A program with its own `malloc`, `calloc`, `realloc` and `free`
/// (forwarding to libc's through pointers resolved in a constructor, the
/// forward a tail jump through a pointer at -O2) counts every call. Traced,
/// it must count exactly what it counts untraced — before `main` (the
/// runtime starts first: using the program's allocator there would call
/// a null pointer), in `main`, and in a forked child — and the child's
/// trace must show only the child's own allocator calls.
#[test]
fn a_program_with_its_own_malloc_never_sees_the_runtime_allocate() {
    let allocator = ["malloc", "calloc", "realloc", "free"];
    for cc in ["gcc", "clang-19"] {
        if !have(cc) {
            continue;
        }
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], "ownmalloc.c", "ownmalloc");
        let plain = run(&mut Command::new(&exe));
        assert!(plain.status.success(), "{plain:?}");
        let plain_out = String::from_utf8_lossy(&plain.stdout).into_owned();
        assert!(plain_out.contains("child calls 3\n"), "{plain_out}");
        for mode in MODES {
            let (out, t) = record(dir.path(), mode, &exe, &[], &["--tail", mode]);
            assert_eq!(out.status.code(), Some(0), "{cc} {mode}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                plain_out,
                "{cc} {mode}: the program counted other allocator calls"
            );
            assert_eq!(t.processes.len(), 2, "{cc} {mode}: parent and child");
            // The child calls malloc, realloc and free once each.
            assert_eq!(
                entries_of(&t, 1, &allocator),
                3,
                "{cc} {mode}:\n{}",
                ftail_trace::replay::render(&t)
            );
        }
    }
}

/// A child forked while another thread of the traced program holds the
/// runtime's locks (switching tracing through `ftail_ctl`, writing sites
/// live, allocating) must start with every lock free: it switches tracing
/// itself, loads a library (the loader hook takes them too) and calls a
/// traced function. Before the fork handlers, children waited for good.
#[test]
fn a_child_forked_while_the_runtime_holds_its_locks_starts_unlocked() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "forkctl.c", "forkctl");
    let (out, t) = record(dir.path(), "ctl", &exe, &["60"], &["--ctl"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "forks=60 hung=0 failed=0\n"
    );
    assert_eq!(t.processes.len(), 61, "every child records its own files");
    for p in &t.processes {
        for th in &p.threads {
            assert!(
                th.balance().is_balanced(),
                "pid {}: {:?}",
                p.pid,
                th.balance()
            );
        }
    }
}

/// Builds `sameplace.c` as `lib{name}.so` with its functions named
/// `{name}_work`.
fn build_named_library(dir: &Path, name: &str) -> PathBuf {
    let lib = dir.join(format!("lib{name}.so"));
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-fPIC", "-shared"])
            .arg(format!("-DNAME={name}"))
            .arg("-o")
            .arg(&lib)
            .arg(fixture("sameplace.c")),
    );
    lib
}

/// Library alpha is loaded, used and closed; library beta is then loaded
/// at the same address and used. Each call is named after the library
/// that was mapped when it ran (before, beta's calls were named with
/// alpha's symbols).
#[test]
fn a_library_loaded_where_another_was_unloaded_keeps_its_own_names() {
    let dir = scratch();
    let alpha = build_named_library(dir.path(), "alpha");
    let beta = build_named_library(dir.path(), "beta");
    let exe = build(dir.path(), "gcc", &["-O2"], "reload.c", "reload");
    let (a, b) = (alpha.to_str().unwrap(), beta.to_str().unwrap());
    let (out, t) = record(dir.path(), "reload", &exe, &[a, b, a], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "45\n");
    let p = &t.processes[0];
    let libs: Vec<_> = p
        .modules
        .iter()
        .filter(|m| m.path.extension().is_some_and(|e| e == "so"))
        .collect();
    assert_eq!(libs.len(), 3, "three loads: {:?}", p.modules);
    assert_eq!(
        libs[0].base, libs[1].base,
        "beta mapped where alpha was: {libs:?}"
    );
    assert!(libs.iter().all(|m| m.unloaded.is_some()), "{libs:?}");
    let text = ftail_trace::replay::render(&t);
    let calls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("| ").nth(1))
        .map(str::trim)
        .filter(|c| c.contains("_work()"))
        .collect();
    assert_eq!(
        calls,
        ["alpha_work();", "beta_work();", "alpha_work();"],
        "{text}"
    );
}

/// Runs `script` with `sh -c` in a private mount namespace (as root, or as
/// root of a new user namespace), where it may mount filesystems that
/// vanish with it. `None` when this system allows neither.
fn in_mount_namespace(script: &str) -> Option<Output> {
    for args in [&["-m", "--propagation", "private"][..], &["-r", "-m"][..]] {
        let out = run(Command::new("unshare")
            .args(args)
            .args(["sh", "-c", script]));
        if out.status.code() != Some(97) {
            return Some(out);
        }
    }
    None
}

/// With the trace directory on a full filesystem the program runs on
/// unharmed (before: killed by SIGBUS while `ftail record` said "trace
/// written"): its thread stops recording, the frames it had open are
/// closed, and the event file and the process's status say why.
#[test]
fn a_full_disk_stops_the_recording_not_the_program() {
    use ftail_abi::trace::STOPPED_DISK_FULL;
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    let plain = run(Command::new(&exe).arg("2000000"));
    let (mnt, copy) = (dir.path().join("small"), dir.path().join("copy"));
    std::fs::create_dir(&mnt).unwrap();
    // Exit 97 when the mount itself fails (no namespaces here).
    let script = format!(
        "mount -t tmpfs -o size=2m none {mnt} || exit 97; \
         {ftail} record -d {mnt}/t --max-size 1G -- {exe} 2000000 > {copy}.out 2> {copy}.err; \
         echo $? > {copy}.status; cp -a {mnt}/t {copy}",
        mnt = mnt.display(),
        ftail = ftail().display(),
        exe = exe.display(),
        copy = copy.display(),
    );
    let Some(out) = in_mount_namespace(&script) else {
        assert!(!full_suite(), "no mount namespace to fill a filesystem in");
        eprintln!("skipping: no mount namespace");
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", copy.display())).unwrap();
    assert_eq!(read("status").trim(), "0", "stderr: {}", read("err"));
    assert_eq!(read("out").as_bytes(), plain.stdout);
    let t = trace::open(&copy).unwrap();
    let p = &t.processes[0];
    let th = &p.threads[0];
    assert_eq!(th.stopped, STOPPED_DISK_FULL, "lost {}", th.lost);
    assert!(th.lost > 1_000_000, "lost {}", th.lost);
    assert!(th.balance().is_balanced(), "{:?}", th.balance());
    assert!(
        th.balance().truncated >= 2,
        "main and nest closed: {:?}",
        th.balance()
    );
    assert_eq!(p.status.expect("status file").threads_disk_full, 1);
    let err = read("err");
    assert!(
        err.contains("events lost: the trace directory's filesystem was full"),
        "{err}"
    );
    // The drainer, which could not write either, gives up: `ftail
    // record`'s watcher ends (before: it tried again for ever).
    let trace_dir = mnt.join("t");
    let start = std::time::Instant::now();
    while let Some(pid) = watcher_of(&trace_dir, 0) {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            // SAFETY: kill has no memory preconditions; the pid is the
            // watcher this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!(
                "ftail record's watcher still runs for {}",
                trace_dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 17: under `--ring`, a thread whose ring does not fit on a full
/// filesystem records nothing and says why in words (before: "Bad
/// address"), and leaves no file behind that reads as damaged; the
/// program runs on unharmed and the main thread keeps its ring.
#[test]
fn issue_17_a_ring_refused_by_a_full_disk_says_so() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manythreads.c", "manythreads");
    let plain = run(Command::new(&exe).arg("8"));
    let (mnt, copy) = (dir.path().join("small"), dir.path().join("copy"));
    std::fs::create_dir(&mnt).unwrap();
    // Room for the main thread's 2 MiB ring, not for a second one.
    let script = format!(
        "mount -t tmpfs -o size=4m none {mnt} || exit 97; \
         {ftail} record -d {mnt}/t --ring 2M --max-size 1G -- {exe} 8 > {copy}.out 2> {copy}.err; \
         echo $? > {copy}.status; cp -a {mnt}/t {copy}",
        mnt = mnt.display(),
        ftail = ftail().display(),
        exe = exe.display(),
        copy = copy.display(),
    );
    let Some(out) = in_mount_namespace(&script) else {
        assert!(!full_suite(), "no mount namespace to fill a filesystem in");
        eprintln!("skipping: no mount namespace");
        return;
    };
    assert!(out.status.success(), "{out:?}");
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", copy.display())).unwrap();
    assert_eq!(read("status").trim(), "0", "stderr: {}", read("err"));
    assert_eq!(read("out").as_bytes(), plain.stdout);
    let t = trace::open(&copy).unwrap();
    let p = &t.processes[0];
    for th in &p.threads {
        assert!(th.damage.is_none(), "thread {}: {:?}", th.tid, th.damage);
    }
    assert_eq!(p.threads.len(), 1, "only the main thread's ring fits");
    let status = p.status.expect("status file");
    assert_eq!(status.threads_failed, 8);
    assert_eq!(status.first_failure >> 32, libc::ENOSPC as u64);
    let err = read("err");
    assert!(err.contains("No space left on device"), "{err}");
}

/// Runs `exe args` with the runtime preloaded and `env` set, as
/// `ftail record` would, from a shell whose pid the program keeps (so
/// that `pre` can plant files named after it: `$$`).
fn run_preloaded(dir: &Path, pre: &str, exe: &Path, args: &str, env: &str) -> Output {
    let script = format!(
        "{pre}\nexec env LD_PRELOAD={rt} FTAIL_DIR={dir} FTAIL_LIBCALL=0 {env} {exe} {args}",
        rt = runtime().display(),
        dir = dir.display(),
        exe = exe.display(),
    );
    run(Command::new("sh").arg("-c").arg(script))
}

/// A file that symbolic links planted in a trace directory point at,
/// under the names of the files the runtime writes next to `PID.info`:
/// the runtime creates every file exclusively, never through a link, and
/// passes over a stem any of whose names is taken (before, the module
/// list and the event file were truncated and written through them).
#[test]
fn planted_links_in_a_trace_directory_are_never_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let tdir = dir.path().join("trace");
    std::fs::create_dir(&tdir).unwrap();
    std::fs::set_permissions(&tdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let plant = format!(
        "for f in .modules .status -$$.events; do ln -s {v} {t}/$$$f; done",
        v = victim.display(),
        t = tdir.display()
    );
    let out = run_preloaded(&tdir, &plant, &exe, "1000", "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // The runtime claimed the next free name instead, with private files.
    let t = trace::open(&tdir).unwrap();
    let p = &t.processes[0];
    assert_eq!(p.key, format!("{}~1", p.pid));
    assert_eq!(p.threads[0].balance().entries, 1000 + 2, "leaf, nest, main");
    for e in std::fs::read_dir(&tdir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_file() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{:?}", e.path());
        }
    }
    // A trace directory that is itself a link, or another user's, gets
    // nothing written.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&tdir, &link).unwrap();
    let before = std::fs::read_dir(&tdir).unwrap().count();
    let out = run_preloaded(&link, "", &exe, "10", "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_dir(&tdir).unwrap().count(), before);
}

/// Values no sane run has are clamped by the runtime (and `KEY.info` says
/// what it used) instead of overflowing its sizes (before: SIGSEGV, or an
/// empty trace); an argument with a newline cannot add a line to
/// `KEY.info`.
#[test]
fn huge_settings_are_clamped_and_arguments_cannot_forge_metadata() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    let tdir = dir.path().join("trace");
    std::fs::create_dir(&tdir).unwrap();
    let huge = "FTAIL_BUFFER_EVENTS=18446744073709551615 FTAIL_STACK_ENTRIES=1152921504606846976";
    let out = run_preloaded(&tdir, "", &exe, "'1000\nversion=999'", huge);
    assert!(out.status.success(), "{out:?}");
    let t = trace::open(&tdir).unwrap();
    let p = &t.processes[0];
    assert_eq!(
        p.info["version"],
        ftail_abi::trace::TRACE_VERSION.to_string()
    );
    assert_eq!(p.info["buffer_events"], (1u64 << 36).to_string());
    assert_eq!(p.info["stack_entries"], (1u64 << 20).to_string());
    assert_eq!(p.args()[1], "1000\nversion=999");
    assert_eq!(p.threads[0].balance().entries, 1000 + 2, "leaf, nest, main");
    assert!(p.threads[0].balance().is_balanced());
}

/// Points the first site-table note of `exe` at function records 1 GiB
/// away from it, as a damaged file would.
fn damage_site_tables(exe: &Path) {
    use object::{Object, ObjectSection};
    let mut data = std::fs::read(exe).unwrap();
    let (offset, _) = {
        let file = object::File::parse(&*data).unwrap();
        let note = file.section_by_name(ftail_abi::NOTE_SECTION).unwrap();
        note.file_range().unwrap()
    };
    // namesz, descsz, type, "ftail\0" padded to 8; then the descriptor's
    // version and the PC-relative offset of its function records.
    let at = offset as usize + 12 + 8 + 4;
    data[at..at + 4].copy_from_slice(&0x4000_0000i32.to_le_bytes());
    std::fs::write(exe, data).unwrap();
}

/// A binary whose site tables were damaged runs on its own, so it must run
/// under ftail too (before: SIGSEGV in the runtime, which trusted the
/// tables): the module is left untraced, and the trace and `ftail sites`
/// say why.
#[test]
fn a_module_with_damaged_tables_is_left_untraced() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    damage_site_tables(&exe);
    let plain = run(Command::new(&exe).arg("100"));
    assert!(plain.status.success());
    let (out, t) = record(dir.path(), "damaged", &exe, &["100"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, plain.stdout);
    let p = &t.processes[0];
    assert_eq!(p.info["skipped_modules"], "1");
    assert_eq!(p.skipped_modules.len(), 1, "{:?}", p.skipped_modules);
    let (_, why, path) = &p.skipped_modules[0];
    assert!(why.contains("damaged site tables"), "{why}");
    assert_eq!(path.canonicalize().unwrap(), exe.canonicalize().unwrap());
    assert!(p.threads.iter().all(|th| th.events.is_empty()));
    let (ok, text) = sites(&exe);
    assert!(!ok, "ftail sites accepts the damaged file: {text}");
}

/// Sets the function count of the first site-table note of `exe` to
/// `count`, as a damaged file would.
fn damage_function_count(exe: &Path, count: u32) {
    use object::{Object, ObjectSection};
    let mut data = std::fs::read(exe).unwrap();
    let (offset, _) = {
        let file = object::File::parse(&*data).unwrap();
        let note = file.section_by_name(ftail_abi::NOTE_SECTION).unwrap();
        note.file_range().unwrap()
    };
    // namesz, descsz, type, "ftail\0" padded to 8; then the descriptor's
    // version, the offset of its function records and their count.
    let at = offset as usize + 12 + 8 + 8;
    data[at..at + 4].copy_from_slice(&count.to_le_bytes());
    std::fs::write(exe, data).unwrap();
}

/// Runs `cmd` to its end; returns its exit status, its standard error
/// (read to its end: `ftail record`'s watcher writes there after the
/// program) and the largest resident size (kB) it or any process it
/// waited for reached.
// The child is reaped by `wait4`, which `Child::wait` does not offer.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, String, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child` is our own unwaited child; both out-pointers are
    // valid for the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (
        std::process::ExitStatus::from_raw(status),
        stderr,
        usage.ru_maxrss as u64,
    )
}

/// Issue 17: a function count of 0xffffffff in a site-table note made the
/// runtime allocate towards 32 GiB and abort the program, which runs fine
/// on its own. The count is checked against the module's segments first:
/// the module is left untraced, the program's output and exit status are
/// its untraced ones, and the recording stays small.
#[test]
fn a_damaged_function_count_leaves_the_module_untraced() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    damage_function_count(&exe, u32::MAX);
    let plain = run(Command::new(&exe).arg("100"));
    assert!(plain.status.success());
    let tdir = dir.path().join("trace");
    let (status, stderr, max_kb) = run_measured(
        Command::new(ftail())
            .arg("record")
            .arg("--no-sched")
            .arg("-d")
            .arg(&tdir)
            .arg("--")
            .arg(&exe)
            .arg("100")
            .stdout(std::fs::File::create(dir.path().join("out")).unwrap()),
    );
    assert_eq!(status.code(), Some(0), "{status:?} {stderr}");
    assert!(
        stderr.contains("left untraced: damaged site tables"),
        "{stderr}"
    );
    let stdout = std::fs::read(dir.path().join("out")).unwrap();
    assert_eq!(stdout, plain.stdout);
    assert!(max_kb < 64 << 10, "the recording reached {max_kb} kB");
    let t = trace::open(&tdir).unwrap();
    let p = &t.processes[0];
    assert_eq!(p.skipped_modules.len(), 1, "{:?}", p.skipped_modules);
    let (_, why, _) = &p.skipped_modules[0];
    assert!(
        why.contains("damaged site tables") && why.contains("4294967295 function records"),
        "{why}"
    );
    assert!(p.threads.iter().all(|th| th.events.is_empty()));
}

/// Issue 11: a program built by an older ftail (site tables of version 1,
/// nops before every `ret`) runs untraced, and the trace says why and
/// what to do, instead of patching sites of another layout.
#[test]
fn issue_11_old_site_tables_are_refused_clearly() {
    use object::{Object, ObjectSection};
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    let mut data = std::fs::read(&exe).unwrap();
    let (offset, _) = {
        let file = object::File::parse(&*data).unwrap();
        let note = file.section_by_name(ftail_abi::NOTE_SECTION).unwrap();
        note.file_range().unwrap()
    };
    // namesz, descsz, type, "ftail\0" padded to 8; then the version.
    let at = offset as usize + 12 + 8;
    data[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&exe, data).unwrap();
    let plain = run(Command::new(&exe).arg("100"));
    let (out, t) = record(dir.path(), "old", &exe, &["100"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, plain.stdout);
    let p = &t.processes[0];
    assert_eq!(p.skipped_modules.len(), 1, "{:?}", p.skipped_modules);
    let (_, why, _) = &p.skipped_modules[0];
    assert!(
        why.contains("site tables are of version 1, from an older ftail")
            && why.contains("build it again with this ftail"),
        "{why}"
    );
    assert!(p.threads.iter().all(|th| th.events.is_empty()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from an older ftail"), "{stderr}");
}

/// A library loaded and unloaded 600 times is traced every time: each
/// unload gives its stub area, unwind registrations and trap table back
/// (before: after about 245 cycles no memory near it was left for stubs
/// and it silently ran untraced, with skipped_sites still 0).
#[test]
fn hundreds_of_dlopen_cycles_keep_tracing_the_library() {
    let dir = scratch();
    let lib = build_named_library(dir.path(), "alpha");
    let exe = build(dir.path(), "gcc", &["-O2"], "cycles.c", "cycles");
    let (out, t) = record(
        dir.path(),
        "cycles",
        &exe,
        &[lib.to_str().unwrap(), "600"],
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1258500\n", "{out:?}");
    let p = &t.processes[0];
    assert!(p.skipped_modules.is_empty(), "{:?}", p.skipped_modules);
    let status = p.status.expect("status file");
    assert_eq!((status.modules_skipped, status.sites_skipped), (0, 0));
    assert_eq!(p.modules.len(), 601, "the program and 600 loads");
    assert_eq!(entries_of(&t, 0, &["alpha_work"]), 600);
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `ftail ctl PID ARGS`, retried for a few seconds (the agent may be
/// listening again only after its next check); its stdout.
fn ctl_retrying(pid: &str, args: &[&str]) -> Option<String> {
    for _ in 0..60 {
        let out = run(Command::new(ftail()).arg("ctl").arg(pid).args(args));
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// A program that closes every descriptor above stderr (as daemons do)
/// and then listens on TCP, run with the control agent: the agent must
/// neither spin on its closed descriptor nor accept on the program's new
/// socket that took its number (before: 100 % CPU, or the program's
/// client accepted by the agent and dropped); it listens again on a
/// socket of its own, so `ftail ctl` still works.
#[test]
fn a_daemon_closing_every_descriptor_keeps_its_sockets_and_its_agent() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "daemon.c", "daemon");
    let mut child = Command::new(ftail())
        .args(["record", "--no-sched", "--ctl", "-d"])
        .arg(dir.path().join("trace"))
        .arg("--")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    assert!(
        ctl_retrying(&pid, &["status"]).is_some(),
        "the agent listens"
    );
    writeln!(stdin, "close").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "closed");
    // The program has closed the agent's descriptor: the agent answers
    // (listening again on a socket of its own) and does not spin.
    let status = ctl_retrying(&pid, &["status"]).expect("the agent answers again");
    assert!(status.starts_with("tracing=on"), "{status}");
    let before = cpu_ticks(&pid);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used = cpu_ticks(&pid) - before;
    assert!(
        used < 30,
        "the program used {used} ticks in one idle second"
    );
    // Its new TCP socket may take the agent's old number: its client
    // still reaches the program.
    writeln!(stdin, "go").unwrap();
    let port = lines.next().unwrap().unwrap();
    let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    tcp.write_all(b"hi\n").unwrap();
    let mut reply = String::new();
    let _ = tcp.read_to_string(&mut reply);
    assert_eq!(reply, "ok\n", "the program's own client was not served");
    assert!(ctl_retrying(&pid, &["status"]).is_some());
    writeln!(stdin, "1").unwrap();
    drop(stdin);
    assert_eq!(lines.next().unwrap().unwrap(), "served yes");
    assert!(child.wait().unwrap().success());
}

/// The agent bounds what a client can make it hold and serves clients
/// side by side: a client that sends a line of 100 MB without a newline is
/// cut off without growing the program (before: by the whole line, for
/// good), and one that connects and says nothing delays no one (before:
/// it blocked every `ftail ctl`).
#[test]
fn the_control_agent_bounds_its_input_and_serves_clients_side_by_side() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};
    let dir = scratch();
    // Prints its pid, then blocks reading stdin between rounds of calls.
    let exe_wait = build(dir.path(), "gcc", &["-O2"], "ctlwait.c", "ctlwait");
    let mut child = Command::new(ftail())
        .args(["record", "--no-sched", "--ctl", "-d"])
        .arg(dir.path().join("trace"))
        .arg("--")
        .arg(&exe_wait)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    assert!(ctl_retrying(&pid, &["status"]).is_some());
    let addr = SocketAddr::from_abstract_name(format!("ftail-ctl-{pid}")).unwrap();
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    let mut flood = UnixStream::connect_addr(&addr).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        if flood.write_all(&chunk).is_err() {
            break; // cut off: what we want
        }
    }
    let grown_kb = rss().saturating_sub(before);
    assert!(grown_kb < 16 << 10, "the program grew by {grown_kb} kB");
    let _idle = UnixStream::connect_addr(&addr).unwrap();
    let started = std::time::Instant::now();
    let out = run(Command::new(ftail()).args(["ctl", &pid, "status"]));
    assert!(out.status.success(), "{out:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "ftail ctl waited {:?} behind an idle client",
        started.elapsed()
    );
    writeln!(stdin, "1").unwrap();
    drop(stdin);
    assert_eq!(lines.next().unwrap().unwrap(), "done 1");
    assert!(child.wait().unwrap().success());
}

/// Another process holding the control socket's name (a squatter) keeps
/// the agent from listening: the process's status says so (before: the
/// agent gave up silently and the metadata said it ran).
#[test]
fn a_squatted_control_socket_is_reported() {
    use ftail_abi::trace::AGENT_BIND_FAILED;
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "manycalls.c", "manycalls");
    let tdir = dir.path().join("trace");
    std::fs::create_dir(&tdir).unwrap();
    let squat = "python3 -c \"import socket,time; s=socket.socket(socket.AF_UNIX); \
                 s.bind(b'\\0ftail-ctl-$$'); s.listen(); time.sleep(3)\" & \
                 while ! grep -qw '@ftail-ctl-'$$ /proc/net/unix; do sleep 0.05; done";
    let out = run_preloaded(&tdir, squat, &exe, "10 300", "FTAIL_CTL=1");
    assert!(out.status.success(), "{out:?}");
    let t = trace::open(&tdir).unwrap();
    let agent = t.processes[0].status.expect("status").agent;
    assert_eq!(agent & 0xff, AGENT_BIND_FAILED, "{agent:#x}");
    assert_eq!(agent >> 8, libc_eaddrinuse(), "{agent:#x}");
    let notes = ftail_trace::losses::notes(&t).join("\n");
    assert!(
        notes.contains("no control agent: its socket name is taken"),
        "{notes}"
    );
}

/// `EADDRINUSE` on Linux.
fn libc_eaddrinuse() -> u64 {
    98
}

/// `ftail record` says what was not recorded, and why, and exits with the
/// program's status (before: "trace written" over an empty or partial
/// trace): a thread that could not create its event file (no descriptor
/// left), a program with no ftail sites at all, a set-group-ID program
/// (the loader drops the preload).
#[test]
fn ftail_record_says_what_was_not_recorded() {
    let dir = scratch();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // A thread without a descriptor to spare.
    let exe = build(dir.path(), "gcc", &["-O2"], "errno.c", "errno");
    let (out, _) = record(dir.path(), "nofile", &exe, &[], &["-N", "worker"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stderr(&out);
    assert!(
        text.contains("1 thread(s) recorded nothing: their event files could not be created")
            && text.contains("Too many open files"),
        "{text}"
    );
    // No ftail sites anywhere: nothing recorded, and the program's status.
    let tdir = dir.path().join("none");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&tdir)
        .args(["--", "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("nothing was recorded"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("trace written"), "{}", stderr(&out));
    // Set-group-ID: the loader ignores LD_PRELOAD.
    let sgid = dir.path().join("sgid");
    std::fs::copy(&exe, &sgid).unwrap();
    let chmod = run(Command::new("sh").arg("-c").arg(format!(
        "chgrp 65534 {p} && chmod g+s {p}",
        p = sgid.display()
    )));
    if !chmod.status.success() {
        assert!(!full_suite(), "cannot make a set-group-ID file: {chmod:?}");
        return;
    }
    let tdir = dir.path().join("sgid-trace");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&tdir)
        .arg(&sgid));
    assert!(
        stderr(&out).contains("is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD"),
        "{}",
        stderr(&out)
    );
}

/// A child started with an environment of its own (no LD_PRELOAD, no
/// FTAIL_*) is recorded too — through posix_spawn, posix_spawnp, execve,
/// execle, and with an empty environment — and gets the tracer's
/// variables and nothing else of its parent's; the parent's environment is
/// unchanged (before: such children were not recorded at all).
#[test]
fn children_with_an_environment_of_their_own_are_recorded() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], "spawnenv.c", "spawnenv");
    let plain = run(&mut Command::new(&exe));
    let expected = "child 1: work 2, variables: PATH ONLY\n\
                    child 2: work 3, variables: PATH ONLY\n\
                    child 3: work 4, variables: PATH ONLY\n\
                    child 4: work 5, variables: PATH ONLY\n\
                    child 5: work 6, variables:\n\
                    parent: environment unchanged: yes\n";
    assert_eq!(String::from_utf8_lossy(&plain.stdout), expected);
    let (out, t) = record(dir.path(), "spawn", &exe, &[], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{out:?}");
    for n in 1..=5 {
        let image = t
            .processes
            .iter()
            .find(|p| p.args().get(1).map(String::as_str) == Some(&n.to_string()))
            .unwrap_or_else(|| panic!("child {n} not recorded"));
        assert!(
            image.threads.iter().any(|th| th.balance().entries >= 2),
            "child {n}: main and work"
        );
    }
}
