//! `ftail as`: the assembler that `ftail cc` puts first on the compiler's
//! program path. It rewrites compiler-generated assembly and hands the
//! result, with the original arguments, to the real assembler.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ftail_instrument::{rewrite, Outcome};

/// Assembler options that take their value as the next argument.
const OPTIONS_WITH_VALUE: &[&str] = &["-o", "-I", "--defsym", "-MD", "--debug-prefix-map"];

/// Environment variable that makes `ftail as` report what it left out.
pub const VERBOSE_ENV: &str = "FTAIL_VERBOSE";
/// Environment variable naming the real assembler.
pub const REAL_AS_ENV: &str = "FTAIL_AS";

/// Runs `ftail as ARGS` and returns the assembler's exit code.
pub fn run(args: Vec<OsString>) -> Result<i32> {
    let verbose = std::env::var_os(VERBOSE_ENV).is_some_and(|v| v != "0" && !v.is_empty());
    let mut args: Vec<OsString> = args;
    if let Some(i) = args.iter().position(|a| a == "--ftail-verbose") {
        args.remove(i);
        return run_with(args, true);
    }
    run_with(args, verbose)
}

fn run_with(mut args: Vec<OsString>, verbose: bool) -> Result<i32> {
    let inputs = input_positions(&args);
    // Rewritten files live until the assembler has run.
    let mut temps = Vec::new();
    if inputs.is_empty() || inputs.iter().any(|&i| args[i] == "-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading assembly from standard input")?;
        let temp = instrument_to_temp(&text, Path::new("<stdin>"), verbose)?;
        match inputs.iter().find(|&&i| args[i] == "-") {
            Some(&i) => args[i] = temp.path().into(),
            None => args.push(temp.path().into()),
        }
        temps.push(temp);
    }
    for &i in &inputs {
        if args[i] == "-" {
            continue;
        }
        let path = PathBuf::from(&args[i]);
        // Unreadable or non-UTF-8 input goes to the assembler as it is, which
        // then reports the problem in its own words.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let temp = instrument_to_temp(&text, &path, verbose)?;
        args[i] = temp.path().into();
        temps.push(temp);
    }
    let real = real_assembler()?;
    let status = Command::new(&real)
        .args(&args)
        .status()
        .with_context(|| format!("running the assembler {}", real.display()))?;
    drop(temps);
    Ok(crate::exit_code(status))
}

/// Positions of the input files among the assembler's arguments.
fn input_positions(args: &[OsString]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if OPTIONS_WITH_VALUE.contains(&a.as_ref()) {
            i += 2;
            continue;
        }
        if a == "-" || !a.starts_with('-') {
            out.push(i);
        }
        i += 1;
    }
    out
}

/// Rewrites `text` (read from `path`, which messages name) into a
/// temporary file that lives as long as the returned handle.
pub fn instrument_to_temp(
    text: &str,
    path: &Path,
    verbose: bool,
) -> Result<tempfile::NamedTempFile> {
    let rewritten = rewrite(text).with_context(|| format!("{}", path.display()))?;
    if verbose {
        report(path, &rewritten);
    }
    let mut temp = tempfile::Builder::new()
        .prefix("ftail-")
        .suffix(".s")
        .tempfile()
        .context("creating a temporary file for the rewritten assembly")?;
    temp.write_all(rewritten.text.as_bytes())
        .and_then(|()| temp.flush())
        .context("writing the rewritten assembly")?;
    Ok(temp)
}

fn report(path: &Path, r: &ftail_instrument::Rewritten) {
    let p = path.display();
    let summary = match r.outcome {
        Outcome::NotCompilerOutput => {
            "not gcc, clang or rustc output, passed through unchanged".into()
        }
        Outcome::AlreadyInstrumented => "already instrumented, passed through unchanged".into(),
        Outcome::Instrumented(_) => {
            let s = &r.stats;
            format!(
                "{} functions instrumented, {} skipped; {} exits, {} tails",
                s.instrumented,
                s.skipped,
                s.exits,
                s.tails_direct + s.tails_conditional + s.tails_indirect + s.tails_retpoline
            )
        }
    };
    crate::out::stderr(&format!("ftail: note: {p}: {summary}"));
    for n in &r.notes {
        crate::out::stderr(&format!("ftail: note: {p}: {n}"));
    }
}

/// The real assembler: `$FTAIL_AS`, or the first `as` on `PATH` that is not
/// this program.
fn real_assembler() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(REAL_AS_ENV) {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(OsStr::new("as"));
        let Ok(canon) = cand.canonicalize() else {
            continue;
        };
        if Some(&canon) != me.as_ref() && is_executable(&canon) {
            return Ok(cand);
        }
    }
    bail!("no assembler `as` found on PATH (install binutils, or set {REAL_AS_ENV})")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_inputs_among_assembler_arguments() {
        assert_eq!(
            input_positions(&os(&["--64", "-o", "x.o", "/tmp/x.s"])),
            vec![3]
        );
        assert_eq!(
            input_positions(&os(&["--64", "-o", "x.o"])),
            Vec::<usize>::new()
        );
        assert_eq!(
            input_positions(&os(&["-I", "inc", "--gdwarf-5", "a.s", "-", "b.s"])),
            vec![3, 4, 5]
        );
    }
}
