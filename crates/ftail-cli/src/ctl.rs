//! `ftail ctl`: change what a running program traces, through the control
//! agent the runtime starts under `ftail record --ctl` (an abstract Unix
//! socket named after the process id; one command per line, one answer
//! line each).
//!
//! Any local user can bind an abstract socket name first, so the client
//! checks who answers: the socket's owner (`SO_PEERCRED`) must be process
//! PID itself, which opened it as this user, and PID must be this user's
//! — unless this user is root: a program root started may have become
//! another user since, and its agent, whose socket root opened, answers
//! the user who started the recording.

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
    let answers = send(pid, &lines)?;
    let last = answers.last().cloned().unwrap_or_default();
    crate::out::stdout(&format!("{last}\n"))?;
    Ok(0)
}

/// Sends `lines` to the control agent of process `pid`, one at a time;
/// returns their answers (each without its `ok `), or the first refusal
/// as an error.
pub fn send(pid: u32, lines: &[String]) -> Result<Vec<String>> {
    let addr = SocketAddr::from_abstract_name(format!("ftail-ctl-{pid}"))?;
    let stream = UnixStream::connect_addr(&addr).with_context(|| {
        format!(
            "process {pid} has no ftail control agent (is it running under \
             `ftail record --ctl`?)"
        )
    })?;
    check_agent(&stream, pid)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = &stream;
    let mut answers = BufReader::new(&stream).lines();
    let mut got = Vec::new();
    for line in lines {
        writeln!(out, "{line}").with_context(|| format!("writing to process {pid}"))?;
        let answer = answers
            .next()
            .transpose()
            .with_context(|| format!("reading the answer of process {pid}"))?
            .with_context(|| format!("process {pid} closed the connection"))?;
        match answer.strip_prefix("ok ") {
            Some(state) => got.push(state.to_string()),
            None => bail!(
                "process {pid} refused {line:?}: {}",
                answer.strip_prefix("error ").unwrap_or(&answer)
            ),
        }
    }
    Ok(got)
}

/// Refuses to talk to a socket that is not process `pid`'s own agent,
/// running as this user.
fn check_agent(stream: &UnixStream, pid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let cred = crate::peer::credentials(stream)
        .with_context(|| format!("asking who holds the control socket of process {pid}"))?;
    let name = format!("ftail-ctl-{pid}");
    if u32::try_from(cred.pid).ok() != Some(pid) {
        bail!(
            "the socket {name} is held by process {} (uid {}), not by process {pid}; \
             not talking to it",
            cred.pid,
            cred.uid
        );
    }
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .with_context(|| format!("process {pid} is gone"))?
        .uid();
    let me = crate::private_dir::euid();
    // The socket when it was opened, and the process, must both be ours;
    // root's program may have become another user since.
    let foreign = if cred.uid != me {
        Some(cred.uid)
    } else if owner != me && me != 0 {
        Some(owner)
    } else {
        None
    };
    if let Some(uid) = foreign {
        bail!(
            "process {pid} runs as uid {uid}, not as you (uid {me}); ftail ctl controls \
             only your own programs"
        );
    }
    Ok(())
}

/// The glob list as the agent reads it; `''` alone clears the list and
/// `*` alone means every function.
pub(crate) fn globs(list: &[String]) -> String {
    list.iter()
        .filter(|g| !g.is_empty() && g.as_str() != "*")
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}
