//! The `ftail` command: glue over the ftail crates.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod as_shim;
mod cc;
mod sites;

/// Function-graph tracer for native x86-64 programs.
#[derive(Parser)]
#[command(name = "ftail", version, about, long_about = None)]
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
        Err(err) => {
            // One line: context first, then each cause (`a: b: c`).
            eprintln!("ftail: error: {err:#}");
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
    }
}

/// The exit code that reports `status` to our own caller.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
