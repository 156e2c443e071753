//! Its own module, so its own codegen unit: one an edit of `main.rs`
//! leaves as it was.

#[inline(never)]
pub fn report(n: u64) -> u64 {
    let s = calc::sum_of_squares(n);
    println!("{n}: {s}");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_the_sum() {
        assert_eq!(super::report(3), 14);
    }
}
