//! The `ftail` command: glue over the ftail crates.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod analyze;
mod argspec;
mod as_shim;
mod attach;
mod cargo;
mod cc;
mod cc_lto;
mod ctl;
mod drain;
mod export;
mod out;
mod peer;
mod private_dir;
mod progress;
mod record;
mod sched;
mod sites;
mod trace_dir;
mod watch;

/// Function-graph tracer for native x86-64 programs.
#[derive(Parser)]
#[command(name = "ftail", version, about, long_about = None, term_width = 79)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile with ftail's sites placed (a compiler launcher)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  ftail cc gcc -O2 -c foo.c\n  \
                      CC=\"ftail cc\" make\n  CC=\"ftail cc clang-19\" ./configure\n  \
                      cmake -DCMAKE_C_COMPILER_LAUNCHER=\"ftail;cc\" ..."
    )]
    Cc {
        /// [COMPILER] ARGS…: the compiler (default $FTAIL_CC or cc) and
        /// its arguments, passed on unchanged
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build Rust crates with ftail's sites placed (cargo, on stable Rust)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  ftail cargo build --release\n  ftail cargo test\n\n\
                      Every crate cargo compiles carries sites but the standard library\n\
                      (prebuilt), build scripts and proc macros. LTO is refused.\n\
                      Artifacts get their own hashes: target/debug/deps/NAME-HASH."
    )]
    Cargo {
        /// The cargo command and its arguments, passed on unchanged
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Rewrite compiler assembly, then run the real assembler
    #[command(disable_help_flag = true)]
    As {
        /// The assembler's arguments, passed on unchanged
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run a program and record its function calls
    #[command(after_help = "Examples:\n  ftail record ./prog arg1\n  \
                            ftail record -d trace -F 'lua_*' -- ./lua script.lua")]
    Record {
        /// Trace directory (an existing one is kept as DIR.old)
        #[arg(short = 'd', long, default_value = "ftail.data")]
        dir: PathBuf,
        #[command(flatten)]
        how: record::RecordArgs,
        /// Attach to the running process PID (built with `ftail cc`) instead
        /// of starting a program; detach on Ctrl-C, SIGTERM, after
        /// --duration or when it ends
        #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with_all = ["off", "ctl"])]
        pid: Option<u32>,
        /// With -p: detach after SECS seconds (fractions allowed)
        #[arg(long, value_name = "SECS", requires = "pid", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// PROGRAM [ARGS…]
        #[arg(
            trailing_var_arg = true,
            required_unless_present = "pid",
            conflicts_with = "pid"
        )]
        command: Vec<OsString>,
    },
    /// Record a program into a temporary directory and replay it
    #[command(after_help = "Examples:\n  ftail live ./prog arg1\n  \
                            ftail live -F main -t 10us -- ./prog\n  \
                            ftail live -C malloc -f time,duration --no-pager -- ./prog")]
    Live {
        #[command(flatten)]
        how: record::RecordArgs,
        /// What of the trace replay shows (every replay option but -d
        /// and -F, -N, -D, which choose what is recorded)
        #[command(flatten)]
        show: analyze::ShowArgs,
        #[command(flatten)]
        shape: analyze::ReplayShape,
        /// PROGRAM [ARGS…]
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<OsString>,
    },
    /// Switch tracing of a running program on or off, or change its filters
    #[command(after_help = "The program must run under `ftail record --ctl` \
                            (or --off).\n\nExamples:\n  ftail ctl 4242 on\n  \
                            ftail ctl 4242 -F 'lua_*' -N lua_gettop\n  ftail ctl 4242 off\n  \
                            ftail ctl 4242 status\n  ftail ctl 4242 snapshot")]
    Ctl {
        /// Process id of the traced program
        pid: u32,
        /// on, off or status (after any filter change), or snapshot (copy
        /// the rings of `ftail record --ring` into DIR/snapshot-N)
        #[arg(value_parser = ["on", "off", "status", "snapshot"])]
        action: Option<String>,
        /// Trace only functions matching GLOB from now on (repeatable;
        /// '*' for all)
        #[arg(short = 'F', long = "filter", value_name = "GLOB")]
        filter: Vec<String>,
        /// Do not trace functions matching GLOB from now on (repeatable;
        /// '' for none)
        #[arg(short = 'N', long = "notrace", value_name = "GLOB")]
        exclude: Vec<String>,
    },
    /// Print a recorded trace as a call graph
    #[command(
        after_help = "Examples:\n  ftail replay\n  ftail replay -F main -D 3\n  \
                            ftail replay -F a -F c -D 1   (-D counts from each -F match)\n  \
                            ftail replay -C malloc   (the call paths to malloc)\n  \
                            ftail replay -H 'luaD_call*'   (hidden, their callees one level up)\n  \
                            ftail replay --match=regex -F '^luaM_'\n  \
                            ftail replay -t 10us --tid 4242 -f time,duration,tid\n  \
                            ftail replay -f +elapsed,addr   (added to duration,tid)\n  \
                            ftail replay -f none\n  \
                            ftail replay -N 'lua_*' --time-range 1ms~2ms\n  \
                            ftail replay -T 'luaV_execute@depth=2' -T 'luaC_*@notrace'   (record's triggers)\n  \
                            ftail replay --time-range 0.001234567~   (a time as -f time prints it)"
    )]
    Replay {
        #[command(flatten)]
        view: analyze::ViewArgs,
        #[command(flatten)]
        shape: analyze::ReplayShape,
    },
    /// Per function: calls, total, self, average, min and max time
    #[command(
        after_help = "Examples:\n  ftail report\n  ftail report -s self --threads\n  \
                            ftail report --diff before.data -d after.data\n  \
                            ftail report --args -F add   (a trace recorded with -A/-R/-a)\n  \
                            ftail report -f total,self,call   (uftrace's columns, in that order)\n  \
                            ftail report --task   (one row per thread)\n  \
                            ftail report --srcline   (main [prog.c:26])"
    )]
    Report {
        #[command(flatten)]
        view: analyze::ViewArgs,
        /// Columns, in the order given: total, self, call, total-avg,
        /// total-min, total-max, self-avg, off-cpu (avg, min, max for
        /// short), all or none; by default off-cpu follows the others
        /// where the trace has scheduler events
        #[arg(
            short = 'f',
            long = "output-fields",
            value_name = "FIELDS",
            default_value = analyze::DEFAULT_REPORT_FIELDS
        )]
        fields: String,
        /// Sort by total, self, calls, avg, min, max or name
        #[arg(short = 's', long, default_value = "total",
              value_parser = ["total", "self", "calls", "avg", "min", "max", "name"])]
        sort: String,
        /// One row per thread and function
        #[arg(long)]
        threads: bool,
        /// One row per thread, as uftrace's `report --task`: time inside
        /// its outermost calls, self time, calls, process, thread and
        /// its name
        #[arg(long, conflicts_with_all = ["diff", "args", "threads", "fields", "sort"])]
        task: bool,
        /// Each function's source file and line (from debug info), as
        /// `main [prog.c:26]`
        #[arg(long, conflicts_with = "diff")]
        srcline: bool,
        /// With values recorded (record -A/-R/-a): one row per function and
        /// distinct argument list, shown as replay shows a call,
        /// `add(1, 2) = 3`, with the return value its calls gave most
        /// often and, when they differ, `/* N of M calls; K values */`
        #[arg(long, conflicts_with = "diff")]
        args: bool,
        /// Durations without the time the thread spent off the CPU inside
        /// them (ftrace's nosleep-time), where the trace has scheduler
        /// events
        #[arg(long)]
        no_sleep_time: bool,
        /// Compare with a base trace, as uftrace does: per function, the
        /// figures of BASE_DIR (before) and of -d (after), and the change
        /// after - before relative to before (1 call then 3: +200.0%)
        #[arg(long, value_name = "BASE_DIR")]
        diff: Option<PathBuf>,
        /// Do not page the output on a terminal
        #[arg(long)]
        no_pager: bool,
    },
    /// The aggregated call tree: calls and total time per call path
    #[command(after_help = "Examples:\n  ftail graph\n  ftail graph main\n  \
                            ftail graph --callers 'lua_*'\n  \
                            ftail graph -C malloc   (only the paths that lead to malloc)\n  \
                            ftail graph -H 'luaD_call*' --match=glob\n  \
                            ftail graph -f total,self,addr   (uftrace's columns, in that order)\n  \
                            ftail graph --task   (the processes and their threads)\n  \
                            ftail graph --srcline")]
    Graph {
        #[command(flatten)]
        view: analyze::ViewArgs,
        /// Columns, in the order given: total, self (less the callees
        /// shown), call, addr, or none
        #[arg(
            short = 'f',
            long = "output-fields",
            value_name = "FIELDS",
            default_value = "total,call"
        )]
        fields: String,
        /// Only the tree under functions matching this glob
        #[arg(value_name = "FUNC")]
        func: Option<String>,
        /// The inverted tree: what calls functions matching this glob
        #[arg(long, value_name = "FUNC")]
        callers: Option<String>,
        /// The tree of processes (each under its parent) and their
        /// threads, as uftrace's `graph --task`: each thread's lifetime
        /// (first call to last return) and the time inside its calls
        #[arg(long, conflicts_with_all = ["func", "callers", "fields"])]
        task: bool,
        /// Each function's source file and line (from debug info), as
        /// `main [prog.c:26]`
        #[arg(long, conflicts_with = "task")]
        srcline: bool,
        /// Do not page the output on a terminal
        #[arg(long)]
        no_pager: bool,
    },
    /// Explore a trace interactively: call graph, a thread's timeline,
    /// report and info, switched by key (? lists the keys)
    #[command(
        after_help = "Examples:\n  ftail tui\n  ftail tui -d trace -F main -t 10us\n  \
                            ftail tui --tid 4242"
    )]
    Tui {
        #[command(flatten)]
        view: analyze::ViewArgs,
    },
    /// What a trace is: program, times, threads, modules, losses
    #[command(
        after_help = "Examples:\n  ftail info\n  ftail info -d trace\n  ftail info --events"
    )]
    Info {
        /// Trace directory
        #[arg(short = 'd', long, default_value = "ftail.data")]
        dir: PathBuf,
        /// Read every event: exact counts, and each process's duration
        /// (without it, a thread's events past its first MiB are
        /// estimated from its file's size, shown with ~)
        #[arg(long)]
        events: bool,
    },
    /// The raw events, or the trace for Perfetto, Chrome, speedscope
    #[command(
        after_help = "Examples:\n  ftail dump\n  ftail dump --tid 4242 --time-range ~1ms\n  \
                            ftail dump --perfetto -o trace.perfetto-trace\n  \
                            ftail dump --chrome -o trace.json --time-range 1ms~2ms\n  \
                            ftail dump --speedscope -o trace.speedscope.json\n  \
                            ftail dump --flame-graph | flamegraph.pl > flame.svg"
    )]
    Dump {
        #[command(flatten)]
        view: analyze::ViewArgs,
        #[command(flatten)]
        format: export::DumpArgs,
    },
    /// An interactive SVG flame graph, by self time or calls
    #[command(
        after_help = "Examples:\n  ftail flame\n  ftail flame -o out.svg -F parse\n  \
                            ftail flame --weight calls --tid 4242\n  \
                            ftail flame -d after.data --diff before.data -o diff.svg"
    )]
    Flame {
        #[command(flatten)]
        view: analyze::ViewArgs,
        #[command(flatten)]
        args: export::FlameArgs,
    },
    /// Write the calls as Parquet tables for SQL engines
    #[command(after_help = "Examples:\n  ftail export --parquet calls.pq\n  \
                            duckdb -c \"SELECT count(*) FROM 'calls.pq/calls/*/*.parquet'\"")]
    Export {
        #[command(flatten)]
        view: analyze::ViewArgs,
        /// Directory of the tables (calls, functions, threads)
        #[arg(long, value_name = "DIR", required = true)]
        parquet: PathBuf,
    },
    /// List and verify the sites of an executable or shared library
    #[command(after_help = "Examples:\n  ftail sites ./a.out\n  ftail sites --json libfoo.so")]
    Sites {
        /// The ELF file to inspect
        file: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// Print only the summary and problems, not every function
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() {
    let code = match ftail_main() {
        Ok(code) => code,
        // The reader went away (`ftail replay | head`): end quietly.
        Err(err) if err.downcast_ref::<out::ClosedPipe>().is_some() => 0,
        Err(err) => {
            // One line: context first, then each cause (`a: b: c`).
            out::stderr(&format!("ftail: error: {err:#}"));
            2
        }
    };
    std::process::exit(code);
}

fn ftail_main() -> Result<i32> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // Invoked through the shim's `as` link: act as the assembler.
    let argv0 = argv.first().cloned().unwrap_or_default();
    let name = PathBuf::from(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "as" || name.ends_with("-as") {
        return as_shim::run(argv.split_off(1));
    }
    if name == cargo::RUSTC_SHIM {
        return cargo::wrap_rustc(argv.split_off(1));
    }
    if name == cargo::LINK_SHIM {
        return cargo::link(argv.split_off(1));
    }
    match Cli::parse_from(argv).command {
        Cmd::Cc { args } => cc::run(args),
        Cmd::Cargo { args } => cargo::run(args),
        Cmd::As { args } => as_shim::run(args),
        Cmd::Sites { file, json, quiet } => sites::run(&file, json, quiet),
        Cmd::Record {
            dir,
            how,
            pid: Some(pid),
            duration,
            ..
        } => attach::record(pid, duration, how.options(dir, Vec::new())),
        Cmd::Record {
            dir, how, command, ..
        } => record::run(how.options(dir, command)),
        Cmd::Live {
            how,
            show,
            shape,
            command,
        } => record::live(how, show, shape, command),
        Cmd::Ctl {
            pid,
            action,
            filter,
            exclude,
        } => ctl::run(pid, action.as_deref(), &filter, &exclude),
        Cmd::Replay { view, shape } => analyze::replay(&view, &shape),
        Cmd::Report {
            view,
            task: true,
            no_pager,
            ..
        } => analyze::tasks(&view, analyze::TaskView::Report, no_pager),
        Cmd::Report {
            view,
            fields,
            sort,
            threads,
            args,
            srcline,
            no_sleep_time,
            diff,
            no_pager,
            ..
        } => {
            let shape = analyze::ReportShape {
                fields: &fields,
                sort: &sort,
                threads,
                values: args,
                srcline,
                no_sleep_time,
            };
            analyze::report(&view, shape, diff.as_deref(), no_pager)
        }
        Cmd::Graph {
            view,
            task: true,
            no_pager,
            ..
        } => analyze::tasks(&view, analyze::TaskView::Graph, no_pager),
        Cmd::Graph {
            view,
            fields,
            func,
            callers,
            srcline,
            no_pager,
            ..
        } => analyze::graph(
            &view,
            &fields,
            func.as_deref(),
            callers.as_deref(),
            srcline,
            no_pager,
        ),
        Cmd::Info { dir, events } => analyze::info(&dir, events),
        Cmd::Tui { view } => analyze::tui(&view),
        Cmd::Dump { view, format } => match export::dump(&view, &format)? {
            Some(code) => Ok(code),
            None => match &format.output {
                Some(out) => export::dump_text(&view, out),
                None => analyze::dump(&view),
            },
        },
        Cmd::Flame { view, args } => export::flame(&view, &args),
        Cmd::Export { view, parquet } => export::parquet(&view, &parquet),
    }
}

/// The exit code that reports `status` to our own caller.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Parses `--duration`: seconds, fractions allowed.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    text.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| "must be a number of seconds, more than 0".to_string())
}
