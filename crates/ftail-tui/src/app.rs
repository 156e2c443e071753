//! The viewer's state and what each key does to it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ftail_trace::graph::{Kind as GraphKind, Tree};
use ftail_trace::names::Names;
use ftail_trace::reader::dir::TraceDir;
use ftail_trace::report::{FunctionStats, Report, RowKey};
use ftail_trace::view::{Filters, Pattern};
use ratatui::crossterm::event::MouseEventKind;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::index::{FuncSet, Index, Kind, Line, Source, NONE};
use crate::Options;

/// The views, in the order their keys number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Graph,
    Timeline,
    Report,
    Info,
}

pub const VIEWS: [View; 4] = [View::Graph, View::Timeline, View::Report, View::Info];

impl View {
    pub fn title(self) -> &'static str {
        match self {
            View::Graph => "graph",
            View::Timeline => "timeline",
            View::Report => "report",
            View::Info => "info",
        }
    }
}

/// An entry of the side panel: every thread, one process image, or one
/// thread.
pub struct Scope {
    pub label: String,
    pub image: Option<usize>,
    pub tid: Option<u32>,
}

/// A line being typed at the bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Search,
    Filters,
    Time,
}

/// Something computed in the background: not yet, or its result. When
/// the last handle goes (new filters, another scope) the work is told to
/// stop, so an abandoned count does not hold the cores.
pub struct Job<T> {
    slot: Arc<Mutex<Option<T>>>,
    stop: Arc<AtomicBool>,
}

impl<T> Job<T> {
    pub fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Option<T>>> {
        self.slot.lock()
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Pending<T> = Arc<Job<T>>;

fn in_background<T: Send + 'static>(
    work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
) -> Pending<T> {
    let job = Job {
        slot: Arc::new(Mutex::new(None)),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (out, stop) = (job.slot.clone(), job.stop.clone());
    let _ = std::thread::Builder::new()
        .name("ftail-view".into())
        .spawn(move || {
            let r = work(&stop);
            if let Ok(mut s) = out.lock() {
                *s = Some(r);
            }
        });
    Arc::new(job)
}

/// A visible row of the graph: a process's heading or a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphRow {
    Image(usize),
    Node {
        image: usize,
        node: usize,
        level: usize,
    },
}

pub struct GraphView {
    /// `None` until the view is first shown for the scope and filters.
    pub trees: Option<Pending<Vec<(usize, Tree)>>>,
    pub rows: Vec<GraphRow>,
    pub folded: FxHashSet<(usize, usize)>,
    pub cur: usize,
    pub top: usize,
    laid_out: bool,
}

/// The report's columns, in the order `s` steps through them.
pub const REPORT_COLUMNS: [&str; 7] = ["TOTAL", "SELF", "CALLS", "AVG", "MIN", "MAX", "FUNCTION"];

/// A report counted per thread and merged: its rows, one per function,
/// and the threads that call each function, in the side panel's order.
pub struct Counted {
    rows: Vec<(RowKey, FunctionStats)>,
    threads: FxHashMap<Arc<str>, Vec<(usize, u32)>>,
}

impl Counted {
    fn merge(trace: &TraceDir, per_thread: Report) -> Counted {
        let mut rows: std::collections::BTreeMap<RowKey, FunctionStats> = Default::default();
        let mut threads: FxHashMap<Arc<str>, Vec<(usize, u32)>> = FxHashMap::default();
        for (key, stats) in per_thread.rows {
            let thread = key.thread.as_ref().and_then(|(image, tid)| {
                let i = trace.images.iter().position(|im| im.key == *image)?;
                Some((i, *tid))
            });
            if let Some(t) = thread {
                threads.entry(key.name.clone()).or_default().push(t);
            }
            let key = RowKey {
                thread: None,
                ..key
            };
            rows.entry(key)
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
        }
        // The side panel lists the images in order, each one's threads in
        // its order.
        let place = |&(i, tid): &(usize, u32)| {
            let at = trace.images[i].threads.iter().position(|t| t.tid == tid);
            (i, at)
        };
        for list in threads.values_mut() {
            list.sort_by_key(place);
            list.dedup();
        }
        Counted {
            rows: rows.into_iter().collect(),
            threads,
        }
    }
}

pub struct ReportView {
    /// `None` until the view is first shown for the scope and filters.
    pub report: Option<Pending<Counted>>,
    pub rows: Vec<(RowKey, FunctionStats)>,
    /// The threads calling each function, the first first.
    pub threads: FxHashMap<Arc<str>, Vec<(usize, u32)>>,
    pub sort: usize,
    pub reversed: bool,
    pub cur: usize,
    pub top: usize,
    sorted: bool,
}

/// Which timeline calls are folded, by entry line: one by one, or every
/// direct callee of a call at once (`c`: a call may have millions), less
/// those unfolded again one by one. Whether a call is folded costs two
/// lookups, with its parent's line, which each line carries.
#[derive(Default)]
pub struct Folds {
    calls: FxHashSet<u64>,
    callees_of: FxHashSet<u64>,
    opened: FxHashSet<u64>,
}

impl Folds {
    /// Whether the call entered on line `entry`, inside the one entered
    /// on `parent`, is folded.
    pub fn folded(&self, entry: u64, parent: u64) -> bool {
        self.calls.contains(&entry)
            || (self.callees_of.contains(&parent) && !self.opened.contains(&entry))
    }

    fn set(&mut self, entry: u64, parent: u64, fold: bool) {
        if fold {
            self.opened.remove(&entry);
            if !self.callees_of.contains(&parent) {
                self.calls.insert(entry);
            }
        } else {
            self.calls.remove(&entry);
            if self.callees_of.contains(&parent) {
                self.opened.insert(entry);
            }
        }
    }

    /// Folds every direct callee of the call entered on `entry`, which
    /// ends on `end`.
    fn fold_callees(&mut self, entry: u64, end: u64) {
        let outside = |f: &u64| *f <= entry || *f > end;
        self.calls.retain(outside);
        self.callees_of.retain(outside);
        self.opened.retain(outside);
        self.callees_of.insert(entry);
    }

    /// Unfolds everything after `entry` up to `end`.
    fn unfold_inside(&mut self, entry: u64, end: u64) {
        let outside = |f: &u64| *f <= entry || *f > end;
        self.calls.retain(outside);
        self.callees_of.retain(outside);
        self.opened.retain(outside);
        self.callees_of.remove(&entry);
    }

    fn clear(&mut self) {
        *self = Folds::default();
    }
}

pub struct TimelineView {
    pub index: Option<Index>,
    pub image: usize,
    pub tid: u32,
    pub folded: Folds,
    pub cur: u64,
    pub top: u64,
    /// A thread shown instead of the scope's (report's Enter chose it).
    pub chosen: Option<(usize, u32)>,
    /// The first call still looked for while the thread is indexed.
    pub jump: Option<Jump>,
}

/// Report's Enter: the first call of a function, looked for in the lines
/// indexed so far and again as more come.
pub struct Jump {
    pub name: Arc<str>,
    set: FuncSet,
    /// Lines already looked at.
    searched: u64,
}

pub struct App {
    pub trace: Arc<TraceDir>,
    pub names: Arc<Vec<Names>>,
    pub opts: Options,
    pub filters: Filters,
    spill: PathBuf,
    pub view: View,
    pub scopes: Vec<Scope>,
    pub scope: usize,
    pub panel: bool,
    pub graph: GraphView,
    pub report: ReportView,
    pub timeline: TimelineView,
    pub info: String,
    pub info_top: usize,
    pub help: bool,
    pub prompt: Option<(Prompt, String)>,
    pub search: String,
    pub message: String,
    /// Rows of the view's area at the last draw.
    pub height: usize,
    pub done: bool,
}

impl App {
    pub fn new(trace: TraceDir, names: Vec<Names>, opts: Options, spill: PathBuf) -> App {
        let info = match ftail_trace::trace::open_headers(&trace.dir) {
            Ok(headers) => ftail_trace::info::render(&trace, &headers, false),
            Err(e) => format!("{e}\n"),
        };
        let scopes = scopes(&trace, &opts.tids);
        let filters = opts.filters.clone();
        let mut app = App {
            trace: Arc::new(trace),
            names: Arc::new(names),
            filters,
            opts,
            spill,
            view: View::Graph,
            scopes,
            scope: 0,
            panel: true,
            graph: GraphView {
                trees: None,
                rows: Vec::new(),
                folded: FxHashSet::default(),
                cur: 0,
                top: 0,
                laid_out: false,
            },
            report: ReportView {
                report: None,
                rows: Vec::new(),
                threads: FxHashMap::default(),
                sort: 0,
                reversed: false,
                cur: 0,
                top: 0,
                sorted: false,
            },
            timeline: TimelineView {
                index: None,
                image: 0,
                tid: 0,
                folded: Folds::default(),
                cur: 0,
                top: 0,
                chosen: None,
                jump: None,
            },
            info,
            info_top: 0,
            help: false,
            prompt: None,
            search: String::new(),
            message: "? shows the keys".into(),
            height: 20,
            done: false,
        };
        app.rebuild();
        app
    }

    /// The threads the graph and the report count: the scope's.
    fn scope_tids(&self) -> Vec<u32> {
        let s = &self.scopes[self.scope];
        match (s.image, s.tid) {
            (_, Some(t)) => vec![t],
            (Some(i), None) => self.trace.images[i]
                .threads
                .iter()
                .map(|t| t.tid)
                .filter(|t| self.opts.tids.is_empty() || self.opts.tids.contains(t))
                .collect(),
            (None, None) => self.opts.tids.clone(),
        }
    }

    /// The thread the timeline shows: the scope's, or its busiest (the
    /// most bytes of records, whatever the format: a drained ring's
    /// event file is a page once drained).
    fn scope_thread(&self) -> Option<(usize, u32)> {
        if self.timeline.chosen.is_some() {
            return self.timeline.chosen;
        }
        let s = &self.scopes[self.scope];
        if let (Some(i), Some(t)) = (s.image, s.tid) {
            return Some((i, t));
        }
        let size = |image: usize, tid: u32| {
            self.trace.images[image]
                .threads
                .iter()
                .find(|t| t.tid == tid)
                .and_then(|t| ftail_trace::reader::events::record_bytes(&t.path))
                .unwrap_or(0)
        };
        self.scopes
            .iter()
            .filter_map(|c| Some((c.image?, c.tid?)))
            .filter(|&(i, _)| s.image.is_none_or(|want| want == i))
            .max_by_key(|&(i, t)| (size(i, t), std::cmp::Reverse(t)))
    }

    /// Starts every view again for the scope and the filters: the
    /// timeline now, the graph and the report when they are shown (each
    /// reads every event of the threads).
    pub fn rebuild(&mut self) {
        self.graph.trees = None;
        self.graph.laid_out = false;
        self.graph.rows.clear();
        self.graph.folded.clear();
        self.graph.cur = 0;
        self.graph.top = 0;
        self.report.report = None;
        self.report.sorted = false;
        self.report.rows.clear();
        self.report.threads.clear();
        self.report.cur = 0;
        self.report.top = 0;
        self.rebuild_timeline();
    }

    fn build_graph(&mut self) {
        let (trace, names, filters, tids) = (
            self.trace.clone(),
            self.names.clone(),
            self.filters.clone(),
            self.scope_tids(),
        );
        let image = self.scopes[self.scope].image;
        self.graph.trees = Some(in_background(move |stop| {
            let mut out = Vec::new();
            for (i, (im, n)) in trace.images.iter().zip(names.iter()).enumerate() {
                if image.is_some_and(|want| want != i) {
                    continue;
                }
                let t = ftail_trace::graph::build_until(
                    im,
                    n,
                    &GraphKind::Whole,
                    &filters,
                    &tids,
                    false,
                    stop,
                );
                if !t.is_empty() {
                    out.push((i, t));
                }
            }
            out
        }));
    }

    fn build_report(&mut self) {
        let (trace, names) = (self.trace.clone(), self.names.clone());
        let opts = ftail_trace::report::Options {
            filters: self.filters.clone(),
            tids: self.scope_tids(),
            // Per thread, to know where Enter finds a function's calls.
            per_thread: true,
            values: false,
            srcline: false,
            no_sleep_time: false,
        };
        self.report.report = Some(in_background(move |stop| {
            let r = ftail_trace::report::report_until(&trace, &names, &opts, stop);
            Counted::merge(&trace, r)
        }));
    }

    fn rebuild_timeline(&mut self) {
        self.timeline.index = None;
        self.timeline.jump = None;
        self.timeline.folded.clear();
        self.timeline.cur = 0;
        self.timeline.top = 0;
        let Some((image, tid)) = self.scope_thread() else {
            return;
        };
        let Some(file) = self.trace.images[image]
            .threads
            .iter()
            .find(|t| t.tid == tid)
        else {
            return;
        };
        let src = Source {
            path: file.path.clone(),
            names: self.names.clone(),
            image,
            filters: self.filters.clone(),
            dir: self.trace.dir.clone(),
            hz: self.trace.images[image].tsc_hz().max(1) as f64,
        };
        self.timeline.image = image;
        self.timeline.tid = tid;
        self.timeline.index = Some(Index::build(
            src,
            self.opts.memory_lines,
            &self.spill,
            self.opts.block_lines,
        ));
    }

    /// Lays out the graph's rows once its trees are built; sorts the
    /// report once it is counted.
    pub fn refresh(&mut self) {
        if self.view == View::Graph && self.graph.trees.is_none() {
            self.build_graph();
        }
        if self.view == View::Report && self.report.report.is_none() {
            self.build_report();
        }
        self.look_for_jump();
        if !self.graph.laid_out && self.graph_built() {
            self.graph.laid_out = true;
            self.layout_graph();
        }
        if !self.report.sorted {
            let taken = self
                .report
                .report
                .as_ref()
                .and_then(|p| p.lock().ok().and_then(|mut r| r.take()));
            if let Some(r) = taken {
                self.report.rows = r.rows;
                self.report.threads = r.threads;
                self.report.sorted = true;
                self.sort_report();
            }
        }
    }

    /// Whether the graph's trees are built.
    pub fn graph_built(&self) -> bool {
        self.graph
            .trees
            .as_ref()
            .is_some_and(|t| t.lock().is_ok_and(|t| t.is_some()))
    }

    pub fn layout_graph(&mut self) {
        let Some(pending) = self.graph.trees.clone() else {
            return;
        };
        let Ok(guard) = pending.lock() else {
            return;
        };
        let Some(trees) = guard.as_ref() else { return };
        let mut rows = Vec::new();
        for (image, tree) in trees {
            rows.push(GraphRow::Image(*image));
            // Depth first, with a stack of its own (trees can be deep).
            let mut stack: Vec<(usize, usize)> =
                tree.roots().iter().rev().map(|&n| (n, 0)).collect();
            while let Some((node, level)) = stack.pop() {
                rows.push(GraphRow::Node {
                    image: *image,
                    node,
                    level,
                });
                if !self.graph.folded.contains(&(*image, node)) {
                    stack.extend(tree.children(node).iter().rev().map(|&c| (c, level + 1)));
                }
            }
        }
        drop(guard);
        self.graph.rows = rows;
        self.graph.cur = self.graph.cur.min(self.graph.rows.len().saturating_sub(1));
    }

    /// Whether the report is counted.
    pub fn report_ready(&self) -> bool {
        self.report.sorted
    }

    pub fn sort_report(&mut self) {
        let col = self.report.sort;
        let key = |s: &FunctionStats| match col {
            0 => s.total_ns,
            1 => s.self_ns,
            2 => s.calls as f64,
            3 => s.avg_ns(),
            4 => s.min_ns,
            5 => s.max_ns,
            _ => 0.0,
        };
        self.report.rows.sort_by(|a, b| {
            let o = if col == 6 {
                a.0.name.cmp(&b.0.name)
            } else {
                key(&b.1)
                    .total_cmp(&key(&a.1))
                    .then(a.0.name.cmp(&b.0.name))
            };
            if self.report.reversed {
                o.reverse()
            } else {
                o
            }
        });
    }

    /// The function of a timeline line, by name.
    pub fn func_name(&self, line: &Line, i: u64) -> String {
        let names = &self.names[self.timeline.image];
        if line.func == 0 {
            let addr = self
                .timeline
                .index
                .as_ref()
                .and_then(|x| x.unknown_addr(i))
                .unwrap_or(0);
            return format!("{addr:#x}");
        }
        names
            .function(ftail_trace::names::FuncId(line.func - 1))
            .name
            .to_string()
    }

    pub fn key(&mut self, k: KeyEvent) {
        if k.kind != KeyEventKind::Press {
            return;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.done = true;
            return;
        }
        // A key asks for something else than a jump still looked for.
        self.timeline.jump = None;
        if self.prompt.is_some() {
            self.prompt_key(k);
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if k.code != KeyCode::Char('q') {
                return;
            }
        }
        self.message.clear();
        let h = self.height.max(1);
        match k.code {
            KeyCode::Char('q') => self.done = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(c @ '1'..='4') => self.view = VIEWS[c as usize - '1' as usize],
            KeyCode::Tab => self.cycle_view(1),
            KeyCode::BackTab => self.cycle_view(3),
            KeyCode::Char('w') => self.panel = !self.panel,
            KeyCode::Char(']') => self.choose_scope(1),
            KeyCode::Char('[') => self.choose_scope(self.scopes.len() - 1),
            KeyCode::Char('/') => self.prompt = Some((Prompt::Search, String::new())),
            KeyCode::Char('f') => {
                self.prompt = Some((Prompt::Filters, filters_text(&self.filters)));
            }
            KeyCode::Char('t') => self.prompt = Some((Prompt::Time, String::new())),
            KeyCode::Char('n') => self.find(true),
            KeyCode::Char('N') => self.find(false),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(h as i64)),
            KeyCode::PageDown => self.move_by(h as i64),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(i64::MAX / 2),
            _ => self.view_key(k),
        }
    }

    fn cycle_view(&mut self, by: usize) {
        let at = VIEWS.iter().position(|v| *v == self.view).unwrap_or(0);
        self.view = VIEWS[(at + by) % VIEWS.len()];
    }

    fn choose_scope(&mut self, by: usize) {
        self.scope = (self.scope + by) % self.scopes.len();
        self.timeline.chosen = None;
        self.rebuild();
        self.message = format!("showing {}", self.scopes[self.scope].label.trim());
    }

    fn view_key(&mut self, k: KeyEvent) {
        match (self.view, k.code) {
            (View::Graph, KeyCode::Enter | KeyCode::Char(' ')) => self.graph_fold(None),
            (View::Graph, KeyCode::Left) => self.graph_fold(Some(true)),
            (View::Graph, KeyCode::Right) => self.graph_fold(Some(false)),
            (View::Graph, KeyCode::Char('e')) => self.graph_all_under(false),
            (View::Graph, KeyCode::Char('c')) => self.graph_all_under(true),
            (View::Graph, KeyCode::Char('u')) => self.graph_parent(),
            (View::Timeline, KeyCode::Enter | KeyCode::Char(' ')) => self.timeline_fold(None),
            (View::Timeline, KeyCode::Left) => self.timeline_fold(Some(true)),
            (View::Timeline, KeyCode::Right) => self.timeline_fold(Some(false)),
            (View::Timeline, KeyCode::Char('e')) => self.timeline_all_under(false),
            (View::Timeline, KeyCode::Char('c')) => self.timeline_all_under(true),
            (View::Timeline, KeyCode::Char('u')) => self.timeline_caller(),
            (View::Timeline, KeyCode::Char('>' | '.')) => self.timeline_same(true),
            (View::Timeline, KeyCode::Char('<' | ',')) => self.timeline_same(false),
            (View::Timeline, KeyCode::Char('m')) => self.timeline_slowest(),
            (View::Report, KeyCode::Char('s')) => {
                self.report.sort = (self.report.sort + 1) % REPORT_COLUMNS.len();
                self.sort_report();
            }
            (View::Report, KeyCode::Char('S')) => {
                self.report.sort =
                    (self.report.sort + REPORT_COLUMNS.len() - 1) % REPORT_COLUMNS.len();
                self.sort_report();
            }
            (View::Report, KeyCode::Char('r')) => {
                self.report.reversed = !self.report.reversed;
                self.sort_report();
            }
            (View::Report, KeyCode::Enter) => self.report_jump(),
            _ => {}
        }
    }

    pub fn mouse(&mut self, m: MouseEvent) {
        match m.kind {
            MouseEventKind::ScrollDown => self.move_by(3),
            MouseEventKind::ScrollUp => self.move_by(-3),
            _ => {}
        }
    }

    fn prompt_key(&mut self, k: KeyEvent) {
        let Some((which, text)) = self.prompt.as_mut() else {
            return;
        };
        match k.code {
            KeyCode::Esc => self.prompt = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(_) if k.modifiers.contains(KeyModifiers::CONTROL) => {}
            KeyCode::Char(c) => text.push(c),
            KeyCode::Enter => {
                let (which, text) = (*which, std::mem::take(text));
                self.prompt = None;
                match which {
                    Prompt::Search => {
                        self.search = text;
                        self.find(true);
                    }
                    Prompt::Filters => self.set_filters(&text),
                    Prompt::Time => self.set_time(&text),
                }
            }
            _ => {}
        }
    }

    fn set_filters(&mut self, text: &str) {
        match parse_filters(text, &self.filters) {
            Ok(f) => {
                self.filters = f;
                self.rebuild();
                self.message = format!("filters: {}", filters_text(&self.filters));
            }
            Err(e) => self.message = e,
        }
    }

    fn set_time(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            self.filters.min_ticks = 0;
        } else {
            match (self.opts.parse_duration)(text) {
                Ok(ns) => {
                    let hz = self
                        .trace
                        .images
                        .first()
                        .map_or(1_000_000_000, |i| i.tsc_hz().max(1))
                        as f64;
                    self.filters.min_ticks = ftail_trace::replay::ticks(ns, hz);
                }
                Err(e) => {
                    self.message = format!("-t: {e}");
                    return;
                }
            }
        }
        self.rebuild();
        self.message = if text.is_empty() {
            "no time filter".into()
        } else {
            format!("calls of {text} or more")
        };
    }

    /// Moves the cursor of the view by `by` rows.
    fn move_by(&mut self, by: i64) {
        let h = self.height.max(1);
        match self.view {
            View::Graph => {
                let g = &mut self.graph;
                g.cur = step(g.cur, by, g.rows.len());
                g.top = keep_in_view(g.cur, g.top, h);
            }
            View::Report => {
                let r = &mut self.report;
                r.cur = step(r.cur, by, r.rows.len());
                r.top = keep_in_view(r.cur, r.top, h);
            }
            View::Info => {
                let n = self.info.lines().count();
                self.info_top = step(self.info_top, by, n.saturating_sub(h) + 1);
            }
            View::Timeline => self.timeline_move(by),
        }
    }

    // The graph.

    fn graph_node(&self) -> Option<(usize, usize)> {
        match self.graph.rows.get(self.graph.cur)? {
            GraphRow::Node { image, node, .. } => Some((*image, *node)),
            GraphRow::Image(_) => None,
        }
    }

    fn graph_fold(&mut self, fold: Option<bool>) {
        let Some(key) = self.graph_node() else { return };
        let fold = fold.unwrap_or(!self.graph.folded.contains(&key));
        if fold {
            self.graph.folded.insert(key);
        } else {
            self.graph.folded.remove(&key);
        }
        self.layout_graph();
    }

    /// Unfolds (or folds) the node under the cursor and everything under
    /// it.
    fn graph_all_under(&mut self, fold: bool) {
        let Some((image, node)) = self.graph_node() else {
            return;
        };
        let pending = self.graph.trees.clone();
        if let Some(Ok(guard)) = pending.as_ref().map(|p| p.lock()) {
            if let Some((_, tree)) = guard.as_ref().and_then(|t| t.iter().find(|t| t.0 == image)) {
                let mut todo = vec![node];
                while let Some(n) = todo.pop() {
                    let kids = tree.children(n);
                    if fold && !kids.is_empty() {
                        self.graph.folded.insert((image, n));
                    } else {
                        self.graph.folded.remove(&(image, n));
                    }
                    todo.extend_from_slice(kids);
                }
            }
        }
        if fold {
            // The node itself stays open: its children show, folded.
            self.graph.folded.remove(&(image, node));
        }
        self.layout_graph();
    }

    fn graph_parent(&mut self) {
        let Some(GraphRow::Node { level, .. }) = self.graph.rows.get(self.graph.cur).copied()
        else {
            return;
        };
        let parent = self.graph.rows[..self.graph.cur].iter().rposition(|r| {
            matches!(r, GraphRow::Node { level: l, .. } if *l + 1 == level)
                || matches!(r, GraphRow::Image(_))
        });
        if let Some(p) = parent {
            self.graph.cur = p;
            self.graph.top = keep_in_view(p, self.graph.top, self.height.max(1));
        }
    }

    fn graph_find(&mut self, forward: bool, pattern: &dyn Fn(&str) -> bool) -> bool {
        let Some(pending) = self.graph.trees.clone() else {
            return false;
        };
        let Ok(guard) = pending.lock() else {
            return false;
        };
        let Some(trees) = guard.as_ref() else {
            return false;
        };
        let n = self.graph.rows.len();
        let hit = (1..=n)
            .map(|d| {
                if forward {
                    (self.graph.cur + d) % n
                } else {
                    (self.graph.cur + n - d) % n
                }
            })
            .find(|&i| {
                let GraphRow::Node { image, node, .. } = self.graph.rows[i] else {
                    return false;
                };
                trees
                    .iter()
                    .find(|t| t.0 == image)
                    .and_then(|(_, t)| t.node(node))
                    .is_some_and(|s| pattern(s.name))
            });
        drop(guard);
        if let Some(i) = hit {
            self.graph.cur = i;
            self.graph.top = keep_in_view(i, self.graph.top, self.height.max(1));
            true
        } else {
            false
        }
    }

    // The report.

    /// Enter: the function's first call in the thread chosen in the side
    /// panel when it calls the function, else in the first thread that
    /// does.
    fn report_jump(&mut self) {
        let Some((key, _)) = self.report.rows.get(self.report.cur) else {
            return;
        };
        let name = key.name.clone();
        let threads = self.report.threads.get(&name).cloned().unwrap_or_default();
        let s = &self.scopes[self.scope];
        let panel = s.image.zip(s.tid);
        let Some(target) = panel
            .filter(|t| threads.contains(t))
            .or_else(|| threads.first().copied())
        else {
            self.message = format!("no call of {name} counted");
            return;
        };
        self.view = View::Timeline;
        let shown = (self.timeline.image, self.timeline.tid);
        if self.timeline.index.is_none() || shown != target {
            self.timeline.chosen = (panel != Some(target)).then_some(target);
            self.rebuild_timeline();
        }
        self.timeline.cur = 0;
        self.timeline.top = 0;
        let set = self.matching(&|n: &str| n == &*name);
        if set.is_empty() {
            // An address without a name: the timeline finds calls by
            // function.
            self.message = format!("{name} has no name to look for in the timeline");
            return;
        }
        self.timeline.jump = Some(Jump {
            name,
            set,
            searched: 0,
        });
        self.look_for_jump();
    }

    /// Looks for a jump's call in the lines indexed since it last looked.
    fn look_for_jump(&mut self) {
        let (Some(index), Some(jump)) = (&self.timeline.index, &mut self.timeline.jump) else {
            return;
        };
        // Whether indexing was done before the lines are counted: then
        // they are all.
        let done = index.progress().done;
        let len = index.len();
        let found = index.find(jump.searched..len, true, &jump.set);
        jump.searched = len;
        let name = jump.name.clone();
        let tid = self.timeline.tid;
        match found {
            Some(i) => {
                self.timeline.jump = None;
                self.timeline_go(i);
                self.message =
                    format!("first call of {name} in thread {tid}; > the next, m the slowest");
            }
            None if done => {
                self.timeline.jump = None;
                self.message = format!("no call of {name} in thread {tid}");
            }
            None => self.message = format!("looking for the first call of {name} in thread {tid}"),
        }
    }

    // The timeline.

    fn line(&self, i: u64) -> Option<Line> {
        self.timeline.index.as_ref()?.get(i)
    }

    fn len(&self) -> u64 {
        self.timeline.index.as_ref().map_or(0, |x| x.len())
    }

    /// The visible line after `i` (a folded call's lines are skipped).
    pub fn next_visible(&self, i: u64) -> u64 {
        match self.line(i) {
            Some(l) if l.kind == Kind::Enter && self.timeline.folded.folded(i, l.parent) => {
                if l.other == NONE {
                    self.len()
                } else {
                    l.other + 1
                }
            }
            _ => i + 1,
        }
    }

    /// The visible line before `i`, if any.
    pub fn prev_visible(&self, i: u64) -> Option<u64> {
        let j = i.checked_sub(1)?;
        match self.line(j) {
            Some(l)
                if l.kind == Kind::Leave
                    && l.other != NONE
                    && self.timeline.folded.folded(l.other, l.parent) =>
            {
                Some(l.other)
            }
            _ => Some(j),
        }
    }

    fn timeline_move(&mut self, by: i64) {
        let h = self.height.max(1);
        let len = self.len();
        if len == 0 {
            return;
        }
        if by <= -(1 << 40) {
            self.timeline.cur = 0;
            self.timeline.top = 0;
            return;
        }
        if by >= 1 << 40 {
            // The last line, or the outermost folded call around it.
            let mut last = len - 1;
            let mut at = self.entry_of(last).map(|(e, _)| e);
            while let Some(e) = at {
                let parent = self.line(e).map_or(NONE, |l| l.parent);
                if self.timeline.folded.folded(e, parent) {
                    last = e;
                }
                at = Some(parent).filter(|&p| p != NONE);
            }
            self.timeline.cur = last;
            self.timeline.top = self.back(last, h - 1);
            return;
        }
        let mut cur = self.timeline.cur;
        if by > 0 {
            for _ in 0..by {
                let n = self.next_visible(cur);
                if n >= len {
                    break;
                }
                cur = n;
            }
        } else {
            for _ in 0..by.unsigned_abs() {
                match self.prev_visible(cur) {
                    Some(p) => cur = p,
                    None => break,
                }
            }
        }
        self.timeline.cur = cur;
        self.scroll_to_cursor();
    }

    /// `n` visible lines back from `i` (fewer at the start).
    fn back(&self, mut i: u64, n: usize) -> u64 {
        for _ in 0..n {
            match self.prev_visible(i) {
                Some(p) => i = p,
                None => break,
            }
        }
        i
    }

    fn scroll_to_cursor(&mut self) {
        let h = self.height.max(1);
        let (cur, top) = (self.timeline.cur, self.timeline.top);
        if cur < top {
            self.timeline.top = cur;
            return;
        }
        // Is the cursor within h visible lines of the top?
        let mut i = top;
        for _ in 0..h {
            if i == cur {
                return;
            }
            i = self.next_visible(i);
        }
        self.timeline.top = self.back(cur, h - 1);
    }

    /// Puts the cursor on line `i`, unfolding the calls around it.
    fn timeline_go(&mut self, i: u64) {
        let mut at = self.line(i).map_or(NONE, |l| l.parent);
        while let Some(l) = self.line(at) {
            self.timeline.folded.set(at, l.parent, false);
            at = l.parent;
        }
        self.timeline.cur = i;
        let h = self.height.max(1);
        self.timeline.top = self.back(i, h / 3);
    }

    /// The entry line of the call on line `i` (an exit's entry).
    fn entry_of(&self, i: u64) -> Option<(u64, Line)> {
        let l = self.line(i)?;
        if l.kind == Kind::Leave && l.other != NONE {
            return Some((l.other, self.line(l.other)?));
        }
        Some((i, l))
    }

    fn timeline_fold(&mut self, fold: Option<bool>) {
        let Some((e, l)) = self.entry_of(self.timeline.cur) else {
            return;
        };
        if l.kind != Kind::Enter {
            return;
        }
        let fold = fold.unwrap_or(!self.timeline.folded.folded(e, l.parent));
        self.timeline.folded.set(e, l.parent, fold);
        if fold {
            self.timeline.cur = e;
        }
        self.scroll_to_cursor();
    }

    /// Unfolds every call inside the one under the cursor, or folds each
    /// of its direct callees.
    fn timeline_all_under(&mut self, fold: bool) {
        let Some((e, l)) = self.entry_of(self.timeline.cur) else {
            return;
        };
        if l.kind != Kind::Enter {
            return;
        }
        let end = if l.other == NONE { self.len() } else { l.other };
        self.timeline.folded.set(e, l.parent, false);
        if fold {
            self.timeline.folded.fold_callees(e, end);
        } else {
            self.timeline.folded.unfold_inside(e, end);
        }
        self.timeline.cur = e;
        self.scroll_to_cursor();
    }

    /// The entry line of the call that called the one on line `i`.
    fn caller(&self, i: u64) -> Option<u64> {
        Some(self.line(i)?.parent).filter(|&p| p != NONE)
    }

    fn timeline_caller(&mut self) {
        match self.caller(self.timeline.cur) {
            Some(c) => self.timeline_go(c),
            None => self.message = "an outermost call: no caller shown".into(),
        }
    }

    /// The function of the call under the cursor (id plus one).
    fn cursor_func(&self) -> Option<u32> {
        self.entry_of(self.timeline.cur)
            .map(|(_, l)| l.func)
            .filter(|&f| f != 0)
    }

    fn timeline_same(&mut self, forward: bool) {
        let Some(f) = self.cursor_func() else { return };
        if !self.timeline_seek(forward, &FuncSet::new([f])) {
            self.message = format!(
                "no {} call of it",
                if forward { "later" } else { "earlier" }
            );
        }
    }

    fn timeline_slowest(&mut self) {
        let Some(f) = self.cursor_func() else { return };
        let Some(at) = self.timeline.index.as_ref().and_then(|x| x.slowest(f)) else {
            return;
        };
        self.timeline_go(at);
        self.message = "the slowest call of it (so far indexed)".into();
    }

    /// Moves to the next (or previous) call from the cursor of a function
    /// of `set`, whether folded away or not; whether there was one.
    fn timeline_seek(&mut self, forward: bool, set: &FuncSet) -> bool {
        let len = self.len();
        let cur = self.timeline.cur;
        let range = if forward { cur + 1..len } else { 0..cur };
        let found = self
            .timeline
            .index
            .as_ref()
            .and_then(|x| x.find(range, forward, set));
        match found {
            Some(i) => {
                self.timeline_go(i);
                true
            }
            None => false,
        }
    }

    /// The functions of the timeline's image whose names `pattern` takes.
    fn matching(&self, pattern: &dyn Fn(&str) -> bool) -> FuncSet {
        let Some(n) = self.names.get(self.timeline.image) else {
            return FuncSet::new([]);
        };
        FuncSet::new(
            n.functions()
                .iter()
                .enumerate()
                .filter(|(_, f)| pattern(&f.name))
                .map(|(i, _)| i as u32 + 1),
        )
    }

    fn timeline_find(&mut self, forward: bool, pattern: &dyn Fn(&str) -> bool) -> bool {
        let set = self.matching(pattern);
        !set.is_empty() && self.timeline_seek(forward, &set)
    }

    /// `n`/`N`: the next (previous) match of the search.
    fn find(&mut self, forward: bool) {
        if self.search.is_empty() {
            self.message = "/ to search first".into();
            return;
        }
        let query = self.search.clone();
        let pattern = search_pattern(&query);
        let found = match self.view {
            View::Timeline => self.timeline_find(forward, &pattern),
            View::Graph => self.graph_find(forward, &pattern),
            View::Report => {
                let n = self.report.rows.len();
                let cur = self.report.cur;
                let hit = (1..=n)
                    .map(|d| {
                        if forward {
                            (cur + d) % n
                        } else {
                            (cur + n - d) % n
                        }
                    })
                    .find(|&i| pattern(&self.report.rows[i].0.name));
                if let Some(i) = hit {
                    self.report.cur = i;
                    self.report.top = keep_in_view(i, self.report.top, self.height.max(1));
                }
                hit.is_some()
            }
            View::Info => {
                let hit = self
                    .info
                    .lines()
                    .enumerate()
                    .skip(self.info_top + 1)
                    .find(|(_, l)| l.contains(&query));
                if let Some((i, _)) = hit {
                    self.info_top = i;
                }
                hit.is_some()
            }
        };
        self.message = if found {
            format!("/{query}")
        } else {
            format!("/{query}: not found")
        };
    }
}

/// `query` as a test of names: a glob when it has glob characters, else
/// a part of the name.
fn search_pattern(query: &str) -> impl Fn(&str) -> bool + '_ {
    let glob = query.contains(['*', '?', '[']);
    move |name: &str| {
        if glob {
            ftail_trace::view::glob(query, name)
        } else {
            name.contains(query)
        }
    }
}

fn step(cur: usize, by: i64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (cur as i64).saturating_add(by).clamp(0, len as i64 - 1) as usize
}

fn keep_in_view(cur: usize, top: usize, h: usize) -> usize {
    if cur < top {
        cur
    } else if cur >= top + h {
        cur + 1 - h
    } else {
        top
    }
}

fn scopes(trace: &TraceDir, tids: &[u32]) -> Vec<Scope> {
    let mut out = vec![Scope {
        label: "all threads".into(),
        image: None,
        tid: None,
    }];
    for (i, image) in trace.images.iter().enumerate() {
        let threads: Vec<_> = image
            .threads
            .iter()
            .filter(|t| tids.is_empty() || tids.contains(&t.tid))
            .collect();
        if threads.is_empty() {
            continue;
        }
        let cmd = image.args().first().map_or(String::new(), |a| {
            let base = a.rsplit('/').next().unwrap_or(a);
            ftail_trace::printable::printable(base).into_owned()
        });
        out.push(Scope {
            label: format!("process {} {cmd}", image.key),
            image: Some(i),
            tid: None,
        });
        for t in threads {
            let name = ftail_trace::printable::printable(t.name()).into_owned();
            out.push(Scope {
                label: format!("  thread {} {name}", t.tid),
                image: Some(i),
                tid: Some(t.tid),
            });
        }
    }
    out
}

/// The filters as `f` shows them to edit.
pub fn filters_text(f: &Filters) -> String {
    let mut parts = Vec::new();
    for (flag, list) in [
        ("-F", &f.include),
        ("-N", &f.exclude),
        ("-H", &f.hide),
        ("-C", &f.callers),
    ] {
        for p in list {
            parts.push(format!("{flag} {p}"));
        }
    }
    if let Some(d) = f.depth {
        parts.push(format!("-D {d}"));
    }
    parts.join(" ")
}

/// Reads what was typed at `f`: `-F PAT`, `-N PAT`, `-H PAT`, `-C PAT`,
/// `-D N`, words apart; nothing clears them. `-t` and the time range are
/// kept from `old`.
pub fn parse_filters(text: &str, old: &Filters) -> Result<Filters, String> {
    let mut f = Filters {
        kind: old.kind,
        min_ticks: old.min_ticks,
        range: old.range,
        ..Filters::default()
    };
    let mut words = text.split_whitespace();
    while let Some(flag) = words.next() {
        let Some(value) = words.next() else {
            return Err(format!("{flag} needs a value"));
        };
        match flag {
            "-F" => f.include.push(value.into()),
            "-N" => f.exclude.push(value.into()),
            "-H" => f.hide.push(value.into()),
            "-C" => f.callers.push(value.into()),
            "-D" => {
                f.depth = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|&d| d > 0)
                        .ok_or_else(|| format!("-D {value}: not a depth (1 or more)"))?,
                )
            }
            other => return Err(format!("{other}: known here are -F, -N, -H, -C and -D")),
        }
        if flag != "-D" {
            Pattern::new(value, f.kind).map_err(|e| format!("{flag} {value}: {e}"))?;
        }
    }
    Ok(f)
}

/// The lines of the help.
pub const HELP: &[(&str, &str)] = &[
    (
        "1 2 3 4, Tab",
        "graph, timeline, report, info; Tab/Shift-Tab: next/previous view",
    ),
    (
        "[ ]",
        "previous/next entry of the side panel: all threads, a process, a thread",
    ),
    ("w", "show/hide the side panel"),
    ("Up Down j k", "move by a line (the mouse wheel by three)"),
    ("PgUp PgDn", "move by a screenful"),
    ("Home End g G", "first/last line"),
    ("Enter Space", "graph, timeline: fold/unfold the call"),
    (
        "Enter",
        "report: its first call, in the panel's thread or the first one calling it",
    ),
    ("Left Right", "fold/unfold the call"),
    (
        "e / c",
        "unfold everything under the call / fold each of its callees",
    ),
    ("u", "go to the caller"),
    (
        "> <  (. ,)",
        "timeline: next/previous call of the function under the cursor",
    ),
    (
        "m",
        "timeline: the slowest call of the function under the cursor",
    ),
    (
        "s S r",
        "report: sort by the next/previous column; reverse the order",
    ),
    (
        "/",
        "search by name (part of it, or a glob); n/N: next/previous match",
    ),
    (
        "f",
        "filters: -F PAT -N PAT -H PAT -C PAT -D N (empty: none)",
    ),
    (
        "t",
        "time filter: calls of at least TIME (10us, 1.5ms; empty: none)",
    ),
    (
        "Enter Esc ^U",
        "at the prompt of / f t: apply; cancel; clear the line",
    ),
    ("?", "this help (any key closes it)"),
    ("q, Ctrl-C", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// The time each key takes, handled and drawn, on the trace in
    /// `FTAIL_TUI_BENCH_DIR`: while the timeline is being indexed and
    /// once it is; with the peak resident memory.
    #[test]
    #[ignore = "a measurement: FTAIL_TUI_BENCH_DIR=TRACE cargo test --release -p ftail-tui -- --ignored --nocapture"]
    fn key_times_on_a_large_trace() {
        use std::time::{Duration, Instant};
        let Some(dir) = std::env::var_os("FTAIL_TUI_BENCH_DIR") else {
            return;
        };
        let start = Instant::now();
        let trace = TraceDir::open(std::path::Path::new(&dir)).unwrap();
        let names = ftail_trace::names::for_images(&trace.images);
        let opts = Options {
            filters: Filters::default(),
            tids: Vec::new(),
            color: true,
            memory_lines: 3 << 20,
            block_lines: crate::index::BLOCK_LINES,
            parse_duration: |_| Ok(0.0),
        };
        let mut app = App::new(trace, names, opts, std::env::temp_dir());
        app.view = View::Timeline;
        let backend = ratatui::backend::TestBackend::new(120, 40);
        let mut term = ratatui::Terminal::new(backend).unwrap();
        let mut draw = |app: &mut App| {
            term.draw(|f| crate::draw::draw(f, app)).unwrap();
        };
        while app.timeline.index.as_ref().is_some_and(|x| x.len() < 100) {
            std::thread::sleep(Duration::from_millis(1));
        }
        draw(&mut app);
        println!("first screen of the timeline: {:?}", start.elapsed());
        let mut time = |app: &mut App, label: &str, keys: &[KeyCode]| {
            let mut worst = Duration::ZERO;
            for k in keys {
                let t = Instant::now();
                app.key(key(*k));
                draw(app);
                worst = worst.max(t.elapsed());
            }
            println!("{label}: worst {worst:?} of {} keys", keys.len());
        };
        time(&mut app, "PgDn while indexing", &[KeyCode::PageDown; 50]);
        time(&mut app, "End while indexing", &[KeyCode::End]);
        let indexing = Instant::now();
        while !app
            .timeline
            .index
            .as_ref()
            .is_some_and(|x| x.progress().done)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = app.timeline.index.as_ref().map_or(0, |x| x.len());
        println!("indexed {lines} lines in {:?} more", indexing.elapsed());
        time(&mut app, "Home", &[KeyCode::Home]);
        time(&mut app, "PgDn", &[KeyCode::PageDown; 50]);
        time(&mut app, "Down", &[KeyCode::Down; 50]);
        time(&mut app, "End", &[KeyCode::End]);
        time(&mut app, "PgUp", &[KeyCode::PageUp; 50]);
        time(&mut app, "u (caller)", &[KeyCode::Char('u')]);
        // Searches that cross every block: `run` is eventgen's outermost
        // call, on the first line only.
        let search = |q: &str| {
            let mut keys = vec![KeyCode::Char('/')];
            keys.extend(q.chars().map(KeyCode::Char));
            keys.push(KeyCode::Enter);
            keys
        };
        time(&mut app, "/nosuch (no such function)", &search("nosuch"));
        time(&mut app, "Home", &[KeyCode::Home]);
        time(&mut app, "/run Enter (none later)", &search("run"));
        time(&mut app, "End", &[KeyCode::End]);
        time(&mut app, "N (run, backwards)", &[KeyCode::Char('N')]);
        time(&mut app, "n (none later)", &[KeyCode::Char('n')]);
        time(&mut app, "> on run (none later)", &[KeyCode::Char('>')]);
        time(&mut app, "Enter (fold)", &[KeyCode::Enter]);
        time(&mut app, "Home, j", &[KeyCode::Home, KeyCode::Char('j')]);
        time(&mut app, "m (slowest)", &[KeyCode::Char('m')]);
        time(&mut app, "> (next call)", &[KeyCode::Char('>'); 5]);
        time(&mut app, "c (fold callees)", &[KeyCode::Char('c')]);
        time(&mut app, "e (unfold all under)", &[KeyCode::Char('e')]);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let peak = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("");
        println!("{peak}");
    }

    #[test]
    fn work_in_the_background_stops_once_nobody_waits_for_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = in_background(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = tx.send(());
        });
        let again = job.clone();
        drop(job);
        assert!(rx.try_recv().is_err(), "a handle is still held");
        drop(again);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the work stopped");
    }

    #[test]
    fn callees_fold_at_once_and_unfold_one_by_one_or_all() {
        let mut f = Folds::default();
        // Line 0 calls 1 and 5; 1 calls 2.
        f.fold_callees(0, 9);
        assert!(f.folded(1, 0) && f.folded(5, 0));
        assert!(!f.folded(0, NONE) && !f.folded(2, 1));
        f.set(5, 0, false);
        assert!(f.folded(1, 0) && !f.folded(5, 0));
        f.set(5, 0, true);
        assert!(f.folded(5, 0));
        f.set(2, 1, true);
        assert!(f.folded(2, 1));
        f.unfold_inside(0, 9);
        assert!(!f.folded(1, 0) && !f.folded(5, 0) && !f.folded(2, 1));
        f.set(0, NONE, true);
        assert!(f.folded(0, NONE));
        f.unfold_inside(0, 9);
        assert!(f.folded(0, NONE), "the call itself stays as it was");
    }

    #[test]
    fn filters_typed_in_read_back_and_bad_ones_are_named() {
        let old = Filters {
            min_ticks: 7,
            ..Filters::default()
        };
        let f = parse_filters("-F main -N 'x -D 2", &old).unwrap();
        assert_eq!(f.include, ["main"]);
        assert_eq!(f.exclude, ["'x"]);
        assert_eq!(f.depth, Some(2));
        assert_eq!(f.min_ticks, 7);
        assert_eq!(filters_text(&f), "-F main -N 'x -D 2");
        assert!(parse_filters("-D 0", &old).unwrap_err().contains("-D 0"));
        assert!(parse_filters("-F", &old)
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_filters("-x y", &old).unwrap_err().contains("-x"));
        assert!(parse_filters("", &old).unwrap().include.is_empty());
    }
}
