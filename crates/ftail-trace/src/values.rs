//! Recorded argument and return values (`ftail record -A/-R/-a`): decoded
//! from their payload records (`ftail_abi::argspec`) and shown as uftrace
//! shows them: `foo(1, "abc", 0x7ffd1234) {` and `} = 42; /* foo */`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use ftail_abi::argspec::{class, value, Ty, SPEC_FILE};

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

/// The enums' names from a trace's spec file (for `-a`).
#[derive(Debug, Clone, Default)]
pub struct Enums {
    names: HashMap<(u32, i64), String>,
    /// The enum a function returns, by the function's name (a return
    /// value's record does not carry it).
    returns: HashMap<String, u32>,
}

impl Enums {
    /// Reads the spec file of the trace directory `dir`, if there is one.
    pub fn load(dir: &Path) -> Enums {
        let mut e = Enums::default();
        if let Ok(text) = std::fs::read_to_string(dir.join(SPEC_FILE)) {
            for line in text.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                if let ["value", n, v, name] = f[..] {
                    if let (Ok(n), Ok(v)) = (n.parse(), v.parse()) {
                        e.names.insert((n, v), name.to_string());
                    }
                } else if let Some((glob, spec)) = ftail_abi::argspec::FnSpec::parse_line(line) {
                    if spec.has_ret != 0 && spec.ret.ty.class() == class::ENUM {
                        e.returns
                            .entry(glob.to_string())
                            .or_insert(u32::from(spec.ret.aux));
                    }
                }
            }
        }
        e
    }
}

impl Enums {
    /// The enum that the function `name` returns, when the spec file
    /// names one for it.
    pub fn returned_by(&self, name: &str) -> Option<u32> {
        self.returns.get(name).copied()
    }
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
        if self.flags & value::OPTIMISED_OUT != 0 {
            out.push_str("<optimised out>");
            return;
        }
        match self.ty.class() {
            class::SIGNED | class::UNSIGNED => {
                let _ = write!(out, "{}", self.int());
            }
            class::HEX => {
                let _ = write!(out, "{:#x}", self.int());
            }
            class::POINTER => {
                let _ = write!(out, "{:#x}", self.raw);
            }
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
                match enums.names.get(&(self.enum_id, v)) {
                    Some(n) => out.push_str(n),
                    None => {
                        let _ = write!(out, "{v}");
                    }
                }
            }
            class::STRING => {
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

/// Appends `values` separated by `, `.
pub fn write_list(out: &mut String, values: &[Value], enums: &Enums) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        v.write(out, enums);
    }
}

/// Appends a return value as replay shows it after ` = `: an enum that
/// its record does not name takes the enum the spec file gives for
/// `function` (the function's name, when known).
pub fn write_ret(out: &mut String, values: &[Value], function: Option<&str>, enums: &Enums) {
    let unnamed = values
        .iter()
        .any(|v| v.ty.class() == class::ENUM && v.enum_id == 0);
    match function.filter(|_| unnamed) {
        Some(name) => {
            let mut v = values.to_vec();
            for x in &mut v {
                if x.enum_id == 0 {
                    x.enum_id = enums.returned_by(name).unwrap_or(0);
                }
            }
            write_list(out, &v, enums);
        }
        None => write_list(out, values, enums),
    }
}

/// Recorded arguments as text, without parentheses: `1, "abc"`.
pub fn args_text(values: &[Value], enums: &Enums) -> String {
    let mut s = String::new();
    write_list(&mut s, values, enums);
    s
}

/// A recorded return value as text (see [`write_ret`]).
pub fn ret_text(values: &[Value], function: Option<&str>, enums: &Enums) -> String {
    let mut s = String::new();
    write_ret(&mut s, values, function, enums);
    s
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
    fn damaged_payloads_decode_to_nothing() {
        let mut r = record(&[(Ty::new(class::STRING, 8), 0, b"abcdefgh")]);
        r.truncate(8);
        assert_eq!(decode(&r), None);
    }
}
