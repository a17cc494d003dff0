//! The simulator's event queue: a timing wheel in front of a binary heap.
//!
//! Events pop in (time, sequence) order exactly as from one binary heap —
//! ties at the same microsecond are FIFO by push order — but most pushes
//! go to an append-only bucket, and most pops take the last element of
//! the current slot's bucket, sorted once when the slot comes up; only
//! events pushed into the current slot go through a (small) heap. At
//! 1,000 nodes `perf` put the one big heap at a fifth of the run; with the
//! wheel a plain heap measured 10–25 % more CPU at 3,000 nodes, and
//! sorting each slot instead of heaping it saved about 10 % more.
//!
//! A bucket's buffer moves into the slot when the slot comes up, and the
//! bucket starts again empty. When loaded slots traded buffers with their
//! buckets instead, every bucket kept the capacity of the busiest slot it
//! had passed on: at 5,000 nodes the wheel held about 200 MiB per part
//! for some 25 thousand pending events, over half the run's peak memory,
//! for no measured gain in speed (`benches/RESULTS.md`, "Stop 21").
//!
//! Invariants:
//! - `slot` (sorted when loaded, the earliest last) and `near` (what was
//!   pushed for slot `cur` after that) together hold exactly the pending
//!   events of slot `cur`; bucket
//!   `s % SLOTS` holds those of slot `s` for `cur < s < cur + SLOTS`;
//!   `far` holds the rest (slot ≥ `cur + SLOTS`).
//! - No event is ever pushed before the last pop. One pushed for a slot
//!   before `cur` would go to `near` (which `pop` compares with `slot` by
//!   time and sequence), but `pop_before` never loads a slot past its
//!   limit, so the simulator's windows do not make that happen.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// log2 of a slot's width in µs.
const SLOT_SHIFT: u32 = 6;
/// A time's microsecond within its slot (a slot spans 64, one bit each
/// of a `u64` in `Queue::order_slot`).
const US_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const _: () = assert!(SLOT_SHIFT <= 6, "a slot's microseconds must fit a u64 mask");
/// Slots in the wheel (its span is `SLOTS << SLOT_SHIFT` µs ≈ 262 ms).
const SLOTS: u64 = 4096;

#[derive(Debug)]
struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed: the max-heap pops the earliest (time, sequence) first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A priority queue of `T` keyed by time in µs, FIFO among equal times.
#[derive(Debug)]
pub struct Queue<T> {
    seq: u64,
    cur: u64,
    /// Slot `cur`'s events as loaded, sorted so that the earliest is last.
    slot: Vec<Entry<T>>,
    /// Slot `cur`'s events pushed after it was loaded.
    near: BinaryHeap<Entry<T>>,
    wheel: Vec<Vec<Entry<T>>>,
    /// Scratch for `order_slot`, one list per microsecond of a slot
    /// (empty between calls; they keep their capacity).
    by_us: Vec<Vec<Entry<T>>>,
    in_wheel: usize,
    far: BinaryHeap<Entry<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            seq: 0,
            cur: 0,
            slot: Vec::new(),
            near: BinaryHeap::new(),
            wheel: (0..SLOTS).map(|_| Vec::new()).collect(),
            by_us: (0..=US_MASK).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            far: BinaryHeap::new(),
        }
    }
}

impl<T> Queue<T> {
    /// Schedules `item` at `at` µs; `at` must not precede the last pop.
    pub fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        let e = Entry {
            at,
            seq: self.seq,
            item,
        };
        let slot = (at >> SLOT_SHIFT).max(self.cur);
        if slot == self.cur {
            self.near.push(e);
        } else if slot < self.cur + SLOTS {
            self.wheel[(slot % SLOTS) as usize].push(e);
            self.in_wheel += 1;
        } else {
            self.far.push(e);
        }
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        if self.near.is_empty() && self.slot.is_empty() && !self.advance_within(u64::MAX) {
            return None;
        }
        // `Entry`'s order is reversed: the greater is the earlier.
        let from_slot = match (self.slot.last(), self.near.peek()) {
            (Some(s), Some(n)) => s > n,
            (s, _) => s.is_some(),
        };
        let e = if from_slot {
            self.slot.pop()
        } else {
            self.near.pop()
        };
        e.map(|e| (e.at, e.item))
    }

    /// The earliest event, if it is due before `limit`. Never loads a
    /// slot at or past `limit`'s, so that events pushed later for times
    /// before that slot still go to the wheel, not to the `near` heap.
    pub fn pop_before(&mut self, limit: u64) -> Option<(u64, T)> {
        loop {
            if let Some(at) = self.loaded_min() {
                return if at < limit { self.pop() } else { None };
            }
            if !self.advance_within(limit >> SLOT_SHIFT) {
                return None;
            }
        }
    }

    /// A time no later than the earliest event's (the exact time when the
    /// current slot holds one, else the start of the first slot that
    /// does), without loading anything.
    pub fn lower_bound(&self) -> Option<u64> {
        if let Some(at) = self.loaded_min() {
            return Some(at);
        }
        if self.in_wheel > 0 {
            for s in self.cur + 1..self.cur + SLOTS {
                if !self.wheel[(s % SLOTS) as usize].is_empty() {
                    return Some(s << SLOT_SHIFT);
                }
            }
        }
        self.far.peek().map(|e| e.at)
    }

    /// The earliest event's time, loading its slot (for a queue that is
    /// pushed to rarely: pushes before the loaded slot go to `near`).
    pub fn peek_at(&mut self) -> Option<u64> {
        if self.near.is_empty() && self.slot.is_empty() && !self.advance_within(u64::MAX) {
            return None;
        }
        self.loaded_min()
    }

    fn loaded_min(&self) -> Option<u64> {
        match (self.slot.last(), self.near.peek()) {
            (Some(s), Some(n)) => Some(s.at.min(n.at)),
            (Some(s), None) => Some(s.at),
            (None, n) => n.map(|n| n.at),
        }
    }

    /// The event that pops `k` pops from now (`ahead(0)` is the next), if
    /// the loaded slot holds it; the `near` heap may hold earlier ones, so
    /// this is a hint only.
    pub fn ahead(&self, k: usize) -> Option<&T> {
        let n = self.slot.len();
        (n > k).then(|| &self.slot[n - 1 - k].item)
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.slot.len() + self.near.len() + self.in_wheel + self.far.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts the loaded slot in pop order (the earliest last), in linear
    /// time: one pass deals its events by microsecond, one gathers them.
    /// Sorting by time alone, stably, is the (time, sequence) order,
    /// because a loaded slot is already in sequence order within each
    /// microsecond: it holds first what the far heap handed over (popped
    /// in (time, sequence) order, and pushed before anything that went
    /// straight to the bucket, which was not in the wheel's span yet),
    /// then the bucket's own pushes in push order. At 5,000 nodes a slot
    /// holds hundreds of events, and the queue's pops, mostly that sort,
    /// were 18% of the instructions; one sort was still cheaper than a
    /// heap pop per event (perf put the heap at 8% of a large run).
    fn order_slot(&mut self) {
        let mut used = 0u64;
        for e in self.slot.drain(..) {
            let us = e.at & US_MASK;
            used |= 1 << us;
            self.by_us[us as usize].push(e);
        }
        while used != 0 {
            let us = 63 - used.leading_zeros();
            used &= !(1 << us);
            self.slot.extend(self.by_us[us as usize].drain(..).rev());
        }
    }

    /// Moves to the next slot holding events, but not past `max_slot`,
    /// and loads it into `slot`; false if there is none by then.
    fn advance_within(&mut self, max_slot: u64) -> bool {
        loop {
            let next = if self.in_wheel == 0 {
                // Jump straight to the far heap's first slot.
                let Some(e) = self.far.peek() else {
                    return false;
                };
                e.at >> SLOT_SHIFT
            } else {
                self.cur + 1
            };
            if next > max_slot {
                return false;
            }
            self.cur = next;
            // Slot `cur + SLOTS - 1` just entered the wheel's span.
            let horizon = self.cur + SLOTS;
            while self
                .far
                .peek()
                .is_some_and(|e| e.at >> SLOT_SHIFT < horizon)
            {
                let e = self.far.pop().expect("peeked");
                let slot = e.at >> SLOT_SHIFT;
                if slot == self.cur {
                    self.slot.push(e);
                } else {
                    self.wheel[(slot % SLOTS) as usize].push(e);
                    self.in_wheel += 1;
                }
            }
            let bucket = &mut self.wheel[(self.cur % SLOTS) as usize];
            if !bucket.is_empty() {
                let mut bucket = std::mem::take(bucket);
                self.in_wheel -= bucket.len();
                if self.slot.is_empty() {
                    self.slot = bucket;
                } else {
                    self.slot.append(&mut bucket);
                }
            }
            if !self.slot.is_empty() {
                self.order_slot();
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// Room, in entries, that the wheel's buckets hold.
    fn wheel_capacity<T>(q: &Queue<T>) -> usize {
        q.wheel.iter().map(Vec::capacity).sum()
    }

    /// A burst does not leave its buffer behind in the wheel: the wheel
    /// holds room for what is pending, not for every bucket's busiest
    /// slot so far.
    #[test]
    fn a_burst_leaves_no_buffer_in_the_wheel() {
        let mut q = Queue::default();
        let slot = 1 << SLOT_SHIFT;
        for i in 0..10_000u32 {
            q.push(5 * slot, i);
        }
        for i in 0..10_000u32 {
            assert_eq!(q.pop(), Some((5 * slot, i)));
        }
        // The next slot's one event is loaded in place of the burst's.
        q.push(6 * slot, 7);
        assert_eq!(q.pop(), Some((6 * slot, 7)));
        assert!(q.is_empty());
        assert!(wheel_capacity(&q) < 64, "{}", wheel_capacity(&q));
    }

    /// Random pushes interleaved with pops, far and near, pop in exactly
    /// the (time, push order) order a plain sort gives.
    #[test]
    fn pops_in_time_then_push_order() {
        let mut rng = SplitMix::new(3);
        let mut q = Queue::default();
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut now = 0u64;
        let mut id = 0u32;
        for round in 0..20_000 {
            for _ in 0..rng.below(3) {
                let span = match rng.below(4) {
                    0 => 0,
                    1 => 64,
                    2 => 100_000,
                    _ => 2_000_000,
                };
                let at = now + rng.below(span + 1);
                q.push(at, id);
                want.push((at, id));
                id += 1;
            }
            if round % 3 != 0 {
                if let Some((at, i)) = q.pop() {
                    assert!(at >= now);
                    now = at;
                    got.push((at, i));
                }
            }
        }
        while let Some((at, i)) = q.pop() {
            got.push((at, i));
        }
        assert!(q.is_empty());
        // Ids grow with push order, so sorting by (time, id) is the
        // (time, sequence) order.
        want.sort_unstable();
        assert_eq!(got, want);
    }

    /// `ahead(k)` names the event that pops `k` pops from now while the
    /// loaded slot holds it, and nothing past the slot: it is what
    /// `Part::prefetch` is told to fetch.
    #[test]
    fn ahead_names_what_pops_later() {
        let mut rng = SplitMix::new(7);
        let mut q = Queue::default();
        for id in 0..2_000u32 {
            q.push(rng.below(5_000), id);
        }
        let mut checked = 0;
        while q.peek_at().is_some() {
            let seen: Vec<Option<u32>> = (0..4).map(|k| q.ahead(k).copied()).collect();
            let mut popped = Vec::new();
            for _ in 0..5 {
                popped.extend(q.pop().map(|(_, id)| id));
            }
            for (k, s) in seen.iter().enumerate() {
                if let Some(id) = s {
                    assert_eq!(popped.get(k), Some(id), "ahead({k})");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000, "only {checked} lookaheads were in a slot");
        assert_eq!(q.ahead(0), None);
    }

    /// Windows as the simulator runs them: `pop_before` takes exactly the
    /// events due before the limit, in order, `lower_bound` never exceeds
    /// the next event's time, and events pushed after a window (for times
    /// at or past its end) still come out in (time, push order) order.
    #[test]
    fn windows_pop_what_is_due_in_order() {
        let mut rng = SplitMix::new(5);
        let mut q = Queue::default();
        let mut pending: Vec<(u64, u32)> = Vec::new();
        let mut got = Vec::new();
        let (mut now, mut id) = (0u64, 0u32);
        for _ in 0..5_000 {
            let bound = q.lower_bound();
            let next = pending.iter().copied().min();
            assert_eq!(bound.is_some(), next.is_some());
            if let (Some(b), Some((at, _))) = (bound, next) {
                assert!(b <= at, "lower bound {b} after the next event {at}");
            }
            let end = bound.unwrap_or(now).max(now) + 1 + rng.below(700);
            while let Some((at, i)) = q.pop_before(end) {
                assert!(at < end && at >= now);
                now = at;
                got.push((at, i));
                pending.retain(|&(_, j)| j != i);
            }
            assert!(
                pending.iter().all(|&(at, _)| at >= end),
                "an event due was left"
            );
            now = now.max(end);
            for _ in 0..rng.below(4) {
                let span = [0, 64, 1_000, 300_000, 3_000_000][rng.below(5) as usize];
                let at = now + rng.below(span + 1);
                q.push(at, id);
                pending.push((at, id));
                id += 1;
            }
        }
        while let Some(e) = q.pop() {
            got.push(e);
        }
        let mut want = got.clone();
        want.sort_unstable();
        assert_eq!(got, want, "popped out of (time, push order) order");
        assert_eq!(got.len(), id as usize);
    }
}
