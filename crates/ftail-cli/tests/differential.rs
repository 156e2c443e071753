//! Differential correctness: what ftail records against two independent
//! tracers, on the same source built three ways with the same flags:
//! * ftail: `ftail cc gcc -O2`, recorded with `ftail record`;
//! * uftrace: `gcc -O2 -pg -mfentry`, recorded with `uftrace record`;
//! * `-finstrument-functions`: `gcc -O2 -finstrument-functions -no-pie`
//!   with a counting hook (`tests/differential/finstr-hook.c`).
//!
//! The rules, per function of the program (the functions in ftail's site
//! tables):
//! * ftail and uftrace count the same calls, and the same calls per
//!   (caller, callee) pair: both see each out-of-line call, and both nest a
//!   tail callee in its tail caller (uftrace because the callee returns to
//!   the return address it hijacked in the caller, ftail by design);
//!   both record the program's calls into libraries (uftrace through the
//!   PLT, ftail through its call sites), counted per function and pair
//!   too, a callback nested under the library call that made it; the
//!   library calls uftrace sees outside the program (made by `-pg`'s
//!   start-up code, before `main`) are skipped, and so are its kernel
//!   events.
//! * `-finstrument-functions` also counts calls the compiler inlined (its
//!   hooks stay where the inlined body is) and turns tail calls into calls,
//!   which does not change counts: for a function out of line in both
//!   builds its count is at least ftail's, and equal when the function is
//!   never inlined (every function of the fixture is `noinline`).
//!
//! The real programs: Lua 5.4 running `tests/differential/work.lua` (not
//! Lua's own test suite: its errors and coroutines `_longjmp`, which makes
//! uftrace 0.13 crash the program; ftail traces that suite in the corpus
//! tests), SQLite's speedtest1 and jq running the first 300 lines of its
//! `tests/jq.test`. A mismatch names the function and both counts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ftail_abi::trace::EventKind;
use ftail_trace::trace::{self, Symbols};

type Counts = BTreeMap<String, u64>;
type Pairs = BTreeMap<(String, String), u64>;

fn differential_dir() -> PathBuf {
    repo().join("tests/differential")
}

/// Whether the peers are installed (CI installs them).
fn have_peers() -> bool {
    have("uftrace") && have("gcc")
}

/// The functions in a binary's site tables.
fn program_functions(exe: &Path) -> BTreeSet<String> {
    let data = std::fs::read(exe).unwrap();
    ftail_trace::sites::read(&data)
        .unwrap()
        .into_iter()
        .map(|f| trace::demangle(&f.name))
        .collect()
}

/// Calls per function and per (caller, callee) as ftail records them.
fn ftail_calls(dir: &Path, exe: &Path, args: &[&str], stdin: Option<&Path>) -> (Counts, Pairs) {
    let tdir = dir.join("ftail.data");
    let mut cmd = Command::new(ftail());
    cmd.arg("record")
        .arg("--no-sched")
        .arg("-d")
        .arg(&tdir)
        .args(["--buffer-events", "40000000", "--"])
        .arg(exe)
        .args(args)
        .current_dir(dir);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    run_ok(&mut cmd);
    let t = trace::open(&tdir).unwrap();
    let (mut counts, mut pairs) = (Counts::new(), Pairs::new());
    for p in &t.processes {
        let syms = Symbols::load(p);
        for th in &p.threads {
            assert_eq!(th.lost, 0, "ftail lost events: raise --buffer-events");
            let mut stack: Vec<String> = Vec::new();
            for e in &th.events {
                match e.kind() {
                    Some(EventKind::Entry) => {
                        let name = syms.name(e.addr(), e.tsc);
                        let parent = stack.last().cloned().unwrap_or_default();
                        *counts.entry(name.clone()).or_default() += 1;
                        *pairs.entry((parent, name.clone())).or_default() += 1;
                        stack.push(name);
                    }
                    Some(EventKind::Resumed) => stack.push(syms.name(e.addr(), e.tsc)),
                    Some(_) => {
                        stack.pop();
                    }
                    None => {}
                }
            }
        }
    }
    (counts, pairs)
}

/// The same from `uftrace replay -f tid`: `[ TID] | ` then each call's line
/// indented two spaces per level (threads interleave, so each has its own
/// stack); a library call counts when a function of `program` is open
/// (the program made it), and kernel events (`linux:...`) never do.
fn uftrace_calls(
    dir: &Path,
    exe: &Path,
    args: &[&str],
    stdin: Option<&Path>,
    program: &BTreeSet<String>,
) -> (Counts, Pairs) {
    let udir = dir.join("uftrace.data");
    let mut cmd = Command::new("uftrace");
    cmd.arg("record")
        .arg("-d")
        .arg(&udir)
        .arg(exe)
        .args(args)
        .current_dir(dir);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    run_ok(&mut cmd);
    let text = run_ok(
        Command::new("uftrace")
            .args(["replay", "--no-pager", "-f", "tid", "-d"])
            .arg(&udir),
    );
    let (mut counts, mut pairs) = (Counts::new(), Pairs::new());
    // Per thread, the open calls: (name, traced by ftail too).
    let mut stacks: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for line in text.lines() {
        let Some((tid, call)) = line.split_once("] | ") else {
            continue;
        };
        let body = call.trim_start();
        let depth = (call.len() - body.len()) / 2;
        let (name, opens) = if let Some(n) = body.strip_suffix("() {") {
            (n, true)
        } else if let Some(n) = body.strip_suffix("();") {
            (n, false)
        } else {
            continue;
        };
        let stack = stacks.entry(tid.trim().to_string()).or_default();
        stack.truncate(depth);
        let ours = program.contains(name)
            || (!name.contains(':') && stack.iter().any(|(n, _)| program.contains(n)));
        if ours {
            let parent = stack
                .iter()
                .rev()
                .find(|(_, o)| *o)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            *counts.entry(name.to_string()).or_default() += 1;
            *pairs.entry((parent, name.to_string())).or_default() += 1;
        }
        if opens {
            stack.push((name.to_string(), ours));
        }
    }
    (counts, pairs)
}

/// Calls per function from the `-finstrument-functions` hook, named with
/// the binary's symbol table.
fn finstr_counts(dir: &Path, exe: &Path, args: &[&str], stdin: Option<&Path>) -> Counts {
    let out = dir.join("finstr.txt");
    let mut cmd = Command::new(exe);
    cmd.args(args).env("FINSTR_OUT", &out).current_dir(dir);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    run_ok(&mut cmd);
    let symbols: BTreeMap<u64, String> = run_ok(Command::new("nm").arg(exe))
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
            let addr = u64::from_str_radix(addr, 16).ok()?;
            matches!(kind, "T" | "t").then(|| (addr, name.to_string()))
        })
        .collect();
    let mut counts = Counts::new();
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let (addr, n) = l.split_once(' ').unwrap();
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        let name = symbols.get(&addr).cloned().unwrap_or(format!("{addr:#x}"));
        *counts.entry(name).or_default() += n.parse::<u64>().unwrap();
    }
    counts
}

/// How another tracer's counts must relate to ftail's.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    /// The same.
    Equal,
    /// At least ftail's (the other also counts inlined calls).
    AtLeast,
}

/// Compares per-key counts; returns one line per mismatch.
fn compare<K: Ord + std::fmt::Debug>(
    what: &str,
    ftail: &BTreeMap<K, u64>,
    other: &BTreeMap<K, u64>,
    keys: impl Iterator<Item = K>,
    rule: Rule,
) -> Vec<String> {
    let mut bad = Vec::new();
    for k in keys {
        let (a, b) = (
            ftail.get(&k).copied().unwrap_or(0),
            other.get(&k).copied().unwrap_or(0),
        );
        let ok = match rule {
            Rule::Equal => a == b,
            Rule::AtLeast => b >= a,
        };
        if !ok {
            bad.push(format!("{k:?}: ftail {a}, {what} {b}"));
        }
    }
    bad
}

/// The three tracers on one program, built by `build(kind, dir)`.
struct Subject<'a> {
    label: &'a str,
    args: &'a [&'a str],
    stdin: Option<PathBuf>,
    /// `-finstrument-functions` counts must equal ftail's (every function
    /// is noinline), rather than be at least ftail's.
    finstr_exact: bool,
    /// Library calls must be counted as uftrace counts them; otherwise
    /// only the program's own functions and pairs are compared, and the
    /// library calls that differ are listed on stderr.
    libcalls_equal: bool,
    /// Library functions that uftrace counts differently, each with the
    /// reason: left out of the comparison.
    uftrace_differs: &'a [(&'a str, &'a str)],
}

fn check(subject: &Subject, dir: &Path, exes: &Builds) {
    let stdin = subject.stdin.as_deref();
    let program = program_functions(&exes.ftail);
    let (fc, fp) = ftail_calls(dir, &exes.ftail, subject.args, stdin);
    let (uc, up) = uftrace_calls(dir, &exes.uftrace, subject.args, stdin, &program);
    let ic = finstr_counts(dir, &exes.finstr, subject.args, stdin);
    let total: u64 = fc.values().sum();
    assert!(total > 0, "{}: ftail recorded nothing", subject.label);
    // The program's functions and the library functions either called.
    let all_keys: BTreeSet<_> = program
        .iter()
        .chain(fc.keys())
        .chain(uc.keys())
        .cloned()
        .collect();
    let differs = |k: &str| subject.uftrace_differs.iter().any(|(f, _)| *f == k);
    for (f, why) in subject.uftrace_differs {
        eprintln!(
            "{}: {f} not compared ({why}): ftail {}, uftrace {}",
            subject.label,
            fc.get(*f).copied().unwrap_or(0),
            uc.get(*f).copied().unwrap_or(0)
        );
    }
    let count_keys: BTreeSet<_> = all_keys
        .iter()
        .filter(|k| !differs(k))
        .filter(|k| subject.libcalls_equal || program.contains(*k))
        .cloned()
        .collect();
    if !subject.libcalls_equal {
        let library = all_keys.iter().filter(|k| !program.contains(*k)).cloned();
        let differ = compare("uftrace", &fc, &uc, library, Rule::Equal);
        eprintln!(
            "{}: {} library functions counted differently from uftrace:\n{}",
            subject.label,
            differ.len(),
            differ.join("\n")
        );
    }
    let mut bad = compare("uftrace", &fc, &uc, count_keys.into_iter(), Rule::Equal);
    let pair_keys: BTreeSet<_> = fp
        .keys()
        .chain(up.keys())
        .filter(|(a, b)| !differs(a) && !differs(b))
        .filter(|(a, b)| {
            subject.libcalls_equal || ((a.is_empty() || program.contains(a)) && program.contains(b))
        })
        .cloned()
        .collect();
    bad.extend(compare(
        "uftrace",
        &fp,
        &up,
        pair_keys.into_iter(),
        Rule::Equal,
    ));
    let rule = if subject.finstr_exact {
        Rule::Equal
    } else {
        Rule::AtLeast
    };
    // Functions out of line in both builds.
    let both = program.iter().filter(|f| ic.contains_key(*f)).cloned();
    bad.extend(compare("-finstrument-functions", &fc, &ic, both, rule));
    let equal = program
        .iter()
        .filter(|f| fc.contains_key(*f) && fc.get(*f) == ic.get(*f))
        .count();
    eprintln!(
        "{}: {total} calls of {} functions; {} mismatches; \
         -finstrument-functions: {equal} of {} functions equal",
        subject.label,
        fc.len(),
        bad.len(),
        program.iter().filter(|f| ic.contains_key(*f)).count()
    );
    assert!(
        bad.is_empty(),
        "{}: {} mismatches:\n{}",
        subject.label,
        bad.len(),
        bad.join("\n")
    );
}

struct Builds {
    ftail: PathBuf,
    uftrace: PathBuf,
    finstr: PathBuf,
}

/// The finstr hook, compiled once per directory.
fn hook_object(dir: &Path) -> PathBuf {
    let o = dir.join("finstr-hook.o");
    if !o.exists() {
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-c", "-o"])
                .arg(&o)
                .arg(differential_dir().join("finstr-hook.c")),
        );
    }
    o
}

/// One of the three builds of a program.
struct Variant {
    name: &'static str,
    cc: String,
    cflags: &'static str,
    /// Linker arguments (objects to link in).
    link: String,
}

impl Variant {
    /// `CC -O2 CFLAGS` as a command; the caller adds its arguments, then
    /// [`Variant::link_args`].
    fn compiler(&self) -> Command {
        let mut words = self.cc.split_whitespace();
        let mut cmd = Command::new(words.next().unwrap());
        cmd.args(words)
            .arg("-O2")
            .args(self.cflags.split_whitespace());
        cmd
    }

    fn link_args(&self) -> std::str::SplitWhitespace<'_> {
        self.link.split_whitespace()
    }
}

/// The three builds: through `ftail cc`, for uftrace, and for
/// `-finstrument-functions` with the counting hook; `objects` are linked
/// into each.
fn variants(dir: &Path, objects: &str) -> [Variant; 3] {
    let hook = hook_object(dir);
    [
        Variant {
            name: "ftail",
            cc: format!("{} cc gcc", ftail().display()),
            cflags: "",
            link: objects.to_string(),
        },
        Variant {
            name: "uftrace",
            cc: "gcc".into(),
            cflags: "-pg -mfentry",
            link: objects.to_string(),
        },
        Variant {
            name: "finstr",
            cc: "gcc".into(),
            cflags: "-finstrument-functions",
            link: format!("-no-pie {} {objects}", hook.display()),
        },
    ]
}

/// The binaries at `path(variant name)`.
fn builds(path: impl Fn(&str) -> PathBuf) -> Builds {
    Builds {
        ftail: path("ftail"),
        uftrace: path("uftrace"),
        finstr: path("finstr"),
    }
}

/// A corpus project's sources, fetched once.
fn corpus_source(name: &str) -> PathBuf {
    let src = repo().join("corpus/.cache/src").join(name);
    if !src.is_dir() {
        run_ok(
            Command::new("bash")
                .arg(repo().join("corpus/fetch.sh"))
                .arg(name),
        );
    }
    src
}

#[test]
fn fixture_counts_and_call_pairs_agree_with_uftrace_and_finstrument() {
    if !have_peers() {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let src = differential_dir().join("calls.c");
    for v in variants(d, "") {
        run_ok(
            v.compiler()
                .arg("-o")
                .arg(d.join(v.name))
                .arg(&src)
                .args(v.link_args()),
        );
    }
    let builds = builds(|v| d.join(v));
    check(
        &Subject {
            label: "calls.c",
            args: &["2000"],
            stdin: None,
            finstr_exact: true,
            libcalls_equal: true,
            uftrace_differs: &[],
        },
        d,
        &builds,
    );
}

/// Builds Lua 5.4 (the corpus sources) three ways into `dir`.
fn build_lua(dir: &Path) -> Builds {
    let src = corpus_source("lua54");
    for Variant {
        name,
        cc,
        cflags,
        link,
    } in variants(dir, "")
    {
        let b = dir.join(format!("lua-{name}"));
        run_ok(Command::new("cp").arg("-a").arg(&src).arg(&b));
        run_ok(Command::new("make").current_dir(&b).args([
            "-j2".to_string(),
            format!("CC={cc}"),
            // A fixed string-hash seed (`!(L)` is 0): Lua seeds it from the
            // time and addresses, and the number of collisions (calls of
            // mainpositionTV) would differ from run to run.
            // One line in the API's string cache: it is indexed by the C
            // string's address, so which calls of luaS_new find their
            // string there (and how many times they call strcmp) would
            // change with the address layout from run to run.
            format!(
                "CFLAGS=-O2 -std=gnu99 -DLUA_USE_LINUX -Dluai_makeseed=! \
                 -DSTRCACHE_N=1 -DSTRCACHE_M=2 {cflags}"
            ),
            format!("MYLDFLAGS={link}"),
            "MYLIBS=-ldl".to_string(),
            "lua".to_string(),
        ]));
    }
    builds(|v| dir.join(format!("lua-{v}/lua")))
}

#[test]
fn lua_counts_and_call_pairs_agree_with_uftrace_and_finstrument() {
    if !full_suite() {
        eprintln!("skipping the Lua differential test: set FTAIL_CORPUS=1");
        return;
    }
    assert!(have_peers());
    let dir = scratch();
    let builds = build_lua(dir.path());
    let script = differential_dir().join("work.lua");
    check(
        &Subject {
            label: "Lua 5.4 running tests/differential/work.lua",
            args: &[script.to_str().unwrap()],
            stdin: None,
            finstr_exact: false,
            libcalls_equal: true,
            uftrace_differs: &[],
        },
        dir.path(),
        &builds,
    );
}

/// The SQLite amalgamation: from the corpus build when it ran, else made
/// from the corpus sources (`make sqlite3.c`, which needs tclsh).
fn sqlite_amalgamation(dir: &Path) -> PathBuf {
    for variant in ["gcc", "clang-19"] {
        let built = repo()
            .join("target/corpus")
            .join(format!("sqlite-{variant}"));
        if built.join("sqlite3.c").is_file() && built.join("test/speedtest1.c").is_file() {
            return built;
        }
    }
    let src = corpus_source("sqlite");
    let b = dir.join("sqlite-src");
    run_ok(Command::new("cp").arg("-a").arg(&src).arg(&b));
    run_ok(
        Command::new("./configure")
            .arg("--disable-tcl")
            .current_dir(&b),
    );
    run_ok(Command::new("make").arg("sqlite3.c").current_dir(&b));
    b
}

/// Builds speedtest1 three ways, two compilations at a time.
fn build_speedtest(dir: &Path) -> Builds {
    let src = sqlite_amalgamation(dir);
    let compile = |v: &Variant| {
        let mut cmd = v.compiler();
        cmd.arg("-I")
            .arg(&src)
            .arg(src.join("test/speedtest1.c"))
            .arg(src.join("sqlite3.c"))
            .args(v.link_args())
            .args(["-lpthread", "-lm", "-ldl", "-o"])
            .arg(dir.join(format!("st-{}", v.name)));
        std::thread::spawn(move || {
            run_ok(&mut cmd);
        })
    };
    // Two compilations at a time (two cores).
    let [a, b, c] = variants(dir, "");
    let (ta, tb) = (compile(&a), compile(&b));
    ta.join().unwrap();
    tb.join().unwrap();
    compile(&c).join().unwrap();
    builds(|v| dir.join(format!("st-{v}")))
}

#[test]
fn sqlite_speedtest1_counts_and_call_pairs_agree_with_uftrace_and_finstrument() {
    if !full_suite() {
        eprintln!("skipping the SQLite differential test: set FTAIL_CORPUS=1");
        return;
    }
    assert!(have_peers());
    let dir = scratch();
    let builds = build_speedtest(dir.path());
    check(
        &Subject {
            label: "SQLite speedtest1 --size 1",
            args: &["--size", "1"],
            stdin: None,
            finstr_exact: false,
            libcalls_equal: true,
            // SQLite's unix VFS calls these through its table of system
            // calls (`aSyscall[]`, function pointers): indirect calls,
            // which ftail records and uftrace, hooking PLT calls only,
            // does not see.
            uftrace_differs: &[
                ("access", "called through SQLite's aSyscall[] pointers"),
                ("close", "called through SQLite's aSyscall[] pointers"),
                ("fstat", "called through SQLite's aSyscall[] pointers"),
                ("ftruncate", "called through SQLite's aSyscall[] pointers"),
                ("read", "called through SQLite's aSyscall[] pointers"),
                ("stat", "called through SQLite's aSyscall[] pointers"),
                ("unlink", "called through SQLite's aSyscall[] pointers"),
                ("write", "called through SQLite's aSyscall[] pointers"),
            ],
        },
        dir.path(),
        &builds,
    );
}

/// Builds jq (the corpus sources) three ways into `dir`.
fn build_jq(dir: &Path) -> Builds {
    let src = corpus_source("jq");
    let seed = dir.join("fixed-seed.o");
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-c", "-o"])
            .arg(&seed)
            .arg(differential_dir().join("fixed-seed.c")),
    );
    for Variant {
        name,
        cc,
        cflags,
        link,
    } in variants(dir, &seed.display().to_string())
    {
        let b = dir.join(format!("jq-{name}"));
        run_ok(Command::new("cp").arg("-a").arg(&src).arg(&b));
        if !b.join("configure").exists() {
            run_ok(Command::new("autoreconf").arg("-i").current_dir(&b));
        }
        run_ok(
            Command::new("./configure")
                .args([
                    "--with-oniguruma=builtin",
                    "--disable-docs",
                    "--disable-shared",
                ])
                .arg(format!("CC={cc}"))
                // A fixed hash seed (tests/differential/fixed-seed.c).
                .arg(format!(
                    "CFLAGS=-O2 {cflags} -Darc4random=ftail_test_seed \
                     -Dgetentropy=ftail_test_entropy"
                ))
                .arg(format!("LIBS={link}"))
                .current_dir(&b),
        );
        run_ok(Command::new("make").arg("-j2").current_dir(&b));
    }
    builds(|v| dir.join(format!("jq-{v}/jq")))
}

#[test]
fn jq_counts_and_call_pairs_agree_with_uftrace_and_finstrument() {
    if !full_suite() {
        eprintln!("skipping the jq differential test: set FTAIL_CORPUS=1");
        return;
    }
    assert!(have_peers());
    let dir = scratch();
    let builds = build_jq(dir.path());
    // The tests up to the first blank line after line 300 (whole tests).
    let all = std::fs::read_to_string(repo().join("corpus/.cache/src/jq/tests/jq.test")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let end = (300..lines.len())
        .find(|&i| lines[i].is_empty())
        .unwrap_or(lines.len());
    let tests: String = lines[..end].iter().map(|l| format!("{l}\n")).collect();
    let part = dir.path().join("part.test");
    std::fs::write(&part, tests).unwrap();
    check(
        &Subject {
            label: "jq --run-tests (the tests in the first 300 lines of tests/jq.test)",
            args: &["--run-tests", part.to_str().unwrap()],
            stdin: None,
            finstr_exact: false,
            libcalls_equal: true,
            // atexit is glibc's libc_nonshared.a copy, linked into jq and
            // not instrumented, that calls __cxa_atexit through jq's PLT:
            // uftrace records that PLT call (as if the program made it);
            // ftail records the program's call of atexit itself (a call
            // into uninstrumented code of the program), and no call made
            // from uninstrumented code. The fixed seed is linked in
            // without instrumentation too: a direct call, which ftail
            // records and uftrace's `-pg` build does not see.
            uftrace_differs: &[
                ("__cxa_atexit", "called by atexit, linked into jq"),
                ("atexit", "glibc's libc_nonshared.a copy, linked into jq"),
                (
                    "ftail_test_seed",
                    "the test's fixed seed, linked in plainly",
                ),
            ],
        },
        dir.path(),
        &builds,
    );
}
