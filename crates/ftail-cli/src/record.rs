//! `ftail record`: run a program with the runtime preloaded.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ftail_abi::trigger::Rule;

/// Environment variable naming the runtime library explicitly.
pub const RUNTIME_ENV: &str = "FTAIL_RUNTIME";
const RUNTIME_NAME: &str = "libftail_runtime.so";

/// Options of `ftail record`.
#[derive(Clone)]
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
    /// Record calls into libraries without site tables.
    pub libcall: bool,
    /// The most events one thread keeps (none: as many as `max_size`
    /// allows).
    pub buffer_events: Option<u64>,
    /// The most bytes of events the whole trace may take.
    pub max_size: MaxSize,
    /// Bytes of each thread's ring (flight recorder), if asked for.
    pub ring: Option<u64>,
    /// Bytes of each thread's drained ring (none: every event in a
    /// growing event file).
    pub drain: Option<u64>,
    /// Whether `--drain` was given (rather than drained by default).
    pub drain_asked: bool,
    /// The signal that takes a snapshot of the rings, if any.
    pub snapshot_signal: Option<i32>,
    /// Start with tracing off.
    pub off: bool,
    /// Start the control agent.
    pub ctl: bool,
    /// `-A` specs (checked).
    pub args: Vec<String>,
    /// `-R` specs (checked).
    pub retval: Vec<String>,
    /// `-a`: arguments and return values from the debug info.
    pub auto_args: bool,
    /// `-T` and `--snapshot-on` rules (checked).
    pub triggers: Vec<Rule>,
    /// Least time between two snapshots that triggers take, in ns.
    pub snapshot_interval: Option<u64>,
    /// Record when each thread is switched out and back in.
    pub sched: bool,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

/// How to record: the options `record` and `live` share.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// Trace only functions matching GLOB (repeatable)
    #[arg(short = 'F', long = "filter", value_name = "GLOB")]
    pub filter: Vec<String>,
    /// Do not trace functions matching GLOB (repeatable)
    #[arg(short = 'N', long = "notrace", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Record calls only up to this depth (1 or more)
    #[arg(short = 'D', long, value_parser = parse_depth)]
    pub depth: Option<u64>,
    /// Tail-call strategy: mark, convert (per-site thunk), or auto
    /// (mark where the callee is traced, convert elsewhere)
    #[arg(long, default_value = "auto", value_parser = ["auto", "mark", "convert"])]
    pub tail: String,
    /// Do not record calls into libraries built without ftail (libc,
    /// libstdc++...), which are recorded by default
    #[arg(long)]
    pub no_libcall: bool,
    /// Keep at most about N events per thread, 16 to 2^32 (8 bytes
    /// each, 16 in a ring; default: no limit but --max-size)
    #[arg(long, value_name = "N", value_parser = parse_buffer_events)]
    pub buffer_events: Option<u64>,
    /// Most bytes of events the whole trace may take: a size (500M, 2G,
    /// 1T) or a share of the free space where the trace is (25%)
    #[arg(long, value_name = "SIZE", default_value = "50%", value_parser = parse_max_size)]
    pub max_size: MaxSize,
    /// Flight recorder: keep only the latest SIZE bytes of events per
    /// thread (64K to 64G), in a ring that is the thread's event file
    #[arg(long, value_name = "SIZE", value_parser = parse_ring)]
    pub ring: Option<u64>,
    /// Each thread writes into a fixed ring of SIZE bytes (128K to 1G,
    /// default 8M) that `ftail record` drains: it compresses what the
    /// thread wrote into KEY-TID.drained and frees the ring for it again,
    /// so the thread never faults in a fresh page (a thread whose
    /// drainer is behind or gone goes on in its growing event file). The
    /// default for a program ftail record starts, without --ring,
    /// --buffer-events or snapshots
    #[arg(long, value_name = "SIZE", num_args = 0..=1, default_missing_value = "8M",
          require_equals = true, value_parser = parse_drain,
          conflicts_with_all = ["ring", "buffer_events", "no_drain"])]
    pub drain: Option<u64>,
    /// Keep every event uncompressed in each thread's growing event file
    /// (the format before drained rings were the default)
    #[arg(long)]
    pub no_drain: bool,
    /// Copy the rings into DIR/snapshot-N when the program receives
    /// SIGNAL (a name like USR2 or a number); see also `ftail ctl PID
    /// snapshot`
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal)]
    pub snapshot_signal: Option<i32>,
    /// Start with tracing off; switch it on with `ftail ctl PID on`
    /// (implies --ctl)
    #[arg(long)]
    pub off: bool,
    /// Let `ftail ctl` change tracing while the program runs (starts a
    /// control thread in the program)
    #[arg(long)]
    pub ctl: bool,
    /// Record the arguments of functions matching GLOB, in uftrace's
    /// syntax: GLOB@arg1/i32,arg2/s,fparg1/f64 (repeatable; formats d i
    /// u x [8-64], s[N], c, b, p, f32, f64; without one, uftrace's: small
    /// integers in decimal, large ones in hex, an int's -1 as -1;
    /// locations %rdi.. %xmm0.. %stack+N). Several -A for one function
    /// add up, as uftrace's do: `-A 'mul@arg2/x' -A 'mul@arg1'` shows
    /// `mul(0x3, 4)`
    #[arg(short = 'A', long = "argument", value_name = "GLOB@SPEC", value_parser = check_args)]
    pub args: Vec<String>,
    /// Record the return value of functions matching GLOB, as FMT
    /// (default: uftrace's, as for -A; f32/f64 for floats) (repeatable)
    #[arg(short = 'R', long = "retval", value_name = "GLOB[@FMT]", value_parser = check_retval)]
    pub retval: Vec<String>,
    /// Record every traced function's arguments and return value as its
    /// debug info (DWARF) describes them: the program's and those of the
    /// libraries it loads at start-up (not of libraries it dlopens later)
    #[arg(short = 'a', long)]
    pub auto_args: bool,
    /// Act when a function matching GLOB is called, as uftrace's -T:
    /// GLOB@ACTION[,ACTION...] with trace_on, trace_off (the calling
    /// thread records from this call on / stops), depth=N (N levels from
    /// this call), finish (the thread stops once the call returns),
    /// filter (the thread records only inside such calls), notrace (not
    /// this call nor below it) (repeatable)
    #[arg(short = 'T', long = "trigger", value_name = "GLOB@ACTIONS", value_parser = parse_trigger)]
    pub trigger: Vec<Rule>,
    /// With --ring: take a snapshot when a function matching GLOB is
    /// called, or with GLOB>TIME when one of its calls returns after
    /// more than TIME (e.g. 'handle_request>5ms') (repeatable)
    #[arg(long, value_name = "GLOB[>TIME]", value_parser = parse_snapshot_on)]
    pub snapshot_on: Vec<Rule>,
    /// Least time between two snapshots that --snapshot-on or the
    /// program's ftail_snapshot() take; those sooner are skipped
    /// (default 1s)
    #[arg(long, value_name = "TIME", value_parser = parse_interval)]
    pub snapshot_interval: Option<u64>,
    /// Do not record when the program's threads are switched out and
    /// back in (recorded by `ftail record` itself, through perf events,
    /// where the kernel allows it)
    #[arg(long)]
    pub no_sched: bool,
}

/// Parses `-T GLOB@ACTIONS`.
fn parse_trigger(text: &str) -> Result<Rule, String> {
    let Some((glob, actions)) = text.rsplit_once('@') else {
        return Err(format!(
            "{text:?}: a trigger is GLOB@ACTION[,ACTION...], e.g. 'parse@depth=2'"
        ));
    };
    if glob.is_empty() || glob.contains(['\t', '\n']) {
        return Err(format!("{text:?}: no function glob before '@'"));
    }
    let actions = ftail_abi::trigger::parse_actions(actions)?;
    if actions.snapshot || actions.snapshot_after_ns != 0 {
        return Err(format!("{text:?}: snapshots are taken by --snapshot-on"));
    }
    Ok(Rule {
        glob: glob.to_string(),
        actions,
    })
}

/// Parses `--snapshot-on GLOB[>TIME]`.
fn parse_snapshot_on(text: &str) -> Result<Rule, String> {
    let (glob, after) = match text.split_once('>') {
        Some((glob, time)) => {
            let ns = crate::analyze::parse_duration(time)?.round();
            if ns < 1.0 || ns > u64::MAX as f64 {
                return Err(format!("{text:?}: the time must be more than 0"));
            }
            (glob.trim(), ns as u64)
        }
        None => (text.trim(), 0),
    };
    if glob.is_empty() || glob.contains(['\t', '\n']) {
        return Err(format!("{text:?}: no function glob"));
    }
    Ok(Rule {
        glob: glob.to_string(),
        actions: ftail_abi::trigger::Actions {
            snapshot: after == 0,
            snapshot_after_ns: after,
            ..Default::default()
        },
    })
}

/// Parses `--snapshot-interval`.
fn parse_interval(text: &str) -> Result<u64, String> {
    let ns = crate::analyze::parse_duration(text)?.round();
    if ns > u64::MAX as f64 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(ns as u64)
}

fn check_args(text: &str) -> Result<String, String> {
    crate::argspec::parse_args(text).map(|_| text.to_string())
}

fn check_retval(text: &str) -> Result<String, String> {
    crate::argspec::parse_retval(text).map(|_| text.to_string())
}

impl RecordArgs {
    /// The options of a recording into `dir` of `command`.
    pub fn options(self, dir: PathBuf, command: Vec<OsString>) -> RecordOptions {
        let drain = self.drain_bytes();
        RecordOptions {
            dir,
            filter: self.filter,
            exclude: self.exclude,
            depth: self.depth,
            tail: self.tail,
            libcall: !self.no_libcall,
            buffer_events: self.buffer_events,
            max_size: self.max_size,
            ring: self.ring,
            drain,
            drain_asked: self.drain.is_some(),
            snapshot_signal: self.snapshot_signal,
            off: self.off,
            ctl: self.ctl,
            args: self.args,
            retval: self.retval,
            auto_args: self.auto_args,
            triggers: self.trigger.into_iter().chain(self.snapshot_on).collect(),
            snapshot_interval: self.snapshot_interval,
            sched: !self.no_sched,
            command,
        }
    }

    /// Bytes of each thread's drained ring: `--drain`'s, else 8M unless
    /// the events go elsewhere (`--no-drain`, `--ring`, `--buffer-events`:
    /// a limit of the growing file) or a snapshot may be taken (it copies
    /// event files, not drained ones).
    fn drain_bytes(&self) -> Option<u64> {
        let snapshots = self.snapshot_signal.is_some()
            || !self.snapshot_on.is_empty()
            || self.snapshot_interval.is_some()
            || self
                .trigger
                .iter()
                .any(|r| r.actions.snapshot || r.actions.snapshot_after_ns != 0);
        let elsewhere = self.no_drain || self.ring.is_some() || self.buffer_events.is_some();
        match self.drain {
            Some(n) => Some(n),
            None if elsewhere || snapshots => None,
            None => Some(DEFAULT_DRAIN),
        }
    }

    /// The same options as `ftail record` arguments.
    fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        for g in &self.filter {
            a.extend(["-F".into(), g.into()]);
        }
        for g in &self.exclude {
            a.extend(["-N".into(), g.into()]);
        }
        if let Some(d) = self.depth {
            a.extend(["-D".into(), d.to_string().into()]);
        }
        a.extend(["--tail".into(), self.tail.clone().into()]);
        if let Some(n) = self.buffer_events {
            a.extend(["--buffer-events".into(), n.to_string().into()]);
        }
        a.extend(["--max-size".into(), self.max_size.to_string().into()]);
        if let Some(n) = self.ring {
            a.extend(["--ring".into(), n.to_string().into()]);
        }
        if let Some(n) = self.drain {
            a.push(format!("--drain={n}").into());
        }
        if self.no_drain {
            a.push("--no-drain".into());
        }
        if let Some(n) = self.snapshot_signal {
            a.extend(["--snapshot-signal".into(), n.to_string().into()]);
        }
        if self.off {
            a.push("--off".into());
        }
        if self.ctl {
            a.push("--ctl".into());
        }
        for s in &self.args {
            a.extend(["-A".into(), s.into()]);
        }
        for s in &self.retval {
            a.extend(["-R".into(), s.into()]);
        }
        if self.auto_args {
            a.push("--auto-args".into());
        }
        for r in &self.trigger {
            a.extend([
                "-T".into(),
                format!("{}@{}", r.glob, r.actions.to_text()).into(),
            ]);
        }
        for r in &self.snapshot_on {
            let a_ = &r.actions;
            let text = if a_.snapshot_after_ns != 0 {
                format!("{}>{}ns", r.glob, a_.snapshot_after_ns)
            } else {
                r.glob.clone()
            };
            a.extend(["--snapshot-on".into(), text.into()]);
        }
        if let Some(ns) = self.snapshot_interval {
            a.extend(["--snapshot-interval".into(), format!("{ns}ns").into()]);
        }
        if self.no_sched {
            a.push("--no-sched".into());
        }
        a
    }
}

/// `ftail live`: records `command` into a private temporary directory
/// (`ftail record`, as a child: the program's pid is not ours to keep
/// here), replays it once the program has ended, and removes it. Ctrl-C
/// stops the program, not the replay of what it recorded. Exits with the
/// program's status.
pub fn live(
    how: RecordArgs,
    show: crate::analyze::ShowArgs,
    shape: crate::analyze::ReplayShape,
    command: Vec<OsString>,
) -> Result<i32> {
    let tmp = tempfile::Builder::new()
        .prefix("ftail-live-")
        .tempdir()
        .context("creating a temporary trace directory")?;
    let dir = tmp.path().join("trace");
    let exe = std::env::current_exe().context("finding the ftail executable")?;
    // Terminal signals are ignored in this process while the child runs,
    // and set back to their default in the child before it execs (an
    // ignored signal would stay ignored across exec).
    let set = |how: libc::sighandler_t| {
        // SAFETY: signal() with a disposition constant; async-signal-safe,
        // so also fine between fork and exec.
        unsafe {
            libc::signal(libc::SIGINT, how);
            libc::signal(libc::SIGQUIT, how);
        }
    };
    set(libc::SIG_IGN);
    let mut cmd = Command::new(exe);
    // SAFETY: the closure only calls signal(), async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            set(libc::SIG_DFL);
            Ok(())
        });
    }
    let status = cmd
        .arg("record")
        .arg("-d")
        .arg(&dir)
        .args(how.to_args())
        .arg("--")
        .args(&command)
        .status();
    set(libc::SIG_DFL);
    let status = status.context("running ftail record")?;
    if dir.join(".").exists() && ftail_trace::reader::dir::TraceDir::open(&dir).is_ok() {
        // -F, -N and -D chose what was recorded; the rest selects what
        // of it is shown, as replay does.
        let view = crate::analyze::ViewArgs {
            dir: dir.clone(),
            filter: Vec::new(),
            notrace: Vec::new(),
            depth: None,
            trigger: Vec::new(),
            show,
        };
        crate::analyze::replay(&view, &shape)?;
    }
    Ok(crate::exit_code(status))
}

/// `--max-size`: a number of bytes, or a share of the free space on the
/// trace directory's filesystem when recording starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxSize {
    /// This many bytes.
    Bytes(u64),
    /// This many percent of the free space.
    Percent(u8),
}

impl std::fmt::Display for MaxSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxSize::Bytes(n) => write!(f, "{n}"),
            MaxSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl MaxSize {
    /// The size in bytes, given the free bytes where the trace is.
    pub fn bytes(self, free: u64) -> u64 {
        match self {
            MaxSize::Bytes(n) => n,
            MaxSize::Percent(p) => (u128::from(free) * u128::from(p) / 100) as u64,
        }
    }
}

/// The smallest `--max-size`: 1 MiB.
const MIN_MAX_SIZE: u64 = 1 << 20;

/// Parses `--max-size`: `N`, `N` with a binary suffix (`K`, `M`, `G`, `T`,
/// optionally followed by `iB` or `B`), or `N%` (1 to 100).
pub fn parse_max_size(text: &str) -> Result<MaxSize, String> {
    let bad = || {
        "must be a size of at least 1M (e.g. 500M, 2G, 1T) or a share of the free \
         space from 1% to 100% (e.g. 25%)"
            .to_string()
    };
    if let Some(p) = text.strip_suffix('%') {
        return match p.parse::<u8>() {
            Ok(p) if (1..=100).contains(&p) => Ok(MaxSize::Percent(p)),
            _ => Err(bad()),
        };
    }
    let t = text.trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n >= MIN_MAX_SIZE)
        .map(MaxSize::Bytes)
        .ok_or_else(bad)
}

/// Bytes of a drained ring by default: the drainer falls behind an
/// eighth of it (1 MiB) before it compresses faster, and a thread waits
/// for it only once it is a whole ring behind.
const DEFAULT_DRAIN: u64 = 8 << 20;

/// Parses `--drain`: a size as for `--ring`, 128K to 1G, in whole 64K
/// chunks.
pub fn parse_drain(text: &str) -> Result<u64, String> {
    let bad = || "must be a size from 128K to 1G in steps of 64K (e.g. 8M)".to_string();
    let n = parse_size(text).ok_or_else(bad)?;
    let chunk = ftail_abi::trace::drain::CHUNK;
    if (2 * chunk..=1 << 30).contains(&n) && n.is_multiple_of(chunk) {
        Ok(n)
    } else {
        Err(bad())
    }
}

/// Parses `--ring`: a size as for `--max-size`, 64K to 64G.
pub fn parse_ring(text: &str) -> Result<u64, String> {
    let bad = || "must be a size from 64K to 64G (e.g. 1M, 256K)".to_string();
    parse_size(text)
        .filter(|n| (64 << 10..=64 << 30).contains(n))
        .ok_or_else(bad)
}

/// A size in bytes: digits and an optional K, M or G (KiB, MB ...).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => return None,
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
}

/// Parses `--snapshot-signal`: `USR2`, `SIGUSR2` or a number; not the
/// signals that cannot be caught or that the runtime or a debugger use
/// (KILL, STOP, TRAP).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    const NAMES: [(&str, i32); 12] = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("TSTP", libc::SIGTSTP),
        ("WINCH", libc::SIGWINCH),
        ("PWR", libc::SIGPWR),
    ];
    let name = text.trim_start_matches("SIG");
    let n = NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
        .or_else(|| text.parse::<i32>().ok());
    match n {
        Some(n)
            if (1..=64).contains(&n)
                && ![libc::SIGKILL, libc::SIGSTOP, libc::SIGTRAP].contains(&n) =>
        {
            Ok(n)
        }
        _ => Err(
            "must be a signal the program does not use, by name (USR2) or number; \
                  not KILL, STOP or TRAP"
                .to_string(),
        ),
    }
}

/// Free bytes for an unprivileged user on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{}: a NUL in the path", dir.display()))?;
    // SAFETY: a zeroed statvfs is a valid value to be overwritten.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs with a NUL-terminated path fills the buffer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut fs) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("finding the free space on {}", dir.display()));
    }
    Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// Writes the trace's budget file ([`BUDGET_FILE`]): the bytes its event
/// files may take, which every traced process maps and counts against.
fn write_budget(dir: &Path, max_bytes: u64, free_bytes: u64) -> Result<()> {
    use ftail_abi::trace::{TraceBudget, BUDGET_FILE, BUDGET_MAGIC, TRACE_VERSION};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let b = TraceBudget {
        magic: BUDGET_MAGIC,
        version: TRACE_VERSION,
        size: std::mem::size_of::<TraceBudget>() as u32,
        max_bytes,
        used_bytes: 0,
        free_bytes,
        reserved: [0; 3],
    };
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&b.magic);
    bytes.extend_from_slice(&b.version.to_le_bytes());
    bytes.extend_from_slice(&b.size.to_le_bytes());
    for v in [b.max_bytes, b.used_bytes, b.free_bytes, 0, 0, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let path = dir.join(BUDGET_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// The largest `--buffer-events`: 2^32 events of up to 16 bytes, 64 GiB of
/// (sparse) file per thread.
const MAX_BUFFER_EVENTS: u64 = 1 << 32;
/// The smallest `--buffer-events`.
const MIN_BUFFER_EVENTS: u64 = 16;

/// Parses `--buffer-events`.
pub fn parse_buffer_events(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (MIN_BUFFER_EVENTS..=MAX_BUFFER_EVENTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number from {MIN_BUFFER_EVENTS} to {MAX_BUFFER_EVENTS} (2^32; \
             each event takes up to 16 bytes)"
        )),
    }
}

/// Parses `--depth`.
pub fn parse_depth(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a number, 1 or more".into()),
    }
}

/// Every environment variable the runtime reads (`ftail-runtime`'s
/// `config.rs`), with the value the command line gives it; `None` removes
/// it, leaving the runtime's default. The traced program gets exactly
/// these, whatever the caller's environment held.
pub(crate) fn runtime_env(
    o: &RecordOptions,
    dir: &Path,
    dir_id: (u64, u64),
    max_bytes: u64,
    has_specs: bool,
) -> [(&'static str, Option<OsString>); 19] {
    let flag = |on: bool| Some(OsString::from(if on { "1" } else { "0" }));
    [
        ("FTAIL_DIR", Some(dir.into())),
        // Which directory: the runtime follows it if a later recording
        // into the same path moves it to `DIR.old`.
        (
            "FTAIL_DIR_ID",
            Some(format!("{}:{}", dir_id.0, dir_id.1).into()),
        ),
        ("FTAIL_FILTER", Some(o.filter.join(",").into())),
        ("FTAIL_EXCLUDE", Some(o.exclude.join(",").into())),
        ("FTAIL_TAIL", Some(o.tail.clone().into())),
        ("FTAIL_LIBCALL", flag(o.libcall)),
        ("FTAIL_DEPTH", o.depth.map(|d| d.to_string().into())),
        (
            "FTAIL_BUFFER_EVENTS",
            o.buffer_events.map(|n| n.to_string().into()),
        ),
        // The budget file holds it; the runtime reads it from there and
        // uses this only where that file cannot be read.
        ("FTAIL_MAX_SIZE", Some(max_bytes.to_string().into())),
        ("FTAIL_RING", o.ring.map(|n| n.to_string().into())),
        ("FTAIL_DRAIN", o.drain.map(|n| n.to_string().into())),
        (
            "FTAIL_SNAPSHOT_SIGNAL",
            o.snapshot_signal.map(|n| n.to_string().into()),
        ),
        // Not an option (yet): always the runtime's default.
        ("FTAIL_STACK_ENTRIES", None),
        ("FTAIL_OFF", flag(o.off)),
        ("FTAIL_CTL", flag(o.ctl || o.off)),
        // Whom the control agent answers, even once the program has
        // become another user.
        (
            "FTAIL_CTL_UID",
            Some(crate::private_dir::euid().to_string().into()),
        ),
        // The spec file (ftail_abi::argspec) is in the trace directory.
        ("FTAIL_ARGSPEC", has_specs.then(|| "1".into())),
        (
            ftail_abi::trigger::TRIGGERS_ENV,
            (!o.triggers.is_empty()).then(|| {
                let lines: Vec<String> = o.triggers.iter().map(Rule::to_line).collect();
                lines.join("\n").into()
            }),
        ),
        (
            ftail_abi::trigger::SNAPSHOT_INTERVAL_ENV,
            o.snapshot_interval.map(|ns| ns.to_string().into()),
        ),
    ]
}

/// A variable the runtime reads, and its value (`None`: the default).
pub(crate) type RuntimeVar = (&'static str, Option<OsString>);

/// For `ftail record -p`: the trace directory made ready (an existing
/// trace moved to `DIR.old`, the budget file and the spec file of `-A`,
/// `-R` and `-a` written, the debug info `-a` reads being `exe`'s) and
/// the runtime's settings.
pub(crate) fn prepare_trace(o: &RecordOptions, exe: &Path) -> Result<(PathBuf, Vec<RuntimeVar>)> {
    if o.drain_asked {
        bail!("--drain needs a program that ftail record starts, whose end its drainer sees");
    }
    // Attached to, a program keeps every event in growing files.
    let o = &RecordOptions {
        drain: None,
        ..o.clone()
    };
    let created = crate::trace_dir::prepare(&o.dir)?;
    let ready = o
        .dir
        .canonicalize()
        .with_context(|| format!("{}", o.dir.display()))
        .and_then(|dir| {
            let dir_id = crate::trace_dir::identity(&dir)?;
            let free = free_space(&dir)?;
            let max = o.max_size.bytes(free).max(MIN_MAX_SIZE);
            write_budget(&dir, max, free)?;
            let has_specs = crate::argspec::write_spec_file(&dir, &spec_sources(o, Some(exe)))?;
            let env = runtime_env(o, &dir, dir_id, max, has_specs);
            Ok((dir, env.into_iter().collect()))
        });
    if ready.is_err() && created {
        let _ = std::fs::remove_file(o.dir.join(ftail_abi::trace::BUDGET_FILE));
        let _ = std::fs::remove_file(o.dir.join(ftail_abi::argspec::SPEC_FILE));
        let _ = std::fs::remove_dir(&o.dir);
    }
    ready
}

/// Where the spec file's rules come from: `-A`, `-R`, and with `-a` the
/// debug info of `exe`.
pub(crate) fn spec_sources<'a>(
    o: &'a RecordOptions,
    exe: Option<&'a Path>,
) -> crate::argspec::SpecSources<'a> {
    crate::argspec::SpecSources {
        args: &o.args,
        retval: &o.retval,
        auto_from: exe.filter(|_| o.auto_args),
    }
}

/// Runs the program in this process (see `watch`), so its exit status is
/// ours; returns only when it cannot be started.
pub fn run(o: RecordOptions) -> Result<i32> {
    let Some((program, args)) = o.command.split_first() else {
        bail!("no program to record; usage: ftail record [OPTIONS] -- PROGRAM [ARGS...]");
    };
    let snapshots = o
        .triggers
        .iter()
        .any(|r| r.actions.snapshot || r.actions.snapshot_after_ns != 0);
    if snapshots && o.ring.is_none() {
        bail!("--snapshot-on takes snapshots of rings: it needs --ring SIZE");
    }
    let runtime = find_runtime()?;
    let created = crate::trace_dir::prepare(&o.dir)?;
    let dir = o
        .dir
        .canonicalize()
        .with_context(|| format!("{}", o.dir.display()))?;
    let dir_id = crate::trace_dir::identity(&dir)?;
    let budget = free_space(&dir).and_then(|free| {
        let max = o.max_size.bytes(free).max(MIN_MAX_SIZE);
        write_budget(&dir, max, free)?;
        Ok(max)
    });
    let specs = budget.and_then(|max| {
        let exe = if o.auto_args {
            Some(
                which(Path::new(program))
                    .with_context(|| format!("-a: finding {}", Path::new(program).display()))?,
            )
        } else {
            None
        };
        let has = crate::argspec::write_spec_file(&dir, &spec_sources(&o, exe.as_deref()))?;
        Ok((max, has))
    });
    let (max_bytes, has_specs) = match specs {
        Ok(m) => m,
        Err(e) => {
            if created {
                let _ = std::fs::remove_file(dir.join(ftail_abi::trace::BUDGET_FILE));
                let _ = std::fs::remove_file(dir.join(ftail_abi::argspec::SPEC_FILE));
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e);
        }
    };
    let mut preload = runtime.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut cmd = Command::new(program);
    cmd.args(args).env("LD_PRELOAD", preload);
    for (name, value) in runtime_env(&o, &dir, dir_id, max_bytes, has_specs) {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let given = o.dir.clone();
    let program_path = PathBuf::from(program);
    let pid = std::process::id();
    // Recorded into again meanwhile: the trace is now `DIR.old`.
    let shown = || crate::trace_dir::now_at(&given, dir_id);
    let hooks = crate::watch::Hooks {
        summary: &|| summary(&shown(), &program_path),
        ended: &|status| note_exit(&shown(), pid, status),
        drain: o.drain.is_some().then_some(dir.as_path()),
    };
    let sched = o.sched.then(|| open_sched(&dir, pid)).flatten();
    let err = crate::watch::exec(&mut cmd, &hooks, sched);
    // Nothing ran: leave no empty trace directory behind.
    let _ = std::fs::remove_file(dir.join(format!("{}{pid}", ftail_abi::trace::SCHED_PREFIX)));
    if created {
        let _ = std::fs::remove_file(dir.join(ftail_abi::trace::BUDGET_FILE));
        let _ = std::fs::remove_file(dir.join(ftail_abi::argspec::SPEC_FILE));
        let _ = std::fs::remove_dir(&dir);
    }
    Err(err).with_context(|| format!("running {}", program.to_string_lossy()))
}

/// The scheduler events of this process once it is the program, and the
/// file in `dir` they go to; where the kernel refuses them, a file that
/// says so, and a line on standard error.
pub(crate) fn open_sched(dir: &Path, pid: u32) -> Option<(crate::sched::Events, std::fs::File)> {
    start_sched(dir, pid, crate::sched::Events::for_exec)
}

/// Opens scheduler events with `open` into `DIR/sched.PID`.
pub(crate) fn start_sched(
    dir: &Path,
    pid: u32,
    open: impl FnOnce() -> Result<crate::sched::Events, crate::sched::Refused>,
) -> Option<(crate::sched::Events, std::fs::File)> {
    match open() {
        Ok(events) => match crate::sched::create(dir, pid, None) {
            Ok(file) => Some((events, file)),
            Err(e) => {
                eprintln!("ftail: scheduler events were not recorded: creating their file: {e}");
                None
            }
        },
        Err(refused) => {
            eprintln!("ftail: {}", refused.message());
            let _ = crate::sched::create(dir, pid, Some(refused));
            None
        }
    }
}

/// Writes the wait status of the program (process `pid`) into the
/// `KEY.status` of its last image in `dir`: the runtime cannot note a
/// death by a signal itself. Best effort: a status file that is missing,
/// not a regular file of this user's, or not ftail's is left alone.
fn note_exit(dir: &Path, pid: u32, status: i32) {
    use ftail_abi::trace::{ProcessStatus, EXIT_RECORDED, STATUS_MAGIC, STATUS_SUFFIX};
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let Some(key) = last_image(dir, pid) else {
        return;
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(format!("{key}{STATUS_SUFFIX}")))
    else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let size = std::mem::size_of::<ProcessStatus>() as u64;
    let ok = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == me && m.len() >= size);
    let mut magic = [0u8; 8];
    if !ok || file.read_exact_at(&mut magic, 0).is_err() || magic != STATUS_MAGIC {
        return;
    }
    let exit = EXIT_RECORDED | u64::from(status as u32);
    let at = std::mem::offset_of!(ProcessStatus, exit) as u64;
    let _ = file.write_all_at(&exit.to_le_bytes(), at);
}

/// The file stem of the last image of process `pid` in `dir`: `PID`, or
/// `PID~N` with the largest N after `exec`s.
fn last_image(dir: &Path, pid: u32) -> Option<String> {
    let suffix = ftail_abi::trace::STATUS_SUFFIX;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let key = name.strip_suffix(suffix)?;
            let (p, generation) = match key.split_once('~') {
                Some((p, n)) => (p, n.parse::<u32>().ok()?),
                None => (key, 0),
            };
            (p.parse() == Ok(pid)).then(|| (generation, key.to_string()))
        })
        .max()
        .map(|(_, key)| key)
}

/// What `ftail record` says once the program has ended: where the trace
/// is and everything it is missing, with the reason
/// (`ftail_trace::losses`); or, when no process recorded anything, why
/// that may be.
///
/// Only metadata and the event files' headers are read
/// (`trace::open_headers`): the caller's standard error stays open until
/// this is printed.
pub fn summary(dir: &Path, program: &Path) -> Vec<String> {
    let trace = match ftail_trace::trace::open_headers(dir) {
        Ok(t) => t,
        Err(_) => return nothing_recorded(dir, program),
    };
    let mut lines = vec![format!("ftail: trace written to {}", dir.display())];
    lines.extend(
        ftail_trace::losses::notes(&trace)
            .into_iter()
            .map(|n| format!("ftail: {n}")),
    );
    lines
}

/// The summary of a run in which no process recorded anything.
fn nothing_recorded(dir: &Path, program: &Path) -> Vec<String> {
    let mut lines = vec![format!(
        "ftail: nothing was recorded in {}: no process loaded a module built with \
         `ftail cc` (`ftail sites PROGRAM` shows whether a binary has ftail's tables)",
        dir.display()
    )];
    if let Some(path) = which(program).filter(|p| is_set_id(p)) {
        lines.push(format!(
            "ftail: {} is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD for it, \
             so ftail's runtime never ran in it",
            path.display()
        ));
    }
    if let Some(path) = which(program).filter(|p| is_static(p)) {
        lines.push(format!(
            "ftail: {} is statically linked: with no dynamic loader nothing preloads ftail's \
             runtime, so it never ran in it; link the program dynamically (without `-static`)",
            path.display()
        ));
    }
    lines
}

/// Whether `path` is an ELF executable without a program interpreter (a
/// fully static or static-pie program, which `LD_PRELOAD` never reaches).
fn is_static(path: &Path) -> bool {
    use object::read::elf::{FileHeader, ProgramHeader};
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(&*data) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    let kind = header.e_type(endian);
    let executable = kind == object::elf::ET_EXEC || kind == object::elf::ET_DYN;
    header.program_headers(endian, &*data).is_ok_and(|phdrs| {
        executable
            && !phdrs.is_empty()
            && !phdrs
                .iter()
                .any(|p| p.p_type(endian) == object::elf::PT_INTERP)
    })
}

/// Where `program` is found, as `exec` would find it.
pub(crate) fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn is_set_id(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o6000 != 0)
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

/// Writes the embedded runtime to ftail's private cache directory
/// (`private_dir::cache_dir`) under a name that changes with its contents,
/// once. An existing copy is used only when it is a file of this user's
/// that no one else may write and it holds exactly the embedded bytes;
/// anything else there is replaced by a fresh copy, written to a new file
/// (`O_EXCL`) and renamed over it.
fn embedded_runtime() -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let cache = crate::private_dir::cache_dir()?;
    // FNV-1a: a name per build of the runtime, not a security measure.
    let hash = EMBEDDED_RUNTIME
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let path = cache.join(format!("libftail_runtime-{hash:016x}.so"));
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let trusted = meta.is_file()
            && meta.uid() == crate::private_dir::euid()
            && meta.mode() & 0o022 == 0
            && meta.len() == EMBEDDED_RUNTIME.len() as u64
            && std::fs::read(&path).is_ok_and(|bytes| bytes == EMBEDDED_RUNTIME);
        if trusted {
            return Ok(path);
        }
        if meta.is_dir() {
            bail!(
                "{} is a directory, not ftail's runtime library; remove it",
                path.display()
            );
        }
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".libftail_runtime-")
        .suffix(".tmp")
        .tempfile_in(&cache)
        .with_context(|| format!("creating a file in {}", cache.display()))?;
    tmp.write_all(EMBEDDED_RUNTIME)
        .and_then(|()| tmp.flush())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::summary;
    use ftail_abi::trace::{EventFileHeader, EVENTS_MAGIC, TRACE_VERSION};

    /// An event file holding only a header that counts `lost` events.
    fn event_file(dir: &std::path::Path, tid: u32, lost: u64) {
        let mut h = vec![0u8; std::mem::size_of::<EventFileHeader>()];
        let mut put = |offset: usize, bytes: &[u8]| {
            h[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(std::mem::offset_of!(EventFileHeader, magic), &EVENTS_MAGIC);
        put(
            std::mem::offset_of!(EventFileHeader, version),
            &TRACE_VERSION.to_le_bytes(),
        );
        put(
            std::mem::offset_of!(EventFileHeader, tid),
            &tid.to_le_bytes(),
        );
        put(
            std::mem::offset_of!(EventFileHeader, lost),
            &lost.to_le_bytes(),
        );
        std::fs::write(dir.join(format!("100-{tid}.events")), h).unwrap();
    }

    #[test]
    fn the_summary_names_the_threads_that_lost_events() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("100.info"), "pid=100\n").unwrap();
        event_file(dir.path(), 100, 0);
        for tid in 101..=112 {
            event_file(dir.path(), tid, 5);
        }
        std::fs::write(dir.path().join("100-113.events"), b"short").unwrap();
        let lines = summary(dir.path(), std::path::Path::new("prog"));
        assert_eq!(
            lines[0],
            format!("ftail: trace written to {}", dir.path().display())
        );
        assert_eq!(lines.len(), 12, "{lines:#?}");
        assert!(
            lines[1]
                .starts_with("ftail: process 100 thread 101: 5 events lost: its buffer was full"),
            "{lines:#?}"
        );
        assert!(
            lines[11].starts_with("ftail: 2 more threads: 10 events lost: "),
            "{lines:#?}"
        );
    }

    #[test]
    fn max_sizes_parse_as_bytes_or_shares() {
        use super::{parse_max_size, MaxSize};
        assert_eq!(parse_max_size("500M"), Ok(MaxSize::Bytes(500 << 20)));
        assert_eq!(parse_max_size("2GiB"), Ok(MaxSize::Bytes(2 << 30)));
        assert_eq!(parse_max_size("1t"), Ok(MaxSize::Bytes(1 << 40)));
        assert_eq!(parse_max_size("1048576"), Ok(MaxSize::Bytes(1 << 20)));
        assert_eq!(parse_max_size("25%"), Ok(MaxSize::Percent(25)));
        assert_eq!(MaxSize::Percent(25).bytes(1000), 250);
        for bad in ["", "1K", "0%", "101%", "1.5G", "G", "5X", "99999999999T"] {
            assert!(parse_max_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_run_that_recorded_nothing_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let lines = summary(dir.path(), std::path::Path::new("/bin/true"));
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("nothing was recorded"), "{lines:#?}");
        assert!(!lines[0].contains("  "), "a stray space: {lines:#?}");
    }
}
