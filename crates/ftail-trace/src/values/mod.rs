//! Recorded argument and return values (`ftail record -A/-R/-a`): decoded
//! from their payload records (`ftail_abi::argspec`) and shown as uftrace
//! shows them: `foo(1, "abc", 0x7ffd1234) {` and `} = 42; /* foo */`;
//! and the specs `ftail record -a` computes from DWARF (`autoargs`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use ftail_abi::argspec::{class, value, Ty, SPEC_FILE};

pub mod autoargs;

/// One recorded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Its type.
    pub ty: Ty,
    /// `ftail_abi::argspec::value` flags.
    pub flags: u8,
    /// The integer, pointer or float bits (a string's pointer when it
    /// could not be read).
    pub raw: u64,
    /// A string's bytes.
    pub bytes: Vec<u8>,
    /// An enum's number in the spec file.
    pub enum_id: u32,
}

/// The values of one payload, shared by the steps that show them.
pub type Values = Arc<[Value]>;

/// Decodes a payload record (`b` is the whole record, head included);
/// `None` when it is damaged.
pub fn decode(b: &[u8]) -> Option<Values> {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let head = word(0)?;
    let count = (head >> 16) as usize;
    let words = b.len() / 4;
    let mut at = 1;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (ty, flags, len) = value::parse_desc(word(at)?);
        let len = usize::from(len);
        let data = b.get(at * 4 + 4..at * 4 + 4 + len)?;
        at += value::words(len);
        if at > words {
            return None;
        }
        let raw = |n: usize| {
            let mut r = [0u8; 8];
            let n = n.min(data.len());
            r[..n].copy_from_slice(&data[..n]);
            u64::from_le_bytes(r)
        };
        let ty = Ty(ty);
        let v = if ty.class() == class::STRING && flags & (value::BAD_POINTER | value::NULL) == 0 {
            Value {
                ty,
                flags,
                raw: 0,
                bytes: data.to_vec(),
                enum_id: 0,
            }
        } else {
            Value {
                ty,
                flags,
                raw: raw(8),
                bytes: Vec::new(),
                enum_id: if data.len() >= 12 {
                    u32::from_le_bytes(data[8..12].try_into().ok()?)
                } else {
                    0
                },
            }
        };
        out.push(v);
    }
    Some(out.into())
}

/// What a trace's spec file says for showing values: the enums' and
/// aggregates' names (for `-a`), and which functions' rules ask for a
/// return value.
#[derive(Debug, Clone, Default)]
pub struct Enums {
    names: HashMap<(u32, i64), String>,
    aggregates: HashMap<u32, String>,
    /// The enum or aggregate a function returns, by the function's name
    /// (a return value's record does not carry it).
    returns: HashMap<String, u32>,
    /// Functions whose return value a rule asks for: by name, and the
    /// globs of the rules that name no single function.
    returning: std::collections::HashSet<String>,
    returning_globs: Vec<String>,
    /// Whether there was a spec file.
    loaded: bool,
}

impl Enums {
    /// Reads the spec file of the trace directory `dir`, if there is one.
    pub fn load(dir: &Path) -> Enums {
        let mut e = Enums::default();
        if let Ok(text) = std::fs::read_to_string(dir.join(SPEC_FILE)) {
            e.loaded = true;
            for line in text.lines() {
                e.read_line(line);
            }
        }
        e
    }

    fn read_line(&mut self, line: &str) {
        let f: Vec<&str> = line.split('\t').collect();
        if let ["value", n, v, name] = f[..] {
            if let (Ok(n), Ok(v)) = (n.parse(), v.parse()) {
                self.names.insert(
                    (n, v),
                    crate::untrusted::printable::printable(name).into_owned(),
                );
            }
        } else if let ["aggregate", n, name] = f[..] {
            if let Ok(n) = n.parse() {
                self.aggregates
                    .insert(n, crate::untrusted::printable::printable(name).into_owned());
            }
        } else if let Some((glob, spec)) = ftail_abi::argspec::FnSpec::parse_line(line) {
            if spec.has_ret == 0 {
                return;
            }
            // As the runtime merges rules: the last one with a return
            // value gives it.
            if matches!(spec.ret.ty.class(), class::ENUM | class::AGGREGATE) {
                self.returns
                    .insert(glob.to_string(), u32::from(spec.ret.aux));
            } else {
                self.returns.remove(glob);
            }
            if glob.contains(['*', '?']) {
                self.returning_globs.push(glob.to_string());
            } else {
                self.returning.insert(glob.to_string());
            }
        }
    }

    /// Whether the trace has a spec file (without one, the runtime
    /// records no value).
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// The enum or aggregate that the function `name` returns, when the
    /// spec file names one for it.
    pub fn returned_by(&self, name: &str) -> Option<u32> {
        self.returns.get(name).copied()
    }

    /// Whether a rule asks for the return value of the function `name`
    /// (its symbol, as the runtime matched the rules against it): a tail
    /// chain's value belongs only to those (a `void` function that ends
    /// in a tail call has none). True without a spec file.
    pub fn returns_value(&self, name: &str) -> bool {
        !self.loaded
            || self.returning.contains(name)
            || self.returning_globs.iter().any(|g| glob(g, name))
    }
}

/// Whether the shell-style `pattern` (`*` and `?`) matches `text`, as the
/// runtime matches its rules.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl Value {
    /// The integer, sign- or zero-extended from its size.
    fn int(&self) -> i128 {
        let bits = u32::from(self.ty.size()) * 8;
        let masked = if bits >= 64 {
            self.raw
        } else {
            self.raw & ((1u64 << bits) - 1)
        };
        if matches!(self.ty.class(), class::SIGNED | class::ENUM) && bits < 64 {
            let shift = 64 - bits;
            i128::from(((masked << shift) as i64) >> shift)
        } else if matches!(self.ty.class(), class::SIGNED | class::ENUM) {
            i128::from(masked as i64)
        } else {
            i128::from(masked)
        }
    }

    /// Appends the value as uftrace shows it.
    pub fn write(&self, out: &mut String, enums: &Enums) {
        self.write_named(out, enums, &NoFunctions);
    }

    /// Appends the value as uftrace shows it, a pointer to the start of
    /// one of `functions` as `&name`.
    pub fn write_named(&self, out: &mut String, enums: &Enums, functions: &dyn FunctionAt) {
        if self.flags & value::OPTIMISED_OUT != 0 {
            out.push_str("<optimised out>");
            return;
        }
        match self.ty.class() {
            class::AUTO => write_auto(out, self.raw),
            class::AGGREGATE => match enums.aggregates.get(&(self.raw as u32)) {
                Some(name) => {
                    let _ = write!(out, "{name}{{...}}");
                }
                None => out.push_str("{...}"),
            },
            class::SIGNED | class::UNSIGNED => {
                let _ = write!(out, "{}", self.int());
            }
            class::HEX => {
                let _ = write!(out, "{:#x}", self.int());
            }
            class::POINTER => match functions.function_at(self.raw) {
                Some(name) => {
                    out.push('&');
                    out.push_str(name);
                }
                None => {
                    let _ = write!(out, "{:#x}", self.raw);
                }
            },
            class::FLOAT if self.ty.size() == 4 => {
                let _ = write!(out, "{:?}", f32::from_bits(self.raw as u32));
            }
            class::FLOAT => {
                let _ = write!(out, "{:?}", f64::from_bits(self.raw));
            }
            class::BOOL => out.push_str(if self.raw & 0xff != 0 {
                "true"
            } else {
                "false"
            }),
            class::CHAR => {
                let c = self.raw as u8;
                out.push('\'');
                escape(out, &[c], '\'');
                out.push('\'');
            }
            class::ENUM => {
                let v = self.int() as i64;
                // An enumerator that does not fit the signed type of the
                // enum's size (0xffff0000 in 4 bytes) is named by its
                // unsigned value.
                let unsigned = self.raw & (u64::MAX >> (64 - 8 * u32::from(self.ty.size())));
                let named = enums
                    .names
                    .get(&(self.enum_id, v))
                    .or_else(|| enums.names.get(&(self.enum_id, unsigned as i64)));
                match named {
                    Some(n) => out.push_str(n),
                    None => {
                        let _ = write!(out, "{v}");
                    }
                }
            }
            class::STRING | class::STD_STRING => {
                if self.flags & value::NULL != 0 {
                    out.push_str("NULL");
                } else if self.flags & value::BAD_POINTER != 0 {
                    let _ = write!(out, "(bad pointer {:#x})", self.raw);
                } else {
                    out.push('"');
                    escape(out, &self.bytes, '"');
                    out.push('"');
                    if self.flags & value::TRUNCATED != 0 {
                        out.push_str("...");
                    }
                }
            }
            _ => out.push('?'),
        }
    }

    /// The value as text.
    pub fn to_text(&self, enums: &Enums) -> String {
        let mut s = String::new();
        self.write(&mut s, enums);
        s
    }
}

/// An integer as uftrace's default format shows it: in decimal up to
/// 100000 either way, else in hexadecimal, except that what looks like a
/// small negative `int` in a 64-bit register (its upper half clear) is
/// shown as that negative number.
fn write_auto(out: &mut String, raw: u64) {
    let v = raw as i64;
    let _ = if (-100000..=100000).contains(&v) {
        write!(out, "{v}")
    } else if raw > 0xffff_0000 && raw <= 0xffff_ffff {
        write!(out, "{}", raw as u32 as i32)
    } else {
        write!(out, "{raw:#x}")
    };
}

/// Names the function that starts at an address, for pointers shown as
/// `&name`, as uftrace shows a function pointer.
pub trait FunctionAt {
    /// The name of the function whose first byte is at `addr`.
    fn function_at(&self, addr: u64) -> Option<&str>;
}

/// No function names: pointers show as addresses.
pub struct NoFunctions;

impl FunctionAt for NoFunctions {
    fn function_at(&self, _: u64) -> Option<&str> {
        None
    }
}

/// Appends `values` separated by `, `.
pub fn write_list(out: &mut String, values: &[Value], enums: &Enums) {
    write_list_named(out, values, enums, &NoFunctions);
}

/// Appends `values` separated by `, `, pointers to `functions` as
/// `&name`.
pub fn write_list_named(
    out: &mut String,
    values: &[Value],
    enums: &Enums,
    functions: &dyn FunctionAt,
) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        v.write_named(out, enums, functions);
    }
}

/// Appends a return value as replay shows it after ` = `: an enum or
/// aggregate that its record does not name takes the one the spec file
/// gives for `function` (the function's symbol, when known). False, and
/// nothing appended, when the function's rules ask for no return value:
/// the value came with the tail chain the function ended in.
pub fn write_ret(
    out: &mut String,
    values: &[Value],
    function: Option<&str>,
    enums: &Enums,
) -> bool {
    write_ret_named(out, values, function, enums, &NoFunctions)
}

/// [`write_ret`], pointers to `functions` as `&name`.
pub fn write_ret_named(
    out: &mut String,
    values: &[Value],
    function: Option<&str>,
    enums: &Enums,
    functions: &dyn FunctionAt,
) -> bool {
    if function.is_some_and(|f| !enums.returns_value(f)) {
        return false;
    }
    let unnamed = |v: &Value| match v.ty.class() {
        class::ENUM => v.enum_id == 0,
        class::AGGREGATE => v.raw == 0,
        _ => false,
    };
    match function.filter(|_| values.iter().any(unnamed)) {
        Some(name) => {
            let mut v = values.to_vec();
            let number = enums.returned_by(name).unwrap_or(0);
            for x in &mut v {
                if unnamed(x) && x.ty.class() == class::ENUM {
                    x.enum_id = number;
                } else if unnamed(x) {
                    x.raw = u64::from(number);
                }
            }
            write_list_named(out, &v, enums, functions);
        }
        None => write_list_named(out, values, enums, functions),
    }
    true
}

/// Recorded arguments as text, without parentheses: `1, "abc"`.
pub fn args_text(values: &[Value], enums: &Enums) -> String {
    let mut s = String::new();
    write_list(&mut s, values, enums);
    s
}

/// A recorded return value as text (see [`write_ret`]); `None` when the
/// function has none to show.
pub fn ret_text(values: &[Value], function: Option<&str>, enums: &Enums) -> Option<String> {
    let mut s = String::new();
    write_ret(&mut s, values, function, enums).then_some(s)
}

fn escape(out: &mut String, bytes: &[u8], quote: char) {
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::trace::compact::{ext_head, SUB_ARGS};

    /// A payload record of `values` (type, flags, data).
    fn record(values: &[(Ty, u8, &[u8])]) -> Vec<u8> {
        let mut body: Vec<u32> = Vec::new();
        for (ty, flags, data) in values {
            body.push(value::desc(ty.0, *flags, data.len() as u16));
            for chunk in data.chunks(4) {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                body.push(u32::from_le_bytes(w));
            }
        }
        let mut out = ext_head(SUB_ARGS, body.len() as u32 + 1, values.len() as u32)
            .to_le_bytes()
            .to_vec();
        for w in body {
            out.extend(w.to_le_bytes());
        }
        out
    }

    fn shown(values: &[(Ty, u8, &[u8])]) -> String {
        let v = decode(&record(values)).expect("decodes");
        let mut s = String::new();
        write_list(&mut s, &v, &Enums::default());
        s
    }

    #[test]
    fn values_show_as_uftrace_shows_them() {
        let i32t = Ty::new(class::SIGNED, 4);
        let u8t = Ty::new(class::UNSIGNED, 1);
        let x64 = Ty::new(class::HEX, 8);
        let p = Ty::new(class::POINTER, 8);
        let s = Ty::new(class::STRING, 8);
        let f32t = Ty::new(class::FLOAT, 4);
        let f64t = Ty::new(class::FLOAT, 8);
        let minus_one = (-1i64 as u64).to_le_bytes();
        let big = 0x1_0000_00ffu64.to_le_bytes();
        let addr = 0x7ffd_1234u64.to_le_bytes();
        let half = 0.5f32.to_bits().to_le_bytes();
        let third = (1.0f64 / 3.0).to_bits().to_le_bytes();
        expect_test::expect![[r#"-1, 255, 0x7ffd1234, 0x7ffd1234, "a\"b\n", "abc"..., (bad pointer 0x7ffd1234), NULL, 0.5, 0.3333333333333333, true, 'x', <optimised out>"#]]
        .assert_eq(&shown(&[
            (i32t, 0, &minus_one),
            (u8t, 0, &big),
            (x64, 0, &addr),
            (p, 0, &addr),
            (s, 0, b"a\"b\n"),
            (s, value::TRUNCATED, b"abc"),
            (s, value::BAD_POINTER, &addr),
            (s, value::NULL, b""),
            (f32t, 0, &half),
            (f64t, 0, &third),
            (Ty::new(class::BOOL, 1), 0, &1u64.to_le_bytes()),
            (Ty::new(class::CHAR, 1), 0, &u64::from(b'x').to_le_bytes()),
            (i32t, value::OPTIMISED_OUT, b""),
        ]));
    }

    #[test]
    fn enums_show_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut text =
            ftail_abi::argspec::enum_lines(3, "colour", &[(0, "RED".into()), (2, "BLUE".into())]);
        text.push(String::new());
        std::fs::write(dir.path().join(SPEC_FILE), text.join("\n")).unwrap();
        let enums = Enums::load(dir.path());
        let mut data = 2u64.to_le_bytes().to_vec();
        data.extend(3u32.to_le_bytes());
        let v = decode(&record(&[(Ty::new(class::ENUM, 4), 0, &data)])).unwrap();
        assert_eq!(v[0].to_text(&enums), "BLUE");
        data[0] = 7;
        let v = decode(&record(&[(Ty::new(class::ENUM, 4), 0, &data)])).unwrap();
        assert_eq!(v[0].to_text(&enums), "7");
    }

    #[test]
    fn the_default_format_is_uftraces() {
        let auto = Ty::new(class::AUTO, 8);
        let shown: Vec<String> = [
            0xffff_ffffu64,
            (-1i64) as u64,
            100_000,
            100_001,
            (-100_001i64) as u64,
            0x1_2345_6789,
            0xffff_0000,
        ]
        .iter()
        .map(|&raw| {
            let v = decode(&record(&[(auto, 0, &raw.to_le_bytes())])).unwrap();
            v[0].to_text(&Enums::default())
        })
        .collect();
        assert_eq!(
            shown,
            [
                "-1",
                "-1",
                "100000",
                "0x186a1",
                "0xfffffffffffe795f",
                "0x123456789",
                "0xffff0000"
            ]
        );
    }

    #[test]
    fn aggregates_and_wide_enumerators_show_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = ftail_abi::argspec::enum_lines(1, "mask", &[(0xffff_0000, "HIGH".into())]);
        text.push(ftail_abi::argspec::aggregate_line(2, "point"));
        text.push("make\tg:none:2\t".into());
        text.push("forward\t-\ta:r0".into());
        text.push(String::new());
        std::fs::write(dir.path().join(SPEC_FILE), text.join("\n")).unwrap();
        let enums = Enums::load(dir.path());
        // The register holds the enum's 4 bytes sign-extended.
        let mut data = (-65536i64 as u64).to_le_bytes().to_vec();
        data.extend(1u32.to_le_bytes());
        let v = decode(&record(&[(Ty::new(class::ENUM, 4), 0, &data)])).unwrap();
        assert_eq!(v[0].to_text(&enums), "HIGH");
        let g = Ty::new(class::AGGREGATE, 8);
        let v = decode(&record(&[(g, 0, &2u32.to_le_bytes())])).unwrap();
        assert_eq!(v[0].to_text(&enums), "point{...}");
        // A return value's record does not name it: the rule does.
        let r = decode(&record(&[(g, 0, &0u32.to_le_bytes())])).unwrap();
        assert_eq!(
            ret_text(&r, Some("make"), &enums).as_deref(),
            Some("point{...}")
        );
        // A function whose rule has no return value shows none (the
        // value of the tail chain it ended in).
        let i = decode(&record(&[(
            Ty::new(class::AUTO, 8),
            0,
            &10u64.to_le_bytes(),
        )]))
        .unwrap();
        assert_eq!(ret_text(&i, Some("forward"), &enums), None);
        assert_eq!(ret_text(&i, Some("make"), &enums).as_deref(), Some("10"));
        // Without a spec file, every value shows.
        assert_eq!(
            ret_text(&i, Some("forward"), &Enums::default()).as_deref(),
            Some("10")
        );
    }

    #[test]
    fn damaged_payloads_decode_to_nothing() {
        let mut r = record(&[(Ty::new(class::STRING, 8), 0, b"abcdefgh")]);
        r.truncate(8);
        assert_eq!(decode(&r), None);
    }
}
