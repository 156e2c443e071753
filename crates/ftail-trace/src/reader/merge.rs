//! Several threads' steps in one time order: a k-way merge that holds
//! one pending item per thread in a heap, so memory follows the number of
//! threads, not their length. Ties keep the threads' order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Merges `sources` (each already in time order) by the time `key` gives;
/// yields (source index, item).
pub struct Merge<I: Iterator, K> {
    sources: Vec<I>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    pending: Vec<Option<I::Item>>,
    key: K,
    /// The source whose pending item comes next, kept out of the heap: a
    /// source that stays ahead (one thread, or a long run of one) costs
    /// a comparison an item, not a pop and a push.
    front: Option<(u64, usize)>,
}

impl<I: Iterator, K: Fn(&I::Item) -> u64> Merge<I, K> {
    /// Starts the merge.
    pub fn new(mut sources: Vec<I>, key: K) -> Self {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        let pending = sources
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let item = s.next();
                if let Some(it) = &item {
                    heap.push(Reverse((key(it), i)));
                }
                item
            })
            .collect();
        Merge {
            sources,
            heap,
            pending,
            key,
            front: None,
        }
    }

    /// The sources, for their state (damage, open frames) after the merge.
    pub fn sources(&self) -> &[I] {
        &self.sources
    }
}

impl<I: Iterator, K: Fn(&I::Item) -> u64> Iterator for Merge<I, K> {
    type Item = (usize, I::Item);

    fn next(&mut self) -> Option<(usize, I::Item)> {
        let (_, i) = match self.front.take() {
            Some(front) => front,
            None => self.heap.pop()?.0,
        };
        let item = self.pending[i].take()?;
        self.pending[i] = self.sources[i].next();
        if let Some(next) = &self.pending[i] {
            let at = ((self.key)(next), i);
            match self.heap.peek() {
                Some(&Reverse(top)) if top < at => self.heap.push(Reverse(at)),
                _ => self.front = Some(at),
            }
        }
        Some((i, item))
    }
}

#[cfg(test)]
mod tests {
    use super::Merge;

    #[test]
    fn yields_every_item_in_time_order_ties_by_source() {
        let a = vec![1u64, 4, 4, 9].into_iter();
        let b = vec![2u64, 4, 10].into_iter();
        let c = Vec::<u64>::new().into_iter();
        let merged: Vec<(usize, u64)> = Merge::new(vec![a, b, c], |&t| t).collect();
        assert_eq!(
            merged,
            [(0, 1), (1, 2), (0, 4), (0, 4), (1, 4), (0, 9), (1, 10)]
        );
    }
}
