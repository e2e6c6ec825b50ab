//! Local ports: bind conflicts (Linux inet_csk_bind_conflict) and the
//! choice of ephemeral ports (RFC 6056).

use super::table::Kind;
use super::Stack;
use crate::tcp::siphash::sip24;
use crate::tcp::socket::{FourTuple, SocketId};
use crate::wire::Ipv4Addr;
use std::hash::Hasher;

impl Stack {
    /// Linux inet_csk_bind_conflict, simplified to what the contract
    /// asks: a listener on an overlapping address always conflicts; other
    /// bound sockets unless both set reuse-address; connections on the
    /// port (TIME_WAIT included) unless the new socket sets it.
    pub(super) fn bind_conflict(&self, me: SocketId, addr: Ipv4Addr, port: u16, reuse: bool) -> bool {
        if let Some(owners) = self.port_owners.get(&port) {
            for &o in owners {
                if o == me {
                    continue;
                }
                let Some(s) = self.get(o) else { continue };
                let Some((a, _)) = s.local else { continue };
                if !(a == addr || a.is_unspecified() || addr.is_unspecified()) {
                    continue;
                }
                let other_listens = matches!(s.kind, Kind::Listener(_));
                if other_listens || !reuse || !s.opts.reuse_addr {
                    return true;
                }
            }
        }
        !reuse && self.conn_ports.contains_key(&port)
    }

    /// A port nobody uses, from the ephemeral range (Linux picks at random).
    pub(super) fn free_port(&mut self) -> Option<u16> {
        let (lo, hi) = self.shared.config.ephemeral_ports;
        let range = u32::from(hi.saturating_sub(lo)) + 1;
        let start = self.shared.rng.below(range);
        (0..range)
            .map(|i| lo + ((start + i) % range) as u16)
            .find(|p| !self.port_owners.contains_key(p) && !self.conn_ports.contains_key(p) && *p != 0)
    }

    /// RFC 6056 algorithm 3: a keyed hash of the destination picks where
    /// the search starts, so ports are hard to guess yet spread.
    pub(super) fn ephemeral_for(&mut self, local: Ipv4Addr, remote: Ipv4Addr, rport: u16) -> Option<u16> {
        let (lo, hi) = self.shared.config.ephemeral_ports;
        let range = u32::from(hi.saturating_sub(lo)) + 1;
        let mut h = sip24(self.port_key);
        h.write(&local.0);
        h.write(&remote.0);
        h.write(&rport.to_be_bytes());
        let offset = (h.finish() as u32).wrapping_add(self.port_counter);
        for i in 0..range {
            let port = lo + (offset.wrapping_add(i) % range) as u16;
            let t = FourTuple { local, local_port: port, remote, remote_port: rport };
            let ours = self.steer.as_ref().is_none_or(|(s, me)| s.owner(remote, local, rport, port) == *me);
            if ours && port != 0 && !self.port_owners.contains_key(&port) && !self.conns.contains_key(&t) {
                self.port_counter = self.port_counter.wrapping_add(i + 1);
                return Some(port);
            }
        }
        None
    }
}
