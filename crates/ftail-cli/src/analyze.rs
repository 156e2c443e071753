//! `replay`, `report`, `graph`, `info`, `dump` and `live`: glue between
//! the command line and `ftail_trace`'s streaming analyses, and the
//! terminal (a pager and colours when standard output is one).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use ftail_trace::names::{for_images_where, Names};
use ftail_trace::reader::dir::TraceDir;
use ftail_trace::view::{Filters, MatchKind, Pattern};

/// Options every analysis takes: where the trace is and what of it to use.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    /// Trace directory
    #[arg(short = 'd', long, default_value = "ftail.data")]
    pub dir: PathBuf,
    /// Only calls under functions matching PATTERN (repeatable; demangled
    /// or mangled names), e.g. -F main -F 'lua_*'
    #[arg(short = 'F', long = "filter", value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Not functions matching PATTERN, nor what they call (repeatable),
    /// e.g. -N 'std::*'
    #[arg(short = 'N', long = "notrace", value_name = "PATTERN")]
    pub notrace: Vec<String>,
    /// At most N levels of calls, counted again from each -F match (as
    /// uftrace: -F a -F c -D 1 shows c under a), e.g. -D 3
    #[arg(short = 'D', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub depth: Option<u32>,
    /// Act when a function matching PATTERN is called, as `record -T`
    /// does but on what is shown: PATTERN@ACTION[,ACTION...] with
    /// trace_on, trace_off, depth=N, finish, filter, notrace (repeatable),
    /// e.g. -T 'parse@depth=2' -T 'gc*@notrace'
    #[arg(short = 'T', long = "trigger", value_name = "PATTERN@ACTIONS",
          value_parser = parse_view_trigger)]
    pub trigger: Vec<(String, ftail_abi::trigger::Actions)>,
    /// The options of what is shown that `live` takes too.
    #[command(flatten)]
    pub show: ShowArgs,
}

/// What of the calls to show, besides -F, -N and -D (which `live` gives
/// to `record`): the options of [`ViewArgs`] that `live` takes too.
#[derive(Args, Debug, Clone, Default)]
pub struct ShowArgs {
    /// Only these threads (repeatable, or comma-separated)
    #[arg(long, value_name = "TID", value_delimiter = ',')]
    pub tid: Vec<u32>,
    /// Hide functions matching PATTERN, their callees shown in their
    /// place, one level up (repeatable), e.g. -H 'luaD_call*'
    #[arg(short = 'H', long = "hide", value_name = "PATTERN")]
    pub hide: Vec<String>,
    /// Only the call paths that lead to functions matching PATTERN, and
    /// those calls without their callees (repeatable), e.g. -C malloc
    #[arg(short = 'C', long = "caller-filter", value_name = "PATTERN")]
    pub caller_filter: Vec<String>,
    /// How -F, -N, -H, -C and graph's FUNC are read: shell globs (the
    /// default; whole names) or regular expressions as uftrace reads them
    /// (found anywhere in a name; a pattern without special characters
    /// is a whole name), e.g. --match=regex -F '^luaM_'
    #[arg(long = "match", value_name = "KIND", default_value = "glob",
          value_parser = ["glob", "regex"])]
    pub match_kind: String,
    /// Not calls shorter than TIME (e.g. 10us, 1.5ms, 2s; plain: ns)
    #[arg(short = 't', long = "time-filter", value_name = "TIME", value_parser = parse_duration)]
    pub min_time: Option<f64>,
    /// Only calls starting in START~END, times since the trace began:
    /// with a unit (1ms~2.5ms, 10ms~, ~1s) or bare seconds as `replay -f
    /// time` prints them (0.001234567~0.0025), either end included
    #[arg(long, value_name = "START~END", value_parser = parse_range)]
    pub time_range: Option<(u64, u64)>,
    /// Also look for moved or stripped binaries and their debug files
    /// here, by build id (repeatable; /usr/lib/debug and the debuginfod
    /// cache are always looked in)
    #[arg(long, value_name = "DIR")]
    pub symbols_dir: Vec<PathBuf>,
}

/// A duration with an optional unit (ns, us, ms, s; plain: ns), in ns.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = [("ns", 1.0), ("us", 1e3), ("ms", 1e6), ("s", 1e9)]
        .iter()
        .find_map(|(u, k)| s.strip_suffix(u).map(|n| (n, *k)))
        .unwrap_or((s, 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10us, 1.5ms, 2s)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("{s:?} is not a duration (e.g. 10us, 1.5ms, 2s)"));
    }
    Ok(v * scale)
}

/// `START~END`, either side may be empty; in whole ns, START rounded up
/// and END down.
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let Some((a, b)) = s.split_once('~') else {
        return Err(format!(
            "{s:?} is not a time range (START~END, e.g. 1ms~2ms)"
        ));
    };
    let from = if a.trim().is_empty() {
        0
    } else {
        parse_instant(a, true)?
    };
    let to = if b.trim().is_empty() {
        u64::MAX
    } else {
        parse_instant(b, false)?
    };
    if from > to {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    Ok((from, to))
}

/// Parses a view's `-T PATTERN@ACTIONS` (the snapshot actions are
/// `record`'s alone).
fn parse_view_trigger(text: &str) -> Result<(String, ftail_abi::trigger::Actions), String> {
    let Some((pattern, actions)) = text.rsplit_once('@') else {
        return Err(format!(
            "{text:?}: a trigger is PATTERN@ACTION[,ACTION...], e.g. 'parse@depth=2'"
        ));
    };
    if pattern.is_empty() {
        return Err(format!("{text:?}: no function pattern before '@'"));
    }
    let actions = ftail_abi::trigger::parse_actions(actions)?;
    if actions.snapshot || actions.snapshot_after_ns != 0 {
        return Err(format!("{text:?}: snapshots are taken while recording"));
    }
    Ok((pattern.to_string(), actions))
}

/// A time since the trace began, read exactly (decimal digits, no
/// floating point, so that `0.001234567` is 1234567 ns): with a unit
/// (ns, us, ms, s) or bare seconds. A fraction of a ns rounds up when
/// `up`, else down.
fn parse_instant(text: &str, up: bool) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a time (e.g. 1.5ms, 0.001234567)");
    let s = text.trim();
    let (num, scale) = [("ns", 0u32), ("us", 3), ("ms", 6), ("s", 9)]
        .iter()
        .find_map(|(u, k)| s.strip_suffix(u).map(|n| (n.trim(), *k)))
        .unwrap_or((s, 9));
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 30 {
        return Err(bad());
    }
    // value = int.frac × 10^scale ns = mantissa × 10^(scale - frac.len()).
    let mantissa: u128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
    let places = frac.len() as u32;
    let ns = if places <= scale {
        mantissa.checked_mul(10u128.pow(scale - places))
    } else {
        let div = 10u128.pow(places - scale);
        Some(if up {
            mantissa.div_ceil(div)
        } else {
            mantissa / div
        })
    };
    ns.and_then(|n| u64::try_from(n).ok()).ok_or_else(bad)
}

/// An opened trace and its names.
pub struct Opened {
    /// The listing.
    pub trace: TraceDir,
    /// One per image.
    pub names: Vec<Names>,
}

/// Opens `dir` and loads its names, looking for files also in
/// `symbols_dirs`.
pub fn open(dir: &Path, symbols_dirs: &[PathBuf]) -> Result<Opened> {
    open_threads(dir, symbols_dirs, &[])
}

/// [`open`], naming only the images with one of `tids` (all when empty).
fn open_threads(dir: &Path, symbols_dirs: &[PathBuf], tids: &[u32]) -> Result<Opened> {
    let trace = TraceDir::open(dir)?;
    let opts = ftail_trace::symbols::SymbolOptions {
        symbols_dirs: symbols_dirs.to_vec(),
        ..Default::default()
    };
    let names = for_images_where(&trace.images, opts, |image| {
        tids.is_empty() || image.threads.iter().any(|t| tids.contains(&t.tid))
    });
    Ok(Opened { trace, names })
}

impl ViewArgs {
    /// How the patterns are read.
    pub fn match_kind(&self) -> MatchKind {
        if self.show.match_kind == "regex" {
            MatchKind::Regex
        } else {
            MatchKind::Glob
        }
    }

    /// Opens the trace and checks the patterns against its functions: a
    /// regular expression that does not parse is an error; a pattern that
    /// matches no function is said (with how patterns are read), and is
    /// an error when it leaves nothing to show (every -F, or every -C).
    pub fn open(&self) -> Result<Opened> {
        let o = open_threads(&self.dir, &self.show.symbols_dir, &self.show.tid)?;
        let kind = self.match_kind();
        let mut unmatched = Vec::new();
        for (flag, text) in self.filters(&o.trace).patterns() {
            let pattern = Pattern::new(text, kind).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
            let hit = o
                .names
                .iter()
                .any(|n| n.functions().iter().any(|f| pattern.matches(f)));
            if !hit {
                crate::out::stderr(&format!(
                    "ftail: warning: {flag} {text:?} matches no function in {}{}",
                    self.dir.display(),
                    match_hint(text, kind)
                ));
                unmatched.push(flag);
            }
        }
        for (flag, given) in [("-F", &self.filter), ("-C", &self.show.caller_filter)] {
            let missed = unmatched.iter().filter(|f| **f == flag).count();
            if !given.is_empty() && missed == given.len() {
                bail!("nothing to show: no function matches {flag}");
            }
        }
        Ok(o)
    }

    /// The filters, with times turned into ticks of the trace's clock.
    pub fn filters(&self, t: &TraceDir) -> Filters {
        let hz = t
            .images
            .first()
            .map_or(1_000_000_000, |i| i.tsc_hz().max(1)) as f64;
        let origin = t
            .images
            .iter()
            .filter_map(|i| i.info.get("start_tsc").and_then(|v| v.parse::<u64>().ok()))
            .min()
            .unwrap_or(0);
        let ticks = |ns: f64| ftail_trace::replay::ticks(ns, hz);
        Filters {
            kind: self.match_kind(),
            include: self.filter.clone(),
            exclude: self.notrace.clone(),
            hide: self.show.hide.clone(),
            callers: self.show.caller_filter.clone(),
            depth: self.depth,
            triggers: self.trigger.clone(),
            min_ticks: self.show.min_time.map_or(0, ticks),
            // Compared as the time column shows times (whole ns), so a
            // time copied from it selects its line.
            range: self.show.time_range.map(|(a, b)| {
                use ftail_trace::replay::{first_tick_shown_at, last_tick_shown_at};
                let to = if b == u64::MAX {
                    u64::MAX
                } else {
                    origin.saturating_add(last_tick_shown_at(b, hz))
                };
                (origin.saturating_add(first_tick_shown_at(a, hz)), to)
            }),
        }
    }
}

/// `; patterns are globs …`: how a pattern that matched nothing was read,
/// and what might have been meant.
fn match_hint(text: &str, kind: MatchKind) -> String {
    let mut hint = match kind {
        MatchKind::Glob => {
            "; patterns are globs (--match=glob; --match=regex reads regular expressions)"
        }
        MatchKind::Regex => {
            "; patterns are regular expressions (--match=regex; --match=glob reads globs)"
        }
    }
    .to_string();
    if kind == MatchKind::Glob {
        if text.contains(".*") || text.contains('^') || text.contains('$') || text.contains('+') {
            hint.push_str("; it looks like a regular expression");
        }
        if text.rfind('[') > text.rfind(']') {
            hint.push_str("; a '[' without a ']' is a literal '['");
        }
    }
    hint
}

/// Where a command's text goes: a pager on a terminal, else standard
/// output.
pub struct Sink {
    pager: Option<std::process::Child>,
    out: Box<dyn Write + Send>,
}

impl Sink {
    /// A pager (`$PAGER`, or `less -FRX`) when standard output is a
    /// terminal and `pager` is true; standard output otherwise.
    pub fn new(pager: bool) -> Sink {
        if pager && std::io::stdout().is_terminal() {
            // $PAGER as the user set it; else less, when there is one
            // (without it, output goes to the terminal as it is).
            let cmd = std::env::var("PAGER").ok().or_else(|| {
                std::env::var_os("PATH")
                    .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("less").is_file()))
                    .then(|| "less -FRX".to_string())
            });
            if let Some(cmd) = cmd.filter(|c| !c.trim().is_empty()) {
                if let Ok(mut child) = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                {
                    if let Some(stdin) = child.stdin.take() {
                        return Sink {
                            pager: Some(child),
                            out: Box::new(std::io::BufWriter::with_capacity(1 << 16, stdin)),
                        };
                    }
                }
            }
        }
        Sink {
            pager: None,
            out: Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout(),
            )),
        }
    }

    /// The writer.
    pub fn out(&mut self) -> &mut (dyn Write + Send) {
        &mut *self.out
    }

    /// The text goes to a regular file or a pipe (not to a pager or a
    /// terminal, where it is best shown as soon as it is made, nor to a
    /// device such as `/dev/null`, where writing costs nothing).
    pub fn to_file_or_pipe(&self) -> bool {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileTypeExt;
        let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
            return false;
        };
        let kind = std::fs::File::from(fd).metadata().map(|m| m.file_type());
        self.pager.is_none() && kind.is_ok_and(|k| k.is_file() || k.is_fifo())
    }

    /// Flushes and waits for the pager. A reader that went away (a pipe
    /// closed, the pager quit) is not an error.
    pub fn finish(mut self, written: std::io::Result<()>) -> Result<()> {
        let flushed = written.and_then(|()| self.out.flush());
        drop(self.out);
        if let Some(mut p) = self.pager {
            let _ = p.wait();
        }
        match flushed {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e).context("writing the output"),
            Ok(()) => Ok(()),
        }
    }
}

/// Whether to colour: `always`, `never`, or `auto` (standard output is a
/// terminal and `NO_COLOR` is not set to a non-empty value, as
/// no-color.org asks; `--color always` still colours).
pub fn use_color(when: &str) -> bool {
    match when {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && !no_color(),
    }
}

/// `NO_COLOR` is set, and not empty.
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Writes `text` through a pager on a terminal (unless `no_pager`), as
/// replay does.
fn paged(text: &str, no_pager: bool) -> Result<()> {
    let mut sink = Sink::new(!no_pager);
    let r = sink.out().write_all(text.as_bytes());
    sink.finish(r)
}

/// How `ftail replay` lays its lines out.
#[derive(Args, Debug, Clone)]
pub struct ReplayShape {
    /// Columns, as uftrace names them: any of time, delta, elapsed,
    /// duration, tid, addr; none; +FIELDS adds to the default
    #[arg(
        short = 'f',
        long,
        value_name = "FIELDS",
        default_value = "duration,tid"
    )]
    pub fields: String,
    /// Do not put a call without callees on one line
    #[arg(long)]
    pub no_merge: bool,
    /// The time column shows wall-clock time (Unix seconds)
    #[arg(long)]
    pub wall_clock: bool,
    /// Show each function's source file and line (from debug info)
    #[arg(long)]
    pub srcline: bool,
    /// Do not show the times threads spent off the CPU (`linux:schedule`
    /// lines, where the trace has scheduler events)
    #[arg(long)]
    pub no_event: bool,
    /// Colours: auto, always or never
    #[arg(long, value_name = "WHEN", default_value = "auto",
          value_parser = ["auto", "always", "never"])]
    pub color: String,
    /// Do not page the output on a terminal
    #[arg(long)]
    pub no_pager: bool,
}

/// `ftail replay`.
pub fn replay(view: &ViewArgs, shape: &ReplayShape) -> Result<i32> {
    let o = view.open()?;
    let fields =
        ftail_trace::replay::Field::parse_list(&shape.fields).map_err(anyhow::Error::msg)?;
    let filters = view.filters(&o.trace);
    let color = use_color(&shape.color);
    let mut sink = Sink::new(!shape.no_pager);
    let opts = ftail_trace::replay::Options {
        filters,
        tids: view.show.tid.clone(),
        fields,
        merge_leaves: !shape.no_merge,
        absolute: shape.wall_clock,
        color,
        srcline: shape.srcline,
        sched: !shape.no_event,
        // Writing a large replay to a file costs about as much as
        // making its lines: a second thread does it meanwhile.
        overlap_writes: sink.to_file_or_pipe(),
    };
    // A bar only when the output goes to a file (not to a pager or the
    // terminal, which it would cut into).
    let progress = crate::progress::Progress::start(&view.dir, "replaying", false);
    let r = ftail_trace::replay::replay(&o.trace, &o.names, &opts, &mut sink.out());
    progress.finish();
    sink.finish(r)?;
    Ok(0)
}

/// How `ftail report` lays its rows out.
#[derive(Debug, Clone, Copy)]
pub struct ReportShape<'a> {
    /// `-f`: the columns.
    pub fields: &'a str,
    /// `-s`: the sort key.
    pub sort: &'a str,
    /// `--threads`: a row per thread and function.
    pub threads: bool,
    /// `--args`: a row per argument list.
    pub values: bool,
    /// `--srcline`: each function's source line.
    pub srcline: bool,
    /// `--no-sleep-time`: durations without the time off the CPU.
    pub no_sleep_time: bool,
}

/// `ftail report`'s columns when `-f` is not given.
pub const DEFAULT_REPORT_FIELDS: &str = "total,self,call,avg,min,max";

/// `ftail report`.
pub fn report(
    view: &ViewArgs,
    shape: ReportShape,
    diff: Option<&Path>,
    no_pager: bool,
) -> Result<i32> {
    use ftail_trace::report::SortKey;
    use ftail_trace::report::{render_columns, render_diff, report, Column, DiffLabels, Options};
    let Some(key) = SortKey::parse(shape.sort) else {
        bail!("unknown sort key {:?}", shape.sort);
    };
    let mut columns = Column::parse_list(shape.fields).map_err(anyhow::Error::msg)?;
    let o = view.open()?;
    let opts = Options {
        filters: view.filters(&o.trace),
        tids: view.show.tid.clone(),
        per_thread: shape.threads,
        values: shape.values,
        srcline: shape.srcline,
        no_sleep_time: shape.no_sleep_time,
    };
    let progress = crate::progress::Progress::start(&view.dir, "reading", true);
    let r = report(&o.trace, &o.names, &opts);
    progress.finish();
    if r.sched && shape.fields == DEFAULT_REPORT_FIELDS && !columns.contains(&Column::OffCpu) {
        columns.push(Column::OffCpu);
    }
    let text = match diff {
        None => render_columns(&r, key, &columns),
        Some(base) => {
            // As uftrace's `report --diff DATA`: DATA is the base (before),
            // the trace of -d is compared with it (after).
            let b = open(base, &view.show.symbols_dir)?;
            let opts_b = Options {
                filters: view.filters(&b.trace),
                ..opts
            };
            let before = report(&b.trace, &b.names, &opts_b);
            let (before_dir, after_dir) =
                (base.display().to_string(), view.dir.display().to_string());
            let labels = DiffLabels {
                before: &before_dir,
                after: &after_dir,
            };
            render_diff(&before, &r, labels, key)
        }
    };
    paged(&text, no_pager)?;
    Ok(0)
}

/// `ftail graph`.
pub fn graph(
    view: &ViewArgs,
    fields: &str,
    func: Option<&str>,
    callers: Option<&str>,
    srcline: bool,
    no_pager: bool,
) -> Result<i32> {
    use ftail_trace::graph::{render_fields, Field, Kind};
    let fields = Field::parse_list(fields).map_err(anyhow::Error::msg)?;
    let kind = match (func, callers) {
        (_, Some(c)) => Kind::Callers(c.to_string()),
        (Some(f), None) => Kind::Callees(f.to_string()),
        (None, None) => Kind::Whole,
    };
    let o = view.open()?;
    let progress = crate::progress::Progress::start(&view.dir, "reading", true);
    let text = render_fields(
        &o.trace,
        &o.names,
        &kind,
        &view.filters(&o.trace),
        &view.show.tid,
        &fields,
        srcline,
    );
    progress.finish();
    if text.is_empty() {
        if let Kind::Callees(g) | Kind::Callers(g) = &kind {
            bail!(
                "no call of a function matching {g:?} in {}",
                view.dir.display()
            );
        }
    }
    paged(&text, no_pager)?;
    Ok(0)
}

/// Which per-thread view `--task` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskView {
    /// `report --task`: one row per thread.
    Report,
    /// `graph --task`: the tree of processes and threads.
    Graph,
}

/// `ftail report --task`, `ftail graph --task`.
pub fn tasks(view: &ViewArgs, which: TaskView, no_pager: bool) -> Result<i32> {
    use ftail_trace::tasks::{render_graph, render_report, tasks};
    let o = view.open()?;
    let progress = crate::progress::Progress::start(&view.dir, "reading", true);
    let t = tasks(&o.trace, &o.names, &view.filters(&o.trace), &view.show.tid);
    progress.finish();
    let text = match which {
        TaskView::Report => render_report(&t),
        TaskView::Graph => render_graph(&t),
    };
    paged(&text, no_pager)?;
    Ok(0)
}

/// `ftail info`.
pub fn info(dir: &Path, count_events: bool) -> Result<i32> {
    let trace = TraceDir::open(dir)?;
    let headers = ftail_trace::trace::open_headers(dir)?;
    let progress = crate::progress::Progress::start(dir, "counting events", true);
    let text = ftail_trace::info::render(&trace, &headers, count_events);
    progress.finish();
    crate::out::stdout(&text)?;
    Ok(0)
}

/// Timeline lines `ftail tui` keeps in memory (32 bytes each: 96 MiB);
/// past them the lines go to an unlinked file.
const TUI_MEMORY_LINES: u64 = 3 << 20;

/// Timeline lines per block of `ftail tui`'s search summaries:
/// `FTAIL_TUI_BLOCK_LINES` (tests make traces span many blocks), else
/// 64 Ki.
fn tui_block_lines() -> u64 {
    std::env::var("FTAIL_TUI_BLOCK_LINES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ftail_tui::index::BLOCK_LINES)
}

/// `ftail tui`.
pub fn tui(view: &ViewArgs) -> Result<i32> {
    let o = view.open()?;
    let opts = ftail_tui::Options {
        filters: view.filters(&o.trace),
        tids: view.show.tid.clone(),
        color: !no_color(),
        memory_lines: TUI_MEMORY_LINES,
        block_lines: tui_block_lines(),
        parse_duration,
    };
    ftail_tui::run(o.trace, o.names, opts).context("ftail tui")?;
    Ok(0)
}

/// `ftail dump`.
pub fn dump(view: &ViewArgs) -> Result<i32> {
    let o = view.open()?;
    let filters = view.filters(&o.trace);
    let mut sink = Sink::new(false);
    let progress = crate::progress::Progress::start(&view.dir, "dumping", false);
    let r = ftail_trace::dump::dump(
        &o.trace,
        &o.names,
        &view.show.tid,
        &filters,
        &mut sink.out(),
    );
    progress.finish();
    sink.finish(r)?;
    Ok(0)
}
