//! Keys and the mix of operations of the key-value workloads (redis,
//! memcached).
//!
//! A key is a prefix and nine decimal digits, `key:000000123`, so that every
//! key of a run has the same length: a request is built once and only its
//! digits are rewritten from one request to the next.

use rand::rngs::StdRng;
use rand::Rng;

/// Digits of a key's number: key spaces up to a billion keys.
pub const DIGITS: usize = 9;
/// The largest key space.
pub const MAX_KEYSPACE: u64 = 1_000_000_000;

/// Writes `n` (below 10^9) as nine zero-padded digits into `out`.
pub fn write_digits(out: &mut [u8], mut n: u64) {
    for d in out[..DIGITS].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// How a connection walks the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyPattern {
    /// Uniformly random keys.
    Random,
    /// Each connection counts through the key space from its own offset.
    Sequential,
}

/// The keys of one connection.
#[derive(Debug, Clone)]
pub struct Keys {
    space: u64,
    pattern: KeyPattern,
    next: u64,
}

impl Keys {
    /// Connection `index` of `of`: sequential connections start spread
    /// over the key space.
    pub fn new(space: u64, pattern: KeyPattern, index: usize, of: usize) -> Keys {
        let space = space.clamp(1, MAX_KEYSPACE);
        let start = (u128::from(space) * index as u128 / of.max(1) as u128) as u64;
        Keys { space, pattern, next: start }
    }

    pub fn next(&mut self, rng: &mut StdRng) -> u64 {
        match self.pattern {
            KeyPattern::Random => rng.gen_range(0..self.space),
            KeyPattern::Sequential => {
                let k = self.next;
                self.next = (self.next + 1) % self.space;
                k
            }
        }
    }
}

/// Operations in proportion, e.g. `get=9,set=1`; `O` is the protocol's
/// operation type, named by [`MixOp::from_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix<O> {
    /// (operation, cumulative weight)
    table: Vec<(O, u32)>,
}

/// An operation that can appear in a mix.
pub trait MixOp: Copy + Sized {
    fn from_name(s: &str) -> Option<Self>;
}

impl<O: MixOp> Mix<O> {
    pub fn parse(s: &str) -> Result<Mix<O>, String> {
        let mut table = Vec::new();
        let mut total = 0u32;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once('=').unwrap_or((part, "1"));
            let op = O::from_name(name.trim()).ok_or_else(|| format!("unknown operation {name:?} in mix {s:?}"))?;
            let w: u32 = w.trim().parse().map_err(|_| format!("bad weight {w:?} in mix {s:?}"))?;
            if w == 0 {
                continue;
            }
            total = total.checked_add(w).filter(|&t| t <= 1_000_000).ok_or("mix weights too large")?;
            table.push((op, total));
        }
        if table.is_empty() {
            return Err(format!("mix {s:?} has no operation"));
        }
        Ok(Mix { table })
    }

    /// An operation drawn with the mix's proportions.
    pub fn pick(&self, rng: &mut StdRng) -> O {
        let total = self.table.last().map_or(1, |x| x.1);
        let r = rng.gen_range(0..total);
        self.table.iter().find(|x| r < x.1).map_or(self.table[0].0, |x| x.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        A,
        B,
    }
    impl MixOp for Op {
        fn from_name(s: &str) -> Option<Op> {
            match s {
                "a" => Some(Op::A),
                "b" => Some(Op::B),
                _ => None,
            }
        }
    }

    #[test]
    fn digits() {
        let mut b = *b"key:xxxxxxxxx!";
        write_digits(&mut b[4..], 123);
        assert_eq!(&b, b"key:000000123!");
        write_digits(&mut b[4..], 999_999_999);
        assert_eq!(&b, b"key:999999999!");
    }

    #[test]
    fn sequential_and_random_keys_stay_in_the_space() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut k = Keys::new(10, KeyPattern::Sequential, 1, 2);
        let v: Vec<u64> = (0..7).map(|_| k.next(&mut rng)).collect();
        assert_eq!(v, [5, 6, 7, 8, 9, 0, 1]);
        let mut k = Keys::new(50, KeyPattern::Random, 0, 1);
        let v: Vec<u64> = (0..2000).map(|_| k.next(&mut rng)).collect();
        assert!(v.iter().all(|&x| x < 50));
        assert!((0..50).all(|x| v.contains(&x)), "every key drawn in 2000 tries");
    }

    #[test]
    fn mixes() {
        let m: Mix<Op> = Mix::parse("a=9, b=1").unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let a = (0..10_000).filter(|_| m.pick(&mut rng) == Op::A).count();
        assert!((8_700..9_300).contains(&a), "{a}");
        let m: Mix<Op> = Mix::parse("b").unwrap();
        assert!((0..100).all(|_| m.pick(&mut rng) == Op::B));
        let m: Mix<Op> = Mix::parse("a=0,b=2").unwrap();
        assert!((0..100).all(|_| m.pick(&mut rng) == Op::B));
        for bad in ["", "c=1", "a=x", "a=0", "a=-1", "a=4000000000"] {
            assert!(Mix::<Op>::parse(bad).is_err(), "{bad}");
        }
    }
}
