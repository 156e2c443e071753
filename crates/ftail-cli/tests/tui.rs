//! `ftail tui` driven as a person would drive it, in a terminal that
//! tmux emulates: keys sent with `send-keys`, the screen read back with
//! `capture-pane`. Each test has a tmux server of its own (a socket in its
//! temporary directory). Without tmux the tests say so and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// main → a → b → c, a → c, d (2 ms), b → c; and a thread running
/// worker → c.
const SOURCE: &str = r#"
#include <pthread.h>
#include <unistd.h>
static volatile int calls;
__attribute__((noinline)) int c(int x) { calls++; return x + 1; }
__attribute__((noinline)) int b(int x) { calls++; return c(x) * 2; }
__attribute__((noinline)) int a(int x) { calls++; return b(x) + c(x); }
__attribute__((noinline)) int d(int x) { calls++; usleep(2000); return x - 1; }
__attribute__((noinline)) void *worker(void *p) { calls++; c(5); return p; }
int main(void) {
  pthread_t t;
  pthread_create(&t, 0, worker, 0);
  pthread_join(t, 0);
  int s = a(1) + d(2) + b(3);
  return s & calls & 0;
}
"#;

fn tmux_missing() -> bool {
    // tmux takes -V, not --version.
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!full_suite(), "tmux is required by the full test suite");
        eprintln!("skipping: tmux is not installed (scripts/install-deps installs it)");
    }
    !ok
}

/// The small trace, and the directory it is in.
struct Small {
    dir: tempfile::TempDir,
    trace: PathBuf,
}

impl Small {
    /// `ftail tui` on the trace, in a 120×40 window.
    fn tui(&self) -> Tmux {
        Tmux::start(self.dir.path(), &quoted(&self.trace), "", 120, 40)
    }
}

fn small() -> Small {
    let dir = scratch();
    let src = dir.path().join("abc.c");
    std::fs::write(&src, SOURCE).unwrap();
    let exe = dir.path().join("abc");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .args(["-O0", "-pthread"]),
    );
    // The screens asserted on are the program's own calls.
    let trace = dir.path().join("trace");
    let (out, _) = record_trace(&trace, &exe, &[], &["--no-libcall"]);
    assert!(out.status.success(), "{out:?}");
    Small { dir, trace }
}

/// A tmux server of the test's own, with one window running a command.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Runs `ftail tui ARGS` in a `width`×`height` window, under a shell
    /// that says how it ended and what the terminal's modes are then.
    fn start(dir: &Path, args: &str, env: &str, width: u16, height: u16) -> Tmux {
        // A socket per server: a server just killed may still hold its
        // name for a moment.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = dir.join(format!("tmux-{n}.sock"));
        let pidfile = dir.join("tui.pid");
        let cmd = format!(
            "{env} sh -c 'echo $$ > {pid}; exec {ftail} tui {args}'; \
             echo \"exit=$?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo; \
             sleep 600",
            pid = pidfile.display(),
            ftail = ftail().display(),
        );
        let t = Tmux { socket };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &cmd,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-f", "/dev/null", "-S"])
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.tmux(&["send-keys", k]);
            assert!(out.status.success(), "send-keys {k}: {out:?}");
            // One key at a time, as typed (an Escape followed at once by
            // a key reads as Alt and that key).
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-l", "--", text]);
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(Duration::from_millis(60));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// The screen with its attributes as escape sequences.
    fn screen_escaped(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-e"]).stdout).into_owned()
    }

    /// Waits (10 s at most) until the screen satisfies `ok`; the screen.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait(text, |s| s.contains(text))
    }

    /// The line the cursor (reverse video) is on in the view (right of
    /// the side panel), without its attributes.
    fn cursor_line(&self) -> String {
        let s = self.screen_escaped();
        let lines: Vec<&str> = s.lines().collect();
        // Not the view bar (first line) nor the status line (last).
        let rows = &lines[1..lines.len().saturating_sub(1)];
        rows.iter()
            .map(|l| l.split_once('│').map_or(*l, |(_, view)| view))
            .find(|view| view.contains("\x1b[7m"))
            .map(strip_escapes)
            .unwrap_or_else(|| panic!("no cursor on the screen:\n{s}"))
    }

    /// Asks for the window's new size.
    fn resize(&self, width: u16, height: u16) {
        let out = self.tmux(&[
            "resize-window",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }

    /// Whether the pane shows the alternate screen, and whether the
    /// program asked for mouse reports.
    fn modes(&self) -> String {
        let out = self.tmux(&[
            "display-message",
            "-p",
            "alternate=#{alternate_on} mouse=#{mouse_any_flag}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// After ftail has ended: its exit status line, and the terminal is
    /// as it was (main screen, no mouse reports, canonical mode, echo).
    fn assert_restored(&self) -> String {
        let s = self.wait("ftail to end", |s| {
            s.contains("exit=") && s.contains("echo")
        });
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        assert!(
            lines.contains(&"icanon"),
            "not back in canonical mode:\n{s}"
        );
        assert!(lines.contains(&"echo"), "echo not back on:\n{s}");
        assert_eq!(self.modes(), "alternate=0 mouse=0", "{s}");
        s
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The screen rows that end with the function `name`.
fn rows_of(screen: &str, name: &str) -> Vec<usize> {
    let end = format!(" {name}");
    screen
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&end))
        .map(|(i, _)| i)
        .collect()
}

fn quoted(p: &Path) -> String {
    format!("-d {}", p.display())
}

#[test]
fn every_view_shows_and_q_restores_the_terminal() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    // The call graph first: every path once, with its calls.
    let s = t.wait_for("CALLS  FUNCTION");
    let s = if s.contains("- main") {
        s
    } else {
        t.wait_for("- main")
    };
    assert!(s.contains("# process"), "{s}");
    assert!(s.contains("thread"), "the side panel lists threads:\n{s}");
    assert!(t.modes().starts_with("alternate=1"), "{}", t.modes());
    t.keys(&["2"]);
    let s = t.wait_for("main() {");
    for line in ["  a() {", "b() {", "c();", "} /* a */", "d();"] {
        assert!(s.contains(line), "timeline has {line:?}:\n{s}");
    }
    t.keys(&["3"]);
    let s = t.wait_for("TOTAL▼");
    assert!(
        s.contains("SELF") && s.contains("CALLS") && s.contains("MAX"),
        "{s}"
    );
    t.keys(&["4"]);
    let s = t.wait_for("command line");
    assert!(s.contains("threads"), "{s}");
    t.keys(&["?"]);
    let s = t.wait_for(" keys ");
    assert!(s.contains("search by name") && s.contains("quit"), "{s}");
    t.keys(&["Escape"]);
    t.wait("the help to close", |s| !s.contains(" keys "));
    t.keys(&["Tab"]);
    t.wait_for("- main");
    t.keys(&["q"]);
    let s = t.assert_restored();
    assert!(s.contains("exit=0"), "{s}");
}

#[test]
fn calls_fold_and_unfold_in_the_graph_and_the_timeline() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    // Whole-trace graph: the process heading, main, then a (under main).
    t.keys(&["Down", "Down"]);
    assert!(t.cursor_line().contains("- a"), "{}", t.cursor_line());
    t.keys(&["Enter"]);
    let s = t.wait_for("+ a");
    // b showed under a and under main: main's is left.
    assert_eq!(rows_of(&s, "b").len(), 1, "{s}");
    t.keys(&["Enter"]);
    t.wait_for("- a");
    // Fold everything under main, then unfold it all again.
    t.keys(&["Up", "c"]);
    let s = t.wait_for("+ a");
    assert!(s.contains("- main"), "{s}");
    t.keys(&["e"]);
    t.wait_for("- a");

    t.keys(&["2"]);
    t.wait_for("main() {");
    t.keys(&["Down"]);
    assert!(t.cursor_line().contains("a() {"), "{}", t.cursor_line());
    t.keys(&["Enter"]);
    let s = t.wait_for("a() { … }");
    assert!(!s.contains("} /* a */"), "a's lines are folded away:\n{s}");
    // Its duration shows on the folded line.
    assert!(
        t.cursor_line().contains(" us ") || t.cursor_line().contains(" ns "),
        "{}",
        t.cursor_line()
    );
    t.keys(&["Enter"]);
    let s = t.wait_for("} /* a */");
    assert!(!s.contains("… }"), "{s}");
    // Every callee of main folded at once, then all unfolded.
    t.keys(&["Up", "c"]);
    let s = t.wait_for("b() { … }");
    assert!(s.contains("a() { … }") && s.contains("d();"), "{s}");
    assert!(!s.contains("c();"), "{s}");
    // One of them unfolded again.
    t.keys(&["Down", "Enter"]);
    let s = t.wait_for("} /* a */");
    assert!(s.contains("b() { … }"), "{s}");
    // e on main: everything under it unfolded.
    t.keys(&["Up", "e"]);
    t.wait("everything unfolded", |s| !s.contains("… }"));
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn search_and_jumps_move_to_the_calls_asked_for() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    t.keys(&["2"]);
    t.wait_for("main() {");
    t.keys(&["/"]);
    t.type_text("c");
    t.keys(&["Enter"]);
    t.wait_for("/c");
    assert!(t.cursor_line().contains("c();"), "{}", t.cursor_line());
    // The caller of that c is b.
    t.keys(&["u"]);
    assert!(t.cursor_line().contains("b() {"), "{}", t.cursor_line());
    // The next call of b, then back to the first.
    t.keys(&[">"]);
    let second = t.cursor_line();
    assert!(second.contains("b() {"), "{second}");
    t.keys(&["<"]);
    assert_ne!(t.cursor_line(), second);
    assert!(t.cursor_line().contains("b() {"), "{}", t.cursor_line());
    // n: the next c (under a, after b's).
    t.keys(&["n"]);
    assert!(t.cursor_line().contains("c();"), "{}", t.cursor_line());
    // The slowest call of d is d's only call.
    t.keys(&["/"]);
    t.type_text("d");
    t.keys(&["Enter", "m"]);
    assert!(t.cursor_line().contains("d();"), "{}", t.cursor_line());
    assert!(t.cursor_line().contains(" ms "), "{}", t.cursor_line());
    // From the report, Enter goes to the function's first call.
    t.keys(&["Home", "3"]);
    t.wait_for("TOTAL▼");
    t.keys(&["n"]);
    assert!(
        t.cursor_line().trim_end().ends_with(" d"),
        "{}",
        t.cursor_line()
    );
    t.keys(&["Enter"]);
    let s = t.wait_for("first call of d");
    assert!(t.cursor_line().contains("d();"), "{s}");
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn threads_switch_sorting_changes_and_a_resize_lays_out_again() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    t.keys(&["2"]);
    t.wait_for("main() {");
    // The panel: all threads, the process, then each thread; the worker
    // is the second.
    t.keys(&["]", "]", "]"]);
    let s = t.wait_for("worker() {");
    assert!(!s.contains("main() {"), "{s}");
    t.keys(&["["]);
    t.wait_for("main() {");
    // Sorting the report by every column, then by name.
    t.keys(&["3"]);
    t.wait_for("TOTAL▼");
    for title in ["SELF▼", "CALLS▼", "AVG▼", "MIN▼", "MAX▼", "FUNCTION▼"] {
        t.keys(&["s"]);
        t.wait_for(title);
    }
    let s = t.screen();
    // The main thread's functions only: no worker.
    assert_eq!(rows_of(&s, "worker"), [0usize; 0], "{s}");
    let first = |s: &str, name: &str| {
        *rows_of(s, name)
            .first()
            .unwrap_or_else(|| panic!("no {name}:\n{s}"))
    };
    assert!(first(&s, "a") < first(&s, "main"), "sorted by name:\n{s}");
    t.keys(&["r"]);
    let s = t.wait_for("FUNCTION▲");
    assert!(first(&s, "a") > first(&s, "main"), "reversed:\n{s}");
    // A smaller window: everything laid out again within it.
    t.resize(70, 20);
    let s = t.wait("the narrower layout", |s| {
        s.lines().count() <= 20 && s.contains("ftail tui") && s.contains("TOTAL")
    });
    assert!(s.lines().all(|l| l.chars().count() <= 70), "{s}");
    t.resize(120, 40);
    t.wait("the wider layout", |s| {
        s.lines().any(|l| l.chars().count() > 70)
    });
    t.keys(&["C-c"]);
    let s = t.assert_restored();
    assert!(s.contains("exit=0"), "{s}");
}

#[test]
fn filters_change_inside_and_mouse_wheel_scrolls() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    t.keys(&["2"]);
    t.wait_for("main() {");
    t.keys(&["f"]);
    t.type_text("-F b");
    t.keys(&["Enter"]);
    t.wait_for("filters: -F b");
    let s = t.wait_for("| b() {");
    assert!(
        !s.contains("main() {") && !s.contains("a() {"),
        "b outermost now:\n{s}"
    );
    // -t 1ms: only d (2 ms) is that long, and it is under main.
    t.keys(&["f", "C-u", "Enter", "t"]);
    t.type_text("1ms");
    t.keys(&["Enter"]);
    let s = t.wait("only the long calls", |s| {
        s.contains("d();") && !s.contains("c();")
    });
    assert!(s.contains("main() {"), "{s}");
    t.keys(&["t", "Enter"]);
    t.wait_for("c();");
    // A wheel turn down (SGR mouse report, button 65) moves the cursor
    // three lines.
    assert!(t.cursor_line().contains("main() {"), "{}", t.cursor_line());
    let out = t.tmux(&["send-keys", "-l", "--", "\x1b[<65;60;10M"]);
    assert!(out.status.success());
    t.wait("the wheel to move", |_| {
        !t.cursor_line().contains("main() {")
    });
    assert!(t.cursor_line().contains("c();"), "{}", t.cursor_line());
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn colours_are_256_and_no_color_turns_them_off() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    let s = t.screen_escaped();
    assert!(s.contains("38;5;"), "256-colour names:\n{s}");
    t.keys(&["q"]);
    t.assert_restored();
    drop(t);
    let t = Tmux::start(f.dir.path(), &quoted(&f.trace), "NO_COLOR=1", 120, 40);
    t.wait_for("- main");
    let s = t.screen_escaped();
    assert!(!s.contains("38;5;"), "no colours with NO_COLOR:\n{s}");
    assert!(s.contains("\x1b[7m"), "the cursor still shows:\n{s}");
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn sigterm_and_sighup_end_it_with_the_terminal_restored() {
    if tmux_missing() {
        return;
    }
    let f = small();
    for sig in ["TERM", "HUP"] {
        let t = f.tui();
        t.wait_for("- main");
        let pid = std::fs::read_to_string(f.dir.path().join("tui.pid")).unwrap();
        run_ok(Command::new("kill").arg(format!("-{sig}")).arg(pid.trim()));
        t.assert_restored();
    }
}

#[test]
fn a_closed_terminal_ends_it() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    let pid = std::fs::read_to_string(f.dir.path().join("tui.pid")).unwrap();
    let pid = pid.trim().to_string();
    // The window goes away: its terminal hangs up under the viewer.
    let _ = t.tmux(&["kill-server"]);
    let proc_dir = Path::new("/proc").join(&pid);
    let gone = |p: &Path| {
        std::fs::read_to_string(p.join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gone(&proc_dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let still = !gone(&proc_dir);
    if still {
        let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
    }
    assert!(
        !still,
        "ftail tui still runs 10 s after its terminal closed"
    );
}

#[test]
fn a_larger_trace_opens_at_once_and_answers_keys() {
    if tmux_missing() {
        return;
    }
    let dir = scratch();
    let src = repo().join("bench/eventgen.c");
    let exe = dir.path().join("eventgen");
    run_ok(
        ftail_cc("gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .arg("-lpthread"),
    );
    // 2 threads × 100 000 outer calls × 6 events: 1.2 M events.
    let trace = dir.path().join("trace");
    let (out, _) = record_trace(&trace, &exe, &["2", "100000"], &[]);
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let t = Tmux::start(dir.path(), &quoted(&trace), "", 120, 40);
    t.keys(&["2"]);
    t.wait_for("outer() {");
    let first = started.elapsed();
    eprintln!("first screen of the timeline after {first:?}");
    // The last lines, while or once indexed.
    t.wait_for(" lines");
    t.wait("indexing to end", |s| {
        s.lines().last().is_some_and(|l| !l.contains("indexing"))
    });
    t.keys(&["End"]);
    let s = t.wait_for("} /* run */");
    assert!(t.cursor_line().contains("} /* run */"), "{s}");
    t.keys(&["Up"]);
    assert!(
        t.cursor_line().contains("} /* outer */"),
        "{}",
        t.cursor_line()
    );
    // The caller of the last outer, across its 99 999 siblings.
    t.keys(&["u"]);
    assert!(t.cursor_line().contains("run() {"), "{}", t.cursor_line());
    t.keys(&["Home", "/"]);
    t.type_text("leaf");
    t.keys(&["Enter"]);
    assert!(t.cursor_line().contains("leaf();"), "{}", t.cursor_line());
    t.keys(&["NPage", "NPage", "PPage"]);
    t.keys(&["1"]);
    let s = t.wait_for("- outer");
    assert!(
        s.contains("200000"),
        "outer's calls over both threads:\n{s}"
    );
    t.keys(&["q"]);
    t.assert_restored();
}

/// main calls filler 2000 times, one → rare, filler 2000 times, two →
/// rare (the slower call), filler 2000 times: the calls of rare lie far
/// apart, in blocks of the search's index that do not call it.
const FAR_SOURCE: &str = r#"
#include <unistd.h>
static volatile int calls;
__attribute__((noinline)) void filler(void) { calls++; }
__attribute__((noinline)) void rare(int slow) { calls++; if (slow) usleep(3000); }
__attribute__((noinline)) void one(void) { rare(0); }
__attribute__((noinline)) void two(void) { rare(1); }
int main(void) {
  for (int i = 0; i < 2000; i++) filler();
  one();
  for (int i = 0; i < 2000; i++) filler();
  two();
  for (int i = 0; i < 2000; i++) filler();
  return calls & 0;
}
"#;

#[test]
fn search_and_jumps_find_calls_blocks_of_the_index_apart() {
    if tmux_missing() {
        return;
    }
    let dir = scratch();
    let src = dir.path().join("far.c");
    std::fs::write(&src, FAR_SOURCE).unwrap();
    let exe = dir.path().join("far");
    run_ok(ftail_cc("gcc").args(["-O1", "-o"]).arg(&exe).arg(&src));
    let trace = dir.path().join("trace");
    let (out, _) = record_trace(&trace, &exe, &[], &["--no-libcall"]);
    assert!(out.status.success(), "{out:?}");
    // Blocks of 64 lines: about 94 of them, rare in two.
    let t = Tmux::start(
        dir.path(),
        &quoted(&trace),
        "FTAIL_TUI_BLOCK_LINES=64",
        120,
        40,
    );
    t.keys(&["2"]);
    t.wait_for("main() {");
    t.wait("indexing to end", |s| {
        s.lines()
            .last()
            .is_some_and(|l| l.contains(" lines") && !l.contains("indexing"))
    });
    let caller = |t: &Tmux| {
        t.keys(&["u"]);
        let c = t.cursor_line();
        t.keys(&["Down"]);
        c
    };
    t.keys(&["/"]);
    t.type_text("rar");
    t.keys(&["Enter"]);
    t.wait_for("/rar");
    assert!(t.cursor_line().contains("rare();"), "{}", t.cursor_line());
    assert!(caller(&t).contains("one() {"));
    // n: the other call, 2000 lines on; N: back; past them, none.
    t.keys(&["n"]);
    assert!(t.cursor_line().contains("rare();"), "{}", t.cursor_line());
    assert!(caller(&t).contains("two() {"));
    t.keys(&["n"]);
    t.wait_for("/rar: not found");
    t.keys(&["N"]);
    assert!(t.cursor_line().contains("rare();"), "{}", t.cursor_line());
    assert!(caller(&t).contains("one() {"));
    t.keys(&["N"]);
    t.wait_for("/rar: not found");
    // > and <: the next and previous call of the function under the
    // cursor.
    t.keys(&[">"]);
    assert!(caller(&t).contains("two() {"));
    t.keys(&["<"]);
    assert!(caller(&t).contains("one() {"));
    // m: the slowest call of rare is two's.
    t.keys(&["m"]);
    assert!(t.cursor_line().contains(" ms "), "{}", t.cursor_line());
    assert!(caller(&t).contains("two() {"));
    // The caller of the last filler, 6000 lines back.
    t.keys(&["End", "Up"]);
    assert!(t.cursor_line().contains("filler();"), "{}", t.cursor_line());
    t.keys(&["u"]);
    assert!(t.cursor_line().contains("main() {"), "{}", t.cursor_line());
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn report_enter_goes_to_a_thread_that_calls_the_function() {
    if tmux_missing() {
        return;
    }
    let f = small();
    let t = f.tui();
    t.wait_for("- main");
    // The timeline shows the main thread; worker runs only in the other.
    t.keys(&["2"]);
    let s = t.wait_for("main() {");
    let main_tid = s
        .split("(thread ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no thread in the title:\n{s}"))
        .to_string();
    t.keys(&["3"]);
    t.wait_for("TOTAL▼");
    t.keys(&["/"]);
    t.type_text("worker");
    t.keys(&["Enter"]);
    assert!(
        t.cursor_line().trim_end().ends_with(" worker"),
        "{}",
        t.cursor_line()
    );
    t.keys(&["Enter"]);
    let s = t.wait("the first call of worker", |s| {
        s.contains("first call of worker in thread") && s.contains("; > the next")
    });
    assert!(t.cursor_line().contains("worker() {"), "{s}");
    assert!(!s.contains(&format!("(thread {main_tid} ")), "{s}");
    // c runs in both: the first thread of the panel, the main one.
    t.keys(&["3", "/"]);
    t.type_text("c");
    t.keys(&["Enter"]);
    while !t.cursor_line().trim_end().ends_with(" c") {
        t.keys(&["n"]);
    }
    t.keys(&["Enter"]);
    let s = t.wait("the first call of c", |s| {
        s.contains("first call of c in thread") && s.contains("; > the next")
    });
    assert!(s.contains(&format!("(thread {main_tid} ")), "{s}");
    // With the worker thread chosen in the panel, its own call of c.
    t.keys(&["]", "]", "]"]);
    t.wait_for("worker() {");
    t.keys(&["3"]);
    t.wait_for("TOTAL▼");
    t.keys(&["/"]);
    t.type_text("c");
    t.keys(&["Enter"]);
    while !t.cursor_line().trim_end().ends_with(" c") {
        t.keys(&["n"]);
    }
    t.keys(&["Enter"]);
    let s = t.wait("the first call of c", |s| {
        s.contains("first call of c in thread") && s.contains("; > the next")
    });
    assert!(!s.contains(&format!("(thread {main_tid} ")), "{s}");
    assert!(t.cursor_line().contains("c();"), "{s}");
    t.keys(&["q"]);
    t.assert_restored();
}

#[test]
fn without_a_terminal_or_a_trace_it_says_what_is_wrong() {
    let f = small();
    let out = run(Command::new(ftail())
        .args(["tui", "-d"])
        .arg(&f.trace)
        .stdin(std::process::Stdio::null()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    let missing = f.dir.path().join("no-such-trace");
    let out = run(Command::new(ftail()).args(["tui", "-d"]).arg(&missing));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-trace") && !err.contains("panicked"),
        "{err}"
    );
}
