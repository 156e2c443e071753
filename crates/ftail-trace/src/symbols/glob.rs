//! Shell-style globs over symbol names: `*`, `?` and `[...]` classes.

use super::Symbol;

/// A compiled glob.
///
/// `*` matches any run of characters (`::` included), `?` one character,
/// `[abc]`, `[a-z]` and `[!a-z]` (or `[^a-z]`) one character of a class;
/// `\` makes the next character literal. A `[` without a `]` to close a
/// class is literal, so `operator[]` needs no escape (`\[clone .cold]`
/// does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles `pattern`; every pattern is valid.
    pub fn new(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '\\' if i < chars.len() => {
                    tokens.push(Token::Char(chars[i]));
                    i += 1;
                }
                '[' => match class(&chars[i..]) {
                    Some((token, used)) => {
                        tokens.push(token);
                        i += used;
                    }
                    None => tokens.push(Token::Char('[')),
                },
                c => tokens.push(Token::Char(c)),
            }
        }
        Glob { tokens }
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0, 0);
        // Where the last `*` was, and the text position it has eaten up to.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                Some(tok) if tok.matches(text[t]) => {
                    t += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Star)
    }

    /// Whether `sym` matches: its name without parameters, its signature
    /// or its mangled name, so that `ns::Klass::*` and `_ZN2ns*` both
    /// select `ns::Klass::method`.
    pub fn matches(&self, sym: &Symbol) -> bool {
        self.is_match(&sym.name) || self.is_match(&sym.signature) || self.is_match(&sym.mangled)
    }
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A class after its `[`: the token and the characters it used, `]`
/// included; `None` when there is no closing `]`.
fn class(chars: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && i > first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

/// Whether `glob` matches `sym` (see [`Glob::matches`]); compile the glob
/// once with [`Glob::new`] to test many symbols.
pub fn matches(glob: &str, sym: &Symbol) -> bool {
    Glob::new(glob).matches(sym)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_globs() {
        let m = |g: &str, t: &str| Glob::new(g).is_match(t);
        assert!(m("ns::Klass::*", "ns::Klass::method"));
        assert!(m("*", ""));
        assert!(m("lua?_*", "luaH_get"));
        assert!(!m("lua?_*", "luaHH_get"));
        assert!(m("*::get*", "a::b::getx"));
        assert!(!m("*::get", "a::b::getx"));
        assert!(m("f[0-9]", "f7"));
        assert!(!m("f[!0-9]", "f7"));
        assert!(m("f[^0-9]", "fx"));
        assert!(m("operator[]", "operator[]"));
        assert!(m(r"*\[clone .cold]", "foo [clone .cold]"));
        assert!(!m("*[clone .cold]", "foo [clone .cold]"));
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
        assert!(m("[]]", "]"));
        assert!(m("*a*a*a*", "banana split a"));
        assert!(!m("*a*a*a*a*", "banana"));
    }
}
