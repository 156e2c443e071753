//! A progress bar on standard error for analyses that read a large trace:
//! shown only when standard error is a terminal (nothing on a pipe), and
//! only once the work has taken a second (`FTAIL_PROGRESS_AFTER_MS`
//! changes that), so quick commands print nothing extra. It follows the reader's count of event bytes read against the
//! space the trace's event files take on disk.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running progress display; [`Progress::finish`] ends it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes of records the event files of `dir` hold: what a drained ring's
/// stream holds (its event file is cut to a page once drained), else the
/// room the file occupies (sparse room not counted).
fn event_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".events"))
        .filter_map(|e| {
            let path = e.path();
            let on_disk = e.metadata().ok().map(|m| (m.blocks() * 512).min(m.len()));
            drained_stream_bytes(&path).or(on_disk)
        })
        .sum()
}

/// The bytes of records a drained ring's stream holds; `None` for any
/// other event file.
fn drained_stream_bytes(path: &Path) -> Option<u64> {
    use ftail_trace::reader::events::{read_header, written_bytes};
    let mut file = std::fs::File::open(path).ok()?;
    let header = read_header(&mut file).ok()?;
    (header.drain != 0)
        .then(|| written_bytes(path, &header).ok())
        .flatten()
}

impl Progress {
    /// Starts following the reading of the trace in `dir`, labelled `what`;
    /// `also_when_stdout_is_a_terminal`: false for commands that stream
    /// their output to the terminal (the bar would cut into it).
    pub fn start(dir: &Path, what: &'static str, also_when_stdout_is_a_terminal: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let wanted = std::io::stderr().is_terminal()
            && (also_when_stdout_is_a_terminal || !std::io::stdout().is_terminal());
        if !wanted {
            return Progress { stop, thread: None };
        }
        let total = event_bytes(dir).max(1);
        let base = ftail_trace::reader::events::bytes_read();
        let flag = stop.clone();
        let after = std::env::var("FTAIL_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_millis);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut bar: Option<indicatif::ProgressBar> = None;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if started.elapsed() < after {
                    continue;
                }
                let bar = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(total);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b.set_message(what);
                    b
                });
                let done = ftail_trace::reader::events::bytes_read() - base;
                bar.set_position(done.min(total));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the display (clearing the bar).
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
