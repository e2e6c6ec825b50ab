//! The sender's SACK scoreboard (RFC 6675 section 3): the ranges above
//! SND.UNA the peer reported holding (RFC 2018 SACK blocks), kept sorted
//! and disjoint, for loss recovery's pipe and NextSeg() and for skipping
//! what the peer holds when retransmitting.

use super::SeqNum;

/// SACK scoreboard entries kept by the sender.
const SCOREBOARD: usize = 8;

/// The sender's record of SACKed ranges above SND.UNA (RFC 6675 section 3).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scoreboard {
    blocks: [(SeqNum, SeqNum); SCOREBOARD],
    n: usize,
}

impl Scoreboard {
    fn blocks(&self) -> &[(SeqNum, SeqNum)] {
        &self.blocks[..self.n]
    }

    /// Merges `l..r` in, keeping the blocks sorted and disjoint. When full,
    /// the new block is dropped: SACK is advisory (RFC 2018 section 8).
    pub fn add(&mut self, l: SeqNum, r: SeqNum) {
        if l >= r {
            return;
        }
        let mut i = 0;
        while i < self.n && self.blocks[i].1 < l {
            i += 1;
        }
        let mut j = i;
        let (mut s, mut e) = (l, r);
        while j < self.n && self.blocks[j].0 <= r {
            s = s.min(self.blocks[j].0);
            e = e.max(self.blocks[j].1);
            j += 1;
        }
        if i == j {
            if self.n == SCOREBOARD {
                return;
            }
            self.blocks.copy_within(i..self.n, i + 1);
            self.n += 1;
        } else if j - i > 1 {
            self.blocks.copy_within(j..self.n, i + 1);
            self.n -= j - i - 1;
        }
        self.blocks[i] = (s, e);
    }

    /// Forgets everything below `una`.
    pub fn prune(&mut self, una: SeqNum) {
        let mut k = 0;
        for i in 0..self.n {
            let (s, e) = self.blocks[i];
            if e > una {
                self.blocks[k] = (s.max(una), e);
                k += 1;
            }
        }
        self.n = k;
    }

    /// Forgets every block (the peer reneged, RFC 2018 section 8).
    pub fn clear(&mut self) {
        self.n = 0;
    }

    pub fn sacked_bytes(&self) -> u32 {
        self.blocks().iter().map(|(s, e)| e.dist(*s)).sum()
    }

    pub fn highest(&self) -> Option<SeqNum> {
        self.blocks().last().map(|b| b.1)
    }

    /// If `seq` is SACKed, the end of its block.
    pub fn sacked_end(&self, seq: SeqNum) -> Option<SeqNum> {
        self.blocks().iter().find(|(s, e)| seq.in_range(*s, *e)).map(|b| b.1)
    }

    /// The start of the first block above `seq`.
    pub fn next_start(&self, seq: SeqNum) -> Option<SeqNum> {
        self.blocks().iter().find(|(s, _)| *s > seq).map(|b| b.0)
    }

    /// Unsacked bytes in `from..to`.
    pub fn holes_between(&self, from: SeqNum, to: SeqNum) -> u32 {
        if from >= to {
            return 0;
        }
        let mut covered = 0;
        for &(s, e) in self.blocks() {
            let (a, b) = (s.max(from), e.min(to));
            if a < b {
                covered += b.dist(a);
            }
        }
        to.dist(from) - covered
    }
}
