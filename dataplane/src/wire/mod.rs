//! Wire formats: checked zero-copy views over byte buffers plus parsed
//! representations.
//!
//! Every format follows the same pattern (after smoltcp's `wire` module):
//! - `Packet<T: AsRef<[u8]>>` is a view over a buffer. `Packet::new_checked`
//!   validates every length the accessors rely on, so after it succeeds no
//!   accessor can panic, whatever the bytes say.
//! - `Repr` is the parsed, validated meaning of a header. `Repr::parse`
//!   rejects what a host must drop (bad checksums, lying lengths, ...) and
//!   `Repr::emit` writes a header that `parse` accepts again.
//!
//! Field offsets are named once, in each module's `field` module.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

use core::fmt;

/// Why a frame was rejected. `Copy` and allocation-free: it is produced on
/// the data path for every dropped frame and feeds the drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    Truncated,
    /// A field holds a value the format does not allow (version, IHL, ...).
    Malformed,
    /// The checksum does not verify.
    Checksum,
    /// Well formed, but not something this stack handles (an unknown
    /// ethertype, an IPv4 fragment, an ARP hardware type other than Ethernet).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::Malformed => "malformed",
            Error::Checksum => "bad checksum",
            Error::Unsupported => "unsupported",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// A byte range of a header, for the `field` modules.
pub(crate) type Field = core::ops::Range<usize>;

/// An IPv4 address in host representation. A thin wrapper so addresses never
/// get confused with other `u32`s and print dotted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ipv4Addr(pub [u8; 4]);

impl Ipv4Addr {
    pub const UNSPECIFIED: Ipv4Addr = Ipv4Addr([0; 4]);
    pub const BROADCAST: Ipv4Addr = Ipv4Addr([255; 4]);

    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Self {
        Ipv4Addr([a, b, c, d])
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        let mut a = [0; 4];
        a.copy_from_slice(&b[..4]);
        Ipv4Addr(a)
    }

    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub const fn from_u32(v: u32) -> Self {
        Ipv4Addr(v.to_be_bytes())
    }

    pub fn is_unspecified(self) -> bool {
        self.0 == [0; 4]
    }

    pub fn is_broadcast(self) -> bool {
        self.0 == [255; 4]
    }

    pub fn is_multicast(self) -> bool {
        self.0[0] & 0xf0 == 0xe0
    }

    /// True when `self` and `other` share the first `prefix_len` bits.
    pub fn same_subnet(self, other: Ipv4Addr, prefix_len: u8) -> bool {
        if prefix_len == 0 {
            return true;
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len.min(32)));
        self.to_u32() & mask == other.to_u32() & mask
    }
}

impl From<std::net::Ipv4Addr> for Ipv4Addr {
    fn from(a: std::net::Ipv4Addr) -> Self {
        Ipv4Addr(a.octets())
    }
}

impl From<Ipv4Addr> for std::net::Ipv4Addr {
    fn from(a: Ipv4Addr) -> Self {
        std::net::Ipv4Addr::from(a.0)
    }
}

impl fmt::Display for Ipv4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

impl fmt::Debug for Ipv4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::str::FromStr for Ipv4Addr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        s.parse::<std::net::Ipv4Addr>().map(Into::into)
    }
}
