//! Site tables read from an ELF executable or shared library, and their
//! verification against the machine code.
//!
//! [`read`] decodes the tables `ftail-abi` describes; [`verify`] decodes the
//! code with iced-x86 and checks two things: every recorded site holds the
//! bytes its kind promises, and inside every instrumented function no `ret`
//! lacks an exit site and no jump leaving the function lacks a tail site.

use std::collections::HashMap;
use std::fmt;

use ftail_abi::{FuncRecord, SiteFlags, SiteKind, SiteRecord, SitesNote, NOP5, NO_REG};
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind};
use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;

/// A site as read from the tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Its address (link-time virtual address).
    pub addr: u64,
    /// What it is.
    #[serde(serialize_with = "kind_name")]
    pub kind: SiteKind,
    /// Register for indirect/retpoline tails, if any.
    pub reg: Option<&'static str>,
    /// Was a conditional tail call.
    pub conditional: bool,
    /// Lies in the cold partition.
    pub cold: bool,
}

fn kind_name<S: serde::Serializer>(k: &SiteKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// An instrumented function as read from the tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Function {
    /// Its symbol name, as compiled (mangled for C++).
    pub name: String,
    /// Address of its first byte.
    pub start: u64,
    /// Size of its main part (0: unknown).
    pub size: u32,
    /// Address and size of its cold partition.
    pub cold: Option<(u64, u32)>,
    /// `FuncFlags` bits.
    pub flags: u32,
    /// Its sites, in table order.
    pub sites: Vec<Site>,
}

impl Function {
    /// Whether `addr` lies inside the function (main or cold part).
    pub fn contains(&self, addr: u64) -> bool {
        let inside = |start: u64, size: u32| addr >= start && addr < start + u64::from(size);
        inside(self.start, self.size) || self.cold.is_some_and(|(s, n)| inside(s, n))
    }

    /// Whether `addr` is the end of one of the function's parts (main or
    /// cold): where a label after its last instruction points. gcc jumps
    /// there (from the cold part, to the label right after a call of a
    /// noreturn function): a jump the rewriter knows stays inside, since
    /// its target is one of the function's own labels.
    pub fn ends_at(&self, addr: u64) -> bool {
        let end = |start: u64, size: u32| size != 0 && addr == start + u64::from(size);
        end(self.start, self.size) || self.cold.is_some_and(|(s, n)| end(s, n))
    }
}

/// The GNU build id of an ELF file, in hex, if it has one.
pub fn build_id(data: &[u8]) -> Option<String> {
    let file = object::File::parse(data).ok()?;
    let id = file.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Errors reading site tables.
#[derive(Debug)]
pub enum Error {
    /// The file is not an ELF file `object` can read.
    NotElf(String),
    /// The file is an ELF relocatable object: its tables are not linked yet.
    Relocatable,
    /// The file has no `.note.ftail` section.
    NoTables,
    /// The tables are damaged at the given address.
    Corrupt {
        /// Where.
        addr: u64,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotElf(e) => write!(f, "not an ELF file: {e}"),
            Error::Relocatable => write!(f, "a relocatable object: link it first"),
            Error::NoTables => write!(
                f,
                "no ftail site tables (.note.ftail): was it built with `ftail cc`?"
            ),
            Error::Corrupt { addr, what } => write!(f, "site table at {addr:#x}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Reads every site table of an ELF image.
///
/// # Errors
///
/// When the file is not a linked ELF file, has no tables, or a table points
/// outside the file.
pub fn read(data: &[u8]) -> Result<Vec<Function>, Error> {
    let file = object::File::parse(data).map_err(|e| Error::NotElf(e.to_string()))?;
    if file.kind() == object::ObjectKind::Relocatable {
        return Err(Error::Relocatable);
    }
    let image = Image { file: &file };
    let notes: Vec<_> = file
        .sections()
        .filter(|s| s.name() == Ok(ftail_abi::NOTE_SECTION))
        .collect();
    if notes.is_empty() {
        return Err(Error::NoTables);
    }
    let mut funcs = Vec::new();
    for sec in notes {
        let bytes = sec
            .data()
            .map_err(|e| corrupt(sec.address(), &e.to_string()))?;
        for (desc_addr, desc) in parse_notes(sec.address(), bytes)? {
            read_unit(&image, desc_addr, desc, &mut funcs)?;
        }
    }
    Ok(funcs)
}

fn corrupt(addr: u64, what: &str) -> Error {
    Error::Corrupt {
        addr,
        what: what.to_string(),
    }
}

/// The descriptors (address, bytes) of ftail's site notes in a note section.
fn parse_notes(base: u64, bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, Error> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let align4 = |n: usize| (n + 3) & !3;
    while off + 12 <= bytes.len() {
        let namesz = u32_at(bytes, off) as usize;
        let descsz = u32_at(bytes, off + 4) as usize;
        let ty = u32_at(bytes, off + 8);
        let name_at = off + 12;
        let desc_at = name_at + align4(namesz);
        let end = desc_at + align4(descsz);
        if end > bytes.len() || desc_at + descsz > bytes.len() {
            return Err(corrupt(base + off as u64, "note runs past its section"));
        }
        let name = &bytes[name_at..name_at + namesz];
        if ty == ftail_abi::NOTE_TYPE_SITES
            && name.strip_suffix(&[0]) == Some(ftail_abi::NOTE_NAME.as_bytes())
        {
            out.push((base + desc_at as u64, &bytes[desc_at..desc_at + descsz]));
        }
        off = end;
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The loaded image, addressed by virtual address.
struct Image<'d, 'f> {
    file: &'f object::File<'d>,
}

impl Image<'_, '_> {
    /// Allocated sections only: debug sections have address 0 and would
    /// otherwise "contain" low addresses.
    fn alloc_sections(&self) -> impl Iterator<Item = object::Section<'_, '_>> {
        self.file.sections().filter(|s| match s.flags() {
            object::SectionFlags::Elf { sh_flags } => {
                sh_flags & u64::from(object::elf::SHF_ALLOC) != 0
            }
            _ => true,
        })
    }

    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.alloc_sections()
            .find_map(|s| s.data_range(addr, len).ok().flatten())
    }

    /// Up to `max` bytes from `addr` to the end of its section.
    fn bytes_upto(&self, addr: u64, max: u64) -> Option<&[u8]> {
        let sec = self
            .alloc_sections()
            .find(|s| addr >= s.address() && addr < s.address() + s.size())?;
        let len = max.min(sec.address() + sec.size() - addr);
        sec.data_range(addr, len).ok().flatten()
    }

    fn bytes_or_err(&self, addr: u64, len: u64, what: &str) -> Result<&[u8], Error> {
        self.bytes(addr, len)
            .ok_or_else(|| corrupt(addr, &format!("{what} lies outside the file")))
    }

    fn cstr(&self, addr: u64) -> Option<String> {
        let sec = self
            .alloc_sections()
            .find(|s| addr >= s.address() && addr < s.address() + s.size())?;
        let data = sec.data().ok()?;
        let rest = data.get((addr - sec.address()) as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

fn rel(field_addr: u64, offset: i32) -> u64 {
    field_addr.wrapping_add(offset as i64 as u64)
}

fn read_unit(
    img: &Image,
    desc_addr: u64,
    desc: &[u8],
    out: &mut Vec<Function>,
) -> Result<(), Error> {
    if desc.len() < std::mem::size_of::<SitesNote>() {
        return Err(corrupt(desc_addr, "note descriptor too short"));
    }
    let version = u32_at(desc, 0);
    if !ftail_abi::reads_sites_version(version) {
        let reads = format!(
            "this one reads versions {} to {}",
            ftail_abi::OLDEST_SITES_VERSION,
            ftail_abi::SITES_VERSION
        );
        return Err(corrupt(
            desc_addr,
            &if version < ftail_abi::OLDEST_SITES_VERSION {
                format!(
                    "site tables of version {version}, from an older ftail ({reads}): rebuild \
                     the program with this ftail"
                )
            } else {
                format!("site tables of version {version}, from a newer ftail ({reads})")
            },
        ));
    }
    let funcs = rel(desc_addr + 4, u32_at(desc, 4) as i32);
    let nfuncs = u64::from(u32_at(desc, 8));
    let rec_size = std::mem::size_of::<FuncRecord>() as u64;
    let table = img.bytes_or_err(funcs, nfuncs * rec_size, "function table")?;
    for i in 0..nfuncs {
        let at = (i * rec_size) as usize;
        let base = funcs + i * rec_size;
        let field = |k: usize| u32_at(table, at + 4 * k);
        let start = rel(base, field(0) as i32);
        let name_addr = rel(base + 8, field(2) as i32);
        let sites_addr = rel(base + 12, field(3) as i32);
        let nsites = u64::from(field(4));
        let cold_off = field(5) as i32;
        let cold = (cold_off != 0).then(|| (rel(base + 20, cold_off), field(6)));
        let name = img
            .cstr(name_addr)
            .ok_or_else(|| corrupt(name_addr, "function name lies outside the file"))?;
        let site_size = std::mem::size_of::<SiteRecord>() as u64;
        let raw = img.bytes_or_err(sites_addr, nsites * site_size, "site array")?;
        let mut sites = Vec::with_capacity(nsites as usize);
        for k in 0..nsites {
            let o = (k * site_size) as usize;
            let addr = rel(sites_addr + k * site_size, u32_at(raw, o) as i32);
            let kind = SiteKind::from_u8(raw[o + 4]).ok_or_else(|| {
                corrupt(
                    sites_addr + k * site_size,
                    &format!("unknown site kind {}", raw[o + 4]),
                )
            })?;
            let reg = raw[o + 5];
            sites.push(Site {
                addr,
                kind,
                reg: (reg != NO_REG)
                    .then(|| ftail_abi::GPR_NAMES.get(reg as usize).copied())
                    .flatten(),
                conditional: raw[o + 6] & SiteFlags::CONDITIONAL != 0,
                cold: raw[o + 6] & SiteFlags::COLD != 0,
            });
        }
        out.push(Function {
            name,
            start,
            size: field(1),
            cold,
            flags: field(7),
            sites,
        });
    }
    Ok(())
}

/// A disagreement between the tables and the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The function concerned.
    pub function: String,
    /// The address concerned.
    pub addr: u64,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::untrusted::printable::printable;
        let (function, what) = (printable(&self.function), printable(&self.what));
        write!(f, "{function} at {:#x}: {what}", self.addr)
    }
}

/// Checks every site's bytes and every function's completeness.
///
/// # Errors
///
/// Only when `data` is not an ELF file.
pub fn verify(data: &[u8], funcs: &[Function]) -> Result<Vec<Problem>, Error> {
    let file = object::File::parse(data).map_err(|e| Error::NotElf(e.to_string()))?;
    let img = Image { file: &file };
    let symbols: HashMap<u64, String> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
        .collect();
    let mut problems = Vec::new();
    for f in funcs {
        let mut report = |addr: u64, what: String| {
            problems.push(Problem {
                function: f.name.clone(),
                addr,
                what,
            })
        };
        for s in &f.sites {
            if let Err(what) = check_site(&img, f, s, &symbols) {
                report(s.addr, what);
            }
        }
        for (addr, what) in check_complete(&img, f) {
            report(addr, what);
        }
    }
    Ok(problems)
}

/// Decodes the instruction at `addr`.
fn decode_at(img: &Image, addr: u64) -> Option<Instruction> {
    let bytes = img.bytes_upto(addr, 15)?;
    let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

fn check_site(
    img: &Image,
    f: &Function,
    s: &Site,
    symbols: &HashMap<u64, String>,
) -> Result<(), String> {
    if !f.contains(s.addr) && f.size != 0 {
        return Err(format!("{} site lies outside its function", s.kind.name()));
    }
    if s.kind == SiteKind::LocalIndirect {
        let i = decode_at(img, s.addr).ok_or("undecodable local indirect jump")?;
        // A retpoline build reaches a switch table or computed goto through
        // `jmp __x86_indirect_thunk_REG`.
        return if is_indirect_jmp(&i) || i.code() == Code::Jmp_rel32_64 {
            Ok(())
        } else {
            Err(format!("recorded local indirect jump is `{i}`"))
        };
    }
    let bytes = img.bytes(s.addr, 5).ok_or("site lies outside the file")?;
    if s.kind.is_nop() && bytes != NOP5 {
        return Err(format!(
            "{} site holds {bytes:02x?}, not the 5-byte nop",
            s.kind.name()
        ));
    }
    let next = s.addr + 5;
    let after =
        || decode_at(img, next).ok_or_else(|| "undecodable instruction after the site".to_string());
    let target_name = |i: &Instruction| symbols.get(&i.near_branch_target()).map(String::as_str);
    match s.kind {
        SiteKind::Entry => {
            let endbr = f.flags & ftail_abi::FuncFlags::ENDBR != 0;
            let expected = if endbr { f.start + 4 } else { f.start };
            if s.addr != expected {
                return Err(format!(
                    "entry site is not at the function start {expected:#x}"
                ));
            }
            if endbr && img.bytes(f.start, 4) != Some(&[0xf3, 0x0f, 0x1e, 0xfa]) {
                return Err("entry site does not follow endbr64".into());
            }
            Ok(())
        }
        SiteKind::Exit => {
            // The `ret` itself, then int3 up to the site's 5 bytes.
            let i = decode_at(img, s.addr).ok_or("undecodable exit site")?;
            if !matches!(i.code(), Code::Retnq | Code::Retnq_imm16) {
                return Err(format!("exit site holds `{i}`, not ret"));
            }
            let len = i.len();
            if len > 5 || bytes[len..].iter().any(|&b| b != 0xcc) {
                return Err(format!(
                    "exit site holds {bytes:02x?}: `{i}` not padded with int3 to 5 bytes"
                ));
            }
            Ok(())
        }
        SiteKind::ExitThunk | SiteKind::TailDirect | SiteKind::TailRetpoline => {
            let i = decode_at(img, s.addr).ok_or("undecodable jump site")?;
            if i.code() != Code::Jmp_rel32_64 {
                return Err(format!("{} site holds `{i}`, not jmp rel32", s.kind.name()));
            }
            let name = target_name(&i);
            match (s.kind, name) {
                (SiteKind::ExitThunk, Some(n)) if n != "__x86_return_thunk" => {
                    Err(format!("exit-thunk site jumps to {n}"))
                }
                (SiteKind::TailRetpoline, Some(n))
                    if !n.contains("thunk") && !n.contains("retpoline") =>
                {
                    Err(format!("retpoline site jumps to {n}"))
                }
                (SiteKind::TailDirect, _)
                    if f.contains(i.near_branch_target()) && i.near_branch_target() != f.start =>
                {
                    Err("tail site jumps inside its own function".into())
                }
                _ => Ok(()),
            }
        }
        SiteKind::TailIndirect => {
            let i = after()?;
            // The linker relaxes `jmp *f@GOTPCREL(%rip)` to a local `f`
            // into `jmp f; nop`: still the tail call the site guards.
            if i.code() == Code::Jmp_rel32_64 {
                return Ok(());
            }
            if !is_indirect_jmp(&i) {
                return Err(format!("indirect tail site is followed by `{i}`"));
            }
            match s.reg {
                Some(r)
                    if i.op0_kind() == OpKind::Register
                        && format!("{:?}", i.op0_register()).to_lowercase() != r =>
                {
                    Err(format!(
                        "indirect tail site records %{r}, code jumps through `{i}`"
                    ))
                }
                _ => Ok(()),
            }
        }
        SiteKind::Call => {
            let i = decode_at(img, s.addr).ok_or("undecodable call site")?;
            if i.code() != Code::Call_rel32_64 {
                return Err(format!("call site holds `{i}`, not call rel32"));
            }
            Ok(())
        }
        SiteKind::CallGot => {
            // `call *disp(%rip)`, or what the linker relaxed it to for a
            // symbol bound in the same module: `addr32 call rel32`.
            let i = decode_at(img, s.addr).ok_or("undecodable call site")?;
            let through_got = i.code() == Code::Call_rm64 && i.is_ip_rel_memory_operand();
            let relaxed = i.code() == Code::Call_rel32_64 && i.len() == 6;
            if i.len() != 6 || !(through_got || relaxed) {
                return Err(format!(
                    "call-got site holds `{i}`, not call *disp(%rip) or addr32 call"
                ));
            }
            Ok(())
        }
        SiteKind::CallIndirect => {
            // `call *operand`, one instruction: padded with `cs` prefixes
            // to 5 bytes when shorter.
            let i = decode_at(img, s.addr).ok_or("undecodable call site")?;
            if i.code() != Code::Call_rm64 || i.len() < 5 {
                return Err(format!(
                    "call-indirect site holds `{i}`, not one call *operand of 5 bytes or more"
                ));
            }
            Ok(())
        }
        SiteKind::LocalIndirect => Ok(()),
    }
}

fn is_indirect_jmp(i: &Instruction) -> bool {
    i.flow_control() == FlowControl::IndirectBranch && i.code() == Code::Jmp_rm64
}

/// Every `ret` and every jump out of `f` must have its site.
fn check_complete(img: &Image, f: &Function) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if f.size == 0 {
        return out;
    }
    let by_addr: HashMap<u64, SiteKind> = f.sites.iter().map(|s| (s.addr, s.kind)).collect();
    let site_before = |ip: u64, want: &dyn Fn(SiteKind) -> bool| {
        by_addr.get(&(ip.wrapping_sub(5))).is_some_and(|&k| want(k))
    };
    let site_at =
        |ip: u64, want: &dyn Fn(SiteKind) -> bool| by_addr.get(&ip).is_some_and(|&k| want(k));
    // A jump to the function's start (up to its entry site) enters it
    // again: a self tail call, which needs its tail site like any other.
    let entry = f
        .sites
        .iter()
        .find(|s| s.kind == SiteKind::Entry)
        .map_or(f.start, |s| s.addr);
    let leaves = |target: u64| {
        !(f.contains(target) || f.ends_at(target)) || (f.start..=entry).contains(&target)
    };
    let parts = std::iter::once((f.start, f.size)).chain(f.cold);
    for (start, size) in parts {
        let Some(code) = img.bytes(start, u64::from(size)) else {
            out.push((start, "function code lies outside the file".into()));
            continue;
        };
        let mut d = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        for i in &mut d {
            let ip = i.ip();
            let problem = match i.flow_control() {
                FlowControl::Return if !site_at(ip, &|k| k == SiteKind::Exit) => {
                    Some("ret that is not an exit site".to_string())
                }
                FlowControl::UnconditionalBranch
                    if leaves(i.near_branch_target())
                        && !site_at(ip, &|k| k.is_jump())
                        && !site_before(ip, &|k| k == SiteKind::TailIndirect)
                        && by_addr.get(&ip) != Some(&SiteKind::LocalIndirect) =>
                {
                    Some(format!(
                        "jump out of the function to {:#x} without a tail site",
                        i.near_branch_target()
                    ))
                }
                FlowControl::ConditionalBranch if leaves(i.near_branch_target()) => Some(format!(
                    "conditional jump out of the function to {:#x}",
                    i.near_branch_target()
                )),
                FlowControl::IndirectBranch
                    if !site_before(ip, &|k| k == SiteKind::TailIndirect)
                        && by_addr.get(&ip) != Some(&SiteKind::LocalIndirect) =>
                {
                    Some(format!(
                        "indirect jump `{i}` is neither a tail site nor a known local jump"
                    ))
                }
                _ => None,
            };
            if let Some(p) = problem {
                out.push((ip, p));
            }
        }
    }
    out
}

/// Counts for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Instrumented functions.
    pub functions: usize,
    /// Entry sites.
    pub entries: usize,
    /// Exit sites (including return-thunk exits).
    pub exits: usize,
    /// Unconditional direct tail sites.
    pub tails_direct: usize,
    /// Conditional direct tail sites.
    pub tails_conditional: usize,
    /// Indirect tail sites.
    pub tails_indirect: usize,
    /// Retpoline tail sites.
    pub tails_retpoline: usize,
    /// Indirect jumps known to stay in their function.
    pub local_indirect: usize,
    /// Call sites (calls that may leave the instrumented code).
    pub calls: usize,
}

/// Counts the sites of `funcs`.
pub fn summarize(funcs: &[Function]) -> Summary {
    let mut s = Summary {
        functions: funcs.len(),
        ..Summary::default()
    };
    for site in funcs.iter().flat_map(|f| &f.sites) {
        match site.kind {
            SiteKind::Entry => s.entries += 1,
            SiteKind::Exit | SiteKind::ExitThunk => s.exits += 1,
            SiteKind::TailDirect if site.conditional => s.tails_conditional += 1,
            SiteKind::TailDirect => s.tails_direct += 1,
            SiteKind::TailIndirect => s.tails_indirect += 1,
            SiteKind::TailRetpoline => s.tails_retpoline += 1,
            SiteKind::LocalIndirect => s.local_indirect += 1,
            SiteKind::Call | SiteKind::CallGot | SiteKind::CallIndirect => s.calls += 1,
        }
    }
    s
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} functions, {} entries, {} exits, {} tails (direct {}, conditional {}, \
             indirect {}, retpoline {}), {} local indirect jumps, {} call sites",
            self.functions,
            self.entries,
            self.exits,
            self.tails_direct + self.tails_conditional + self.tails_indirect + self.tails_retpoline,
            self.tails_direct,
            self.tails_conditional,
            self.tails_indirect,
            self.tails_retpoline,
            self.local_indirect,
            self.calls
        )
    }
}

/// The JSON document `ftail sites --json` prints.
pub fn to_json(file: &str, funcs: &[Function], problems: &[Problem]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        file: &'a str,
        summary: Summary,
        problems: &'a [Problem],
        functions: &'a [Function],
    }
    let doc = Doc {
        file,
        summary: summarize(funcs),
        problems,
        functions: funcs,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
