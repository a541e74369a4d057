//! In-order settlement of pipelined work: items are closed in order, finish in any
//! order, and come out in the order they were closed.
//!
//! The writer keeps several InfluxDB writes running at once, but MQTT requires
//! acknowledgements in the order messages arrived (3.1.1 §4.6), and a batch's
//! messages must not be acknowledged before the batches ahead of it are settled. This
//! queue holds that invariant and nothing else (no I/O), so it is tested on its own.

use std::collections::VecDeque;

/// A queue of items, each waiting for an outcome `R`.
#[derive(Debug)]
pub struct Pipeline<T, R> {
    queue: VecDeque<Slot<T, R>>,
    next_seq: u64,
    running: usize,
}

#[derive(Debug)]
struct Slot<T, R> {
    seq: u64,
    item: T,
    outcome: Option<R>,
}

impl<T, R> Default for Pipeline<T, R> {
    fn default() -> Self {
        Pipeline {
            queue: VecDeque::new(),
            next_seq: 0,
            running: 0,
        }
    }
}

impl<T, R> Pipeline<T, R> {
    /// Appends an item whose outcome is not known yet; returns the number that
    /// [`Pipeline::complete`] takes.
    pub fn push_running(&mut self, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.running += 1;
        self.queue.push_back(Slot {
            seq,
            item,
            outcome: None,
        });
        seq
    }

    /// Appends an item that is already settled (it still waits for those ahead).
    pub fn push_done(&mut self, item: T, outcome: R) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Slot {
            seq,
            item,
            outcome: Some(outcome),
        });
    }

    /// Records the outcome of a running item. False if `seq` is unknown or already
    /// completed (the outcome is then ignored).
    pub fn complete(&mut self, seq: u64, outcome: R) -> bool {
        match self
            .queue
            .iter_mut()
            .find(|s| s.seq == seq && s.outcome.is_none())
        {
            Some(slot) => {
                slot.outcome = Some(outcome);
                self.running -= 1;
                true
            }
            None => false,
        }
    }

    /// The oldest item, if its outcome is known.
    pub fn pop_ready(&mut self) -> Option<(T, R)> {
        // Only the oldest item may leave, and only once its outcome is known.
        self.queue.front()?.outcome.as_ref()?;
        let slot = self.queue.pop_front()?;
        Some((slot.item, slot.outcome?))
    }

    /// Items whose outcome is not known yet.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Items not popped yet.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_come_out_in_the_order_they_went_in() {
        let mut p = Pipeline::default();
        let a = p.push_running("a");
        let b = p.push_running("b");
        p.push_done("c", 3);
        assert_eq!(p.running(), 2);
        // b finishes first: nothing is ready, a is still running.
        assert!(p.complete(b, 2));
        assert_eq!(p.pop_ready(), None);
        assert!(p.complete(a, 1));
        assert_eq!(p.pop_ready(), Some(("a", 1)));
        assert_eq!(p.pop_ready(), Some(("b", 2)));
        assert_eq!(p.pop_ready(), Some(("c", 3)));
        assert_eq!(p.pop_ready(), None);
        assert!(p.is_empty());
        assert_eq!(p.running(), 0);
    }

    #[test]
    fn unknown_or_repeated_completions_are_ignored() {
        let mut p: Pipeline<&str, i32> = Pipeline::default();
        let a = p.push_running("a");
        assert!(!p.complete(a + 7, 0));
        assert!(p.complete(a, 1));
        assert!(!p.complete(a, 2));
        assert_eq!(p.running(), 0);
        assert_eq!(p.pop_ready(), Some(("a", 1)));
    }

    proptest! {
        /// Whatever order the outcomes arrive in, every item comes out exactly once,
        /// in push order, and never before all items ahead of it.
        #[test]
        fn any_completion_order_settles_in_push_order(
            n in 1usize..40,
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut p = Pipeline::default();
            let seqs: Vec<u64> = (0..n).map(|i| p.push_running(i)).collect();
            // A permutation of the sequence numbers derived from `order`.
            let mut remaining = seqs.clone();
            let mut perm = Vec::new();
            for ix in order.iter().take(n) {
                let k = ix.index(remaining.len());
                perm.push(remaining.remove(k));
            }
            perm.extend(remaining);
            let mut out = Vec::new();
            for seq in perm {
                prop_assert!(p.complete(seq, seq * 10));
                while let Some((item, r)) = p.pop_ready() {
                    prop_assert_eq!(r, item as u64 * 10);
                    out.push(item);
                }
            }
            prop_assert_eq!(out, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(p.running(), 0);
            prop_assert!(p.is_empty());
        }
    }
}
