//! `replay`, `report`, `graph`, `info`, `dump` and `live`: glue between
//! the command line and `ftail_trace`'s streaming analyses, and the
//! terminal (a pager and colours when standard output is one).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use ftail_trace::names::{for_images_where, Names};
use ftail_trace::reader::dir::TraceDir;
use ftail_trace::view::Filters;

/// Options every analysis takes: where the trace is and what of it to use.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    /// Trace directory
    #[arg(short = 'd', long, default_value = "ftail.data")]
    pub dir: PathBuf,
    /// Only these threads (repeatable, or comma-separated)
    #[arg(long, value_name = "TID", value_delimiter = ',')]
    pub tid: Vec<u32>,
    /// Only calls under functions matching GLOB (repeatable; demangled
    /// or mangled names)
    #[arg(short = 'F', long = "filter", value_name = "GLOB")]
    pub filter: Vec<String>,
    /// Not functions matching GLOB, nor what they call (repeatable)
    #[arg(short = 'N', long = "notrace", value_name = "GLOB")]
    pub notrace: Vec<String>,
    /// At most this many levels of calls
    #[arg(short = 'D', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub depth: Option<u32>,
    /// Not calls shorter than TIME (e.g. 10us, 1.5ms, 2s; plain: ns)
    #[arg(short = 't', long = "time-filter", value_name = "TIME", value_parser = parse_duration)]
    pub min_time: Option<f64>,
    /// Only calls starting in START~END (times since the trace began,
    /// e.g. 1ms~2.5ms, 10ms~, ~1s)
    #[arg(long, value_name = "START~END", value_parser = parse_range)]
    pub time_range: Option<(f64, f64)>,
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

/// `START~END`, either side may be empty; in ns.
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let Some((a, b)) = s.split_once('~') else {
        return Err(format!(
            "{s:?} is not a time range (START~END, e.g. 1ms~2ms)"
        ));
    };
    let from = if a.trim().is_empty() {
        0.0
    } else {
        parse_duration(a)?
    };
    let to = if b.trim().is_empty() {
        f64::INFINITY
    } else {
        parse_duration(b)?
    };
    if from > to {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    Ok((from, to))
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
    /// Opens the trace, naming only the images of the selected threads.
    pub fn open(&self) -> Result<Opened> {
        open_threads(&self.dir, &self.symbols_dir, &self.tid)
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
            include: self.filter.clone(),
            exclude: self.notrace.clone(),
            depth: self.depth,
            min_ticks: self.min_time.map_or(0, ticks),
            range: self.time_range.map(|(a, b)| {
                let to = if b.is_finite() {
                    origin.saturating_add(ticks(b))
                } else {
                    u64::MAX
                };
                (origin.saturating_add(ticks(a)), to)
            }),
        }
    }
}

/// Where a command's text goes: a pager on a terminal, else standard
/// output.
pub struct Sink {
    pager: Option<std::process::Child>,
    out: Box<dyn Write>,
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
    pub fn out(&mut self) -> &mut dyn Write {
        &mut *self.out
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
/// terminal).
pub fn use_color(when: &str) -> bool {
    match when {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    }
}

/// How `ftail replay` lays its lines out.
#[derive(Args, Debug, Clone)]
pub struct ReplayShape {
    /// Columns: any of time, delta, duration, tid
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
    let opts = ftail_trace::replay::Options {
        filters: view.filters(&o.trace),
        tids: view.tid.clone(),
        fields,
        merge_leaves: !shape.no_merge,
        absolute: shape.wall_clock,
        color: use_color(&shape.color),
        srcline: shape.srcline,
    };
    let mut sink = Sink::new(!shape.no_pager);
    // A bar only when the output goes to a file (not to a pager or the
    // terminal, which it would cut into).
    let progress = crate::progress::Progress::start(&view.dir, "replaying", false);
    let r = ftail_trace::replay::replay(&o.trace, &o.names, &opts, &mut sink.out());
    progress.finish();
    sink.finish(r)?;
    Ok(0)
}

/// `ftail report`.
pub fn report(
    view: &ViewArgs,
    sort: &str,
    threads: bool,
    values: bool,
    diff: Option<&Path>,
) -> Result<i32> {
    use ftail_trace::report::{render, render_diff, report, Options, SortKey};
    let Some(key) = SortKey::parse(sort) else {
        bail!("unknown sort key {sort:?}");
    };
    let o = view.open()?;
    let opts = Options {
        filters: view.filters(&o.trace),
        tids: view.tid.clone(),
        per_thread: threads,
        values,
    };
    let progress = crate::progress::Progress::start(&view.dir, "reading", true);
    let r = report(&o.trace, &o.names, &opts);
    progress.finish();
    let text = match diff {
        None => render(&r, key),
        Some(other) => {
            let b = open(other, &view.symbols_dir)?;
            let opts_b = Options {
                filters: view.filters(&b.trace),
                ..opts
            };
            render_diff(&r, &report(&b.trace, &b.names, &opts_b), key)
        }
    };
    crate::out::stdout(&text)?;
    Ok(0)
}

/// `ftail graph`.
pub fn graph(view: &ViewArgs, func: Option<&str>, callers: Option<&str>) -> Result<i32> {
    use ftail_trace::graph::{render, Kind};
    let kind = match (func, callers) {
        (_, Some(c)) => Kind::Callers(c.to_string()),
        (Some(f), None) => Kind::Callees(f.to_string()),
        (None, None) => Kind::Whole,
    };
    let o = view.open()?;
    let progress = crate::progress::Progress::start(&view.dir, "reading", true);
    let text = render(
        &o.trace,
        &o.names,
        &kind,
        &view.filters(&o.trace),
        &view.tid,
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
    crate::out::stdout(&text)?;
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

/// `ftail dump`.
pub fn dump(view: &ViewArgs) -> Result<i32> {
    let o = view.open()?;
    let range = view.filters(&o.trace).range;
    let mut sink = Sink::new(false);
    let progress = crate::progress::Progress::start(&view.dir, "dumping", false);
    let r = ftail_trace::dump::dump(&o.trace, &o.names, &view.tid, range, &mut sink.out());
    progress.finish();
    sink.finish(r)?;
    Ok(0)
}
