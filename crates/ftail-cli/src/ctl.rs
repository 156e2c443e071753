//! `ftail ctl`: change what a running program traces, through the control
//! agent the runtime starts under `ftail record --ctl` (an abstract Unix
//! socket named after the process id; one command per line, one answer
//! line each).

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Sends the filter changes, then the action (or `status`), and prints the
/// last answer.
pub fn run(pid: u32, action: Option<&str>, filter: &[String], exclude: &[String]) -> Result<i32> {
    let mut lines = Vec::new();
    if !filter.is_empty() {
        lines.push(format!("filter {}", globs(filter)));
    }
    if !exclude.is_empty() {
        lines.push(format!("exclude {}", globs(exclude)));
    }
    if action.is_some() || lines.is_empty() {
        lines.push(action.unwrap_or("status").to_string());
    }
    let addr = SocketAddr::from_abstract_name(format!("ftail-ctl-{pid}"))?;
    let stream = UnixStream::connect_addr(&addr).with_context(|| {
        format!(
            "process {pid} has no ftail control agent (is it running under \
             `ftail record --ctl`?)"
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = &stream;
    let mut answers = BufReader::new(&stream).lines();
    let mut last = String::new();
    for line in &lines {
        writeln!(out, "{line}").with_context(|| format!("writing to process {pid}"))?;
        let answer = answers
            .next()
            .transpose()
            .with_context(|| format!("reading the answer of process {pid}"))?
            .with_context(|| format!("process {pid} closed the connection"))?;
        match answer.strip_prefix("ok ") {
            Some(state) => last = state.to_string(),
            None => bail!(
                "process {pid} refused {line:?}: {}",
                answer.strip_prefix("error ").unwrap_or(&answer)
            ),
        }
    }
    crate::out::stdout(&format!("{last}\n"))?;
    Ok(0)
}

/// The glob list as the agent reads it; `''` alone clears the list and
/// `*` alone means every function.
fn globs(list: &[String]) -> String {
    list.iter()
        .filter(|g| !g.is_empty() && g.as_str() != "*")
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}
