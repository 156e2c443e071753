//! Splitting one line of GNU assembler text into label, statement and comment.

/// One line of assembly, split. Slices borrow from the line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split<'a> {
    /// Labels defined at the start of the line (`foo:`), in order.
    pub labels: Vec<&'a str>,
    /// The statement after the labels, trimmed, without the comment.
    pub stmt: &'a str,
    /// The comment (after `#`), without the `#`, or empty.
    pub comment: &'a str,
    /// The statement contains a `;` separator outside strings: more than one
    /// statement on the line.
    pub multiple: bool,
}

/// Splits `line`. A `#` inside a string literal does not start a comment.
pub fn split(line: &str) -> Split<'_> {
    let (code, comment, multiple) = strip_comment(line);
    let mut rest = code.trim();
    let mut labels = Vec::new();
    while let Some((label, after)) = leading_label(rest) {
        labels.push(label);
        rest = after.trim_start();
    }
    Split {
        labels,
        stmt: rest.trim_end(),
        comment,
        multiple,
    }
}

/// Returns (code, comment, has `;` outside strings).
fn strip_comment(line: &str) -> (&str, &str, bool) {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut multiple = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'#' if !in_str => return (&line[..i], &line[i + 1..], multiple),
            b';' if !in_str => multiple = true,
            _ => {}
        }
        i += 1;
    }
    (line, "", multiple)
}

/// A label at the start of `s`: a symbol name followed by `:`. Quoted names
/// are not labels we understand and are left to the caller as statements.
fn leading_label(s: &str) -> Option<(&str, &str)> {
    let end = s
        .char_indices()
        .find(|&(_, c)| !is_symbol_char(c))
        .map_or(s.len(), |(i, _)| i);
    if end == 0 || !s[end..].starts_with(':') {
        return None;
    }
    let name = &s[..end];
    if name.starts_with(|c: char| c.is_ascii_digit()) && !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, &s[end + 1..]))
}

/// Characters GNU as accepts in a symbol name.
pub fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')
}

/// Splits a statement into its first word and the rest (trimmed).
pub fn first_word(stmt: &str) -> (&str, &str) {
    match stmt.find(|c: char| c.is_whitespace()) {
        Some(i) => (&stmt[..i], stmt[i..].trim()),
        None => (stmt, ""),
    }
}

/// Splits directive arguments at top-level commas (not inside quotes or
/// parentheses).
pub fn split_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut start) = (0i32, false, 0);
    let bytes = args.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => depth -= 1,
            b',' if !in_str && depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < args.len() || !out.is_empty() {
        out.push(args[start..].trim());
    }
    out
}

/// Every symbol-like token in an operand or expression, in order.
pub fn symbols(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !is_symbol_char(c))
        .filter(|t| !t.is_empty() && !t.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_labels_statements_and_comments() {
        let s = split("foo:                                    # @foo");
        assert_eq!(s.labels, vec!["foo"]);
        assert_eq!(s.stmt, "");
        assert_eq!(s.comment, " @foo");

        let s = split("\tjmp\tg@PLT                           # TAILCALL");
        assert_eq!(s.stmt, "jmp\tg@PLT");
        assert!(s.comment.contains("TAILCALL"));

        let s = split("\t.string\t\"a#b;c\"");
        assert_eq!(s.stmt, ".string\t\"a#b;c\"");
        assert!(!s.multiple);

        let s = split(".L5: .L6:\tret");
        assert_eq!(s.labels, vec![".L5", ".L6"]);
        assert_eq!(s.stmt, "ret");

        assert!(split("\trep; ret").multiple);
        assert_eq!(split("1:").labels, vec!["1"]);
        assert!(split("\tmovl $1, %eax").labels.is_empty());
    }

    #[test]
    fn splits_arguments_at_top_level_commas() {
        assert_eq!(
            split_args(".text.foo,\"axG\",@progbits,foo,comdat"),
            vec![".text.foo", "\"axG\"", "@progbits", "foo", "comdat"]
        );
        assert_eq!(
            split_args("8(%rax,%rbx,4), %rcx"),
            vec!["8(%rax,%rbx,4)", "%rcx"]
        );
        assert!(split_args("").is_empty());
    }

    #[test]
    fn finds_symbols_in_expressions() {
        let v: Vec<_> = symbols(".L17-.L12").collect();
        assert_eq!(v, vec![".L17", ".L12"]);
        let v: Vec<_> = symbols("*fp@GOTPCREL(%rip)").collect();
        assert_eq!(v, vec!["fp", "GOTPCREL", "rip"]);
    }
}
