//! Prints sums of squares: `calc::square` runs 1 + 2 + … + 10 times.

mod tally;

fn main() {
    let total: u64 = (1..=10).map(tally::report).sum();
    println!("total {total}");
}
