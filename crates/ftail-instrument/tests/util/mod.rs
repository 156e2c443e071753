//! Test helpers: rendering a rewrite for snapshots, and checking that the
//! rewriter inserted sites and changed nothing else.
#![allow(dead_code)]

use std::fmt::Write as _;

use ftail_instrument::Rewritten;

const NOP5: &str = ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00";

/// Whitespace-normalized statement of a line, without its comment.
fn norm(line: &str) -> String {
    let code = match line.find('#') {
        Some(i) if !line[..i].contains('"') => &line[..i],
        _ => line,
    };
    code.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_ours(n: &str) -> bool {
    n.starts_with(".Lftail_") && n.ends_with(':')
}

/// Whether `l` is a `ret` statement (`ret`, `rep ret`, `ret $n`, ...).
fn is_ret(l: &str) -> bool {
    l.split(' ')
        .find(|w| !matches!(*w, "rep" | "repz" | "bnd"))
        .is_some_and(|m| matches!(m, "ret" | "retq" | "retl"))
}

/// Undoes the rewrite: drops inserted labels, nops, exit sites' `int3`
/// padding and the tables, turns `jmp.d32` back into `jmp` and inverted
/// conditional tails back into `jcc`.
pub fn strip_sites(output: &str) -> Vec<String> {
    let body = output.split("# ftail site tables\n").next().unwrap();
    let lines: Vec<String> = body.lines().map(norm).filter(|l| !l.is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        // jNCC .Lftail_k / .Lftail_s: / jmp.d32 T / int3 / .Lftail_k:
        if let Some((jcc, skip)) = l.split_once(' ') {
            if jcc.starts_with('j') && skip.starts_with(".Lftail_") && i + 4 < lines.len() {
                let target = lines[i + 2].trim_start_matches("jmp.d32 ").to_string();
                out.push(format!("j{} {target}", invert(&jcc[1..])));
                i += 5;
                continue;
            }
        }
        // An exit site: .Lftail_s: / ret / .byte 0xcc, ...
        if is_ours(l) && i + 2 < lines.len() && is_ret(&lines[i + 1]) {
            out.push(lines[i + 1].clone());
            i += 2;
            if lines[i].starts_with(".byte 0xcc") {
                i += 1;
            }
            continue;
        }
        // An indirect call site's `cs` padding: .Lftail_s: / .byte 0x2e, ...
        if l.starts_with(".byte 0x2e") && i > 0 && is_ours(&lines[i - 1]) {
            i += 1;
            continue;
        }
        if !is_ours(l) && l != NOP5 {
            out.push(l.replace("jmp.d32 ", "jmp "));
        }
        i += 1;
    }
    out
}

fn invert(cc: &str) -> &'static str {
    match cc {
        "e" => "ne",
        "ne" => "e",
        "l" => "ge",
        "ge" => "l",
        "le" => "g",
        "g" => "le",
        "b" => "nb",
        "nb" => "b",
        "be" => "a",
        "a" => "be",
        "s" => "ns",
        "ns" => "s",
        "o" => "no",
        "no" => "o",
        "p" => "np",
        "np" => "p",
        other => panic!("unexpected inverted condition {other}"),
    }
}

/// Normalizes condition-code synonyms so that `jge` and `jnl` compare equal.
fn canon_jcc(l: &str) -> String {
    let Some((m, rest)) = l.split_once(' ') else {
        return l.to_string();
    };
    let m = match m {
        "jz" => "je",
        "jnz" => "jne",
        "jc" | "jnae" => "jb",
        "jae" | "jnc" => "jnb",
        "jna" => "jbe",
        "jnbe" => "ja",
        "jpe" => "jp",
        "jpo" => "jnp",
        "jnge" => "jl",
        "jnl" => "jge",
        "jng" => "jle",
        "jnle" => "jg",
        m => m,
    };
    format!("{m} {}", rest.trim_end_matches("@PLT"))
}

/// Asserts that `output` is `input` plus sites and tables, nothing else.
pub fn check_preserved(input: &str, output: &str) {
    let want: Vec<String> = input.lines().map(norm).filter(|l| !l.is_empty()).collect();
    let got = strip_sites(output);
    let first_diff = want
        .iter()
        .zip(&got)
        .position(|(a, b)| canon_jcc(a) != canon_jcc(b));
    if let Some(i) = first_diff {
        panic!("statement {i} changed: {:?} became {:?}", want[i], got[i]);
    }
    assert_eq!(want.len(), got.len(), "statement count changed");
}

/// One line per site, grouped by function, and the notes.
pub fn render_sites(r: &Rewritten) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:?}\n{:?}", r.outcome, r.stats);
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let body = r.text.split("# ftail site tables\n").next().unwrap();
    let lines: Vec<String> = body.lines().map(norm).filter(|l| !l.is_empty()).collect();
    let mut func = String::new();
    for (i, l) in lines.iter().enumerate() {
        if l.ends_with(':') && !l.starts_with(".L") && !l.starts_with(|c: char| c.is_ascii_digit())
        {
            func = l.trim_end_matches(':').to_string();
            continue;
        }
        if !is_ours(l) || i + 1 >= lines.len() {
            continue;
        }
        let next = &lines[i + 1];
        let conditional =
            i > 0 && lines[i - 1].starts_with('j') && lines[i - 1].contains(".Lftail_");
        if is_ret(next) {
            let _ = writeln!(out, "{func}: exit site `{next}`");
        } else if next.starts_with("jmp.d32") {
            let kind = if conditional { "cond-site" } else { "site" };
            let _ = writeln!(out, "{func}: {kind} `{next}`");
        } else if next == NOP5 {
            let guarded = lines[i + 2..]
                .iter()
                .find(|x| !(x.starts_with(".L") && x.ends_with(':')) && *x != NOP5)
                .map_or("", String::as_str);
            let conditional =
                i > 0 && lines[i - 1].starts_with('j') && lines[i - 1].contains(".Lftail_");
            let kind = if conditional { "cond-site" } else { "site" };
            let _ = writeln!(out, "{func}: {kind} before `{guarded}`");
        } else if next.starts_with("call") {
            let _ = writeln!(out, "{func}: call site `{next}`");
        } else if next.starts_with("jmp") || next.starts_with("notrack jmp") {
            let _ = writeln!(out, "{func}: local `{next}`");
        }
    }
    out
}
