//! Path MTUs learnt from ICMP "fragmentation needed" (RFC 1191), kept per
//! destination as Linux keeps them in the route's next-hop exceptions
//! (__ip_rt_update_pmtu): for ten minutes (ip_rt_mtu_expires), lowered
//! only, and read when a connection to the destination opens, so a new
//! connection announces and uses the narrower path's MSS from its SYN on.
//!
//! One table per stack (a worker's): a connection on another worker
//! learns the path from its own segments' ICMP errors.

use super::time::Instant;
use crate::wire::Ipv4Addr;
use std::collections::HashMap;
use std::time::Duration;

/// Linux's ip_rt_mtu_expires.
pub const EXPIRES: Duration = Duration::from_secs(600);

/// Destinations remembered at most; past it the entry closest to expiry
/// goes (Linux bounds its exceptions per hash chain and reclaims the
/// oldest, fnhe_oldest).
pub const CAPACITY: usize = 4096;

/// Linux's ip_rt_min_pmtu (512 bytes of data behind 40 of headers): a
/// smaller MTU, or none (0, from routers older than RFC 1191), is taken
/// as this.
pub const MIN_PMTU: u16 = 552;

#[derive(Debug, Default)]
pub(crate) struct PathMtus {
    paths: HashMap<Ipv4Addr, (u16, Instant)>,
}

impl PathMtus {
    /// The MTU learnt for `remote`, if one is and has not expired.
    pub fn get(&self, remote: Ipv4Addr, now: Instant) -> Option<u16> {
        self.paths.get(&remote).filter(|&&(_, expires)| now < expires).map(|&(mtu, _)| mtu)
    }

    /// `remote` is reached through a next hop of `mtu` bytes (at least
    /// MIN_PMTU): remembered when narrower than what is known (a report
    /// of a wider path changes nothing, as __ip_rt_update_pmtu).
    pub fn lower(&mut self, remote: Ipv4Addr, mtu: u16, now: Instant) {
        let mtu = mtu.max(MIN_PMTU);
        if self.get(remote, now).is_some_and(|known| known <= mtu) {
            return;
        }
        if self.paths.len() >= CAPACITY && !self.paths.contains_key(&remote) {
            self.paths.retain(|_, &mut (_, expires)| now < expires);
            if self.paths.len() >= CAPACITY {
                let oldest = self.paths.iter().min_by_key(|(_, &(_, expires))| expires).map(|(&a, _)| a);
                if let Some(a) = oldest {
                    self.paths.remove(&a);
                }
            }
        }
        self.paths.insert(remote, (mtu, now + EXPIRES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn a_path_is_lowered_only_and_expires_after_ten_minutes() {
        let mut p = PathMtus::default();
        let t0 = Instant::from_secs(100);
        assert_eq!(p.get(A, t0), None);
        p.lower(A, 1400, t0);
        p.lower(A, 1450, t0);
        assert_eq!(p.get(A, t0), Some(1400));
        p.lower(A, 100, t0);
        assert_eq!(p.get(A, t0), Some(MIN_PMTU));
        assert_eq!(p.get(A, t0 + EXPIRES - Duration::from_secs(1)), Some(MIN_PMTU));
        assert_eq!(p.get(A, t0 + EXPIRES), None);
        // Once expired, any report sets it again.
        p.lower(A, 1450, t0 + EXPIRES);
        assert_eq!(p.get(A, t0 + EXPIRES), Some(1450));
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_entry_closest_to_expiry() {
        let mut p = PathMtus::default();
        let t0 = Instant::from_secs(100);
        for i in 0..CAPACITY as u32 {
            p.lower(Ipv4Addr::from_u32(0xc612_0000 + i), 1000, t0 + Duration::from_millis(u64::from(i)));
        }
        let first = Ipv4Addr::from_u32(0xc612_0000);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(p.get(first, now), Some(1000));
        p.lower(Ipv4Addr::new(198, 19, 0, 1), 900, now);
        assert_eq!(p.paths.len(), CAPACITY);
        assert_eq!(p.get(first, now), None, "the oldest went");
        assert_eq!(p.get(Ipv4Addr::new(198, 19, 0, 1), now), Some(900));
    }
}
