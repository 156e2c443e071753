//! `ftail sites`: list and verify a binary's site tables.

use std::path::Path;

use anyhow::{Context, Result};
use ftail_trace::sites;

/// Prints the sites of `file`; returns 1 when verification finds problems.
pub fn run(file: &Path, json: bool, quiet: bool) -> Result<i32> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let funcs = sites::read(&data).with_context(|| format!("{}", file.display()))?;
    let problems = sites::verify(&data, &funcs).with_context(|| format!("{}", file.display()))?;
    let text = if json {
        sites::to_json(&file.display().to_string(), &funcs, &problems) + "\n"
    } else {
        let mut text = String::new();
        if !quiet {
            for f in &funcs {
                text.push_str(&describe(f));
                text.push('\n');
            }
        }
        for p in &problems {
            text.push_str(&format!("mismatch: {p}\n"));
        }
        text.push_str(&format!(
            "{}: {}; {} mismatches\n",
            file.display(),
            sites::summarize(&funcs),
            problems.len()
        ));
        text
    };
    crate::out::stdout(&text)?;
    Ok(if problems.is_empty() { 0 } else { 1 })
}

fn describe(f: &sites::Function) -> String {
    use ftail_abi::SiteKind;
    let count = |k: SiteKind| f.sites.iter().filter(|s| s.kind == k).count();
    let exits = count(SiteKind::Exit) + count(SiteKind::ExitThunk);
    let tails = f.sites.iter().filter(|s| s.kind.is_tail()).count();
    let cold = f
        .cold
        .map_or(String::new(), |(a, n)| format!(" cold {a:#x}+{n}"));
    let list: Vec<String> = f
        .sites
        .iter()
        .map(|s| {
            let cond = if s.conditional { "(cond)" } else { "" };
            format!("{}{cond}@{:#x}", s.kind.name(), s.addr)
        })
        .collect();
    format!(
        "{:#012x} {:>6} {} entry={} exits={} tails={}{}: {}",
        f.start,
        f.size,
        ftail_trace::printable::printable(&f.name),
        count(SiteKind::Entry),
        exits,
        tails,
        cold,
        list.join(" ")
    )
}
