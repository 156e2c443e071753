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
    /// Anything else (including indirect calls).
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
                    _ => Flow::None,
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
        assert_eq!(flow_of("\tcall\t*%rax"), "None");
        assert_eq!(
            flow_of("\tcall\tputs@PLT"),
            r#"CallDirect { target: "puts", plt: true }"#
        );
        assert_eq!(
            flow_of("\tcall\t*free@GOTPCREL(%rip)"),
            r#"CallGot { target: "free" }"#
        );
        assert_eq!(flow_of("\tcall\t*8(%rax)"), "None");
        assert_eq!(flow_of("\tmovl\t$1, %eax"), "None");
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
