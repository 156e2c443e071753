//! What a control-transfer instruction is, from its mnemonic and operand.

use crate::parse::Insn;

/// A control transfer the rewriter has to think about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow<'a> {
    /// `ret`, `retq`, `rep ret`, `ret $n`.
    Ret,
    /// `jmp SYMBOL` (possibly `SYMBOL@PLT`); `target` is without `@PLT`.
    JmpDirect { target: &'a str, operand: &'a str },
    /// `jmp *OPERAND`; `operand` is without the `*`.
    JmpIndirect { operand: &'a str },
    /// `jCC SYMBOL`; `cc` is the condition (`ne`, `g`, …).
    Jcc {
        cc: &'a str,
        target: &'a str,
        operand: &'a str,
    },
    /// `jrcxz`, `loop`: branches that cannot be inverted.
    OtherBranch { target: &'a str },
    /// `call SYMBOL`, target without `@PLT`; `plt` when it had one.
    CallDirect { target: &'a str, plt: bool },
    /// `call *SYMBOL@GOTPCREL(%rip)` (`-fno-plt`).
    CallGot { target: &'a str },
    /// `call *OPERAND` otherwise (a function pointer, a virtual call);
    /// `operand` is without the `*`.
    CallIndirect { operand: &'a str },
    /// Anything else.
    None,
}

/// Classifies one instruction.
pub fn flow<'a>(insn: &Insn<'a>) -> Flow<'a> {
    let m = insn.mnemonic;
    let ops = insn.operands;
    match m {
        "ret" | "retq" | "retl" => return Flow::Ret,
        "jmp" | "jmpq" => {
            return match ops.strip_prefix('*') {
                Some(operand) => Flow::JmpIndirect {
                    operand: operand.trim(),
                },
                None => Flow::JmpDirect {
                    target: strip_plt(ops),
                    operand: ops,
                },
            }
        }
        "call" | "callq" => {
            return match ops.strip_prefix('*') {
                None => Flow::CallDirect {
                    target: strip_plt(ops),
                    plt: strip_plt(ops) != ops,
                },
                Some(op) => match op.trim().strip_suffix("@GOTPCREL(%rip)") {
                    Some(target) if !target.is_empty() => Flow::CallGot { target },
                    Some(_) => Flow::None,
                    None => Flow::CallIndirect { operand: op.trim() },
                },
            }
        }
        "jrcxz" | "jecxz" | "loop" | "loope" | "loopz" | "loopne" | "loopnz" => {
            return Flow::OtherBranch { target: ops }
        }
        _ => {}
    }
    if let Some(cc) = m.strip_prefix('j') {
        if inverse_cc(cc).is_some() {
            return Flow::Jcc {
                cc,
                target: strip_plt(ops),
                operand: ops,
            };
        }
    }
    Flow::None
}

fn strip_plt(op: &str) -> &str {
    op.strip_suffix("@PLT")
        .or_else(|| op.strip_suffix("@plt"))
        .unwrap_or(op)
}

/// The condition code that is true exactly when `cc` is false.
pub fn inverse_cc(cc: &str) -> Option<&'static str> {
    Some(match cc {
        "o" => "no",
        "no" => "o",
        "b" | "c" | "nae" => "nb",
        "nb" | "ae" | "nc" => "b",
        "e" | "z" => "ne",
        "ne" | "nz" => "e",
        "be" | "na" => "a",
        "a" | "nbe" => "be",
        "s" => "ns",
        "ns" => "s",
        "p" | "pe" => "np",
        "np" | "po" => "p",
        "l" | "nge" => "ge",
        "ge" | "nl" => "l",
        "le" | "ng" => "g",
        "g" | "nle" => "le",
        _ => return None,
    })
}

/// Register named by a retpoline thunk (`__x86_indirect_thunk_rax`,
/// `__llvm_retpoline_r11`), if `target` is one.
pub fn retpoline_register(target: &str) -> Option<&str> {
    const PREFIXES: &[&str] = &[
        "__x86_indirect_thunk_",
        "__llvm_retpoline_",
        "__llvm_external_retpoline_",
    ];
    PREFIXES
        .iter()
        .find_map(|p| target.strip_prefix(p))
        .filter(|r| ftail_abi::gpr_number(r).is_some())
}

/// Whether `target` is the return thunk (`-mfunction-return=thunk-extern`).
pub fn is_return_thunk(target: &str) -> bool {
    target == "__x86_return_thunk"
}

/// Whether a function of this name must never be instrumented: the bodies of
/// retpoline and return thunks.
pub fn is_thunk_body(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "__x86_indirect_thunk",
        "__x86_indirect_call_thunk",
        "__x86_indirect_jump_thunk",
        "__x86_return_thunk",
        "__llvm_retpoline_",
        "__llvm_external_retpoline_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The register of an indirect operand `%reg`, if it is a plain register.
pub fn operand_register(operand: &str) -> Option<u8> {
    operand.strip_prefix('%').and_then(ftail_abi::gpr_number)
}

/// The length in bytes of `call *OPERAND` as the assembler encodes it,
/// when the operand is a 64-bit register or a memory operand without a
/// relocation (`@`), segment or symbol whose displacement size the
/// assembler could choose otherwise; `None` for anything else.
pub fn indirect_call_len(operand: &str) -> Option<usize> {
    let reg = |r: &str| r.strip_prefix('%').and_then(ftail_abi::gpr_number);
    if let Some(r) = reg(operand) {
        return Some(2 + usize::from(r >= 8));
    }
    if operand.contains(['@', ':']) {
        return None;
    }
    let (disp, rest) = operand.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let mut parts = inner.split(',').map(str::trim);
    let base = parts.next()?;
    let index = parts.next().filter(|s| !s.is_empty());
    if parts
        .next()
        .is_some_and(|s| !matches!(s, "1" | "2" | "4" | "8"))
        || parts.next().is_some()
    {
        return None;
    }
    if base == "%rip" {
        return (index.is_none()).then_some(6);
    }
    let base = if base.is_empty() {
        None
    } else {
        Some(reg(base)?)
    };
    let index = index.map(reg).map_or(Some(None), |r| r.map(Some))?;
    if index == Some(4) {
        return None;
    }
    let rex = base.is_some_and(|b| b >= 8) || index.is_some_and(|i| i >= 8);
    let sib = index.is_some() || base.is_none_or(|b| b & 7 == 4);
    let disp_len = match base {
        None => 4,
        Some(b) => {
            let value = if disp.is_empty() {
                Some(0)
            } else {
                parse_int(disp)
            };
            match value {
                Some(0) if b & 7 != 5 => 0,
                Some(v) if (-128..=127).contains(&v) => 1,
                _ => 4,
            }
        }
    };
    Some(usize::from(rex) + 2 + usize::from(sib) + disp_len)
}

/// A decimal or `0x` hexadecimal integer, maybe negative.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => i64::from_str_radix(h, 16).ok()?,
        None => digits.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// If `name` is a cold partition (`foo.cold`, `foo.cold.3`), the name of the
/// function it belongs to.
pub fn cold_parent(name: &str) -> Option<&str> {
    let (base, tail) = name.split_once(".cold")?;
    let ok = tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (ok && !base.is_empty()).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse, Stmt};

    fn flow_of(line: &str) -> String {
        let p = parse(line);
        match &p.lines[0].stmt {
            Stmt::Insn(i) => format!("{:?}", flow(i)),
            s => format!("{s:?}"),
        }
    }

    #[test]
    fn classifies_control_flow() {
        assert_eq!(flow_of("\tret"), "Ret");
        assert_eq!(flow_of("\trep ret"), "Ret");
        assert_eq!(
            flow_of("\tjmp\tg@PLT"),
            r#"JmpDirect { target: "g", operand: "g@PLT" }"#
        );
        assert_eq!(
            flow_of("\tjmpq\t*8(%rax)"),
            r#"JmpIndirect { operand: "8(%rax)" }"#
        );
        assert_eq!(
            flow_of("\tjge\tg@PLT"),
            r#"Jcc { cc: "ge", target: "g", operand: "g@PLT" }"#
        );
        assert_eq!(flow_of("\tjrcxz\t.L3"), r#"OtherBranch { target: ".L3" }"#);
        assert_eq!(
            flow_of("\tcall\t*%rax"),
            r#"CallIndirect { operand: "%rax" }"#
        );
        assert_eq!(
            flow_of("\tcall\tputs@PLT"),
            r#"CallDirect { target: "puts", plt: true }"#
        );
        assert_eq!(
            flow_of("\tcall\t*free@GOTPCREL(%rip)"),
            r#"CallGot { target: "free" }"#
        );
        assert_eq!(
            flow_of("\tcall\t*8(%rax)"),
            r#"CallIndirect { operand: "8(%rax)" }"#
        );
        assert_eq!(flow_of("\tmovl\t$1, %eax"), "None");
    }

    /// Checked against GNU as: `call *OPERAND` assembled and measured.
    #[test]
    fn indirect_calls_have_their_assembled_length() {
        for (op, len) in [
            ("%rax", Some(2)),
            ("%r11", Some(3)),
            ("(%rax)", Some(2)),
            ("0(%rax)", Some(2)),
            ("8(%rax)", Some(3)),
            ("(%rbp)", Some(3)),
            ("(%r13)", Some(4)),
            ("(%rsp)", Some(3)),
            ("(%r12)", Some(4)),
            ("8(%rsp)", Some(4)),
            ("-8(%rbx,%rcx,8)", Some(4)),
            ("(%rax,%r9,4)", Some(4)),
            ("0x80(%rax)", Some(6)),
            ("-128(%rax)", Some(3)),
            ("fp(%rip)", Some(6)),
            ("table(,%rax,8)", Some(7)),
            ("16(%r12,%r13,2)", Some(5)),
            ("x@TLSCALL(%rax)", None),
            ("%fs:(%rax)", None),
            ("%eax", None),
            ("(%rax,%rsp)", None),
        ] {
            assert_eq!(indirect_call_len(op), len, "{op}");
        }
    }

    #[test]
    fn every_condition_inverts_back() {
        for cc in [
            "o", "b", "e", "be", "s", "p", "l", "le", "ne", "g", "ge", "a",
        ] {
            let inv = inverse_cc(cc).unwrap();
            assert_eq!(inverse_cc(inverse_cc(inv).unwrap()), Some(inv));
            assert_ne!(inv, cc);
        }
        assert_eq!(inverse_cc("mp"), None);
    }

    #[test]
    fn recognises_thunks_and_cold_parts() {
        assert_eq!(retpoline_register("__x86_indirect_thunk_rax"), Some("rax"));
        assert_eq!(retpoline_register("__llvm_retpoline_r11"), Some("r11"));
        assert_eq!(retpoline_register("__x86_indirect_thunk_foo"), None);
        assert!(is_thunk_body("__x86_return_thunk"));
        assert_eq!(cold_parent("foo.cold"), Some("foo"));
        assert_eq!(cold_parent("foo.part.0.cold.12"), Some("foo.part.0"));
        assert_eq!(cold_parent("foo.colder"), None);
        assert_eq!(operand_register("%r11"), Some(11));
        assert_eq!(operand_register("(%rax)"), None);
    }
}
