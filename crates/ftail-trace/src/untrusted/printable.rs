//! Recorded text made safe to print: function names, thread names,
//! command lines and paths come from the traced program and its files, and
//! a newline or an escape sequence in one of them must neither forge a
//! line of output (a folded stack, a replay line) nor drive the terminal.
//!
//! Every control character (C0, DEL and C1), a backslash, and the
//! bidirectional overrides that reorder what a terminal shows are written
//! as escapes (`\n`, `\t`, `\r`, `\\`, `\xNN`, `\u{NNNN}`), so that two
//! different names never print alike; everything else is kept.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must be escaped to be printed.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\\' => out.push_str("\\\\"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// `s` with every character a terminal would act on escaped; borrowed
/// when there is none (the usual case).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether a shell takes `c` literally in an unquoted word.
fn shell_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// `arg` as a shell needs it to read it back as one word: unchanged when
/// it is plain, in single quotes when it holds spaces or shell syntax,
/// and in ANSI-C quotes (`$'…'`, which bash, zsh and ksh read) when it
/// holds characters that [`printable`] escapes.
pub fn shell_word(arg: &str) -> Cow<'_, str> {
    if !arg.is_empty() && arg.chars().all(shell_plain) {
        return Cow::Borrowed(arg);
    }
    if !arg.chars().any(needs_escape) {
        return Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in arg.chars() {
        match c {
            '\'' => out.push_str(r"\'"),
            // ANSI-C quoting spells a code point `\uNNNN`.
            c if needs_escape(c) && c as u32 >= 0x80 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if needs_escape(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// A command line, each argument quoted as [`shell_word`] does.
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("ns::f<int>(char)"), Cow::Borrowed(_)));
        assert_eq!(printable("evil\n1;x"), "evil\\n1;x");
        assert_eq!(printable("a\x1b[31mb\x7f"), "a\\x1b[31mb\\x7f");
        assert_eq!(printable("a\\x1b"), "a\\\\x1b");
        assert_eq!(printable("\u{9b}31m\u{202e}é"), "\\u{009b}31m\\u{202e}é");
    }

    #[test]
    fn command_lines_read_back_as_a_shell_would_need_them() {
        let args = |a: &[&str]| command_line(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(args(&["./prog", "-x", "a=b,c"]), "./prog -x a=b,c");
        assert_eq!(args(&["echo", "two words", ""]), "echo 'two words' ''");
        assert_eq!(args(&["it's"]), r"'it'\''s'");
        assert_eq!(args(&["a\x1b[2Jb", "it's\n"]), r"$'a\x1b[2Jb' $'it\'s\n'");
        assert_eq!(args(&["\u{9b}"]), r"$'\u009b'");
    }
}
