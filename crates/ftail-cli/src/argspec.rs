//! `ftail record -A/-R`: uftrace's argument-spec syntax, turned into the
//! rules the runtime reads (`ftail_abi::argspec`).
//!
//! `-A 'GLOB@SPEC,SPEC,…'` where SPEC is `argN[/FMT][%LOC]`,
//! `fpargN[/FMT][%LOC]` or `retval[/FMT]`; `-R 'GLOB[@FMT]'` or
//! `-R 'GLOB@retval[/FMT]'`. FMT is `d`/`i` (signed, 64 bits), `u`, `x`
//! (optionally with a size: `i32`, `u8`, `x16`…), `s` (a string, at most
//! 64 bytes; `s200` for another bound up to 512), `c` (char), `b` (bool),
//! `p` (pointer), `f`/`f64`, `f32`. LOC is `%rdi`…`%r9`, `%xmm0`…`%xmm7` or
//! `%stack+N` (the N-th 8-byte stack argument). Without FMT, an integer
//! is shown as uftrace shows it: in decimal when small, in hexadecimal
//! when large, and an `int` of -1 (whose register's upper half is clear)
//! as -1. Without LOC, `argN` is
//! the N-th integer register argument (past the sixth, the stack ones in
//! order) and `fpargN` the N-th SSE one.

use ftail_abi::argspec::{
    class, ArgSpec, FnSpec, Ty, LOC_INT, LOC_STACK, LOC_XMM, MAX_ARGS, MAX_STRING,
};

/// Parses one `-A` value into its glob and spec.
pub fn parse_args(text: &str) -> Result<(String, FnSpec), String> {
    let (glob, specs) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("{text:?}: expected GLOB@arg1,arg2/s,… (uftrace's syntax)"))?;
    let glob = check_glob(glob, text)?;
    let mut spec = FnSpec::default();
    for item in specs.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("{text:?}: an empty argument spec"));
        }
        let named = |e: String| format!("{text:?}: {item:?}: {e}");
        if let Some(rest) = item.strip_prefix("retval") {
            spec.ret = ret_spec(rest).map_err(named)?;
            spec.has_ret = 1;
            continue;
        }
        let a = arg_spec(item).map_err(named)?;
        if !spec.push(a) {
            return Err(format!("{text:?}: more than {MAX_ARGS} arguments"));
        }
    }
    Ok((glob, spec))
}

/// Parses one `-R` value into its glob and spec.
pub fn parse_retval(text: &str) -> Result<(String, FnSpec), String> {
    let (glob, fmt) = match text.rsplit_once('@') {
        Some((g, f)) => (g, f.strip_prefix("retval").unwrap_or(f)),
        None => (text, ""),
    };
    let glob = check_glob(glob, text)?;
    let fmt = fmt.strip_prefix('/').unwrap_or(fmt);
    let ret = if fmt.is_empty() {
        ret_spec("")
    } else {
        ret_spec(&format!("/{fmt}"))
    }
    .map_err(|e| format!("{text:?}: {e}"))?;
    Ok((
        glob,
        FnSpec {
            has_ret: 1,
            ret,
            ..FnSpec::default()
        },
    ))
}

fn check_glob(glob: &str, text: &str) -> Result<String, String> {
    if glob.is_empty() {
        return Err(format!("{text:?}: no function name or glob before '@'"));
    }
    if glob.contains(['\t', '\n', ',']) {
        return Err(format!(
            "{text:?}: a function glob with a tab, newline or comma"
        ));
    }
    Ok(glob.to_string())
}

/// `retval[/FMT]`'s part after `retval`.
fn ret_spec(rest: &str) -> Result<ArgSpec, String> {
    if rest.contains('%') {
        return Err("a return value has no location to give".into());
    }
    let ty = match rest.strip_prefix('/') {
        Some(f) => format(f)?,
        None if rest.is_empty() => (Ty::new(class::AUTO, 8), 0),
        None => return Err("expected retval or retval/FMT".into()),
    };
    let loc = if ty.0.class() == class::FLOAT {
        LOC_XMM
    } else {
        LOC_INT
    };
    Ok(ArgSpec {
        ty: ty.0,
        loc,
        aux: ty.1,
    })
}

/// `argN[/FMT][%LOC]` or `fpargN[/FMT][%LOC]`.
fn arg_spec(item: &str) -> Result<ArgSpec, String> {
    let (item, loc) = match item.split_once('%') {
        Some((i, l)) => (i, Some(l)),
        None => (item, None),
    };
    let (name, fmt) = match item.split_once('/') {
        Some((n, f)) => (n, Some(f)),
        None => (item, None),
    };
    let (fp, n) = if let Some(n) = name.strip_prefix("fparg") {
        (true, n)
    } else if let Some(n) = name.strip_prefix("arg") {
        (false, n)
    } else {
        return Err("expected argN, fpargN or retval".into());
    };
    let n: u8 = n
        .parse()
        .ok()
        .filter(|&n| (1..=64).contains(&n))
        .ok_or_else(|| format!("{name:?}: argument numbers go from 1 to 64"))?;
    let (ty, aux) = match fmt {
        Some(f) => format(f)?,
        None if fp => (Ty::new(class::FLOAT, 8), 0),
        None => (Ty::new(class::AUTO, 8), 0),
    };
    if fp && ty.class() != class::FLOAT {
        return Err("an fpargN is a float or a double (f32, f64)".into());
    }
    let loc = match loc {
        Some(l) => location(l)?,
        None if fp && n <= 8 => LOC_XMM + n - 1,
        None if fp => LOC_STACK + n - 9,
        None if n <= 6 => LOC_INT + n - 1,
        None => LOC_STACK + n - 7,
    };
    if ty.class() == class::FLOAT && (LOC_INT..LOC_INT + 6).contains(&loc) {
        return Err("a float or double argument is in an SSE register: use fpargN".into());
    }
    Ok(ArgSpec { ty, loc, aux })
}

/// `%rdi`, …, `%xmm3`, `%stack+N` (without the `%`).
fn location(l: &str) -> Result<u8, String> {
    const INT: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];
    if let Some(i) = INT.iter().position(|r| *r == l) {
        return Ok(LOC_INT + i as u8);
    }
    if let Some(n) = l.strip_prefix("xmm") {
        return n
            .parse::<u8>()
            .ok()
            .filter(|&n| n < 8)
            .map(|n| LOC_XMM + n)
            .ok_or_else(|| format!("%{l}: the SSE argument registers are %xmm0 to %xmm7"));
    }
    if let Some(n) = l.strip_prefix("stack+") {
        return n
            .parse::<u8>()
            .ok()
            .filter(|&n| (1..=200).contains(&n))
            .map(|n| LOC_STACK + n - 1)
            .ok_or_else(|| format!("%{l}: stack slots go from %stack+1 to %stack+200"));
    }
    Err(format!(
        "%{l}: not an argument location (%rdi, %rsi, %rdx, %rcx, %r8, %r9, \
         %xmm0-%xmm7, %stack+N)"
    ))
}

/// A format: its type and aux (a string's bound).
fn format(f: &str) -> Result<(Ty, u16), String> {
    let bad = || {
        format!(
            "unknown format {f:?} (expected d, i, u, x with an optional size 8, 16, 32 \
             or 64, s or sN, c, b, p, f, f32 or f64)"
        )
    };
    let sized = |class: u8, bits: &str| -> Result<Ty, String> {
        match bits {
            "" => Ok(Ty::new(class, 8)),
            "8" | "16" | "32" | "64" => Ok(Ty::new(class, (bits.parse::<u8>().unwrap_or(64)) / 8)),
            _ => Err(bad()),
        }
    };
    Ok(match f {
        "s" => (Ty::new(class::STRING, 8), MAX_STRING),
        "c" => (Ty::new(class::CHAR, 1), 0),
        "b" => (Ty::new(class::BOOL, 1), 0),
        "p" => (Ty::new(class::POINTER, 8), 0),
        "f" | "f64" => (Ty::new(class::FLOAT, 8), 0),
        "f32" => (Ty::new(class::FLOAT, 4), 0),
        _ if f.starts_with('s') => {
            let n = f[1..]
                .parse::<u16>()
                .ok()
                .filter(|&n| (1..=512).contains(&n))
                .ok_or_else(|| format!("{f:?}: a string's bound goes from 1 to 512 bytes"))?;
            (Ty::new(class::STRING, 8), n)
        }
        _ if f.starts_with("e:") => {
            return Err(format!(
                "{f:?}: enums are shown by name only with -a/--auto-args (from debug info)"
            ))
        }
        _ => {
            let (c, bits) = f.split_at(1.min(f.len()));
            let class = match c {
                "d" | "i" => class::SIGNED,
                "u" => class::UNSIGNED,
                "x" => class::HEX,
                _ => return Err(bad()),
            };
            (sized(class, bits)?, 0)
        }
    })
}

/// What the spec file is written from: `-A`, `-R`, and with `-a` the
/// program whose debug info (and its start-up libraries') gives rules.
pub struct SpecSources<'a> {
    /// `-A` specs.
    pub args: &'a [String],
    /// `-R` specs.
    pub retval: &'a [String],
    /// `-a`: the program's path, found as `exec` finds it.
    pub auto_from: Option<&'a std::path::Path>,
}

/// Writes the trace directory's spec file from `-A`, `-R` and `-a`;
/// whether there is one (there is none when nothing was asked for).
pub fn write_spec_file(dir: &std::path::Path, o: &SpecSources) -> anyhow::Result<bool> {
    use anyhow::Context;
    let path = dir.join(ftail_abi::argspec::SPEC_FILE);
    let Some(text) = spec_text(o)? else {
        let _ = std::fs::remove_file(&path);
        return Ok(false);
    };
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// The spec file's text for `-A`, `-R` and `-a`; `None` when nothing was
/// asked for.
pub fn spec_text(o: &SpecSources) -> anyhow::Result<Option<String>> {
    // The rules from the debug info first: every rule that matches a
    // function adds to its spec in order, so what -A and -R say about
    // an argument or the return value takes the place of -a's.
    let mut lines: Vec<String> = Vec::new();
    if let Some(exe) = o.auto_from {
        let mut numbers = ftail_trace::autoargs::Numbers::default();
        let auto = ftail_trace::autoargs::specs(exe, &mut numbers)
            .map_err(|e| anyhow::anyhow!("-a: reading the debug info of {}: {e}", exe.display()))?;
        lines.extend(auto);
        // The libraries it loads at start-up: those built through ftail
        // (with site tables) and with debug info add their functions'
        // rules; the others (libc, …) have nothing to add.
        for lib in ftail_trace::autoargs::needed_libraries(exe) {
            if let Ok(auto) = ftail_trace::autoargs::specs(&lib, &mut numbers) {
                lines.extend(auto);
            }
        }
    }
    for a in o.args {
        let (glob, spec) = parse_args(a).map_err(anyhow::Error::msg)?;
        lines.push(spec.to_line(&glob));
    }
    for r in o.retval {
        let (glob, spec) = parse_retval(r).map_err(anyhow::Error::msg)?;
        lines.push(spec.to_line(&glob));
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: Result<(String, FnSpec), String>) -> String {
        match r {
            Ok((g, s)) => s.to_line(&g),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn uftrace_specs_become_rules() {
        let got: Vec<String> = [
            "foo@arg1/i32,arg2/s,fparg1/f64,arg3,arg4/x8,arg5/p,arg6/c,arg7/u16,fparg2/f32",
            "bar*@arg1/s200,arg2%stack+2,arg3/b%rdx,retval/u32",
            "many@fparg9,arg8/i32",
        ]
        .iter()
        .map(|t| line(parse_args(t)))
        .chain(
            ["f", "f@i32", "g@retval/f32", "h@retval", "k@s"]
                .iter()
                .map(|t| line(parse_retval(t))),
        )
        .collect();
        expect_test::expect![[r#"
            [
                "foo\t-\ti32:r0,s:r1:64,f64:x0,a:r2,x8:r3,p:r4,c:r5,u16:s0,f32:x1",
                "bar*\tu32:r0\ts:r0:200,a:s1,b:r2",
                "many\t-\tf64:s0,i32:s1",
                "f\ta:r0\t",
                "f\ti32:r0\t",
                "g\tf32:x0\t",
                "h\ta:r0\t",
                "k\ts:r0:64\t",
            ]
        "#]]
        .assert_debug_eq(&got);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let got: Vec<String> = [
            "foo",
            "@arg1",
            "foo@",
            "foo@arg0",
            "foo@arg1/q",
            "foo@arg1/i33",
            "foo@arg1/f64",
            "foo@fparg1/i32",
            "foo@arg1%rax",
            "foo@arg1%xmm9",
            "foo@arg1/s0",
            "foo@arg1/e:colour",
            "foo@bar",
            "foo@arg1,arg2,arg3,arg4,arg5,arg6,arg7,arg8,arg9,arg10,arg11,arg12,arg13",
        ]
        .iter()
        .map(|t| line(parse_args(t)))
        .chain(
            ["foo@q", "foo@retval%rax"]
                .iter()
                .map(|t| line(parse_retval(t))),
        )
        .collect();
        expect_test::expect![[r#"
            [
                "error: \"foo\": expected GLOB@arg1,arg2/s,… (uftrace's syntax)",
                "error: \"@arg1\": no function name or glob before '@'",
                "error: \"foo@\": an empty argument spec",
                "error: \"foo@arg0\": \"arg0\": \"arg0\": argument numbers go from 1 to 64",
                "error: \"foo@arg1/q\": \"arg1/q\": unknown format \"q\" (expected d, i, u, x with an optional size 8, 16, 32 or 64, s or sN, c, b, p, f, f32 or f64)",
                "error: \"foo@arg1/i33\": \"arg1/i33\": unknown format \"i33\" (expected d, i, u, x with an optional size 8, 16, 32 or 64, s or sN, c, b, p, f, f32 or f64)",
                "error: \"foo@arg1/f64\": \"arg1/f64\": a float or double argument is in an SSE register: use fpargN",
                "error: \"foo@fparg1/i32\": \"fparg1/i32\": an fpargN is a float or a double (f32, f64)",
                "error: \"foo@arg1%rax\": \"arg1%rax\": %rax: not an argument location (%rdi, %rsi, %rdx, %rcx, %r8, %r9, %xmm0-%xmm7, %stack+N)",
                "error: \"foo@arg1%xmm9\": \"arg1%xmm9\": %xmm9: the SSE argument registers are %xmm0 to %xmm7",
                "error: \"foo@arg1/s0\": \"arg1/s0\": \"s0\": a string's bound goes from 1 to 512 bytes",
                "error: \"foo@arg1/e:colour\": \"arg1/e:colour\": \"e:colour\": enums are shown by name only with -a/--auto-args (from debug info)",
                "error: \"foo@bar\": \"bar\": expected argN, fpargN or retval",
                "error: \"foo@arg1,arg2,arg3,arg4,arg5,arg6,arg7,arg8,arg9,arg10,arg11,arg12,arg13\": more than 12 arguments",
                "error: \"foo@q\": unknown format \"q\" (expected d, i, u, x with an optional size 8, 16, 32 or 64, s or sN, c, b, p, f, f32 or f64)",
                "error: \"foo@retval%rax\": a return value has no location to give",
            ]
        "#]]
        .assert_debug_eq(&got);
    }
}
