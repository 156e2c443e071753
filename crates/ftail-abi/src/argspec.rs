//! Argument and return-value specs, and how their values are recorded.
//!
//! # Specs
//!
//! `ftail record -A/-R/-a` turns what the user asked for (uftrace's
//! syntax, or the debug info) into one [`FnSpec`] per glob of function
//! names, written one rule a line ([`FnSpec::to_line`]) into the trace
//! directory's [`SPEC_FILE`]; the runtime reads the rules at start-up
//! ([`FnSpec::parse_line`]) and gives every matching function a copy of
//! its spec, fixed size, that its entry path reads without allocating.
//!
//! A rule's line is `GLOB<TAB>RET<TAB>ARGS`: `RET` is `-` or one
//! [`ArgSpec`], `ARGS` is empty or comma-separated [`ArgSpec`]s, each
//! `TYPE:LOC[:AUX]` with `TYPE` one of the [`Ty::name`]s, `LOC` `r0`–`r5`
//! (rdi, rsi, rdx, rcx, r8, r9; for a return value `r0` is rax), `x0`–`x7`
//! (xmm registers), `sN` (the N-th 8-byte stack slot above the return
//! address, from 0) or `none` (optimised out), and `AUX` the most bytes
//! of a string, an enum's number in the spec file's `enum` lines, or an
//! aggregate's in its `aggregate` lines.
//!
//! Several rules may match one function: their arguments are merged in
//! the order the rules come, an argument at a location an earlier rule
//! already gave taking that one's place (and format), and the last rule
//! with a return value gives the return value ([`FnSpec::merge`]), as
//! uftrace merges its `-A` options.
//!
//! # Payloads
//!
//! Values travel in compact event files as extended records of
//! subtype [`crate::trace::compact::SUB_ARGS`] (a function's arguments,
//! written right *before* its entry record) and
//! [`crate::trace::compact::SUB_RETVAL`] (its return value, written right
//! *before* the close record of the frame it belongs to; the tail
//! exits that follow that close, with no other event between, end the
//! same tail chain and share it). The head's bits 16–31 hold the number
//! of values; each value is a descriptor word ([`value::desc`]: type,
//! flags, bytes of data) followed by its data padded to whole words:
//! 8 bytes for integers, pointers, floats (the register's low bytes),
//! bools, chars and enums (for an enum, then 4 bytes of its number); an
//! aggregate's 4 bytes of its number (0 for a return value: the reader
//! finds it from the function's rule); a
//! string's bytes (no NUL), or for a string that could not be read the
//! 8-byte pointer with [`value::BAD_POINTER`]. Readers older than the
//! payloads skip them by their length.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// The file of a trace directory that holds the spec rules (and the
/// enums' names, for the reader).
pub const SPEC_FILE: &str = "argspec";

/// Most arguments recorded per function.
pub const MAX_ARGS: usize = 12;
/// Most bytes of a string recorded (the default bound).
pub const MAX_STRING: u16 = 64;

/// A value's type: a class in the low 4 bits, log2 of its size in bytes
/// in the high 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ty(pub u8);

/// Classes of [`Ty`].
pub mod class {
    /// Nothing (no return value).
    pub const NONE: u8 = 0;
    /// Signed integer.
    pub const SIGNED: u8 = 1;
    /// Unsigned integer.
    pub const UNSIGNED: u8 = 2;
    /// Integer shown in hexadecimal.
    pub const HEX: u8 = 3;
    /// Pointer.
    pub const POINTER: u8 = 4;
    /// Floating point (size 4 or 8).
    pub const FLOAT: u8 = 5;
    /// NUL-terminated string, copied up to a bound.
    pub const STRING: u8 = 6;
    /// `bool`.
    pub const BOOL: u8 = 7;
    /// `char`.
    pub const CHAR: u8 = 8;
    /// An enum, shown by name.
    pub const ENUM: u8 = 9;
    /// An integer of unknown type (uftrace's default format): the
    /// register's 8 bytes, shown in decimal when small, in hexadecimal
    /// when large, and as a negative `int` when only the low 32 bits
    /// hold a small negative number (an `int` in a 64-bit register).
    pub const AUTO: u8 = 10;
    /// An aggregate passed or returned by value (a struct, a union, a
    /// class): shown as its type's name and `{...}`, as uftrace does;
    /// nothing of it is read.
    pub const AGGREGATE: u8 = 11;
    /// A C++ `std::string` (libstdc++, either ABI), given by its
    /// address: recorded as the [`STRING`] its first word points at.
    pub const STD_STRING: u8 = 12;
}

impl Ty {
    /// A type of `class` and `size` bytes (1, 2, 4 or 8).
    pub const fn new(class: u8, size: u8) -> Ty {
        let log = match size {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => 3,
        };
        Ty(class | (log << 4))
    }
    /// The class.
    pub const fn class(self) -> u8 {
        self.0 & 15
    }
    /// Size in bytes.
    pub const fn size(self) -> u8 {
        1 << ((self.0 >> 4) & 3)
    }
    /// The type's name in rules (`i32`, `u8`, `x64`, `p`, `f64`, `s`,
    /// `b`, `c`, `e32`, `a`, `g`).
    pub fn name(self) -> String {
        let bits = u32::from(self.size()) * 8;
        match self.class() {
            class::SIGNED => alloc::format!("i{bits}"),
            class::UNSIGNED => alloc::format!("u{bits}"),
            class::HEX => alloc::format!("x{bits}"),
            class::POINTER => "p".into(),
            class::FLOAT => alloc::format!("f{bits}"),
            class::STRING => "s".into(),
            class::BOOL => "b".into(),
            class::CHAR => "c".into(),
            class::ENUM => alloc::format!("e{bits}"),
            class::AUTO => "a".into(),
            class::AGGREGATE => "g".into(),
            class::STD_STRING => "S".into(),
            _ => "-".into(),
        }
    }
    /// The type named `name` (see [`Ty::name`]).
    pub fn from_name(name: &str) -> Option<Ty> {
        let sized = |class: u8, bits: &str| -> Option<Ty> {
            let size = match bits {
                "8" => 1,
                "16" => 2,
                "32" => 4,
                "64" => 8,
                _ => return None,
            };
            Some(Ty::new(class, size))
        };
        Some(match name {
            "p" => Ty::new(class::POINTER, 8),
            "s" => Ty::new(class::STRING, 8),
            "b" => Ty::new(class::BOOL, 1),
            "c" => Ty::new(class::CHAR, 1),
            "f32" => Ty::new(class::FLOAT, 4),
            "f64" => Ty::new(class::FLOAT, 8),
            "a" => Ty::new(class::AUTO, 8),
            "g" => Ty::new(class::AGGREGATE, 8),
            "S" => Ty::new(class::STD_STRING, 8),
            _ => {
                let (c, bits) = name.split_at(1.min(name.len()));
                let class = match c {
                    "i" => class::SIGNED,
                    "u" => class::UNSIGNED,
                    "x" => class::HEX,
                    "e" => class::ENUM,
                    _ => return None,
                };
                return sized(class, bits);
            }
        })
    }
}

/// [`ArgSpec::loc`]: integer argument registers from here (`r0`–`r5`).
pub const LOC_INT: u8 = 0;
/// [`ArgSpec::loc`]: SSE registers from here (`x0`–`x7`).
pub const LOC_XMM: u8 = 0x10;
/// [`ArgSpec::loc`]: stack slots from here (`s0`, …).
pub const LOC_STACK: u8 = 0x20;
/// [`ArgSpec::loc`]: optimised out (nothing to read).
pub const LOC_NONE: u8 = 0xff;

/// Where one value is and how to record it: 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ArgSpec {
    /// Its type.
    pub ty: Ty,
    /// Where it is at the function's entry (or exit, for a return
    /// value): `LOC_INT + n`, `LOC_XMM + n`, `LOC_STACK + n`, `LOC_NONE`.
    pub loc: u8,
    /// Most bytes of a string; an enum's number.
    pub aux: u16,
}

/// What to record for one function: fixed size, so the runtime keeps a
/// copy per function next to its code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FnSpec {
    /// Arguments in use in [`FnSpec::args`].
    pub nargs: u8,
    /// Nonzero when the return value is recorded ([`FnSpec::ret`]).
    pub has_ret: u8,
    /// Unused.
    pub pad: u16,
    /// The return value.
    pub ret: ArgSpec,
    /// The arguments.
    pub args: [ArgSpec; MAX_ARGS],
}
const _: () = assert!(core::mem::size_of::<FnSpec>() == 8 + 4 * MAX_ARGS);

impl ArgSpec {
    fn write(&self, out: &mut String) {
        out.push_str(&self.ty.name());
        let _ = match self.loc {
            LOC_NONE => write!(out, ":none"),
            l if l >= LOC_STACK => write!(out, ":s{}", l - LOC_STACK),
            l if l >= LOC_XMM => write!(out, ":x{}", l - LOC_XMM),
            l => write!(out, ":r{l}"),
        };
        if self.aux != 0 {
            let _ = write!(out, ":{}", self.aux);
        }
    }

    /// Parses `TYPE:LOC[:AUX]`.
    pub fn parse(s: &str) -> Option<ArgSpec> {
        let mut it = s.split(':');
        let ty = Ty::from_name(it.next()?)?;
        let loc = it.next()?;
        let num = |p: &str, max: u8| p.parse::<u8>().ok().filter(|&n| n <= max);
        let loc = if loc == "none" {
            LOC_NONE
        } else if let Some(n) = loc.strip_prefix('r') {
            LOC_INT + num(n, 5)?
        } else if let Some(n) = loc.strip_prefix('x') {
            LOC_XMM + num(n, 7)?
        } else if let Some(n) = loc.strip_prefix('s') {
            LOC_STACK + num(n, LOC_NONE - LOC_STACK - 1)?
        } else {
            return None;
        };
        let aux = match it.next() {
            Some(a) => a.parse().ok()?,
            None => 0,
        };
        if it.next().is_some() {
            return None;
        }
        Some(ArgSpec { ty, loc, aux })
    }
}

impl FnSpec {
    /// The arguments in use.
    pub fn args(&self) -> &[ArgSpec] {
        &self.args[..usize::from(self.nargs).min(MAX_ARGS)]
    }

    /// Adds an argument; false when there are [`MAX_ARGS`] already.
    pub fn push(&mut self, a: ArgSpec) -> bool {
        if usize::from(self.nargs) >= MAX_ARGS {
            return false;
        }
        self.args[usize::from(self.nargs)] = a;
        self.nargs += 1;
        true
    }

    /// Merges a later matching rule's spec into this one: each of its
    /// arguments replaces the argument at the same location (an
    /// optimised-out one has none) or comes after the others, and its
    /// return value, if it has one, replaces this one's.
    pub fn merge(&mut self, later: &FnSpec) {
        for a in later.args() {
            let same = self.args[..usize::from(self.nargs).min(MAX_ARGS)]
                .iter_mut()
                .find(|b| b.loc == a.loc && a.loc != LOC_NONE);
            match same {
                Some(b) => *b = *a,
                None => {
                    self.push(*a);
                }
            }
        }
        if later.has_ret != 0 {
            self.has_ret = 1;
            self.ret = later.ret;
        }
    }

    /// The rule for `glob` (no tab or newline in it), as a line without
    /// its newline.
    pub fn to_line(&self, glob: &str) -> String {
        let mut out = String::from(glob);
        out.push('\t');
        if self.has_ret != 0 {
            self.ret.write(&mut out);
        } else {
            out.push('-');
        }
        out.push('\t');
        for (i, a) in self.args().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            a.write(&mut out);
        }
        out
    }

    /// Parses a rule's line: its glob and spec; `None` when it is not a
    /// rule (an `enum` line, or damage).
    pub fn parse_line(line: &str) -> Option<(&str, FnSpec)> {
        let mut it = line.split('\t');
        let glob = it.next().filter(|g| !g.is_empty())?;
        let ret = it.next()?;
        let args = it.next()?;
        let mut spec = FnSpec::default();
        if ret != "-" {
            spec.ret = ArgSpec::parse(ret)?;
            spec.has_ret = 1;
        }
        for a in args.split(',').filter(|a| !a.is_empty()) {
            if !spec.push(ArgSpec::parse(a)?) {
                return None;
            }
        }
        Some((glob, spec))
    }
}

/// The encoding of one recorded value (see the module's docs).
pub mod value {
    /// Flag: the pointer could not be read (unmapped, or no access); the
    /// data is the pointer.
    pub const BAD_POINTER: u8 = 1;
    /// Flag: the string was longer than its bound; the data is its start.
    pub const TRUNCATED: u8 = 2;
    /// Flag: the value was optimised out; no data.
    pub const OPTIMISED_OUT: u8 = 4;
    /// Flag: a null pointer where a string was expected; no data.
    pub const NULL: u8 = 8;

    /// A value's descriptor word: type, flags, bytes of data that follow.
    pub const fn desc(ty: u8, flags: u8, len: u16) -> u32 {
        ty as u32 | ((flags as u32) << 8) | ((len as u32) << 16)
    }

    /// Words a value of `len` bytes of data takes, descriptor included.
    pub const fn words(len: usize) -> usize {
        1 + len.div_ceil(4)
    }

    /// Decodes a descriptor: type, flags, bytes of data.
    pub const fn parse_desc(d: u32) -> (u8, u8, u16) {
        (d as u8, (d >> 8) as u8, (d >> 16) as u16)
    }
}

/// The spec file's line that names aggregate `number` (for the reader):
/// `aggregate<TAB>N<TAB>NAME`.
pub fn aggregate_line(number: u16, name: &str) -> String {
    alloc::format!("aggregate\t{number}\t{name}")
}

/// The rules of a spec file, with the enums' names: `enum<TAB>N<TAB>NAME`
/// lines, then `value<TAB>N<TAB>INTEGER<TAB>NAME` lines for each of its
/// enumerators.
pub fn enum_lines(number: u16, name: &str, values: &[(i64, String)]) -> Vec<String> {
    let mut out = Vec::with_capacity(values.len() + 1);
    out.push(alloc::format!("enum\t{number}\t{name}"));
    for (v, n) in values {
        out.push(alloc::format!("value\t{number}\t{v}\t{n}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_back_as_written() {
        let mut spec = FnSpec {
            has_ret: 1,
            ret: ArgSpec {
                ty: Ty::new(class::FLOAT, 8),
                loc: LOC_XMM,
                aux: 0,
            },
            ..FnSpec::default()
        };
        let args = [
            ArgSpec {
                ty: Ty::new(class::SIGNED, 4),
                loc: 0,
                aux: 0,
            },
            ArgSpec {
                ty: Ty::new(class::STRING, 8),
                loc: 1,
                aux: 32,
            },
            ArgSpec {
                ty: Ty::new(class::ENUM, 4),
                loc: 2,
                aux: 3,
            },
            ArgSpec {
                ty: Ty::new(class::UNSIGNED, 2),
                loc: LOC_STACK + 1,
                aux: 0,
            },
            ArgSpec {
                ty: Ty::new(class::HEX, 8),
                loc: LOC_NONE,
                aux: 0,
            },
            ArgSpec {
                ty: Ty::new(class::FLOAT, 4),
                loc: LOC_XMM + 7,
                aux: 0,
            },
        ];
        for a in args {
            assert!(spec.push(a));
        }
        let line = spec.to_line("foo*");
        assert_eq!(
            line,
            "foo*\tf64:x0\ti32:r0,s:r1:32,e32:r2:3,u16:s1,x64:none,f32:x7"
        );
        assert_eq!(FnSpec::parse_line(&line), Some(("foo*", spec)));
        let none = FnSpec::default().to_line("bar");
        assert_eq!(FnSpec::parse_line(&none), Some(("bar", FnSpec::default())));
    }

    #[test]
    fn later_rules_merge_into_earlier_ones() {
        let rule = |line: &str| FnSpec::parse_line(line).unwrap().1;
        let mut spec = rule("mul\t-\tx64:r1");
        spec.merge(&rule("mul\ta:r0\ta:r0"));
        assert_eq!(spec.to_line("mul"), "mul\ta:r0\tx64:r1,a:r0");
        // The same location again: its format replaced in place.
        spec.merge(&rule("m*\ti32:r0\ti32:r1,i32:none,i32:none"));
        assert_eq!(
            spec.to_line("mul"),
            "mul\ti32:r0\ti32:r1,a:r0,i32:none,i32:none"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "f",
            "f\t-",
            "f\tq32:r0\t",
            "f\t-\ti32:r6",
            "f\t-\ti32:x8",
            "f\t-\ti33:r0",
            "f\t-\ti32:r0:1:2",
            "enum\t1\tcolour",
            "aggregate\t1\tpoint",
        ] {
            assert_eq!(FnSpec::parse_line(bad), None, "{bad:?}");
        }
    }
}
