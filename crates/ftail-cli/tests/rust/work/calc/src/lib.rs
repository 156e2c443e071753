//! Sums of squares, one call per term.

/// The square of `x`.
///
/// ```
/// assert_eq!(calc::square(7), 49);
/// assert_eq!(calc::sum_of_squares(3), 1 + 4 + 9);
/// ```
#[inline(never)]
pub fn square(x: u64) -> u64 {
    std::hint::black_box(x * x)
}

/// `1² + 2² + … + n²`, calling [`square`] `n` times.
#[inline(never)]
pub fn sum_of_squares(n: u64) -> u64 {
    (1..=n).map(square).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn closed_form() {
        for n in 0..20 {
            assert_eq!(super::sum_of_squares(n), n * (n + 1) * (2 * n + 1) / 6);
        }
    }
}
