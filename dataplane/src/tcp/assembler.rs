//! Out-of-order bookkeeping for the receive side: which byte ranges past
//! the next expected byte have arrived. A fixed array of ranges, so no
//! allocation per segment. When full, data below the highest range evicts
//! that range (Linux tcp_prune_ofo_queue drops out-of-order data from the
//! top, and always queues in-sequence data: a hole must be fillable from
//! its start); data above every range is dropped (the sender retransmits
//! it).

/// Most disjoint out-of-order ranges kept.
pub const MAX_RANGES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// Offset from the next expected byte.
    pub start: usize,
    pub end: usize,
}

#[derive(Clone)]
pub struct Assembler {
    ranges: [Range; MAX_RANGES],
    count: usize,
    /// Index of the range holding the latest segment, which RFC 2018
    /// section 4 wants first among the SACK blocks.
    latest: Option<usize>,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler { ranges: [Range::default(); MAX_RANGES], count: 0, latest: None }
    }
}

/// The ranges held, not the array's stale slots: two assemblers holding
/// the same ranges print the same.
impl core::fmt::Debug for Assembler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Assembler").field("ranges", &self.ranges()).field("latest", &self.latest()).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyHoles;

impl Assembler {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges[..self.count]
    }

    pub fn latest(&self) -> Option<Range> {
        self.latest.map(|i| self.ranges[i])
    }

    pub fn clear(&mut self) {
        self.count = 0;
        self.latest = None;
    }

    /// Where the highest range ends (0: no range).
    pub fn end(&self) -> usize {
        self.ranges().last().map_or(0, |r| r.end)
    }

    /// Forgets the highest range (memory pruning, Linux
    /// tcp_prune_ofo_queue).
    pub fn pop_highest(&mut self) -> Option<Range> {
        self.count = self.count.checked_sub(1)?;
        if self.latest == Some(self.count) {
            self.latest = None;
        }
        Some(self.ranges[self.count])
    }

    /// Records bytes `start..end` as received. With every range in use,
    /// a new range below the highest one takes the highest one's place;
    /// the evicted range is returned (its bytes are forgotten: the peer,
    /// which may have been told of them in SACK blocks, will send them
    /// again). A new range above every other is refused.
    pub fn add(&mut self, start: usize, end: usize) -> Result<Option<Range>, TooManyHoles> {
        if start >= end {
            return Ok(None);
        }
        // First range that ends at or after `start` (touching merges).
        let mut i = 0;
        while i < self.count && self.ranges[i].end < start {
            i += 1;
        }
        // Ranges i..j overlap or touch the new one.
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < self.count && self.ranges[j].start <= end {
            s = s.min(self.ranges[j].start);
            e = e.max(self.ranges[j].end);
            j += 1;
        }
        let mut evicted = None;
        if i == j {
            if self.count == MAX_RANGES {
                if i == self.count {
                    return Err(TooManyHoles);
                }
                // Make room: the highest range goes.
                self.count -= 1;
                evicted = Some(self.ranges[self.count]);
            }
            self.ranges.copy_within(i..self.count, i + 1);
            self.count += 1;
        } else if j - i > 1 {
            self.ranges.copy_within(j..self.count, i + 1);
            self.count -= j - i - 1;
        }
        self.ranges[i] = Range { start: s, end: e };
        self.latest = Some(i);
        Ok(evicted)
    }

    /// If bytes from offset 0 are present, removes that run and returns
    /// its length, shifting the other ranges down by it.
    pub fn remove_front(&mut self) -> usize {
        if self.count == 0 || self.ranges[0].start != 0 {
            return 0;
        }
        let n = self.ranges[0].end;
        self.ranges.copy_within(1..self.count, 0);
        self.count -= 1;
        for r in &mut self.ranges[..self.count] {
            r.start -= n;
            r.end -= n;
        }
        self.latest = match self.latest {
            Some(0) | None => None,
            Some(k) => Some(k - 1),
        };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_and_removes() {
        let mut a = Assembler::default();
        a.add(10, 20).unwrap();
        a.add(30, 40).unwrap();
        assert_eq!(a.latest(), Some(Range { start: 30, end: 40 }));
        a.add(20, 30).unwrap();
        assert_eq!(a.ranges(), &[Range { start: 10, end: 40 }]);
        assert_eq!(a.remove_front(), 0);
        a.add(0, 5).unwrap();
        assert_eq!(a.remove_front(), 5);
        assert_eq!(a.ranges(), &[Range { start: 5, end: 35 }]);
    }

    #[test]
    fn bounded() {
        let mut a = Assembler::default();
        for i in 0..MAX_RANGES {
            a.add(i * 10 + 2, i * 10 + 5).unwrap();
        }
        assert_eq!(a.add(1000, 1001), Err(TooManyHoles), "above every range: refused");
        // Extending an existing range still works.
        assert_eq!(a.add(5, 8), Ok(None));
        // In-sequence data (offset 0) not touching the first range takes
        // the highest range's place.
        let top = *a.ranges().last().unwrap();
        assert_eq!(a.add(0, 1), Ok(Some(top)));
        assert_eq!(a.ranges().len(), MAX_RANGES);
        assert_eq!(a.remove_front(), 1);
        assert_eq!(a.ranges()[0], Range { start: 1, end: 7 }, "2..8 shifted down by 1");
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(adds in proptest::collection::vec((0usize..200, 1usize..30), 0..40)) {
            let mut a = Assembler::default();
            let mut bits = [false; 256];
            for (s, l) in adds {
                if let Ok(evicted) = a.add(s, s + l) {
                    if let Some(r) = evicted {
                        for b in &mut bits[r.start..r.end] { *b = false; }
                    }
                    for b in &mut bits[s..s + l] { *b = true; }
                }
            }
            let mut from_ranges = [false; 256];
            let mut prev_end = None;
            for r in a.ranges() {
                prop_assert!(r.start < r.end);
                if let Some(p) = prev_end { prop_assert!(r.start > p, "ranges sorted, disjoint, not touching"); }
                prev_end = Some(r.end);
                for b in &mut from_ranges[r.start..r.end] { *b = true; }
            }
            prop_assert_eq!(&bits[..], &from_ranges[..]);
            let front = bits.iter().take_while(|&&b| b).count();
            prop_assert_eq!(a.remove_front(), front);
        }
    }
}
