//! The bench protocol: what a server must do on each of its four ports, so
//! that any server (ours via `xstack-bench serve`, or the project's own
//! server binary) can be driven by the load generator.
//!
//! | Port | Service | Behaviour |
//! |---|---|---|
//! | base + 0 | echo | every byte received is sent back; close on end of stream (RR, RATE) |
//! | base + 1 | crr | read a request whose first 4 bytes are its total length L (big endian, L >= 4), send L bytes back, then close first (CRR; the server holds TIME_WAIT, as a web server does) |
//! | base + 2 | sink | read and discard until end of stream, then close (STREAM up) |
//! | base + 3 | source | send continuously until the peer closes (STREAM down) |

/// Default base port.
pub const BASE_PORT: u16 = 7100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Echo,
    Crr,
    Sink,
    Source,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::Echo, Service::Crr, Service::Sink, Service::Source];

    pub fn port(self, base: u16) -> u16 {
        base + self as u16
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Crr => "crr",
            Service::Sink => "sink",
            Service::Source => "source",
        }
    }
}

/// Length of the CRR request header.
pub const CRR_HEADER: usize = 4;

/// Writes the CRR header of a request of `total` bytes into `buf`.
pub fn crr_header(total: usize, buf: &mut [u8]) {
    let l = u32::try_from(total.max(CRR_HEADER)).unwrap_or(u32::MAX);
    buf[..CRR_HEADER].copy_from_slice(&l.to_be_bytes());
}

/// The total length announced by a CRR header, if it is valid.
pub fn crr_total(header: &[u8]) -> Option<usize> {
    let b: [u8; 4] = header.get(..CRR_HEADER)?.try_into().ok()?;
    let l = u32::from_be_bytes(b) as usize;
    (CRR_HEADER..=16 << 20).contains(&l).then_some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crr_header_round_trip() {
        let mut b = [0u8; 8];
        crr_header(64, &mut b);
        assert_eq!(crr_total(&b), Some(64));
        crr_header(1, &mut b);
        assert_eq!(crr_total(&b), Some(4), "requests are at least their header");
        assert_eq!(crr_total(&[0, 0, 0, 3]), None);
        assert_eq!(crr_total(&[0, 0]), None);
        assert_eq!(Service::Source.port(7100), 7103);
    }
}
