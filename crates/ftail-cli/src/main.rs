//! The `ftail` command: glue over the ftail crates.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod as_shim;
mod cc;
mod ctl;
mod out;
mod private_dir;
mod record;
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
        /// Trace only functions matching GLOB (repeatable)
        #[arg(short = 'F', long = "filter", value_name = "GLOB")]
        filter: Vec<String>,
        /// Do not trace functions matching GLOB (repeatable)
        #[arg(short = 'N', long = "notrace", value_name = "GLOB")]
        exclude: Vec<String>,
        /// Record calls only up to this depth (1 or more)
        #[arg(short = 'D', long, value_parser = record::parse_depth)]
        depth: Option<u64>,
        /// Tail-call strategy: mark, convert (per-site thunk), or auto
        /// (mark where the callee is traced, convert elsewhere)
        #[arg(long, default_value = "auto", value_parser = ["auto", "mark", "convert"])]
        tail: String,
        /// Events per thread buffer, 16 to 2^32 (16 bytes each; the
        /// default is 64 MiB)
        #[arg(long, value_name = "N", default_value_t = record::DEFAULT_BUFFER_EVENTS,
              value_parser = record::parse_buffer_events)]
        buffer_events: u64,
        /// Start with tracing off; switch it on with `ftail ctl PID on`
        /// (implies --ctl)
        #[arg(long)]
        off: bool,
        /// Let `ftail ctl` change tracing while the program runs (starts a
        /// control thread in the program)
        #[arg(long)]
        ctl: bool,
        /// PROGRAM [ARGS…]
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<OsString>,
    },
    /// Switch tracing of a running program on or off, or change its filters
    #[command(after_help = "The program must run under `ftail record --ctl` \
                            (or --off).\n\nExamples:\n  ftail ctl 4242 on\n  \
                            ftail ctl 4242 -F 'lua_*' -N lua_gettop\n  ftail ctl 4242 off\n  \
                            ftail ctl 4242 status")]
    Ctl {
        /// Process id of the traced program
        pid: u32,
        /// on, off or status (after any filter change)
        #[arg(value_parser = ["on", "off", "status"])]
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
    Replay {
        /// Trace directory
        #[arg(short = 'd', long, default_value = "ftail.data")]
        dir: PathBuf,
    },
    /// Per function: calls, total and self time
    Report {
        /// Trace directory
        #[arg(short = 'd', long, default_value = "ftail.data")]
        dir: PathBuf,
        /// Sort by total, self, calls or name
        #[arg(short = 's', long, default_value = "total",
              value_parser = ["total", "self", "calls", "name"])]
        sort: String,
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
    match Cli::parse_from(argv).command {
        Cmd::Cc { args } => cc::run(args),
        Cmd::As { args } => as_shim::run(args),
        Cmd::Sites { file, json, quiet } => sites::run(&file, json, quiet),
        Cmd::Record {
            dir,
            filter,
            exclude,
            depth,
            tail,
            buffer_events,
            off,
            ctl,
            command,
        } => record::run(record::RecordOptions {
            dir,
            filter,
            exclude,
            depth,
            tail,
            buffer_events,
            off,
            ctl,
            command,
        }),
        Cmd::Ctl {
            pid,
            action,
            filter,
            exclude,
        } => ctl::run(pid, action.as_deref(), &filter, &exclude),
        Cmd::Replay { dir } => replay(&dir),
        Cmd::Report { dir, sort } => report(&dir, &sort),
    }
}

fn replay(dir: &std::path::Path) -> Result<i32> {
    let trace = ftail_trace::trace::open(dir)?;
    out::stdout(&ftail_trace::replay::render(&trace))?;
    Ok(0)
}

fn report(dir: &std::path::Path, sort: &str) -> Result<i32> {
    use ftail_trace::report::SortKey;
    let trace = ftail_trace::trace::open(dir)?;
    let key = match sort {
        "self" => SortKey::SelfTime,
        "calls" => SortKey::Calls,
        "name" => SortKey::Name,
        _ => SortKey::Total,
    };
    out::stdout(&ftail_trace::report::render(&trace, key))?;
    Ok(0)
}

/// The exit code that reports `status` to our own caller.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
