//! Runs each shape a known number of times: `shapes [panic]`.

use shapes::*;

fn main() {
    let mut sum = 0u64;
    for i in 0..10 {
        sum = sum.wrapping_add(tail_direct(i));
        sum = sum.wrapping_add(tail_dyn(&|x| x + i, i));
        sum = sum.wrapping_add(table(i as u32 % 9, &|x| x * 2, leaf));
        sum = sum.wrapping_add(generic(i as u8) + generic(i as u32));
        sum = sum.wrapping_add(apply(|x| x ^ i, i));
    }
    sum = sum.wrapping_add(fib(15));
    let caught = (0..4).filter(|&i| catch(i)).count();
    sum = sum.wrapping_add(threads(3, 100));
    println!("sum {sum} caught {caught}");
    if std::env::args().nth(1).as_deref() == Some("panic") {
        may_panic(1);
    }
}
