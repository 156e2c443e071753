//! `ftail record`: run a program with the runtime preloaded.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Environment variable naming the runtime library explicitly.
pub const RUNTIME_ENV: &str = "FTAIL_RUNTIME";
const RUNTIME_NAME: &str = "libftail_runtime.so";

/// Options of `ftail record`.
pub struct RecordOptions {
    /// Trace directory.
    pub dir: PathBuf,
    /// Include globs.
    pub filter: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
    /// Maximum recorded depth.
    pub depth: Option<u64>,
    /// Tail strategy asked for.
    pub tail: String,
    /// Events per thread buffer.
    pub buffer_events: Option<u64>,
    /// Start with tracing off.
    pub off: bool,
    /// Start the control agent.
    pub ctl: bool,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

/// Runs the program; returns its exit status as ours.
pub fn run(o: RecordOptions) -> Result<i32> {
    let Some((program, args)) = o.command.split_first() else {
        bail!("no program to record; usage: ftail record [OPTIONS] -- PROGRAM [ARGS...]");
    };
    let runtime = find_runtime()?;
    let created = crate::trace_dir::prepare(&o.dir)?;
    let dir = o
        .dir
        .canonicalize()
        .with_context(|| format!("{}", o.dir.display()))?;
    let mut preload = runtime.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env("FTAIL_DIR", &dir)
        .env("FTAIL_FILTER", o.filter.join(","))
        .env("FTAIL_EXCLUDE", o.exclude.join(","))
        .env("FTAIL_TAIL", &o.tail);
    if let Some(d) = o.depth {
        cmd.env("FTAIL_DEPTH", d.to_string());
    }
    if o.off {
        cmd.env("FTAIL_OFF", "1");
    }
    if o.ctl || o.off {
        cmd.env("FTAIL_CTL", "1");
    }
    if let Some(n) = o.buffer_events {
        cmd.env("FTAIL_BUFFER_EVENTS", n.to_string());
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            // Nothing ran: leave no empty trace directory behind.
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e).with_context(|| format!("running {}", program.to_string_lossy()));
        }
    };
    crate::out::stderr(&format!("ftail: trace written to {}", o.dir.display()));
    Ok(crate::exit_code(status))
}

/// The runtime library: `$FTAIL_RUNTIME`, or next to the `ftail` binary,
/// or in `../lib` or `../lib/ftail` relative to it; failing those, the copy
/// built into `ftail`, written to the user's cache directory.
pub fn find_runtime() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(RUNTIME_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding the ftail executable")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join(RUNTIME_NAME),
        dir.join("../lib").join(RUNTIME_NAME),
        dir.join("../lib/ftail").join(RUNTIME_NAME),
        dir.join("deps").join(RUNTIME_NAME),
        dir.join("..").join(RUNTIME_NAME),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    embedded_runtime()
}

/// The runtime library built into this binary (see build.rs).
const EMBEDDED_RUNTIME: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libftail_runtime.so"));

/// Writes the embedded runtime to `$XDG_CACHE_HOME/ftail` (or
/// `~/.cache/ftail`) under a name that changes with its contents, once.
fn embedded_runtime() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no cache directory for the runtime library (set HOME or XDG_CACHE_HOME)")?
        .join("ftail");
    // FNV-1a: a name per build of the runtime, not a security measure.
    let hash = EMBEDDED_RUNTIME
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let path = cache.join(format!("libftail_runtime-{hash:016x}.so"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = cache.join(format!(".libftail_runtime-{}.tmp", std::process::id()));
    std::fs::write(&tmp, EMBEDDED_RUNTIME).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
