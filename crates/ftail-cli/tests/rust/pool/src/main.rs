//! Work spread over rayon's pool and tokio's multi-threaded runtime: how
//! often each function of this crate runs is fixed by its arguments.

use rayon::prelude::*;

const LEAVES: u64 = 1000;
const DEPTH: u32 = 4;
const FANOUT: u64 = 3;

#[inline(never)]
fn leaf(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(2_654_435_761) % 1009)
}

#[inline(never)]
fn spread() -> u64 {
    (0..LEAVES).into_par_iter().map(leaf).sum()
}

/// `spread` on a pool of its own whose threads are joined before it
/// returns (the global pool's workers would still be asleep in rayon when
/// the process exits, their frames open).
fn spread_on_a_scoped_pool() -> u64 {
    rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build_scoped(|thread| thread.run(), |pool| pool.install(spread))
        .unwrap()
}

/// A task tree: each node below `DEPTH` spawns `FANOUT` children.
#[inline(never)]
fn node(depth: u32, id: u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>> {
    Box::pin(async move {
        let mut sum = visit(id);
        if depth < DEPTH {
            let children: Vec<_> = (0..FANOUT)
                .map(|k| tokio::spawn(node(depth + 1, id * FANOUT + k)))
                .collect();
            for child in children {
                sum += child.await.unwrap();
            }
        }
        sum
    })
}

#[inline(never)]
fn visit(id: u64) -> u64 {
    std::hint::black_box(id % 7)
}

fn main() {
    println!("spread {}", spread_on_a_scoped_pool());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    println!("tree {}", runtime.block_on(node(0, 1)));
    println!("macro {}", run_macro());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run_macro() -> u64 {
    let handles: Vec<_> = (0..8)
        .map(|i| tokio::spawn(async move { visit(i) }))
        .collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    sum
}
