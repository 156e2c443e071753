//! Drawing a frame: the view bar, the side panel, the view, the status
//! line, and the help over them.

use ftail_abi::trace::EventKind;
use ftail_trace::replay::{format_ns, MAX_INDENT};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::app::{App, GraphRow, Prompt, View, HELP, REPORT_COLUMNS, VIEWS};
use crate::index::{Kind, Line, NONE};

/// Colours from the 256-colour palette, or none (`NO_COLOR`).
#[derive(Clone, Copy)]
struct Theme {
    on: bool,
}

impl Theme {
    fn fg(self, c: u8) -> Style {
        if self.on {
            Style::default().fg(Color::Indexed(c))
        } else {
            Style::default()
        }
    }

    /// A duration's colour: red from a millisecond, yellow from ten
    /// microseconds, as replay colours them.
    fn duration(self, ns: f64) -> Style {
        if ns >= 1e6 {
            self.fg(196)
        } else if ns >= 1e4 {
            self.fg(178)
        } else {
            Style::default()
        }
    }

    fn name(self) -> Style {
        self.fg(111)
    }

    fn note(self) -> Style {
        self.fg(37)
    }

    fn dim(self) -> Style {
        self.fg(244)
    }
}

const CURSOR: Style = Style::new().add_modifier(Modifier::REVERSED);

pub fn draw(f: &mut Frame, app: &mut App) {
    app.refresh();
    let theme = Theme { on: app.opts.color };
    let [bar, middle, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_bar(f, app, bar);
    let main = if app.panel && middle.width >= 60 {
        let w = (middle.width / 4).clamp(20, 34);
        let [side, main] =
            Layout::horizontal([Constraint::Length(w), Constraint::Min(1)]).areas(middle);
        draw_panel(f, app, side, theme);
        main
    } else {
        middle
    };
    // One line of column titles above the rows.
    app.height = main.height.saturating_sub(1).max(1) as usize;
    match app.view {
        View::Graph => draw_graph(f, app, main, theme),
        View::Timeline => draw_timeline(f, app, main, theme),
        View::Report => draw_report(f, app, main, theme),
        View::Info => draw_info(f, app, main),
    }
    draw_status(f, app, status);
    if app.help {
        draw_help(f, f.area());
    }
}

fn draw_bar(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::raw(" ftail tui ")];
    for (i, v) in VIEWS.iter().enumerate() {
        let text = format!(" {} {} ", i + 1, v.title());
        spans.push(if *v == app.view {
            Span::styled(text, CURSOR)
        } else {
            Span::raw(text)
        });
    }
    spans.push(Span::raw(format!("  {}", app.trace.dir.display())));
    f.render_widget(Paragraph::new(TextLine::from(spans)), area);
}

fn draw_panel(f: &mut Frame, app: &App, area: Rect, theme: Theme) {
    let block = Block::default()
        .borders(Borders::RIGHT)
        .title(" [ ] threads ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = inner.height as usize;
    let top = app.scope.saturating_sub(h.saturating_sub(1));
    let lines: Vec<TextLine> = app
        .scopes
        .iter()
        .enumerate()
        .skip(top)
        .take(h)
        .map(|(i, s)| {
            let style = if i == app.scope {
                CURSOR
            } else if s.tid.is_none() {
                theme.dim()
            } else {
                Style::default()
            };
            TextLine::styled(s.label.clone(), style)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn waiting(f: &mut Frame, area: Rect, what: &str) {
    f.render_widget(
        Paragraph::new(format!("{what}… (reads every event of the threads shown)")),
        area,
    );
}

fn split_title(area: Rect) -> (Rect, Rect) {
    let [title, rows] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    (title, rows)
}

fn draw_graph(f: &mut Frame, app: &App, area: Rect, theme: Theme) {
    let Some(pending) = app.graph.trees.clone() else {
        return waiting(f, area, "building the call graph");
    };
    let guard = pending.lock();
    let Some(trees) = guard.as_ref().ok().and_then(|g| g.as_ref()) else {
        return waiting(f, area, "building the call graph");
    };
    let (title, rows) = split_title(area);
    f.render_widget(
        Paragraph::new("  TOTAL TIME    SELF TIME       CALLS  FUNCTION").style(theme.dim()),
        title,
    );
    if trees.is_empty() {
        f.render_widget(Paragraph::new("no calls to show"), rows);
        return;
    }
    let g = &app.graph;
    let mut lines = Vec::new();
    for (i, row) in g
        .rows
        .iter()
        .enumerate()
        .skip(g.top)
        .take(rows.height as usize)
    {
        let mut line = match *row {
            GraphRow::Image(image) => {
                let im = &app.trace.images[image];
                TextLine::styled(
                    format!("# process {}: {}", im.key, im.command_line()),
                    theme.dim(),
                )
            }
            GraphRow::Node { image, node, level } => {
                let Some((_, tree)) = trees.iter().find(|t| t.0 == image) else {
                    continue;
                };
                let Some(n) = tree.node(node) else { continue };
                let ns = |t: u64| t as f64 * 1e9 / tree.hz();
                let mark = if tree.children(node).is_empty() {
                    "  "
                } else if g.folded.contains(&(image, node)) {
                    "+ "
                } else {
                    "- "
                };
                let indent = "  ".repeat(level.min(MAX_INDENT as usize));
                let deep = if level > MAX_INDENT as usize {
                    format!("[{level}] ")
                } else {
                    String::new()
                };
                TextLine::from(vec![
                    Span::styled(
                        format!(" {:>11} ", format_ns(ns(n.ticks))),
                        theme.duration(ns(n.ticks)),
                    ),
                    Span::styled(
                        format!(" {:>11} ", format_ns(ns(n.self_ticks))),
                        theme.duration(ns(n.self_ticks)),
                    ),
                    Span::raw(format!(" {:>10}  ", n.calls)),
                    Span::raw(format!("{indent}{deep}{mark}")),
                    Span::styled(n.name.to_string(), theme.name()),
                ])
            }
        };
        if i == g.cur {
            line = line.patch_style(CURSOR);
        }
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), rows);
}

fn how_note(how: EventKind) -> &'static str {
    match how {
        EventKind::TailExit => "tail call",
        EventKind::Unwound => "unwound",
        EventKind::Truncated => "buffer full: exit not recorded",
        EventKind::Suspended => "switched out",
        _ => "",
    }
}

fn draw_timeline(f: &mut Frame, app: &App, area: Rect, theme: Theme) {
    let (title, rows) = split_title(area);
    let Some(index) = app.timeline.index.as_ref() else {
        f.render_widget(Paragraph::new("no thread to show"), area);
        return;
    };
    f.render_widget(
        Paragraph::new(format!(
            "  DURATION     TID     FUNCTION   (thread {} of process {})",
            app.timeline.tid, app.trace.images[app.timeline.image].key
        ))
        .style(theme.dim()),
        title,
    );
    let hz = index.hz;
    let ns = |t: u64| t as f64 * 1e9 / hz;
    let mut lines = Vec::new();
    let mut i = app.timeline.top;
    let len = index.len();
    for _ in 0..rows.height {
        if i >= len {
            break;
        }
        let Some(l) = index.get(i) else { break };
        let folded = l.kind == Kind::Enter && app.timeline.folded.folded(i, l.parent);
        let ticks = match l.kind {
            Kind::Enter if folded && l.other != NONE => {
                index.get(l.other).map(|e| e.tsc.saturating_sub(l.tsc))
            }
            Kind::Enter => None,
            Kind::Leave => index.get(l.other).map(|e| l.tsc.saturating_sub(e.tsc)),
            Kind::Leaf => Some(l.other.saturating_sub(l.tsc)),
        };
        let mut spans = vec![match ticks {
            Some(t) => Span::styled(format!("{:>10}", format_ns(ns(t))), theme.duration(ns(t))),
            None => Span::raw(" ".repeat(10)),
        }];
        spans.push(Span::raw(format!(" [{:>6}] | ", app.timeline.tid)));
        let depth = u32::from(l.depth);
        spans.push(Span::raw("  ".repeat(depth.min(MAX_INDENT) as usize)));
        if depth > MAX_INDENT {
            spans.push(Span::raw(format!("[{depth}] ")));
        }
        spans.extend(timeline_text(app, index, i, &l, folded, theme));
        let mut line = TextLine::from(spans);
        if i == app.timeline.cur {
            line = line.patch_style(CURSOR);
        }
        lines.push(line);
        i = app.next_visible(i);
    }
    if lines.is_empty() {
        let p = index.progress();
        let text = if p.done {
            "no calls to show in this thread".to_string()
        } else {
            "indexing…".to_string()
        };
        f.render_widget(Paragraph::new(text), rows);
        return;
    }
    f.render_widget(Paragraph::new(lines), rows);
}

/// The text of a timeline line after its indentation, as replay writes
/// it.
fn timeline_text(
    app: &App,
    index: &crate::index::Index,
    i: u64,
    l: &Line,
    folded: bool,
    theme: Theme,
) -> Vec<Span<'static>> {
    let name = app.func_name(l, i);
    let note = |s: &str| Span::styled(s.to_string(), theme.note());
    match l.kind {
        Kind::Enter => {
            let args = index.args(i).unwrap_or_default();
            let mut v = vec![
                Span::styled(name, theme.name()),
                Span::raw(format!("({args}) {{")),
            ];
            if folded {
                v.push(Span::raw(" … }"));
            }
            if l.earlier {
                v.push(note(" /* began before the window */"));
            } else if l.resumed {
                v.push(note(" /* resumed */"));
            }
            v
        }
        Kind::Leaf => {
            let args = index.args(i).unwrap_or_default();
            let ret = index.ret(i).map_or(String::new(), |r| format!(" = {r}"));
            let mut v = vec![
                Span::styled(name, theme.name()),
                Span::raw(format!("({args}){ret};")),
            ];
            if l.how != EventKind::Exit {
                v.push(note(&format!(" /* {} */", how_note(l.how))));
            }
            v
        }
        Kind::Leave => {
            let ret = index.ret(i).map_or(String::new(), |r| format!(" = {r};"));
            let how = match how_note(l.how) {
                "" => String::new(),
                n => format!(" ({n})"),
            };
            vec![
                Span::raw(format!("}}{ret} /* ")),
                Span::styled(name, theme.name()),
                note(&how),
                Span::raw(" */"),
            ]
        }
    }
}

fn draw_report(f: &mut Frame, app: &App, area: Rect, theme: Theme) {
    if !app.report_ready() {
        return waiting(f, area, "counting the report");
    }
    let (title, rows) = split_title(area);
    let r = &app.report;
    let arrow = if r.reversed { '▲' } else { '▼' };
    // The numeric columns that fit beside a name of 18 columns, from the
    // left; the sort column always.
    const WIDTH: usize = 12;
    let room = (area.width as usize).saturating_sub(18) / WIDTH;
    let numeric = REPORT_COLUMNS.len() - 1;
    let mut shown: Vec<usize> = (0..numeric).take(room).collect();
    if r.sort < numeric && !shown.contains(&r.sort) {
        shown.pop();
        shown.push(r.sort);
    }
    let mut titles: Vec<String> = shown
        .iter()
        .map(|&i| {
            let t = REPORT_COLUMNS[i];
            let t = if i == r.sort {
                format!("{t}{arrow}")
            } else {
                t.to_string()
            };
            format!("{t:>10}  ")
        })
        .collect();
    titles.push(if r.sort == numeric {
        format!("FUNCTION{arrow}")
    } else {
        "FUNCTION".to_string()
    });
    f.render_widget(Paragraph::new(titles.concat()).style(theme.dim()), title);
    let mut lines = Vec::new();
    for (i, (k, s)) in r
        .rows
        .iter()
        .enumerate()
        .skip(r.top)
        .take(rows.height as usize)
    {
        let t = |ns: f64| Span::styled(format!("{:>10}  ", format_ns(ns)), theme.duration(ns));
        let mut spans: Vec<Span> = shown
            .iter()
            .map(|&c| match c {
                0 => t(s.total_ns),
                1 => t(s.self_ns),
                2 => Span::raw(format!("{:>10}  ", s.calls)),
                3 => t(s.avg_ns()),
                4 => t(s.min_ns),
                _ => t(s.max_ns),
            })
            .collect();
        spans.push(Span::styled(k.name.to_string(), theme.name()));
        let mut line = TextLine::from(spans);
        if i == r.cur {
            line = line.patch_style(CURSOR);
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(TextLine::raw("no calls to show"));
    }
    f.render_widget(Paragraph::new(lines), rows);
}

fn draw_info(f: &mut Frame, app: &App, area: Rect) {
    let lines: Vec<TextLine> = app
        .info
        .lines()
        .skip(app.info_top)
        .take(area.height as usize)
        .map(|l| TextLine::raw(l.to_string()))
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let text = match &app.prompt {
        Some((p, text)) => {
            let label = match p {
                Prompt::Search => "/",
                Prompt::Filters => "filters (-F -N -H -C -D): ",
                Prompt::Time => "calls of at least (e.g. 10us): ",
            };
            format!("{label}{text}_")
        }
        None => {
            let mut parts = Vec::new();
            if app.view == View::Timeline {
                if let Some(x) = &app.timeline.index {
                    let p = x.progress();
                    if p.done {
                        parts.push(format!("{} lines", x.len()));
                    } else {
                        let pct = p.read.saturating_mul(100) / p.total.max(1);
                        parts.push(format!("indexing {pct}% ({} lines)", x.len()));
                    }
                    if let Some(n) = p.note {
                        parts.push(n);
                    }
                    if x.values_dropped() {
                        parts.push("some values not kept".into());
                    }
                }
            }
            let filters = crate::app::filters_text(&app.filters);
            if !filters.is_empty() {
                parts.push(filters);
            }
            if app.filters.min_ticks > 0 {
                let hz = app
                    .trace
                    .images
                    .first()
                    .map_or(1e9, |i| i.tsc_hz().max(1) as f64);
                let ns = app.filters.min_ticks as f64 * 1e9 / hz;
                parts.push(format!("-t {}", format_ns(ns).trim()));
            }
            if !app.message.is_empty() {
                parts.push(app.message.clone());
            }
            parts.join(" | ")
        }
    };
    f.render_widget(Paragraph::new(text).style(CURSOR), area);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(100);
    let h = (HELP.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<TextLine> = HELP
        .iter()
        .map(|(k, what)| TextLine::raw(format!(" {k:<14} {what}")))
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        r,
    );
}
