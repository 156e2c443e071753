//! The rewriter proper: finds functions, classifies every way out of them,
//! and places sites and tables.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use ftail_abi::{FuncFlags, SiteFlags, SiteKind, NO_REG, SITES_VERSION};

use crate::classify::{
    cold_parent, flow, indirect_call_len, inverse_cc, is_return_thunk, is_thunk_body,
    operand_register, retpoline_register, Flow,
};
use crate::lex::{split_args, symbols};
use crate::parse::{parse, pieces, Line, Parsed, SectionId, Stmt};
use crate::{Compiler, Error, Outcome, Rewritten, Stats};

/// The 5-byte nop of a site, as a directive so that gas cannot re-encode it.
const NOP5: &str = "\t.byte\t0x0f, 0x1f, 0x44, 0x00, 0x00";
/// Prefix of every label the rewriter makes; its presence in the input means
/// the input was already rewritten.
const LABEL_PREFIX: &str = ".Lftail_";

pub(crate) fn rewrite(input: &str) -> Result<Rewritten, Error> {
    let parsed = parse(input);
    let compiler = match detect_compiler(&parsed) {
        Some(c) => c,
        None => return Ok(untouched(input, Outcome::NotCompilerOutput)),
    };
    if let Some(line) = intel_syntax_line(&parsed) {
        return Err(Error::IntelSyntax { line });
    }
    if input.contains(LABEL_PREFIX) {
        return Ok(untouched(input, Outcome::AlreadyInstrumented));
    }
    let mut rw = Rewriter::new(&parsed, compiler);
    rw.run();
    Ok(Rewritten {
        text: rw.emit(input),
        outcome: Outcome::Instrumented(compiler),
        stats: rw.stats,
        notes: rw.notes,
    })
}

fn untouched(input: &str, outcome: Outcome) -> Rewritten {
    Rewritten {
        text: input.to_string(),
        outcome,
        stats: Stats::default(),
        notes: Vec::new(),
    }
}

fn detect_compiler(p: &Parsed) -> Option<Compiler> {
    p.lines.iter().find_map(|l| match &l.stmt {
        Stmt::Directive {
            name: ".ident",
            args,
        } if !l.in_app => {
            if args.contains("clang version") {
                Some(Compiler::Clang)
            } else if args.starts_with("\"rustc version") {
                Some(Compiler::Rustc)
            } else if args.starts_with("\"GCC:") {
                Some(Compiler::Gcc)
            } else {
                None
            }
        }
        _ => None,
    })
}

fn intel_syntax_line(p: &Parsed) -> Option<usize> {
    p.lines.iter().position(|l| {
        !l.in_app
            && matches!(
                l.stmt,
                Stmt::Directive {
                    name: ".intel_syntax",
                    ..
                }
            )
    })
}

/// One function: its main part and optional cold partition.
struct Func<'a> {
    name: &'a str,
    label_line: usize,
    section: SectionId,
    size_line: Option<usize>,
    cold: Option<ColdPart<'a>>,
    /// Lines owned by the function, with whether they are in the cold part.
    lines: Vec<(usize, bool)>,
}

struct ColdPart<'a> {
    name: &'a str,
    label_line: usize,
    size_line: Option<usize>,
}

/// Text inserted around one line.
#[derive(Default, Clone)]
struct Edit {
    /// Lines emitted after the line's labels and before its statement.
    before_stmt: Vec<String>,
    /// Replacement of the statement (and its comment).
    stmt: Option<String>,
    /// Lines emitted after the line.
    after: Vec<String>,
}

struct SiteOut {
    label: String,
    kind: SiteKind,
    reg: u8,
    flags: u8,
}

/// What the tables need to know about one instrumented function.
struct FuncOut {
    name: String,
    group: Option<String>,
    start: String,
    end: Option<String>,
    cold: Option<(String, Option<String>)>,
    sites: Vec<SiteOut>,
    flags: u32,
}

struct Rewriter<'p, 'a> {
    p: &'p Parsed<'a>,
    compiler: Compiler,
    edits: HashMap<usize, Edit>,
    funcs_out: Vec<FuncOut>,
    /// `.L` labels whose address is taken outside jumps (computed goto).
    addr_taken: HashSet<&'a str>,
    /// Every symbol used as a jump target or taken as an address.
    referenced: HashSet<&'a str>,
    /// Every label the unit defines: a call to one of them stays inside
    /// the unit and is no call site.
    defined: HashSet<&'a str>,
    /// Lines of gcc switch tables (data that follows a table jump).
    table_lines: HashSet<usize>,
    next_label: usize,
    stats: Stats,
    notes: Vec<String>,
}

/// Why a function is left alone.
type Skip = String;

impl<'p, 'a> Rewriter<'p, 'a> {
    fn new(p: &'p Parsed<'a>, compiler: Compiler) -> Self {
        Rewriter {
            p,
            compiler,
            edits: HashMap::new(),
            funcs_out: Vec::new(),
            addr_taken: HashSet::new(),
            referenced: HashSet::new(),
            defined: p
                .lines
                .iter()
                .flat_map(|l| l.labels.iter().copied())
                .collect(),
            table_lines: HashSet::new(),
            next_label: 0,
            stats: Stats::default(),
            notes: Vec::new(),
        }
    }

    fn run(&mut self) {
        let funcs = self.find_functions();
        self.find_tables_and_references();
        for f in &funcs {
            self.stats.functions += 1;
            if is_thunk_body(f.name) {
                continue;
            }
            match self.instrument(f) {
                Ok((edits, out)) => {
                    self.count(&out);
                    for (line, e) in edits {
                        merge(self.edits.entry(line).or_default(), e);
                    }
                    self.funcs_out.push(out);
                }
                Err(why) => {
                    self.stats.skipped += 1;
                    let line = f.label_line + 1;
                    self.notes
                        .push(format!("line {line}: {}: not instrumented: {why}", f.name));
                }
            }
        }
    }

    fn count(&mut self, out: &FuncOut) {
        self.stats.instrumented += 1;
        for s in &out.sites {
            match s.kind {
                SiteKind::Entry => self.stats.entries += 1,
                SiteKind::Exit | SiteKind::ExitThunk => self.stats.exits += 1,
                SiteKind::TailDirect if s.flags & SiteFlags::CONDITIONAL != 0 => {
                    self.stats.tails_conditional += 1
                }
                SiteKind::TailDirect => self.stats.tails_direct += 1,
                SiteKind::TailIndirect => self.stats.tails_indirect += 1,
                SiteKind::TailRetpoline => self.stats.tails_retpoline += 1,
                SiteKind::LocalIndirect => self.stats.local_indirect += 1,
                SiteKind::Call | SiteKind::CallGot | SiteKind::CallIndirect => {
                    self.stats.calls += 1
                }
            }
        }
    }

    /// Function boundaries: from a label typed `@function` in a code section
    /// to its `.size`; `foo.cold` labels continue `foo`.
    fn find_functions(&self) -> Vec<Func<'a>> {
        let lines = &self.p.lines;
        let typed = function_typed_names(lines);
        let mut funcs: Vec<Func<'a>> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut open: Option<(usize, bool)> = None;
        for (i, line) in lines.iter().enumerate() {
            if !line.in_app && self.p.sections[line.section].exec {
                for &label in &line.labels {
                    if !typed.contains(label) {
                        continue;
                    }
                    let parent = cold_parent(label).and_then(|p| by_name.get(p).copied());
                    if let Some(fi) = parent.filter(|&fi| funcs[fi].cold.is_none()) {
                        funcs[fi].cold = Some(ColdPart {
                            name: label,
                            label_line: i,
                            size_line: None,
                        });
                        open = Some((fi, true));
                    } else if !by_name.contains_key(label) {
                        by_name.insert(label, funcs.len());
                        open = Some((funcs.len(), false));
                        funcs.push(Func {
                            name: label,
                            label_line: i,
                            section: line.section,
                            size_line: None,
                            cold: None,
                            lines: Vec::new(),
                        });
                    }
                }
            }
            if let Some((fi, cold)) = open {
                funcs[fi].lines.push((i, cold));
            }
            if let Stmt::Directive {
                name: ".size",
                args,
            } = line.stmt
            {
                let sym = split_args(args).first().copied().unwrap_or("");
                for (fi, f) in funcs.iter_mut().enumerate() {
                    if f.name == sym && f.size_line.is_none() {
                        f.size_line = Some(i);
                        if open == Some((fi, false)) {
                            open = None;
                        }
                    }
                    if let Some(c) = f.cold.as_mut().filter(|c| c.name == sym) {
                        c.size_line = Some(i);
                        if open == Some((fi, true)) {
                            open = None;
                        }
                    }
                }
            }
        }
        funcs
    }

    /// Finds gcc switch tables, address-taken labels and jump targets.
    fn find_tables_and_references(&mut self) {
        let lines = &self.p.lines;
        if self.compiler == Compiler::Gcc {
            for i in 0..lines.len() {
                if self.is_table_jump_candidate(i) {
                    if let Some(start) = self.table_after(i) {
                        self.mark_table(start);
                    }
                }
            }
        }
        for (i, line) in lines.iter().enumerate() {
            match &line.stmt {
                Stmt::Insn(insn) => match flow(insn) {
                    Flow::JmpDirect { target, .. }
                    | Flow::Jcc { target, .. }
                    | Flow::OtherBranch { target }
                    | Flow::CallDirect { target, .. } => {
                        self.referenced.insert(target);
                    }
                    Flow::CallGot { .. } => {}
                    Flow::JmpIndirect { .. } | Flow::Ret => {}
                    Flow::None | Flow::CallIndirect { .. } => {
                        for s in symbols(insn.operands).filter(|s| s.starts_with(".L")) {
                            self.addr_taken.insert(s);
                        }
                    }
                },
                Stmt::Directive { name, args }
                    if is_data_directive(name)
                        && !self.table_lines.contains(&i)
                        && !is_metadata_section(&self.p.sections[line.section].name) =>
                {
                    for s in symbols(args).filter(|s| s.starts_with(".L")) {
                        self.addr_taken.insert(s);
                    }
                }
                _ => {}
            }
        }
        let taken: Vec<&'a str> = self.addr_taken.iter().copied().collect();
        self.referenced.extend(taken);
    }

    fn is_table_jump_candidate(&self, i: usize) -> bool {
        let line = &self.p.lines[i];
        match &line.stmt {
            Stmt::Insn(insn) if !line.in_app => match flow(insn) {
                Flow::JmpIndirect { .. } => true,
                Flow::JmpDirect { target, .. } => retpoline_register(target).is_some(),
                _ => false,
            },
            _ => false,
        }
    }

    /// If data follows the jump at line `i` at once (a switch table), the
    /// line of the section change that starts it.
    fn table_after(&self, i: usize) -> Option<usize> {
        for (j, line) in self.p.lines.iter().enumerate().skip(i + 1) {
            if !line.labels.is_empty() {
                return None;
            }
            match &line.stmt {
                Stmt::Empty => continue,
                Stmt::Insn(insn) if insn.mnemonic == "int3" => continue,
                Stmt::Directive { name, .. } if is_align_directive(name) => continue,
                Stmt::Directive { .. } if line.section != self.p.lines[i].section => {
                    return (!self.p.sections[line.section].exec).then_some(j)
                }
                _ => return None,
            }
        }
        None
    }

    fn mark_table(&mut self, start: usize) {
        let section = self.p.lines[start].section;
        for (j, line) in self.p.lines.iter().enumerate().skip(start) {
            if line.section != section {
                break;
            }
            self.table_lines.insert(j);
        }
    }

    /// Places the sites of one function, or says why it cannot.
    fn instrument(&mut self, f: &Func<'a>) -> Result<(Vec<(usize, Edit)>, FuncOut), Skip> {
        let lines = &self.p.lines;
        let own_labels: HashSet<&str> = f
            .lines
            .iter()
            .filter(|&&(i, _)| self.p.sections[lines[i].section].exec)
            .flat_map(|&(i, _)| lines[i].labels.iter().copied())
            .collect();
        let computed_goto = own_labels.iter().any(|l| self.addr_taken.contains(l));
        let mut edits: Vec<(usize, Edit)> = Vec::new();
        let mut sites = Vec::new();
        let start = self.label();
        edits.push((f.label_line, before(vec![format!("{start}:")])));
        let (entry_edit, endbr) = self.entry_site(f, &own_labels)?;
        let entry = self.label();
        sites.push(site(&entry, SiteKind::Entry, NO_REG, 0));
        edits.push(entry_edit(entry));
        for &(i, cold) in &f.lines {
            let line = &lines[i];
            let insn = match &line.stmt {
                Stmt::Insn(insn) => insn,
                Stmt::Multiple => {
                    for piece in pieces(line.text) {
                        let Stmt::Insn(insn) = piece else { continue };
                        let fl = flow(&insn);
                        if !line.in_app && fl != Flow::None {
                            return Err(format!("line {}: several statements on a line", i + 1));
                        }
                        check_inline_asm(&fl, &own_labels)
                            .map_err(|e| format!("line {}: {e}", i + 1))?;
                    }
                    continue;
                }
                _ => continue,
            };
            let fl = flow(insn);
            if line.in_app {
                check_inline_asm(&fl, &own_labels).map_err(|e| format!("line {}: {e}", i + 1))?;
                continue;
            }
            let cold_flag = if cold { SiteFlags::COLD } else { 0 };
            // A jump to the function's own name enters it again through its
            // entry site: a self tail call, not an internal jump.
            let internal = |t: &str| own_labels.contains(t) && t != f.name;
            let local_label =
                |t: &str| t.starts_with(".L") || t.starts_with(|c: char| c.is_ascii_digit());
            let placed = match fl {
                Flow::Ret => Some(self.exit_site(insn, cold_flag)),
                Flow::JmpDirect { target, .. } if internal(target) => None,
                Flow::JmpDirect { target, operand } => {
                    let (kind, reg) = if is_return_thunk(target) {
                        (SiteKind::ExitThunk, NO_REG)
                    } else if local_label(target) {
                        return Err(format!(
                            "line {}: jump to {target} outside the function",
                            i + 1
                        ));
                    } else if let Some(r) = retpoline_register(target) {
                        if self.jump_is_local(i, computed_goto)? {
                            let (e, s) = self.local_indirect(cold_flag);
                            edits.push((i, e));
                            sites.push(s);
                            continue;
                        }
                        (
                            SiteKind::TailRetpoline,
                            ftail_abi::gpr_number(r).unwrap_or(NO_REG),
                        )
                    } else {
                        (SiteKind::TailDirect, NO_REG)
                    };
                    Some(self.jump_site(kind, reg, cold_flag, operand))
                }
                Flow::JmpIndirect { operand } => {
                    if self.jump_is_local(i, computed_goto)? {
                        Some(self.local_indirect(cold_flag))
                    } else {
                        let reg = operand_register(operand).unwrap_or(NO_REG);
                        Some(self.nop_site(SiteKind::TailIndirect, reg, cold_flag, None))
                    }
                }
                Flow::Jcc { target, .. } if internal(target) => None,
                Flow::Jcc {
                    cc,
                    target,
                    operand,
                } => {
                    if local_label(target) {
                        return Err(format!(
                            "line {}: branch to {target} outside the function",
                            i + 1
                        ));
                    }
                    let (kind, reg) = if is_return_thunk(target) {
                        (SiteKind::ExitThunk, NO_REG)
                    } else if let Some(r) = retpoline_register(target) {
                        (
                            SiteKind::TailRetpoline,
                            ftail_abi::gpr_number(r).unwrap_or(NO_REG),
                        )
                    } else {
                        (SiteKind::TailDirect, NO_REG)
                    };
                    Some(self.conditional_site(cc, operand, kind, reg, cold_flag))
                }
                Flow::OtherBranch { target } if internal(target) => None,
                Flow::OtherBranch { target } => {
                    return Err(format!(
                        "line {}: {} to {target} leaves the function",
                        i + 1,
                        insn.mnemonic
                    ));
                }
                Flow::CallDirect { target, .. } if local_label(target) => {
                    return Err(format!(
                        "line {}: call to local label {target} (inline thunk)",
                        i + 1
                    ));
                }
                Flow::CallDirect { target, .. } | Flow::CallGot { target }
                    if !insn.prefixes.is_empty()
                        || self.defined.contains(target)
                        || !is_call_out_target(target) =>
                {
                    None
                }
                Flow::CallDirect { .. } => Some(self.call_site(SiteKind::Call, cold_flag)),
                Flow::CallGot { .. } => Some(self.call_site(SiteKind::CallGot, cold_flag)),
                Flow::CallIndirect { operand } if insn.prefixes.is_empty() => {
                    indirect_call_len(operand).map(|len| self.indirect_call_site(len, cold_flag))
                }
                Flow::CallIndirect { .. } => None,
                Flow::None => None,
            };
            if let Some((e, s)) = placed {
                edits.push((i, e));
                sites.push(s);
            }
        }
        let out = self.func_out(f, start, sites, endbr, computed_goto, &mut edits);
        Ok((edits, out))
    }

    /// Where the entry nop goes: right after `endbr64`, or before the first
    /// instruction, but never after a label that a jump inside the function
    /// targets (a loop back to the top must not run the entry hook again).
    #[allow(clippy::type_complexity)]
    fn entry_site(
        &self,
        f: &Func<'a>,
        own_labels: &HashSet<&str>,
    ) -> Result<(Box<dyn FnOnce(String) -> (usize, Edit)>, bool), Skip> {
        let lines = &self.p.lines;
        let s = f.label_line;
        let Some(&(first, _)) = f
            .lines
            .iter()
            .find(|&&(i, _)| matches!(lines[i].stmt, Stmt::Insn(_) | Stmt::Multiple))
        else {
            return Err("no instructions".into());
        };
        if lines[first].in_app {
            return Err("starts with inline assembly".into());
        }
        let is_endbr = matches!(&lines[first].stmt, Stmt::Insn(i) if i.mnemonic == "endbr64");
        let targeted = |i: usize| {
            lines[i]
                .labels
                .iter()
                .any(|l| *l != f.name && own_labels.contains(l) && self.referenced.contains(l))
        };
        if is_endbr {
            if (s..=first).any(targeted) {
                return Err("a jump target precedes endbr64".into());
            }
            return Ok((Box::new(move |l| (first, after(site_lines(&l)))), true));
        }
        let at = (s..=first).find(|&i| targeted(i)).unwrap_or(first);
        if at == s {
            return Err("a jump target shares the function's label line".into());
        }
        let cfi_after = (at..first).any(|i| {
            matches!(
                lines[i].stmt,
                Stmt::Directive {
                    name: ".cfi_startproc",
                    ..
                }
            )
        });
        if cfi_after {
            return Err("a jump target precedes .cfi_startproc".into());
        }
        if at == first {
            Ok((Box::new(move |l| (first, before(site_lines(&l)))), false))
        } else {
            Ok((Box::new(move |l| (at - 1, after(site_lines(&l)))), false))
        }
    }

    fn jump_is_local(&self, i: usize, computed_goto: bool) -> Result<bool, Skip> {
        let line = &self.p.lines[i];
        let Stmt::Insn(insn) = &line.stmt else {
            return Ok(true);
        };
        Ok(match self.compiler {
            Compiler::Clang => !line.comment.contains("TAILCALL"),
            Compiler::Gcc => {
                computed_goto
                    || insn.prefixes.contains(&"notrack")
                    || symbols(insn.operands).any(|s| s.starts_with(".L"))
                    || self.table_after(i).is_some()
            }
            Compiler::Rustc => return self.rustc_jump_is_local(i, insn, computed_goto),
        })
    }

    /// rustc's assembly says nothing of tail calls, but LLVM makes an
    /// indirect jump only for a jump table or a tail call (Rust has no
    /// computed goto). A jump through a `.L` table stays inside; a jump
    /// through memory, or any indirect jump of a function without a jump
    /// table, is a tail call. In a function with a table, a jump through a
    /// register is the table's dispatch when the last instruction of its
    /// block that writes the register is an `addq` (a position-independent
    /// table's `movslq (%B,%I,4), %R; addq %B, %R; jmpq *%R`), and a tail
    /// call when another instruction of the block wrote it; when nothing
    /// in its block did, it is a tail call only if no `addq` of the
    /// function writes that register. Anything else is not guessed at.
    fn rustc_jump_is_local(
        &self,
        i: usize,
        insn: &crate::parse::Insn<'_>,
        has_table: bool,
    ) -> Result<bool, Skip> {
        // A retpoline thunk's operand is its register, loaded out of sight.
        let operand = match flow(insn) {
            Flow::JmpIndirect { operand } => operand,
            _ => "",
        };
        if symbols(operand).any(|s| s.starts_with(".L")) {
            return Ok(true);
        }
        if !has_table {
            return Ok(false);
        }
        let unknown = || {
            Err(format!(
                "line {}: indirect jump `{} {}` in a function with a jump table: \
                 a table's dispatch or a tail call?",
                i + 1,
                insn.mnemonic,
                insn.operands
            ))
        };
        let Some(reg) = operand.strip_prefix('%').and_then(gpr64) else {
            return if operand.is_empty() {
                unknown()
            } else {
                Ok(false)
            };
        };
        match self.last_writer_in_block(i, reg) {
            Some(w) => Ok(w.mnemonic == "addq"),
            None if self.func_adds_to(i, reg) => unknown(),
            None => Ok(false),
        }
    }

    /// The last instruction before line `i`, in its basic block, whose
    /// destination is the register `reg` (any width), or a call.
    fn last_writer_in_block(&self, i: usize, reg: &str) -> Option<&crate::parse::Insn<'a>> {
        if !self.p.lines[i].labels.is_empty() {
            return None;
        }
        for line in self.p.lines[..i].iter().rev() {
            if let Stmt::Insn(insn) = &line.stmt {
                if insn.mnemonic.starts_with("call") || writes(insn, reg) {
                    return Some(insn);
                }
                if flow(insn) != Flow::None {
                    return None;
                }
            }
            if !line.labels.is_empty() || line.in_app {
                return None;
            }
        }
        None
    }

    /// Whether an `addq` of the function that holds line `i` writes `reg`.
    fn func_adds_to(&self, i: usize, reg: &str) -> bool {
        let section = self.p.lines[i].section;
        self.p
            .lines
            .iter()
            .filter(|l| l.section == section && !l.in_app)
            .any(|l| matches!(&l.stmt, Stmt::Insn(x) if x.mnemonic == "addq" && writes(x, reg)))
    }

    fn label(&mut self) -> String {
        self.next_label += 1;
        format!("{LABEL_PREFIX}{}", self.next_label)
    }

    /// A nop site right before the statement of line `i`.
    fn nop_site(
        &mut self,
        kind: SiteKind,
        reg: u8,
        flags: u8,
        stmt: Option<String>,
    ) -> (Edit, SiteOut) {
        let l = self.label();
        let edit = Edit {
            stmt,
            ..before(site_lines(&l))
        };
        (edit, site(&l, kind, reg, flags))
    }

    /// A call site: the call itself, labelled and left as it is.
    fn call_site(&mut self, kind: SiteKind, flags: u8) -> (Edit, SiteOut) {
        let l = self.label();
        (before(vec![format!("{l}:")]), site(&l, kind, NO_REG, flags))
    }

    /// An indirect call site: the call itself, labelled, after as many
    /// `cs` prefixes (`2e`) as make it 5 bytes long — never `3e`, which
    /// is `notrack` under CET's indirect branch tracking — so untraced
    /// the same single instruction runs.
    fn indirect_call_site(&mut self, len: usize, flags: u8) -> (Edit, SiteOut) {
        let l = self.label();
        let mut lines = vec![format!("{l}:")];
        if len < 5 {
            lines.push(format!("\t.byte\t{}", vec!["0x2e"; 5 - len].join(", ")));
        }
        (
            before(lines),
            site(&l, SiteKind::CallIndirect, NO_REG, flags),
        )
    }

    fn local_indirect(&mut self, flags: u8) -> (Edit, SiteOut) {
        let l = self.label();
        let edit = before(vec![format!("{l}:")]);
        (edit, site(&l, SiteKind::LocalIndirect, NO_REG, flags))
    }

    /// An exit site: the `ret` itself, labelled, followed by `int3`
    /// padding up to 5 bytes (never executed; the runtime writes a `jmp`
    /// over the whole when the function is traced).
    fn exit_site(&mut self, insn: &crate::parse::Insn<'_>, flags: u8) -> (Edit, SiteOut) {
        let l = self.label();
        // `ret` is c3, `ret $n` c2 iw; each prefix (`rep`, `bnd`) a byte.
        let len = insn.prefixes.len() + if insn.operands.is_empty() { 1 } else { 3 };
        let pad = vec!["0xcc"; 5usize.saturating_sub(len)].join(", ");
        let edit = Edit {
            before_stmt: vec![format!("{l}:")],
            after: if pad.is_empty() {
                Vec::new()
            } else {
                vec![format!("\t.byte\t{pad}")]
            },
            ..Edit::default()
        };
        (edit, site(&l, SiteKind::Exit, NO_REG, flags))
    }

    /// A direct jump out of the function that is its own site: `site:
    /// jmp.d32 f` (rel32 always, so that the runtime can retarget it).
    fn jump_site(&mut self, kind: SiteKind, reg: u8, flags: u8, operand: &str) -> (Edit, SiteOut) {
        let l = self.label();
        let edit = Edit {
            before_stmt: vec![format!("{l}:")],
            stmt: Some(format!("\tjmp.d32\t{operand}")),
            ..Edit::default()
        };
        (edit, site(&l, kind, reg, flags))
    }

    /// `jCC f` becomes `jNCC skip; site: jmp.d32 f; int3; skip:`.
    fn conditional_site(
        &mut self,
        cc: &str,
        operand: &str,
        kind: SiteKind,
        reg: u8,
        flags: u8,
    ) -> (Edit, SiteOut) {
        let l = self.label();
        let skip = self.label();
        let inv = inverse_cc(cc).unwrap_or("mp");
        let stmt = format!("\tj{inv}\t{skip}\n{l}:\n\tjmp.d32\t{operand}\n\tint3\n{skip}:");
        let edit = Edit {
            stmt: Some(stmt),
            ..Edit::default()
        };
        (edit, site(&l, kind, reg, flags | SiteFlags::CONDITIONAL))
    }

    /// Labels for the function's bounds, and its table entry.
    fn func_out(
        &mut self,
        f: &Func<'a>,
        start: String,
        sites: Vec<SiteOut>,
        endbr: bool,
        computed_goto: bool,
        edits: &mut Vec<(usize, Edit)>,
    ) -> FuncOut {
        let end = self.end_label(f.size_line, f.section, edits);
        let cold = f.cold.as_ref().map(|c| {
            let cs = self.label();
            edits.push((c.label_line, before(vec![format!("{cs}:")])));
            let cold_section = self.p.lines[c.label_line].section;
            let ce = self.end_label(c.size_line, cold_section, edits);
            (cs, ce)
        });
        let mut flags = 0;
        if endbr {
            flags |= FuncFlags::ENDBR;
        }
        if computed_goto {
            flags |= FuncFlags::COMPUTED_GOTO;
        }
        match self.compiler {
            Compiler::Clang => flags |= FuncFlags::CLANG,
            Compiler::Rustc => flags |= FuncFlags::RUSTC,
            Compiler::Gcc => {}
        }
        FuncOut {
            name: f.name.to_string(),
            group: self.p.sections[f.section].group.clone(),
            start,
            end,
            cold,
            sites,
            flags,
        }
    }

    /// A label right before the `.size` directive, when that directive is in
    /// the part's own section (so that `.` there is the part's end).
    fn end_label(
        &mut self,
        size_line: Option<usize>,
        section: SectionId,
        edits: &mut Vec<(usize, Edit)>,
    ) -> Option<String> {
        let line = size_line.filter(|&i| self.p.lines[i].section == section)?;
        let l = self.label();
        edits.push((line, before(vec![format!("{l}:")])));
        Some(l)
    }

    fn emit(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len() + input.len() / 8);
        for (i, line) in self.p.lines.iter().enumerate() {
            match self.edits.get(&i) {
                None => out.push_str(line.text),
                Some(e) => emit_edited(&mut out, line, e),
            }
            out.push('\n');
        }
        if !self.funcs_out.is_empty() {
            emit_tables(&mut out, &self.funcs_out);
        }
        out
    }
}

fn site(label: &str, kind: SiteKind, reg: u8, flags: u8) -> SiteOut {
    SiteOut {
        label: label.to_string(),
        kind,
        reg,
        flags,
    }
}

/// A site: its label and the nop.
fn site_lines(label: &str) -> Vec<String> {
    vec![format!("{label}:"), NOP5.to_string()]
}

fn before(lines: Vec<String>) -> Edit {
    Edit {
        before_stmt: lines,
        ..Edit::default()
    }
}

fn after(lines: Vec<String>) -> Edit {
    Edit {
        after: lines,
        ..Edit::default()
    }
}

fn merge(into: &mut Edit, e: Edit) {
    into.before_stmt.extend(e.before_stmt);
    if e.stmt.is_some() {
        into.stmt = e.stmt;
    }
    into.after.extend(e.after);
}

fn emit_edited(out: &mut String, line: &Line, e: &Edit) {
    for l in &line.labels {
        let _ = writeln!(out, "{l}:");
    }
    for b in &e.before_stmt {
        let _ = writeln!(out, "{b}");
    }
    match &e.stmt {
        Some(s) => out.push_str(s),
        None => {
            let stmt = match &line.stmt {
                Stmt::Directive { name, args } => format!("\t{name}\t{args}"),
                Stmt::Insn(insn) => {
                    let mut s = String::from("\t");
                    for p in &insn.prefixes {
                        s.push_str(p);
                        s.push(' ');
                    }
                    s.push_str(insn.mnemonic);
                    if !insn.operands.is_empty() {
                        s.push('\t');
                        s.push_str(insn.operands);
                    }
                    s
                }
                Stmt::Empty | Stmt::Multiple => String::new(),
            };
            out.push_str(stmt.trim_end());
        }
    }
    if !line.comment.is_empty() {
        let _ = write!(out, "\t#{}", line.comment);
    }
    for a in &e.after {
        let _ = write!(out, "\n{a}");
    }
}

/// Tables for every instrumented function, one unit (note + arrays) for the
/// object's plain sections and one per COMDAT group, so that a discarded
/// group takes its table entries with it.
fn emit_tables(out: &mut String, funcs: &[FuncOut]) {
    let mut groups: Vec<Option<&str>> = Vec::new();
    for f in funcs {
        if !groups.contains(&f.group.as_deref()) {
            groups.push(f.group.as_deref());
        }
    }
    out.push_str("# ftail site tables\n");
    for (u, g) in groups.iter().enumerate() {
        let unit: Vec<(usize, &FuncOut)> = funcs
            .iter()
            .enumerate()
            .filter(|(_, f)| f.group.as_deref() == *g)
            .collect();
        emit_unit(out, u, *g, &unit);
    }
}

fn section(name: &str, flags: &str, kind: &str, extra: &str, group: Option<&str>) -> String {
    match group {
        None => format!("\t.section\t{name},\"{flags}\",@{kind}{extra}\n"),
        Some(g) => format!("\t.section\t{name},\"{flags}G\",@{kind},{g},comdat\n"),
    }
}

fn emit_unit(out: &mut String, u: usize, g: Option<&str>, unit: &[(usize, &FuncOut)]) {
    use ftail_abi::{
        FUNCS_SECTION, NAMES_SECTION, NOTE_NAME, NOTE_SECTION, NOTE_TYPE_SITES, SITES_SECTION,
    };
    let names_flags = if g.is_some() { "a" } else { "aMS" };
    let names_extra = if g.is_some() { "" } else { ",1" };
    out.push_str(&section(
        NAMES_SECTION,
        names_flags,
        "progbits",
        names_extra,
        g,
    ));
    for (i, f) in unit {
        let _ = writeln!(
            out,
            "{LABEL_PREFIX}n{i}:\n\t.string\t\"{}\"",
            escape(&f.name)
        );
    }
    out.push_str(&section(SITES_SECTION, "a", "progbits", "", g));
    out.push_str("\t.p2align\t2\n");
    for (i, f) in unit {
        let _ = writeln!(out, "{LABEL_PREFIX}ss{i}:");
        for s in &f.sites {
            let _ = writeln!(
                out,
                "\t.long\t{} - .\n\t.byte\t{}, {}, {}, 0",
                s.label, s.kind as u8, s.reg, s.flags
            );
        }
    }
    out.push_str(&section(FUNCS_SECTION, "a", "progbits", "", g));
    out.push_str("\t.p2align\t2\n");
    let _ = writeln!(out, "{LABEL_PREFIX}fu{u}:");
    for (i, f) in unit {
        let size = f
            .end
            .as_ref()
            .map_or("0".to_string(), |e| format!("{e} - {}", f.start));
        let (cold_start, cold_size) = match &f.cold {
            None => ("0".to_string(), "0".to_string()),
            Some((cs, ce)) => (
                format!("{cs} - ."),
                ce.as_ref().map_or("0".into(), |ce| format!("{ce} - {cs}")),
            ),
        };
        let _ = writeln!(
            out,
            "\t.long\t{start} - .\n\t.long\t{size}\n\t.long\t{LABEL_PREFIX}n{i} - .\n\
             \t.long\t{LABEL_PREFIX}ss{i} - .\n\t.long\t{n}\n\t.long\t{cold_start}\n\
             \t.long\t{cold_size}\n\t.long\t{flags}",
            start = f.start,
            n = f.sites.len(),
            flags = f.flags,
        );
    }
    out.push_str(&section(NOTE_SECTION, "a", "note", "", g));
    let _ = writeln!(
        out,
        "\t.p2align\t2\n\t.long\t{}, 12, {NOTE_TYPE_SITES:#x}\n\t.string\t\"{NOTE_NAME}\"\n\t.p2align\t2\n\
         \t.long\t{SITES_VERSION}\n\t.long\t{LABEL_PREFIX}fu{u} - .\n\t.long\t{}",
        NOTE_NAME.len() + 1,
        unit.len()
    );
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn function_typed_names<'a>(lines: &[Line<'a>]) -> HashSet<&'a str> {
    lines
        .iter()
        .filter_map(|l| match l.stmt {
            Stmt::Directive {
                name: ".type",
                args,
            } => {
                let a = split_args(args);
                let ty = a.get(1)?.trim_start_matches(['@', '%']);
                (ty == "function" || ty == "STT_FUNC").then(|| a[0])
            }
            _ => None,
        })
        .collect()
}

fn is_data_directive(name: &str) -> bool {
    matches!(
        name,
        ".quad" | ".long" | ".int" | ".8byte" | ".4byte" | ".value" | ".short" | ".2byte" | ".word"
    )
}

/// Sections whose references to code labels describe code (debug info,
/// unwind and exception tables) rather than take addresses to jump to.
fn is_metadata_section(name: &str) -> bool {
    [
        ".debug",
        ".zdebug",
        ".eh_frame",
        ".gcc_except_table",
        ".llvm",
        ".stack_sizes",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn is_align_directive(name: &str) -> bool {
    matches!(name, ".p2align" | ".align" | ".balign")
}

/// Inline assembly is left alone, but a function whose inline assembly
/// returns or jumps out cannot have all its exits seen.
/// Whether a call to `target` may be a call site: not a symbol whose call
/// the linker rewrites (`__tls_get_addr` in a TLS sequence) or one that
/// is no function call (`mcount`, `__fentry__` of `-pg` builds), nor an
/// expression.
fn is_call_out_target(target: &str) -> bool {
    const NEVER: &[&str] = &[
        "__tls_get_addr",
        "___tls_get_addr",
        "mcount",
        "_mcount",
        "__fentry__",
        "__cyg_profile_func_enter",
        "__cyg_profile_func_exit",
    ];
    !NEVER.contains(&target)
        && retpoline_register(target).is_none()
        && !is_return_thunk(target)
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.$@".contains(&b))
}

fn check_inline_asm(fl: &Flow, own_labels: &HashSet<&str>) -> Result<(), String> {
    match fl {
        Flow::Ret => Err("inline assembly returns".into()),
        Flow::JmpIndirect { .. } => Err("inline assembly jumps indirectly".into()),
        Flow::JmpDirect { target, .. }
        | Flow::Jcc { target, .. }
        | Flow::OtherBranch { target }
            if !own_labels.contains(target)
                && !target.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Err(format!("inline assembly jumps to {target}"))
        }
        _ => Ok(()),
    }
}

/// The 64-bit name of a general-purpose register given by any of its
/// names (`eax`, `r9d`, `sil`), without `%`.
fn gpr64(name: &str) -> Option<&'static str> {
    const LEGACY: [(&str, [&str; 5]); 8] = [
        ("rax", ["rax", "eax", "ax", "al", "ah"]),
        ("rbx", ["rbx", "ebx", "bx", "bl", "bh"]),
        ("rcx", ["rcx", "ecx", "cx", "cl", "ch"]),
        ("rdx", ["rdx", "edx", "dx", "dl", "dh"]),
        ("rsi", ["rsi", "esi", "si", "sil", "sil"]),
        ("rdi", ["rdi", "edi", "di", "dil", "dil"]),
        ("rbp", ["rbp", "ebp", "bp", "bpl", "bpl"]),
        ("rsp", ["rsp", "esp", "sp", "spl", "spl"]),
    ];
    const NUMBERED: [&str; 8] = ["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    if let Some((r, _)) = LEGACY.iter().find(|(_, names)| names.contains(&name)) {
        return Some(r);
    }
    let base = name.trim_end_matches(['d', 'w', 'b']);
    NUMBERED.iter().copied().find(|&r| r == base)
}

/// Whether the AT&T destination (last operand) of `insn` is `reg`, at any
/// width.
fn writes(insn: &crate::parse::Insn<'_>, reg: &str) -> bool {
    let dest = split_args(insn.operands).last().copied().unwrap_or("");
    dest.strip_prefix('%').and_then(gpr64) == Some(reg)
}

#[cfg(test)]
mod tests {
    /// The line before the first line of `text` that trims to `stmt`.
    fn before<'a>(text: &'a str, stmt: &str) -> &'a str {
        let lines: Vec<&str> = text.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.trim() == stmt)
            .unwrap_or_else(|| panic!("no {stmt:?} in:\n{text}"));
        lines[i - 1].trim()
    }

    #[test]
    fn indirect_calls_are_padded_to_five_bytes_outside_inline_assembly() {
        let asm = "\t.text\n\t.globl\tf\n\t.type\tf, @function\nf:\n\t.cfi_startproc\n\
                   \tsubq\t$8, %rsp\n\tcall\t*%rax\n\tcall\t*8(%rsp)\n\tcall\t*%r9\n\
                   \tcall\t*fp(%rip)\n\tnotrack call\t*%rdx\n#APP\n\tcall *%rbx\n#NO_APP\n\
                   \taddq\t$8, %rsp\n\tret\n\t.cfi_endproc\n\t.size\tf, .-f\n\
                   \t.ident\t\"GCC: (Debian 12.2.0-14) 12.2.0\"\n";
        let r = crate::rewrite(asm).expect("rewritten");
        assert_eq!(r.stats.calls, 4, "{}", r.text);
        let t = &r.text;
        assert_eq!(before(t, "call\t*%rax"), ".byte\t0x2e, 0x2e, 0x2e");
        assert_eq!(before(t, "call\t*8(%rsp)"), ".byte\t0x2e");
        assert_eq!(before(t, "call\t*%r9"), ".byte\t0x2e, 0x2e");
        assert!(before(t, "call\t*fp(%rip)").starts_with(".Lftail_"), "{t}");
        assert_eq!(before(t, "notrack call\t*%rdx"), "call\t*fp(%rip)");
        assert_eq!(before(t, "call *%rbx"), "#APP");
        assert!(!t.contains("0x3e"), "{t}");
    }
}
