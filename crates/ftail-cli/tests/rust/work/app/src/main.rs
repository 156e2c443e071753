//! Prints sums of squares: `calc::square` runs 1 + 2 + … + 10 times.

#[inline(never)]
fn report(n: u64) -> u64 {
    let s = calc::sum_of_squares(n);
    println!("{n}: {s}");
    s
}

fn main() {
    let total: u64 = (1..=10).map(report).sum();
    println!("total {total}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_the_sum() {
        assert_eq!(super::report(3), 14);
    }
}
