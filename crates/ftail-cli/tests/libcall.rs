//! Library calls (issue 18): calls from instrumented code into libraries
//! built without ftail (libc, libstdc++) are recorded by default through
//! call sites, nested where they are made, with the program's callbacks
//! nested under them, and every thread stays balanced however they end;
//! `--no-libcall` records none, and the filters name them like any
//! function. Fixtures: `tests/libcall/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ftail_trace::trace::Trace;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/libcall").join(name)
}

/// gcc, and clang-19 where it is installed.
fn compilers() -> Vec<&'static str> {
    ["gcc", "clang-19"]
        .into_iter()
        .filter(|cc| have(cc))
        .collect()
}

fn build(dir: &Path, cc: &str, flags: &[&str], source: &Path) -> PathBuf {
    let exe = dir.join(format!("{cc}{}", flags.join("")));
    run_ok(
        ftail_cc(cc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(source)
            .arg("-lpthread"),
    );
    exe
}

/// Records `exe args` with `extra` options into `dir/trace`; the run must
/// behave as it does untraced (output, status) and every thread be
/// balanced.
fn record(dir: &Path, exe: &Path, args: &[&str], extra: &[&str]) -> Trace {
    let plain = run(Command::new(exe).args(args));
    let tdir = dir.join("trace");
    let (out, t) = record_trace(&tdir, exe, args, extra);
    assert_eq!(out.stdout, plain.stdout, "{exe:?} {args:?}");
    assert_eq!(out.status.code(), plain.status.code(), "{exe:?} {args:?}");
    for p in &t.processes {
        for th in &p.threads {
            let b = th.balance();
            assert!(
                b.is_balanced(),
                "{args:?} pid {} tid {}: {b:?}",
                p.pid,
                th.tid
            );
            assert!(th.damage.is_none(), "{:?}", th.damage);
        }
    }
    t
}

/// `ftail replay ARGS` of `dir/trace`: the call column of each line
/// (indentation kept), without the main's option parsing (`strcmp`).
fn calls(dir: &Path, args: &[&str]) -> Vec<String> {
    let text = run_ok(
        Command::new(ftail())
            .args(["replay", "--no-pager", "-d"])
            .arg(dir.join("trace"))
            .args(args),
    );
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("| ").map(|(_, c)| c.to_string()))
        .filter(|c| c.trim() != "strcmp();")
        .collect()
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{}", lines.join("\n")))
}

#[test]
fn the_five_library_calls_nest_under_their_callers() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O0"], &fixture("libcall.c"));
        record(dir.path(), &exe, &["five"], &[]);
        assert_eq!(
            calls(dir.path(), &[]),
            [
                "main() {",
                "  copy() {",
                "    strlen();",
                "    malloc();",
                "    strcpy();",
                "  } /* copy */",
                "  puts();",
                "  free();",
                "} /* main */"
            ],
            "{cc}"
        );
        // At -O2 gcc makes strcpy a memcpy, clang a tail call.
        let exe = build(dir.path(), cc, &["-O2"], &fixture("libcall.c"));
        record(dir.path(), &exe, &["five"], &[]);
        let lines = calls(dir.path(), &[]);
        let copied = lines
            .iter()
            .any(|l| l == "    memcpy();" || l == "    strcpy();");
        assert!(copied, "{cc}:\n{}", lines.join("\n"));
        for call in ["    strlen();", "    malloc();", "  puts();", "  free();"] {
            position(&lines, call);
        }
    }
}

/// A library function's thunk records its entry and exit in the
/// side-stack trampolines themselves in the compact format, and through
/// the entry and exit trampolines in a ring (16-byte events) or when its
/// entry takes a spec: the same calls, nested the same way, either way.
#[test]
fn library_calls_read_the_same_through_every_thunk_form() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O0"], &fixture("libcall.c"));
    let five = [
        "main() {",
        "  copy() {",
        "    strlen();",
        "    malloc();",
        "    strcpy();",
        "  } /* copy */",
        "  puts();",
        "  free();",
        "} /* main */",
    ];
    for extra in [&[][..], &["--ring", "1M"], &["-A", "strlen@arg1"]] {
        record(dir.path(), &exe, &["five"], extra);
        // Without the values recorded (`strlen(0x…)`).
        let lines: Vec<String> = calls(dir.path(), &[])
            .into_iter()
            .map(|l| match (l.find('('), l.find(')')) {
                (Some(open), Some(close)) => format!("{}{}", &l[..=open], &l[close..]),
                _ => l,
            })
            .collect();
        assert_eq!(lines, five, "{extra:?}");
    }
}

#[test]
fn no_libcall_records_none() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O0"], &fixture("libcall.c"));
    record(dir.path(), &exe, &["five"], &["--no-libcall"]);
    assert_eq!(
        calls(dir.path(), &[]),
        ["main() {", "  copy();", "} /* main */"]
    );
}

/// Whether `text` holds `word` with no identifier character either side.
fn has_word(text: &[u8], word: &str) -> bool {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let w = word.as_bytes();
    text.windows(w.len()).enumerate().any(|(i, win)| {
        win == w
            && (i == 0 || !ident(text[i - 1]))
            && text.get(i + w.len()).is_none_or(|&c| !ident(c))
    })
}

/// The exports (Chrome JSON, Perfetto, speedscope, folded stacks, the SVG
/// flame graph) name the library calls as replay does.
#[test]
fn every_export_shows_the_library_calls() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O0"], &fixture("libcall.c"));
    record(dir.path(), &exe, &["five"], &[]);
    let trace = dir.path().join("trace");
    let mut outputs = Vec::new();
    for format in ["--chrome", "--perfetto", "--speedscope", "--flame-graph"] {
        let out = dir.path().join(format.trim_start_matches('-'));
        run_ok(
            Command::new(ftail())
                .args(["dump", format, "-d"])
                .arg(&trace)
                .arg("-o")
                .arg(&out),
        );
        outputs.push((format, out));
    }
    let svg = dir.path().join("flame.svg");
    run_ok(
        Command::new(ftail())
            .args(["flame", "-d"])
            .arg(&trace)
            .arg("-o")
            .arg(&svg),
    );
    outputs.push(("flame", svg));
    for (what, out) in outputs {
        let text = std::fs::read(&out).unwrap();
        for f in ["copy", "strlen", "malloc", "strcpy", "puts", "free"] {
            let found = if what == "--perfetto" {
                // A protobuf string: its length, then its bytes.
                let field = [&[f.len() as u8], f.as_bytes()].concat();
                text.windows(field.len()).any(|w| w == field)
            } else {
                has_word(&text, f)
            };
            assert!(found, "{what}: no {f}");
        }
    }
}

/// `-fno-plt`: `call *f@GOTPCREL(%rip)`, retargeted through its
/// displacement. (clang at -O0 loads the GOT slot into a register and
/// calls through it: an indirect call, which is not a call site.)
#[test]
fn no_plt_calls_through_the_got_are_recorded() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2", "-fno-plt"], &fixture("libcall.c"));
        let (ok, report) = sites(&exe);
        assert!(ok, "{report}");
        record(dir.path(), &exe, &["five"], &[]);
        let lines = calls(dir.path(), &[]);
        for call in ["    strlen();", "    malloc();", "  puts();", "  free();"] {
            position(&lines, call);
        }
    }
}

#[test]
fn a_callback_nests_under_the_library_call_that_makes_it() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("libcall.c"));
            record(dir.path(), &exe, &["qsort"], &[]);
            let lines = calls(dir.path(), &[]);
            let open = position(&lines, "    qsort() {");
            let close = position(&lines, "    } /* qsort */");
            let cmps = lines[open..close]
                .iter()
                .filter(|l| *l == "      cmp();")
                .count();
            assert!(cmps >= 4, "{cc} {opt}:\n{}", lines.join("\n"));
            position(&lines, "  printf();");
        }
    }
}

/// A longjmp out of a callback leaves the library call behind: it closes
/// as unwound, and what the program calls next, from the same place,
/// does not nest under it.
#[test]
fn a_longjmp_out_of_a_callback_unwinds_the_library_call() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("libcall.c"));
            record(dir.path(), &exe, &["longjmp"], &[]);
            let lines = calls(dir.path(), &[]);
            let closed = position(&lines, "  } /* qsort (unwound) */");
            let next = position(&lines, "  say() {");
            assert!(closed < next, "{cc} {opt}:\n{}", lines.join("\n"));
        }
    }
}

/// setjmp returns twice, so it is entered with its caller's own return
/// address: the call is recorded as one that returns at once (as uftrace
/// counts it), and the longjmp back to it still works.
#[test]
fn setjmp_is_recorded_as_a_call_that_returns_at_once() {
    for cc in compilers() {
        for flags in [&["-O0"][..], &["-O2"], &["-O2", "-fno-plt"]] {
            let dir = scratch();
            let exe = build(dir.path(), cc, flags, &fixture("libcall.c"));
            record(dir.path(), &exe, &["longjmp"], &[]);
            let lines = calls(dir.path(), &[]);
            let set = position(&lines, "  _setjmp();");
            let sorted = position(&lines, "  qsort() {");
            assert!(set < sorted, "{cc} {flags:?}:\n{}", lines.join("\n"));
            let n = lines.iter().filter(|l| l.trim() == "_setjmp();").count();
            assert_eq!(n, 1, "{cc} {flags:?}:\n{}", lines.join("\n"));
        }
    }
}

#[test]
fn a_tail_call_into_the_library_shows_the_library_function() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], &fixture("libcall.c"));
        for mode in ["auto", "convert"] {
            record(dir.path(), &exe, &["tail"], &["--tail", mode]);
            assert_eq!(
                calls(dir.path(), &[]),
                [
                    "main() {",
                    "  say() {",
                    "    puts();",
                    "  } /* say (tail call) */",
                    "} /* main */"
                ],
                "{cc} {mode}"
            );
        }
    }
}

/// exit (an atexit handler nested under it), pthread_exit, fork and exec:
/// the calls that do not return close as unwound, every thread balanced.
#[test]
fn library_calls_that_do_not_return_stay_balanced() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], &fixture("libcall.c"));
        record(dir.path(), &exe, &["exit"], &[]);
        let lines = calls(dir.path(), &[]);
        let exit = position(&lines, "    exit() {");
        let handler = lines
            .iter()
            .position(|l| l.starts_with("      last_words("))
            .unwrap_or_else(|| panic!("{cc}:\n{}", lines.join("\n")));
        assert!(exit < handler, "{cc}:\n{}", lines.join("\n"));
        position(&lines, "    } /* exit (unwound) */");

        let t = record(dir.path(), &exe, &["thread"], &[]);
        assert_eq!(t.processes[0].threads.len(), 3, "{cc}");
        let lines = calls(dir.path(), &[]);
        assert_eq!(
            lines.iter().filter(|l| *l == "  pthread_create();").count(),
            2,
            "{cc}:\n{}",
            lines.join("\n")
        );
        position(&lines, "    } /* pthread_exit (unwound) */");

        let t = record(dir.path(), &exe, &["fork"], &[]);
        assert_eq!(t.processes.len(), 2, "{cc}");
        let lines = calls(dir.path(), &[]);
        assert_eq!(
            lines.iter().filter(|l| *l == "  fork();").count(),
            2,
            "parent and child:\n{}",
            lines.join("\n")
        );
        position(&lines, "    getpid();");

        let t = record(dir.path(), &exe, &["exec"], &[]);
        assert_eq!(t.processes.len(), 2, "{cc}: the image after exec");
        let lines = calls(dir.path(), &[]);
        position(&lines, "  } /* execl (unwound) */");
        position(&lines, "    malloc();");
    }
}

#[test]
fn exceptions_thrown_through_the_library_unwind_its_frames() {
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        let dir = scratch();
        let exe = dir.path().join("throw");
        run_ok(
            ftail_cc(cxx)
                .args(["-O2", "-o"])
                .arg(&exe)
                .arg(fixture("throw.cc")),
        );
        record(dir.path(), &exe, &[], &[]);
        let lines = calls(dir.path(), &[]);
        let throws = lines
            .iter()
            .filter(|l| l.trim() == "} /* __cxa_throw (unwound) */")
            .count();
        assert_eq!(throws, 2, "{cxx}:\n{}", lines.join("\n"));
        let caught = lines
            .iter()
            .filter(|l| l.trim() == "} /* catcher */")
            .count();
        assert_eq!(caught, 3, "{cxx}:\n{}", lines.join("\n"));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.trim() == "__cxa_begin_catch();")
                .count(),
            2,
            "{cxx}:\n{}",
            lines.join("\n")
        );
    }
}

/// `-N`, `-A` and `-R` name library functions like any other, at record
/// time; `-F` and `-D` at replay time show them as uftrace does.
#[test]
fn filters_and_values_apply_to_library_functions_by_name() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O0"], &fixture("libcall.c"));
    record(dir.path(), &exe, &["five"], &["-N", "malloc"]);
    let lines = calls(dir.path(), &[]);
    assert!(!lines.iter().any(|l| l.contains("malloc")), "{lines:?}");
    position(&lines, "    strlen();");

    record(
        dir.path(),
        &exe,
        &["five"],
        &["-A", "malloc@arg1", "-R", "malloc", "-A", "puts@arg1/s"],
    );
    let lines = calls(dir.path(), &[]);
    let malloc = lines
        .iter()
        .find(|l| l.starts_with("    malloc(6) = 0x"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(malloc.ends_with(';'), "{malloc}");
    position(&lines, "  puts(\"hello\");");

    record(dir.path(), &exe, &["five"], &[]);
    assert_eq!(
        calls(dir.path(), &["-F", "copy", "-D", "2"]),
        [
            "copy() {",
            "  strlen();",
            "  malloc();",
            "  strcpy();",
            "} /* copy */"
        ]
    );
}

#[test]
fn library_call_sites_are_verified_by_sites() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], &fixture("libcall.c"));
        let (ok, report) = sites(&exe);
        assert!(ok, "{cc}: {report}");
        let data = std::fs::read(&exe).unwrap();
        let funcs = ftail_trace::sites::read(&data).unwrap();
        let summary = ftail_trace::sites::summarize(&funcs);
        assert!(summary.calls >= 10, "{cc}: {summary:?}");
    }
}

/// An object built without ftail and linked into the program (a static
/// archive's code, as the Rust standard library is in a Rust program):
/// its functions are library calls of the program itself, named from its
/// symbol table, nested where they are made (a tail call into one too),
/// and a function that must
/// see its real caller (here the program's own `getcontext`) is never
/// wrapped; in a stripped program, where no name tells such a function
/// apart, none is.
#[test]
fn calls_into_uninstrumented_code_of_the_program_are_library_calls() {
    for cc in compilers() {
        let dir = scratch();
        let plain = dir.path().join("plain.c");
        std::fs::write(
            &plain,
            "int helper(int x) { return x * 3; }\n\
             int getcontext(void *u) { (void)u; return 7; }\n",
        )
        .unwrap();
        let object = dir.path().join("plain.o");
        run_ok(
            Command::new(cc)
                .args(["-O2", "-c", "-o"])
                .arg(&object)
                .arg(&plain),
        );
        let main = dir.path().join("main.c");
        std::fs::write(
            &main,
            "#include <stdio.h>\n\
             int helper(int);\n\
             int getcontext(void *);\n\
             __attribute__((noinline)) int twice(int x) { return helper(x) + helper(x + 1) + 1; }\n\
             __attribute__((noinline)) int once(int x) { return helper(x); }\n\
             int main(void) { char u[8]; printf(\"%d\\n\", twice(1) + once(2) + getcontext(u)); return 0; }\n",
        )
        .unwrap();
        for opt in ["-O0", "-O2"] {
            let exe = dir.path().join(format!("main{opt}"));
            run_ok(
                ftail_cc(cc)
                    .arg(opt)
                    .arg("-o")
                    .arg(&exe)
                    .arg(&main)
                    .arg(&object),
            );
            record(dir.path(), &exe, &[], &[]);
            let once = if opt == "-O2" {
                "  } /* once (tail call) */"
            } else {
                "  } /* once */"
            };
            assert_eq!(
                calls(dir.path(), &[]),
                [
                    "main() {",
                    "  twice() {",
                    "    helper();",
                    "    helper();",
                    "  } /* twice */",
                    "  once() {",
                    "    helper();",
                    once,
                    "  printf();",
                    "} /* main */"
                ],
                "{cc} {opt}"
            );
            // Stripped, nothing tells a setjmp apart: no such call is
            // recorded, library calls through the PLT still are.
            run_ok(Command::new("strip").arg(&exe));
            record(dir.path(), &exe, &[], &[]);
            let lines = calls(dir.path(), &[]);
            assert!(
                !lines
                    .iter()
                    .any(|l| l.contains("helper") || l.contains("getcontext"))
                    && lines.contains(&"  printf();".to_string()),
                "{cc} {opt} stripped:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// A fully static program builds with its sites, but no dynamic loader
/// preloads the runtime into it: it runs as it would untraced, nothing is
/// recorded, and `ftail record` says why.
#[test]
fn a_static_program_records_nothing_and_says_why() {
    let dir = scratch();
    let source = dir.path().join("main.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 3; }\n",
    )
    .unwrap();
    let exe = dir.path().join("main");
    let built = run(ftail_cc("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&exe)
        .arg(&source));
    if !built.status.success() {
        eprintln!("skipping: no static C library to link against");
        return;
    }
    let (ok, text) = sites(&exe);
    assert!(ok && text.contains(" 0 mismatches"), "{text}");
    let out = run(Command::new(ftail())
        .arg("record")
        .arg("-d")
        .arg(dir.path().join("trace"))
        .arg("--")
        .arg(&exe));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing was recorded") && stderr.contains("is statically linked"),
        "{stderr}"
    );
}

/// The library functions `ftail info` lists for `dir/trace`: name →
/// the module that defines it.
fn info_library_functions(dir: &Path) -> Vec<(String, String)> {
    let text = run_ok(
        Command::new(ftail())
            .arg("info")
            .arg("-d")
            .arg(dir.join("trace")),
    );
    text.lines()
        .skip_while(|l| !l.starts_with("  library functions:"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .filter_map(|l| l.trim().split_once("  "))
        .map(|(name, module)| (name.to_string(), module.trim().to_string()))
        .collect()
}

fn defined_in<'a>(functions: &'a [(String, String)], name: &str) -> &'a str {
    functions
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("no {name} in {functions:?}"))
}

/// `ftail info` names the module that defines each library function,
/// not the module that calls it: libc's functions, libstdc++'s, and a
/// function linked into the program itself.
#[test]
fn info_names_the_module_that_defines_each_library_function() {
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], &fixture("libcall.c"));
        record(dir.path(), &exe, &["five"], &[]);
        let functions = info_library_functions(dir.path());
        for f in ["strlen", "malloc", "puts", "free", "qsort"] {
            let m = defined_in(&functions, f);
            assert!(m.ends_with("/libc.so.6"), "{cc} {f}: {m}");
        }
        // From libc_nonshared.a, linked into the program.
        let m = defined_in(&functions, "atexit");
        let exe = std::fs::canonicalize(&exe).unwrap();
        assert_eq!(Path::new(m), exe, "{cc}");
    }
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        let dir = scratch();
        let exe = dir.path().join("throw");
        run_ok(
            ftail_cc(cxx)
                .args(["-O2", "-o"])
                .arg(&exe)
                .arg(fixture("throw.cc")),
        );
        record(dir.path(), &exe, &[], &[]);
        let functions = info_library_functions(dir.path());
        let m = defined_in(&functions, "__cxa_throw");
        assert!(m.ends_with("/libstdc++.so.6"), "{cxx}: {m}");
        let m = defined_in(&functions, "printf");
        assert!(m.ends_with("/libc.so.6"), "{cxx}: {m}");
    }
}

/// How many times each function is entered in the trace at `tdir`.
fn entry_counts(tdir: &Path) -> std::collections::HashMap<String, u64> {
    use ftail_abi::trace::EventKind;
    let t = ftail_trace::trace::open(tdir).unwrap();
    let mut counts = std::collections::HashMap::new();
    for p in &t.processes {
        let syms = ftail_trace::trace::Symbols::load(p);
        for th in &p.threads {
            assert!(th.balance().is_balanced(), "tid {}", th.tid);
            for e in th
                .events
                .iter()
                .filter(|e| e.kind() == Some(EventKind::Entry))
            {
                *counts.entry(syms.name(e.addr(), e.tsc)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// `ftail ctl` switches library functions by name in a running program,
/// as it does the program's own: `-N printf` stops recording printf's
/// calls until `-N ''`, and `-F` keeps only the library functions it
/// names.
#[test]
fn ftail_ctl_filters_apply_to_library_functions() {
    use std::io::Write;
    for cc in compilers() {
        let dir = scratch();
        let exe = build(
            dir.path(),
            cc,
            &["-O2"],
            &repo().join("tests/runtime/ctlwait.c"),
        );
        let tdir = dir.path().join("trace");
        let (mut child, mut stdin, mut lines, pid) = record_with_ctl(&exe, &tdir);
        let ctl = |args: &[&str]| ctl_once_listening(&pid, args);
        let mut round = |n: u32| {
            writeln!(stdin, "{n}").unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), format!("done {n}"));
        };
        round(1); // everything
        let state = ctl(&["-N", "printf"]);
        assert!(state.contains("exclude=printf "), "{cc}: {state}");
        round(2); // all but printf
        let state = ctl(&["-N", ""]);
        assert!(state.contains("exclude= "), "{cc}: {state}");
        round(3); // everything again
        let state = ctl(&["-F", "alpha", "-F", "fflush"]);
        assert!(state.contains("filter=alpha,fflush "), "{cc}: {state}");
        round(4); // alpha and fflush only
        drop(stdin);
        assert!(child.wait().unwrap().success(), "{cc}");
        let counts = entry_counts(&tdir);
        let count = |f: &str| counts.get(f).copied().unwrap_or(0);
        // printf: the pid, rounds 1 and 3.
        assert_eq!(count("printf"), 3, "{cc}: {counts:?}");
        // fflush: the pid, and every round.
        assert_eq!(count("fflush"), 5, "{cc}: {counts:?}");
        assert_eq!(count("alpha"), 4, "{cc}: {counts:?}");
        assert_eq!(count("beta"), 3, "{cc}: {counts:?}");
    }
}

/// Runs `check` on `libcall.c` built by each compiler at -O0 and -O2.
fn each_build(check: impl Fn(&str, &Path, &Path)) {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("libcall.c"));
            check(&format!("{cc} {opt}"), dir.path(), &exe);
        }
    }
}

/// The lines between `open` and the line that closes it.
fn inside<'a>(lines: &'a [String], open: &str, close: &str) -> &'a [String] {
    let at = position(lines, open);
    let end = at + position(&lines[at..], close);
    &lines[at + 1..end]
}

/// bsearch's comparator nests under bsearch. (At -O2 glibc's header
/// inlines bsearch into the program: the comparator is then called by
/// main itself.)
#[test]
fn bsearch_callbacks_nest_under_bsearch() {
    each_build(|what, dir, exe| {
        record(dir, exe, &["bsearch"], &[]);
        let lines = calls(dir, &[]);
        let cmps = |ls: &[String], indent: &str| {
            ls.iter()
                .filter(|l| **l == format!("{indent}cmp();"))
                .count()
        };
        if lines.iter().any(|l| l == "  bsearch() {") {
            let under = inside(&lines, "  bsearch() {", "  } /* bsearch */");
            assert_eq!(cmps(under, "    "), 3, "{what}:\n{}", lines.join("\n"));
        } else {
            assert!(what.ends_with("-O2"), "{what}:\n{}", lines.join("\n"));
            assert_eq!(cmps(&lines, "  "), 3, "{what}:\n{}", lines.join("\n"));
        }
        position(&lines, "  printf();");
    });
}

/// pthread_once runs its routine, nested under it, the first time only.
#[test]
fn pthread_once_nests_its_routine_the_first_time() {
    each_build(|what, dir, exe| {
        record(dir, exe, &["once"], &[]);
        let lines = calls(dir, &[]);
        assert_eq!(
            lines,
            [
                "main() {",
                "  pthread_once() {",
                "    init_once();",
                "  } /* pthread_once */",
                "  pthread_once();",
                "  printf();",
                "} /* main */"
            ],
            "{what}"
        );
    });
}

/// A siglongjmp out of qsort's callback closes the callback, siglongjmp
/// and qsort as unwound; sigsetjmp returns twice, recorded once.
#[test]
fn a_siglongjmp_out_of_a_callback_unwinds_the_library_call() {
    each_build(|what, dir, exe| {
        record(dir, exe, &["siglongjmp"], &[]);
        let lines = calls(dir, &[]);
        let set = lines
            .iter()
            .filter(|l| l.trim() == "__sigsetjmp();")
            .count();
        assert_eq!(set, 1, "{what}:\n{}", lines.join("\n"));
        let under = inside(&lines, "  qsort() {", "  } /* qsort (unwound) */");
        assert_eq!(
            under.last().map(String::as_str),
            Some("    } /* sigcmp (unwound) */"),
            "{what}:\n{}",
            lines.join("\n")
        );
        position(&lines, "      } /* siglongjmp (unwound) */");
        let next = position(&lines, "  say() {");
        assert!(
            position(&lines, "  } /* qsort (unwound) */") < next,
            "{what}"
        );
    });
}

/// A signal delivered inside a library call (raise) runs its handler,
/// which calls the program back, nested under that call.
#[test]
fn a_signal_handler_nests_under_the_library_call_it_interrupts() {
    each_build(|what, dir, exe| {
        record(dir, exe, &["signal"], &[]);
        let lines = calls(dir, &[]);
        assert_eq!(
            inside(&lines, "  raise() {", "  } /* raise */"),
            [
                "    on_signal() {",
                "      handled();",
                "    } /* on_signal */"
            ],
            "{what}:\n{}",
            lines.join("\n")
        );
        position(&lines, "  sigaction();");
    });
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| l.trim() == line).count()
}

/// C++: the comparator std::sort calls and the function a std::function
/// holds (both compiled into the program) are traced, operator new and
/// delete, a std:: function compiled into libstdc++ and the `__cxa_*`
/// functions are named, and an exception through a frame with a cleanup
/// closes `_Unwind_Resume` as unwound, nested in that frame.
#[test]
fn cxx_library_calls_are_named_and_unwind() {
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        for opt in ["-O0", "-O2"] {
            let what = format!("{cxx} {opt}");
            let dir = scratch();
            let exe = dir.path().join("cxx");
            run_ok(
                ftail_cc(cxx)
                    .args([opt, "-o"])
                    .arg(&exe)
                    .arg(fixture("cxx.cc")),
            );
            record(dir.path(), &exe, &[], &[]);
            let lines = calls(dir.path(), &[]);
            let all = lines.join("\n");
            assert_eq!(count(&lines, "less();"), 4, "{what}:\n{all}");
            assert_eq!(count(&lines, "twice();"), 1, "{what}:\n{all}");
            if opt == "-O0" {
                // Not inlined: the comparator nests under std::sort.
                let sort = lines
                    .iter()
                    .position(|l| l.starts_with("  std::sort<"))
                    .unwrap_or_else(|| panic!("{what}:\n{all}"));
                let end = sort + position(&lines[sort..], "  } /* std::sort<__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, bool (*)(int, int)> */");
                let inner = lines[sort..end].iter().filter(|l| l.trim() == "less();");
                assert_eq!(inner.count(), 4, "{what}:\n{all}");
            }
            assert!(count(&lines, "operator new();") >= 1, "{what}:\n{all}");
            assert!(count(&lines, "operator delete();") >= 1, "{what}:\n{all}");
            assert_eq!(
                count(&lines, "std::chrono::_V2::steady_clock::now();"),
                1,
                "{what}:\n{all}"
            );
            for (line, n) in [
                ("__cxa_allocate_exception();", 1),
                ("} /* __cxa_throw (unwound) */", 1),
                ("__cxa_begin_catch();", 1),
                ("__cxa_end_catch();", 1),
                ("} /* catcher */", 2),
            ] {
                assert_eq!(count(&lines, line), n, "{what} {line}:\n{all}");
            }
            // The cleanup runs in with_cleanup's frame, then goes on.
            let thrown = position(&lines, "      } /* thrower (unwound) */");
            let resume = position(&lines, "      _Unwind_Resume() {");
            let left = position(&lines, "    } /* with_cleanup (unwound) */");
            assert!(thrown < resume && resume < left, "{what}:\n{all}");
            assert_eq!(
                lines[resume + 1],
                "      } /* _Unwind_Resume (unwound) */",
                "{what}:\n{all}"
            );
        }
    }
}

/// `-static-libstdc++ -static-libgcc`: libstdc++'s functions and the
/// unwinder are the program's own code, without tables. Their calls are
/// library calls of the program itself, and an exception thrown through
/// their thunks is unwound by the program's own unwinder, which must
/// know the thunks too: the program runs as it does untraced.
#[test]
fn static_libstdcxx_and_libgcc_builds_throw_as_untraced() {
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        let dir = scratch();
        let exe = dir.path().join("cxx");
        run_ok(
            ftail_cc(cxx)
                .args(["-O2", "-static-libstdc++", "-static-libgcc", "-o"])
                .arg(&exe)
                .arg(fixture("cxx.cc")),
        );
        record(dir.path(), &exe, &[], &[]);
        let lines = calls(dir.path(), &[]);
        let all = lines.join("\n");
        assert_eq!(count(&lines, "less();"), 4, "{cxx}:\n{all}");
        assert_eq!(
            count(&lines, "} /* __cxa_throw (unwound) */"),
            1,
            "{cxx}:\n{all}"
        );
        assert_eq!(count(&lines, "__cxa_begin_catch();"), 1, "{cxx}:\n{all}");
        assert_eq!(count(&lines, "} /* catcher */"), 2, "{cxx}:\n{all}");
    }
}

/// A `-fPIC` shared library built with ftail calls out to libc, linked
/// into the program or loaded with dlopen: its library calls are
/// recorded and named, and its call to a function of another module
/// with tables is recorded once, by that function.
#[test]
fn shared_and_dlopened_libraries_record_their_library_calls() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let what = format!("{cc} {opt}");
            let dir = scratch();
            for lib in ["liblen.so", "libplug.so"] {
                run_ok(
                    ftail_cc(cc)
                        .args([opt, "-fPIC", "-shared", "-o"])
                        .arg(dir.path().join(lib))
                        .arg(fixture("plugin.c")),
                );
            }
            let exe = dir.path().join("main");
            run_ok(
                ftail_cc(cc)
                    .args([opt, "-o"])
                    .arg(&exe)
                    .arg(fixture("plugin_main.c"))
                    .arg("-L")
                    .arg(dir.path())
                    .arg(format!("-Wl,-rpath,{}", dir.path().display()))
                    .args(["-llen", "-ldl"]),
            );
            let plug = dir.path().join("libplug.so");
            record(dir.path(), &exe, &[plug.to_str().unwrap()], &[]);
            assert_eq!(
                calls(dir.path(), &[]),
                [
                    "main() {",
                    "  lib_len() {",
                    "    strlen();",
                    "  } /* lib_len */",
                    "  plug_run() {",
                    "    lib_len() {",
                    "      strlen();",
                    "    } /* lib_len */",
                    "    printf();",
                    "  } /* plug_run */",
                    "  dlclose();",
                    "  printf();",
                    "} /* main */"
                ],
                "{what}"
            );
            let functions = info_library_functions(dir.path());
            for f in ["strlen", "printf", "dlclose"] {
                let m = defined_in(&functions, f);
                assert!(m.ends_with("/libc.so.6"), "{what} {f}: {m}");
            }
        }
    }
}

/// Indirect calls (`call *%reg`, `call *(%reg)`, `call *fp(%rip)`) into
/// libc: each call recorded once, nested under its caller, named by the
/// function the program took the address of (`strlen`, not the
/// implementation its IFUNC chose); the padded sites check out.
#[test]
fn indirect_calls_into_libc_are_recorded_once_each() {
    for cc in compilers() {
        for flags in [&["-O0"][..], &["-O2"], &["-O0", "-fno-plt"]] {
            let dir = scratch();
            let exe = build(dir.path(), cc, flags, &fixture("indirect.c"));
            let (ok, report) = sites(&exe);
            assert!(ok && report.contains(" 0 mismatches"), "{report}");
            record(dir.path(), &exe, &["table"], &[]);
            let mut want = vec!["main() {", "  table() {"];
            for _ in 0..3 {
                want.extend(["    strlen();", "    puts();"]);
            }
            want.extend(["  } /* table */", "  printf();", "} /* main */"]);
            assert_eq!(calls(dir.path(), &[]), want, "{cc} {flags:?}");
        }
    }
}

/// A pointer from `dlsym` into a library loaded with `dlopen` (libm):
/// named from the library's symbols when the trace is read.
#[test]
fn a_function_found_by_dlsym_is_recorded_through_its_pointer() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("indirect.c"));
            record(dir.path(), &exe, &["dlsym"], &[]);
            assert_eq!(
                calls(dir.path(), &[]),
                [
                    "main() {",
                    "  through_dlsym() {",
                    "    cbrt();",
                    "  } /* through_dlsym */",
                    "  printf();",
                    "} /* main */"
                ],
                "{cc} {opt}"
            );
        }
    }
}

/// A pointer to the program's own instrumented function: its own entry
/// records each call, once.
#[test]
fn an_indirect_call_of_an_instrumented_function_counts_once() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("indirect.c"));
            record(dir.path(), &exe, &["own"], &[]);
            assert_eq!(
                calls(dir.path(), &[]),
                [
                    "main() {",
                    "  own_pointer() {",
                    "    twice();",
                    "    twice();",
                    "    twice();",
                    "  } /* own_pointer */",
                    "  printf();",
                    "} /* main */"
                ],
                "{cc} {opt}"
            );
        }
    }
}

#[test]
fn no_libcall_leaves_indirect_calls_alone() {
    let dir = scratch();
    let exe = build(dir.path(), "gcc", &["-O2"], &fixture("indirect.c"));
    record(dir.path(), &exe, &["table"], &["--no-libcall"]);
    assert_eq!(
        calls(dir.path(), &[]),
        ["main() {", "  table();", "} /* main */"]
    );
}

/// An exception thrown by a C++ function of a library built without
/// ftail, called through a pointer from `dlsym`, unwinds through the
/// indirect call's thunk into the program's handler; the call closes as
/// unwound and every thread stays balanced.
#[test]
fn an_exception_from_an_indirect_library_call_unwinds_through_it() {
    for cxx in ["g++", "clang++-19"].into_iter().filter(|c| have(c)) {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let lib = dir.path().join("libthrow.so");
            run_ok(
                Command::new("g++")
                    .args(["-O2", "-shared", "-fPIC", "-o"])
                    .arg(&lib)
                    .arg(fixture("indirect_throw_lib.cc")),
            );
            let exe = dir.path().join("throw");
            run_ok(
                ftail_cc(cxx)
                    .args([opt, "-o"])
                    .arg(&exe)
                    .arg(fixture("indirect_throw.cc")),
            );
            record(dir.path(), &exe, &[lib.to_str().unwrap()], &[]);
            let lines = calls(dir.path(), &[]);
            let count = |want: &str| lines.iter().filter(|l| l.trim() == want).count();
            assert_eq!(
                count("lib_throw();"),
                1,
                "{cxx} {opt}:\n{}",
                lines.join("\n")
            );
            assert_eq!(
                count("} /* lib_throw (unwound) */"),
                2,
                "{cxx} {opt}:\n{}",
                lines.join("\n")
            );
            assert_eq!(
                count("} /* catcher */"),
                3,
                "{cxx} {opt}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// The lines of the (one-thread) process of `t` whose last argument is
/// `arg`.
fn process_calls(dir: &Path, t: &Trace, arg: &str) -> Vec<String> {
    let p = t
        .processes
        .iter()
        .find(|p| p.args().last().is_some_and(|a| a == arg))
        .unwrap_or_else(|| panic!("no process {arg}"));
    calls(dir, &["--tid", &p.threads[0].tid.to_string()])
}

/// A `vfork` child borrows its parent's memory and thread: its calls
/// (`child`, `getpid`, `_exit`, `execl`) stay out of the parent's trace,
/// the `vfork` call closes in the parent with its duration, and a child
/// that execs an instrumented program starts a trace of its own.
#[test]
fn a_vfork_child_leaves_its_parents_trace_alone() {
    each_build(|what, dir, exe| {
        for how in ["vfork", "vforkexec"] {
            let t = record(dir, exe, &[how], &[]);
            let parent = process_calls(dir, &t, how);
            let close = if parent.contains(&"  } /* say (tail call) */".to_string()) {
                "  } /* say (tail call) */"
            } else {
                "  } /* say */"
            };
            assert_eq!(
                parent,
                [
                    "main() {",
                    "  fflush();",
                    "  vfork();",
                    "  waitpid();",
                    "  say() {",
                    "    puts();",
                    close,
                    "} /* main */"
                ],
                "{what} {how}"
            );
            if how == "vfork" {
                assert_eq!(t.processes.len(), 1, "{what}");
                continue;
            }
            assert_eq!(t.processes.len(), 2, "{what}: the image after exec");
            let image = process_calls(dir, &t, "five");
            assert_eq!(
                image.first().map(String::as_str),
                Some("main() {"),
                "{what}"
            );
            assert_eq!(
                image.last().map(String::as_str),
                Some("} /* main */"),
                "{what}"
            );
            position(&image, "  copy() {");
            assert!(
                !image
                    .iter()
                    .any(|l| l.contains("child") || l.contains("vfork")),
                "{what}:\n{}",
                image.join("\n")
            );
        }
    });
}

/// `-N` and `-F` at record time name library functions reached through
/// a pointer by the GOT slot the program took the pointer from, as they
/// name those called through the PLT.
#[test]
fn record_filters_apply_to_indirect_library_calls() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("indirect.c"));
            record(dir.path(), &exe, &["table"], &["-N", "strlen"]);
            let mut want = vec!["main() {", "  table() {"];
            want.extend(["    puts();"; 3]);
            want.extend(["  } /* table */", "  printf();", "} /* main */"]);
            assert_eq!(calls(dir.path(), &[]), want, "{cc} {opt} -N strlen");

            record(dir.path(), &exe, &["table"], &["-F", "table", "-F", "str*"]);
            let mut want = vec!["table() {"];
            want.extend(["  strlen();"; 3]);
            want.push("} /* table */");
            assert_eq!(calls(dir.path(), &[]), want, "{cc} {opt} -F table -F str*");
        }
    }
}

/// `ftail ctl` switches library functions reached through a pointer by
/// name in a running program: `-N strlen` stops recording strlen's calls
/// until `-N ''`, and `-F labs` keeps only labs.
#[test]
fn ftail_ctl_filters_apply_to_indirect_library_calls() {
    use std::io::Write;
    for cc in compilers() {
        let dir = scratch();
        let exe = build(dir.path(), cc, &["-O2"], &fixture("indirect_ctl.c"));
        let tdir = dir.path().join("trace");
        let (mut child, mut stdin, mut lines, pid) = record_with_ctl(&exe, &tdir);
        let ctl = |args: &[&str]| ctl_once_listening(&pid, args);
        let mut round = |n: u32| {
            writeln!(stdin, "{n}").unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), format!("done {n}"));
        };
        round(1); // everything
        ctl(&["-N", "strlen"]);
        round(2); // all but strlen
        ctl(&["-N", ""]);
        round(3); // everything again
        ctl(&["-F", "labs"]);
        round(4); // labs only
        drop(stdin);
        assert!(child.wait().unwrap().success(), "{cc}");
        let counts = entry_counts(&tdir);
        let count = |f: &str| counts.get(f).copied().unwrap_or(0);
        assert_eq!(count("strlen"), 2, "{cc}: {counts:?}");
        assert_eq!(count("labs"), 4, "{cc}: {counts:?}");
        assert_eq!(count("round_of_calls"), 3, "{cc}: {counts:?}");
    }
}

/// A function that returns twice (`setjmp`, `_setjmp`, `__sigsetjmp`),
/// called through a pointer: recorded as a call that returns at once,
/// and the `longjmp` back to it leaves the trace balanced.
#[test]
fn setjmp_through_a_pointer_is_recorded_as_a_call_that_returns_at_once() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let exe = build(dir.path(), cc, &[opt], &fixture("indirect.c"));
            for (how, name, jump) in [
                ("setjmp", "setjmp", "longjmp"),
                ("_setjmp", "_setjmp", "longjmp"),
                ("sigsetjmp", "__sigsetjmp", "siglongjmp"),
            ] {
                record(dir.path(), &exe, &[how], &[]);
                assert_eq!(
                    calls(dir.path(), &[]),
                    [
                        "main() {".to_string(),
                        "  through_setjmp() {".into(),
                        format!("    {name}();"),
                        "    jump_back() {".into(),
                        format!("      {jump}() {{"),
                        format!("      }} /* {jump} (unwound) */"),
                        "    } /* jump_back (unwound) */".into(),
                        "  } /* through_setjmp */".into(),
                        "  printf();".into(),
                        "} /* main */".into(),
                    ],
                    "{cc} {opt} {how}"
                );
            }
        }
    }
}

/// Indirect calls longer than 5 bytes (`call *0x88(%reg)`, a vtable slot
/// past the 16th, into a library built without ftail) are left as they
/// are: the program runs as untraced, its sites verify, its trace is
/// balanced; the same call made through a register (at -O0, or through
/// a table indexed in registers) is recorded, and a pointer to the
/// program's own function counts once.
#[test]
fn indirect_calls_longer_than_five_bytes_are_left_as_they_are() {
    for cc in compilers() {
        for opt in ["-O0", "-O2"] {
            let dir = scratch();
            let lib = dir.path().join("libops.so");
            run_ok(
                Command::new("gcc")
                    .args(["-O2", "-shared", "-fPIC", "-o"])
                    .arg(&lib)
                    .arg(fixture("long_indirect_lib.c")),
            );
            let exe = dir.path().join("long");
            run_ok(
                ftail_cc(cc)
                    .args([opt, "-o"])
                    .arg(&exe)
                    .arg(fixture("long_indirect.c"))
                    .arg(format!("-L{}", dir.path().display()))
                    .arg("-lops")
                    .arg(format!("-Wl,-rpath,{}", dir.path().display())),
            );
            let (ok, report) = sites(&exe);
            assert!(ok && report.contains(" 0 mismatches"), "{report}");
            record(dir.path(), &exe, &[], &[]);
            let slot: &[&str] = if opt == "-O0" {
                // Loaded into a register first: `call *%reg`.
                &[
                    "  through_slot() {",
                    "    op17();",
                    "  } /* through_slot */",
                ]
            } else {
                // `call *0x88(%reg)`: six bytes, left as it is.
                &["  through_slot();"]
            };
            let mut want = vec!["main() {", "  lib_ops();"];
            want.extend(slot);
            want.extend([
                "  through_table() {",
                "    op17();",
                "  } /* through_table */",
                "  through_table() {",
                "    own();",
                "  } /* through_table */",
                "  printf();",
                "} /* main */",
            ]);
            assert_eq!(calls(dir.path(), &[]), want, "{cc} {opt}");
        }
    }
}

/// `ftail record --ctl` of `exe` into `tdir`, its standard input and
/// output piped: the child, its input, its output's lines after the
/// first, and that first line (the program's pid).
fn record_with_ctl(
    exe: &Path,
    tdir: &Path,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(ftail())
        .args(["record", "--no-sched", "--ctl", "-d"])
        .arg(tdir)
        .arg("--")
        .arg(exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap();
    (child, stdin, lines, pid)
}
