//! `ftail tui`: an interactive viewer of a trace in the terminal — the
//! aggregated call graph, one thread's timeline as `replay` shows it,
//! the report and the trace's information, switched by key, with the
//! processes and threads in a side panel.
//!
//! Nothing here decodes a trace: the views are `ftail-trace`'s analyses
//! (`graph`, `report`, `info`) and its streaming reader through replay's
//! filters, indexed per thread ([`index`]) so that a trace of any size
//! opens at once and every key costs a screenful of reads.
//!
//! The terminal is put back as it was on every way out: `q`, Ctrl-C,
//! SIGTERM, SIGHUP and SIGINT, an error, and a panic (a hook restores it
//! before the panic message is printed).
#![deny(missing_docs)]

mod app;
mod draw;
pub mod index;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ftail_trace::names::Names;
use ftail_trace::reader::dir::TraceDir;
use ftail_trace::view::Filters;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};

/// What the viewer shows and how.
pub struct Options {
    /// The filters at start (`-F/-N/-D/-t/…`, as replay takes them).
    pub filters: Filters,
    /// Only these threads (empty: all).
    pub tids: Vec<u32>,
    /// Colours (256); false with `NO_COLOR`.
    pub color: bool,
    /// Timeline lines kept in memory per thread; the rest go to a file.
    pub memory_lines: u64,
    /// Timeline lines per block of the search's summaries.
    pub block_lines: u64,
    /// Reads a duration typed in (`t`), in ns.
    pub parse_duration: fn(&str) -> Result<f64, String>,
}

/// Where the timeline's lines past the memory bound go: the trace
/// directory when it is the user's own and no one else may write it,
/// else the temporary directory. The file is created unlinked, 0600.
fn spill_dir(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    });
    if own {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Puts the terminal back: main screen, cooked mode, cursor, no mouse
/// reports. Safe to call more than once.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal when dropped (every return, and unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the viewer on `trace` (its `names`, one per image) until the user
/// quits or a signal asks it to end.
///
/// # Errors
///
/// Standard input or output is not a terminal, or the terminal failed.
pub fn run(trace: TraceDir, names: Vec<Names>, opts: Options) -> io::Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(io::Error::other(
            "ftail tui needs a terminal (standard input and output)",
        ));
    }
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(sig, quit.clone())?;
    }
    // A panic anywhere (the indexing threads too) puts the terminal back
    // before its message, and ends the viewer.
    let previous = std::panic::take_hook();
    let on_panic = quit.clone();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        on_panic.store(true, Ordering::Relaxed);
        previous(info);
    }));
    let spill = spill_dir(&trace.dir);
    let mut app = app::App::new(trace, names, opts, spill);
    enable_raw_mode()?;
    let _restore = Restore;
    execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
    let backend = ratatui::backend::CrosstermBackend::new(io::stdout());
    let mut terminal = ratatui::Terminal::new(backend)?;
    while !app.done && !quit.load(Ordering::Relaxed) {
        terminal.draw(|f| draw::draw(f, &mut app))?;
        // Wakes up now and then to show the indexing's progress and to
        // see a signal's flag. The terminal is watched here first:
        // crossterm reads a hung-up terminal's end of file again and again
        // inside its own poll, so a closed window must end the viewer
        // before crossterm is asked.
        if let Input::Gone = terminal_input(Duration::from_millis(100)) {
            break;
        }
        // Every event crossterm already holds, not only the first.
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(k) => app.key(k),
                Event::Mouse(m) => app.mouse(m),
                // The next draw lays out for the new size.
                Event::Resize(..) => terminal.autoresize()?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// What the terminal has for the viewer.
enum Input {
    /// Something to read, or nothing yet.
    Open,
    /// Hung up or closed: nobody is looking any more.
    Gone,
}

/// Waits up to `timeout` for the terminal on standard input.
fn terminal_input(timeout: Duration) -> Input {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdin = io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    });
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => Input::Open,
        Ok(_) => {
            let got = fds[0].revents();
            if got.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                Input::Gone
            } else {
                Input::Open
            }
        }
        // A signal: the loop looks at its flag.
        Err(rustix::io::Errno::INTR) => Input::Open,
        Err(_) => Input::Gone,
    }
}
