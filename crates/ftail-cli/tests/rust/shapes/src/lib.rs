//! Shapes of Rust code that ftail's sites must cover: direct and indirect
//! tail calls, jump tables beside tail calls, generics, closures, trait
//! objects, panics that unwind through frames, and threads.

use std::hint::black_box;

/// A leaf.
#[inline(never)]
pub fn leaf(x: u64) -> u64 {
    black_box(x).wrapping_mul(3) ^ 5
}

/// A direct tail call.
#[inline(never)]
pub fn tail_direct(x: u64) -> u64 {
    leaf(black_box(x) + 1)
}

/// A tail call through a trait object.
#[inline(never)]
pub fn tail_dyn(f: &dyn Fn(u64) -> u64, x: u64) -> u64 {
    f(x + 1)
}

/// A jump table whose arms also make indirect tail calls.
#[inline(never)]
pub fn table(x: u32, f: &dyn Fn(u64) -> u64, g: fn(u64) -> u64) -> u64 {
    match black_box(x) {
        0 => 17,
        1 => f(3),
        2 => 99,
        3 => 1234,
        4 => g(u64::from(x)),
        5 => 77,
        6 => 12,
        7 => u64::from(x) * 5,
        _ => g(u64::from(x) + 1),
    }
}

/// A generic function, one instance per type.
#[inline(never)]
pub fn generic<T: Copy + Into<u64>>(v: T) -> u64 {
    leaf(v.into())
}

/// A closure called through a generic.
#[inline(never)]
pub fn apply<F: Fn(u64) -> u64>(f: F, x: u64) -> u64 {
    f(x)
}

/// Recursion.
#[inline(never)]
pub fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Panics below two frames of its own when `x` is odd.
#[inline(never)]
pub fn may_panic(x: u64) -> u64 {
    deeper(black_box(x)) + 1
}

#[inline(never)]
fn deeper(x: u64) -> u64 {
    if x % 2 == 1 {
        panic!("odd {x}");
    }
    leaf(x)
}

/// Catches the panic of `may_panic`; returns whether one was caught.
#[inline(never)]
pub fn catch(x: u64) -> bool {
    std::panic::catch_unwind(|| may_panic(x)).is_err()
}

/// Work on `threads` threads, each calling `leaf` `n` times.
#[inline(never)]
pub fn threads(threads: u64, n: u64) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || (0..n).map(|i| leaf(i + t)).fold(0, u64::wrapping_add)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_compute() {
        assert_eq!(leaf(1), 6);
        assert_eq!(tail_direct(0), 6);
        assert_eq!(tail_dyn(&|x| x * 2, 1), 4);
        assert_eq!(table(0, &|x| x, leaf), 17);
        assert_eq!(table(4, &|x| x, leaf), leaf(4));
        assert_eq!(generic(3u8) + generic(3u32), 2 * leaf(3));
        assert_eq!(apply(|x| x + 1, 1), 2);
        assert_eq!(fib(10), 55);
        let want = [0, 1, 2, 1, 2, 3].map(leaf).iter().fold(0, |a, &b| u64::wrapping_add(a, b));
        assert_eq!(threads(2, 3), want);
    }

    #[test]
    fn panics_are_caught() {
        assert!(catch(3));
        assert!(!catch(4));
    }
}
