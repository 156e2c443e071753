//! `dump --perfetto/--chrome/--speedscope/--flame-graph`, `flame` and
//! `export --parquet`: glue between the command line and `ftail_export`,
//! with a progress bar on a terminal and a line saying where the output
//! went and what opens it.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use ftail_export::folded::Weight;
use ftail_export::{Input, Progress};

use crate::analyze::{open, ViewArgs};

/// `ftail dump`'s export formats.
#[derive(Args, Debug, Clone)]
pub struct DumpArgs {
    /// Write Perfetto's protobuf trace (ui.perfetto.dev opens it)
    #[arg(long, group = "format")]
    pub perfetto: bool,
    /// Write Chrome Trace Event JSON (Perfetto, chrome://tracing)
    #[arg(long, group = "format")]
    pub chrome: bool,
    /// Write speedscope's JSON format (speedscope opens it)
    #[arg(long, group = "format")]
    pub speedscope: bool,
    /// Write folded stacks (flamegraph.pl and inferno read them)
    #[arg(long, group = "format")]
    pub flame_graph: bool,
    /// Output file ('-': standard output; default: ftail.perfetto-trace,
    /// ftail.chrome.json, ftail.speedscope.json, or standard output)
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Folded stacks weigh self time (ns) or calls
    #[arg(long, value_name = "WHAT", default_value = "self",
          value_parser = ["self", "calls"])]
    pub weight: String,
    /// Add each function's source file and line (needs -g)
    #[arg(long)]
    pub srcline: bool,
}

/// `ftail flame`'s options.
#[derive(Args, Debug, Clone)]
pub struct FlameArgs {
    /// Output file ('-': standard output)
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        default_value = "ftail-flame.svg"
    )]
    pub output: PathBuf,
    /// Widths measure self time (ns) or calls
    #[arg(long, value_name = "WHAT", default_value = "self",
          value_parser = ["self", "calls"])]
    pub weight: String,
    /// Differential graph against a base trace, as `report --diff`:
    /// frames as wide as in -d (after), coloured by the change since
    /// BASE_DIR (before): red grew, blue shrank
    #[arg(long, value_name = "BASE_DIR")]
    pub diff: Option<PathBuf>,
    /// Title of the graph (default: the program)
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

fn weight(w: &str) -> Weight {
    match w {
        "calls" => Weight::Calls,
        _ => Weight::SelfTime,
    }
}

/// Where output goes: a file, or standard output for `-`.
enum Dest {
    File(PathBuf),
    Stdout,
}

impl Dest {
    fn new(path: &Path) -> Dest {
        if path.as_os_str() == "-" {
            Dest::Stdout
        } else {
            Dest::File(path.to_path_buf())
        }
    }

    /// Runs `f` on a buffered writer to the destination; a closed pipe
    /// ends ftail quietly.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Write) -> std::io::Result<T>) -> Result<T> {
        let r = match self {
            Dest::File(p) => {
                // Private, never through a link, and renamed into place
                // only once complete.
                let mut out = ftail_export::output::create_file(p)?;
                let mut w = BufWriter::with_capacity(1 << 20, out.writer());
                let t = f(&mut w)
                    .and_then(|t| w.flush().map(|()| t))
                    .with_context(|| format!("writing {}", p.display()))?;
                drop(w);
                out.commit()?;
                Ok(t)
            }
            Dest::Stdout => {
                let mut w = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                match f(&mut w).and_then(|t| w.flush().map(|()| t)) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Err(crate::out::ClosedPipe.into())
                    }
                    r => r.context("writing to standard output"),
                }
            }
        };
        r
    }

    /// Says where the output went, and what opens it.
    fn report(&self, what: &str, open_with: &str) {
        self.report_for(what, open_with, None);
    }

    /// Says where the output went, and what opens it; past what `viewer`
    /// loads, what to do instead.
    fn report_for(&self, what: &str, open_with: &str, viewer: Option<&Viewer>) {
        if let Dest::File(p) = self {
            let size = std::fs::metadata(p).map_or(0, |m| m.len());
            let after = match viewer {
                Some(v) if size > v.max_bytes() => v.too_large(),
                _ => open_with.to_string(),
            };
            crate::out::stderr(&format!(
                "ftail: {what} written to {} ({}){after}",
                p.display(),
                human_bytes(size)
            ));
        }
    }
}

/// The programs that open an export, and the largest file they load.
struct Viewer {
    /// Who, as the user knows them.
    names: &'static str,
    /// The largest file they load, in bytes.
    max_bytes: u64,
    /// Another way to open a larger file, if there is one.
    instead: &'static str,
}

/// The Perfetto UI runs in a browser tab, which typically gets about
/// 2 GB, and a trace takes 2-4 times its size there (Perfetto's
/// "Visualising large traces"); its native trace processor has no such
/// limit.
const PERFETTO_UI: Viewer = Viewer {
    names: "the Perfetto UI",
    max_bytes: 1_000_000_000,
    instead: ", or open it through `trace_processor --httpd FILE` \
              (https://perfetto.dev/docs/visualization/large-traces)",
};

/// chrome://tracing reads JSON as one string and stops at 256 MB (the
/// string limit of the V8 it was built for); the Perfetto UI parses JSON
/// into many times its size.
const CHROME_TRACING: Viewer = Viewer {
    names: "chrome://tracing and the Perfetto UI",
    max_bytes: 256_000_000,
    instead: ", or write --perfetto (a fraction of the size)",
};

/// speedscope reads the file as one string: V8's longest is 2^29 - 24
/// characters (about 536 MB).
const SPEEDSCOPE: Viewer = Viewer {
    names: "speedscope",
    max_bytes: 512_000_000,
    instead: "",
};

impl Viewer {
    /// The limit, or `FTAIL_VIEWER_MAX_BYTES` when set (for tests and
    /// for viewers with other limits).
    fn max_bytes(&self) -> u64 {
        std::env::var("FTAIL_VIEWER_MAX_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.max_bytes)
    }

    /// What to say of a file larger than the viewer loads.
    fn too_large(&self) -> String {
        format!(
            "; larger than {} load (about {}): keep less of the trace with \
             --time-range START~END, -F FUNC, -D DEPTH or --tid TID{}",
            self.names,
            human_bytes(self.max_bytes()),
            self.instead
        )
    }
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} bytes")
    }
}

/// A progress bar on standard error while an export runs, when standard
/// error is a terminal; cleared when dropped.
struct Bar {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    fn start(progress: &Arc<Progress>) -> Bar {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let (p, d) = (progress.clone(), done.clone());
            std::thread::spawn(move || {
                let mut shown = false;
                let mut waited = 0;
                while !d.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    waited += 1;
                    // Only for exports that take a while.
                    if waited < 5 || waited % 2 != 0 {
                        continue;
                    }
                    let f = p.fraction();
                    let filled = (f * 30.0) as usize;
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\rftail: [{}{}] {:3.0}% {:.1} M events",
                        "#".repeat(filled),
                        " ".repeat(30 - filled),
                        f * 100.0,
                        p.done() as f64 / 1e6
                    );
                    let _ = err.flush();
                    shown = true;
                }
                if shown {
                    let _ = write!(std::io::stderr().lock(), "\r{:70}\r", "");
                }
            })
        });
        Bar { done, thread }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs an export of `view`'s trace with a progress bar, and prints its
/// notes.
fn with_input<T>(
    view: &ViewArgs,
    srcline: bool,
    f: impl FnOnce(&Input) -> Result<(T, ftail_export::Notes)>,
) -> Result<T> {
    let o = view.open()?;
    let filters = view.filters(&o.trace);
    let progress = Arc::new(Progress::new());
    let input = Input {
        trace: &o.trace,
        names: &o.names,
        filters: &filters,
        tids: &view.show.tid,
        srcline,
        progress: &progress,
    };
    progress.estimate(ftail_export::selected(&input).into_iter().map(|(_, t)| t));
    let bar = Bar::start(&progress);
    let r = f(&input);
    drop(bar);
    let (t, notes) = r?;
    for n in notes {
        crate::out::stderr(&format!("ftail: {n}"));
    }
    Ok(t)
}

/// `ftail dump` with an export format; `None` when none was asked for.
pub fn dump(view: &ViewArgs, args: &DumpArgs) -> Result<Option<i32>> {
    #[allow(clippy::type_complexity)]
    let (default, what, open_with, viewer): (&str, &str, &str, Option<&Viewer>) = if args.perfetto {
        (
            "ftail.perfetto-trace",
            "Perfetto trace",
            "; open it at https://ui.perfetto.dev",
            Some(&PERFETTO_UI),
        )
    } else if args.chrome {
        (
            "ftail.chrome.json",
            "Chrome trace",
            "; open it at https://ui.perfetto.dev or chrome://tracing",
            Some(&CHROME_TRACING),
        )
    } else if args.speedscope {
        (
            "ftail.speedscope.json",
            "speedscope profile",
            "; open it with speedscope (npx speedscope FILE)",
            Some(&SPEEDSCOPE),
        )
    } else if args.flame_graph {
        (
            "-",
            "folded stacks",
            "; draw them with `ftail flame`, flamegraph.pl or inferno",
            None,
        )
    } else {
        return Ok(None);
    };
    let dest = Dest::new(args.output.as_deref().unwrap_or(Path::new(default)));
    with_input(view, args.srcline, |input| {
        let notes = dest.write(|w| {
            if args.perfetto {
                ftail_export::perfetto::write(input, w)
            } else if args.chrome {
                ftail_export::chrome::write(input, w)
            } else if args.speedscope {
                ftail_export::speedscope::write(input, w)
            } else {
                ftail_export::folded::write(input, weight(&args.weight), w)
            }
        })?;
        Ok(((), notes))
    })?;
    dest.report_for(what, open_with, viewer);
    Ok(Some(0))
}

/// `ftail dump -o FILE` without a format: the text dump into FILE.
pub fn dump_text(view: &ViewArgs, output: &Path) -> Result<i32> {
    let o = view.open()?;
    let filters = view.filters(&o.trace);
    let dest = Dest::new(output);
    dest.write(|w| {
        let mut w = w;
        ftail_trace::dump::dump(&o.trace, &o.names, &view.show.tid, &filters, &mut w)
    })?;
    dest.report("events", "");
    Ok(0)
}

/// `ftail flame`.
pub fn flame(view: &ViewArgs, args: &FlameArgs) -> Result<i32> {
    let dest = Dest::new(&args.output);
    let other = match &args.diff {
        Some(d) => Some(open(d, &view.show.symbols_dir)?),
        None => None,
    };
    with_input(view, false, |input| {
        let title = args.title.clone().unwrap_or_else(|| {
            let program = input
                .trace
                .images
                .first()
                .map(ftail_export::process_name)
                .unwrap_or_default();
            let by = match weight(&args.weight) {
                Weight::SelfTime => "self time",
                Weight::Calls => "calls",
            };
            match &args.diff {
                Some(d) => format!("{program}: {by}, change since {}", d.display()),
                None => format!("{program}: {by}"),
            }
        });
        let opts = ftail_export::flame::Options {
            title,
            weight: weight(&args.weight),
        };
        let notes = dest.write(|w| match &other {
            None => ftail_export::flame::write(input, &opts, w),
            Some(b) => {
                let filters = view.filters(&b.trace);
                let before = Input {
                    trace: &b.trace,
                    names: &b.names,
                    filters: &filters,
                    ..*input
                };
                ftail_export::flame::write_diff(&before, input, &opts, w)
            }
        })?;
        Ok(((), notes))
    })?;
    dest.report("flame graph", "; open it in a web browser");
    Ok(0)
}

/// `ftail export --parquet DIR`.
pub fn parquet(view: &ViewArgs, dir: &Path) -> Result<i32> {
    if dir.as_os_str().is_empty() {
        bail!("--parquet needs a directory");
    }
    with_input(view, false, |input| {
        let notes = ftail_export::parquet::write(input, dir)
            .with_context(|| format!("writing Parquet tables to {}", dir.display()))?;
        Ok(((), notes))
    })?;
    crate::out::stderr(&format!(
        "ftail: Parquet tables written to {}/{{calls,functions,threads}}; \
         e.g. duckdb -c \"SELECT count(*) FROM '{}/calls/*/*.parquet'\"",
        dir.display(),
        dir.display()
    ));
    Ok(0)
}
