//! Parsing assembly text into lines the rewriter can reason about: which
//! section each line is in, which labels it defines, what statement it holds.

use crate::lex::{self, first_word, split_args};

/// Index of a section in [`Parsed::sections`].
pub type SectionId = usize;

/// A section as far as the rewriter cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name (`.text`, `.text.unlikely`, …).
    pub name: String,
    /// Whether it holds code.
    pub exec: bool,
    /// Its COMDAT group, if any.
    pub group: Option<String>,
}

/// What a line's statement is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt<'a> {
    /// Nothing but labels and comments.
    Empty,
    /// An assembler directive such as `.section`.
    Directive { name: &'a str, args: &'a str },
    /// A machine instruction.
    Insn(Insn<'a>),
    /// Several statements separated by `;`; not taken apart.
    Multiple,
}

/// A machine instruction, prefixes separated from the mnemonic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insn<'a> {
    /// Prefixes written before the mnemonic (`notrack`, `rep`, …).
    pub prefixes: Vec<&'a str>,
    /// The mnemonic as written (`jmp`, `jmpq`, `ret`, …).
    pub mnemonic: &'a str,
    /// The operand text, trimmed.
    pub operands: &'a str,
}

/// One line of the input.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// The line as it was, without its newline.
    pub text: &'a str,
    /// Labels it defines.
    pub labels: Vec<&'a str>,
    /// Its statement.
    pub stmt: Stmt<'a>,
    /// Its comment, without `#`.
    pub comment: &'a str,
    /// Whether it lies between `#APP` and `#NO_APP` (inline assembly).
    pub in_app: bool,
    /// The section it is in.
    pub section: SectionId,
}

/// A whole file, parsed.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Its lines.
    pub lines: Vec<Line<'a>>,
    /// Every section seen; index 0 is the initial `.text`.
    pub sections: Vec<Section>,
}

const INSN_PREFIXES: &[&str] = &[
    "notrack", "rep", "repz", "repe", "repnz", "repne", "lock", "bnd", "cs", "ds", "es", "ss",
    "fs", "gs", "data16", "addr32", "rex", "rex64",
];

/// Parses `text` line by line.
pub fn parse(text: &str) -> Parsed<'_> {
    let mut sections = vec![Section {
        name: ".text".into(),
        exec: true,
        group: None,
    }];
    let mut tracker = SectionTracker::default();
    let mut in_app = false;
    let mut lines = Vec::new();
    for raw in text.lines() {
        let split = lex::split(raw);
        let trimmed = raw.trim();
        let app_marker = if trimmed == "#APP" {
            Some(true)
        } else if trimmed == "#NO_APP" {
            Some(false)
        } else {
            None
        };
        let stmt = if split.multiple {
            Stmt::Multiple
        } else {
            parse_stmt(split.stmt)
        };
        if let Stmt::Directive { name, args } = &stmt {
            tracker.apply(name, args, &mut sections);
        }
        lines.push(Line {
            text: raw,
            labels: split.labels,
            stmt,
            comment: split.comment,
            in_app: in_app || app_marker.is_some(),
            section: tracker.current,
        });
        if let Some(on) = app_marker {
            in_app = on;
        }
    }
    Parsed { lines, sections }
}

/// The statements of a line holding several (`a; b; c`), labels dropped.
pub fn pieces(text: &str) -> Vec<Stmt<'_>> {
    let code = lex::split(text);
    let mut out = Vec::new();
    let (mut in_str, mut start) = (false, 0);
    let full = text.trim_start();
    let code_len = full.len()
        - if code.comment.is_empty() {
            0
        } else {
            code.comment.len() + 1
        };
    let body = &full[..code_len];
    let bytes = body.as_bytes();
    for i in 0..=bytes.len() {
        let at_end = i == bytes.len();
        if !at_end && bytes[i] == b'"' {
            in_str = !in_str;
        }
        if at_end || (bytes[i] == b';' && !in_str) {
            let piece = lex::split(&body[start..i]);
            out.push(parse_stmt(piece.stmt));
            start = i + 1;
        }
    }
    out
}

fn parse_stmt(stmt: &str) -> Stmt<'_> {
    if stmt.is_empty() {
        return Stmt::Empty;
    }
    if stmt.starts_with('.') {
        let (name, args) = first_word(stmt);
        return Stmt::Directive { name, args };
    }
    let mut prefixes = Vec::new();
    let mut rest = stmt;
    loop {
        let (word, after) = first_word(rest);
        if INSN_PREFIXES.contains(&word) && !after.is_empty() {
            prefixes.push(word);
            rest = after;
        } else {
            return Stmt::Insn(Insn {
                prefixes,
                mnemonic: word,
                operands: after,
            });
        }
    }
}

/// Follows `.section`, `.pushsection`, `.popsection`, `.previous`, `.text`…
#[derive(Default)]
struct SectionTracker {
    current: SectionId,
    previous: SectionId,
    stack: Vec<(SectionId, SectionId)>,
}

impl SectionTracker {
    fn apply(&mut self, name: &str, args: &str, sections: &mut Vec<Section>) {
        let target = match name {
            ".text" | ".data" | ".bss" => Some(intern(sections, section_from(name, &[]))),
            ".section" => {
                let a = split_args(args);
                a.first()
                    .map(|n| intern(sections, section_from(n, &a[1..])))
            }
            ".pushsection" => {
                self.stack.push((self.current, self.previous));
                let a = split_args(args);
                a.first()
                    .map(|n| intern(sections, section_from(n, &a[1..])))
            }
            ".popsection" => {
                if let Some((cur, prev)) = self.stack.pop() {
                    self.current = cur;
                    self.previous = prev;
                }
                None
            }
            ".previous" => {
                std::mem::swap(&mut self.current, &mut self.previous);
                None
            }
            _ => None,
        };
        if let Some(t) = target {
            self.previous = self.current;
            self.current = t;
        }
    }
}

fn intern(sections: &mut Vec<Section>, s: Section) -> SectionId {
    if let Some(i) = sections
        .iter()
        .position(|x| x.name == s.name && x.group == s.group)
    {
        return i;
    }
    sections.push(s);
    sections.len() - 1
}

/// A section from `.section NAME, "FLAGS", @TYPE [,ENTSIZE] [,GROUP [,comdat]]`.
fn section_from(name: &str, rest: &[&str]) -> Section {
    let name = name.trim_matches('"').to_string();
    let flags = rest.first().map(|f| f.trim_matches('"'));
    let exec = match flags {
        Some(f) if !f.starts_with('@') && !f.starts_with('%') => f.contains('x'),
        _ => default_exec(&name),
    };
    let group = flags.filter(|f| f.contains('G')).and_then(|f| {
        // After the type comes the entity size when `M` is set, then the group.
        let at = if f.contains('M') { 3 } else { 2 };
        rest.get(at).map(|g| g.trim_matches('"').to_string())
    });
    Section { name, exec, group }
}

/// gas's default flags for sections named without flags.
fn default_exec(name: &str) -> bool {
    name == ".text"
        || name.starts_with(".text.")
        || name == ".init"
        || name == ".fini"
        || name.starts_with(".gnu.linkonce.t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_sections_and_groups() {
        let p = parse(
            "\t.text\nf:\n\t.section .rodata\n.L1:\n\t.previous\n\tret\n\
             \t.section .text._Z1fv,\"axG\",@progbits,_Z1fv,comdat\n\tnop\n\
             \t.pushsection .data\n\t.quad 1\n\t.popsection\n\tnop\n\
             \t.section .rodata.str1.1,\"aMS\",@progbits,1\n",
        );
        let sec = |i: usize| &p.sections[p.lines[i].section];
        assert!(sec(1).exec);
        assert!(!sec(3).exec);
        assert!(sec(5).exec);
        assert_eq!(sec(7).group.as_deref(), Some("_Z1fv"));
        assert!(!sec(9).exec);
        assert_eq!(sec(11).group.as_deref(), Some("_Z1fv"));
        assert_eq!(sec(12).group, None);
    }

    #[test]
    fn parses_prefixes_and_app_blocks() {
        let p = parse("\tnotrack jmp\t*%rax\n#APP\n\tret\n#NO_APP\n\tret\n");
        match &p.lines[0].stmt {
            Stmt::Insn(i) => {
                assert_eq!(i.prefixes, vec!["notrack"]);
                assert_eq!(i.mnemonic, "jmp");
                assert_eq!(i.operands, "*%rax");
            }
            s => panic!("{s:?}"),
        }
        assert!(p.lines[1].in_app && p.lines[2].in_app && p.lines[3].in_app);
        assert!(!p.lines[4].in_app);
    }
}
