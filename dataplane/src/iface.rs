//! What a worker knows of the interface it serves: its MAC, the stack's
//! addresses and how to reach a destination (directly or via the gateway).

use crate::wire::ethernet::EthernetAddress;
use crate::wire::Ipv4Addr;

/// An address of the stack with its subnet prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub mac: EthernetAddress,
    pub addrs: Vec<IfAddr>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
}

impl Iface {
    /// True if `a` is one of the stack's addresses.
    pub fn has_addr(&self, a: Ipv4Addr) -> bool {
        self.addrs.iter().any(|x| x.addr == a)
    }

    /// The next hop for `dst`: `dst` itself on a connected subnet, else the
    /// gateway; `None` when there is no route (EHOSTUNREACH / ENETUNREACH).
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.addrs.iter().any(|a| a.addr.same_subnet(dst, a.prefix_len)) {
            Some(dst)
        } else {
            self.gateway
        }
    }

    /// The source address for a packet to `dst`: the stack address on the
    /// destination's subnet, else the first address.
    pub fn source_for(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addrs.iter().find(|a| a.addr.same_subnet(dst, a.prefix_len)).or(self.addrs.first()).map(|a| a.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(gw: Option<Ipv4Addr>) -> Iface {
        Iface {
            mac: EthernetAddress([2, 0, 0, 0, 0, 3]),
            addrs: vec![
                IfAddr { addr: Ipv4Addr::new(198, 18, 1, 3), prefix_len: 24 },
                IfAddr { addr: Ipv4Addr::new(198, 19, 0, 3), prefix_len: 16 },
            ],
            gateway: gw,
            mtu: 1500,
        }
    }

    #[test]
    fn next_hop_is_direct_on_link_and_gateway_off_link() {
        let gw = Ipv4Addr::new(198, 18, 1, 254);
        let i = iface(Some(gw));
        assert_eq!(i.next_hop(Ipv4Addr::new(198, 18, 1, 1)), Some(Ipv4Addr::new(198, 18, 1, 1)));
        assert_eq!(i.next_hop(Ipv4Addr::new(198, 19, 200, 1)), Some(Ipv4Addr::new(198, 19, 200, 1)));
        assert_eq!(i.next_hop(Ipv4Addr::new(198, 18, 2, 1)), Some(gw));
        assert_eq!(iface(None).next_hop(Ipv4Addr::new(198, 18, 2, 1)), None);
        assert_eq!(i.source_for(Ipv4Addr::new(198, 19, 4, 4)), Some(Ipv4Addr::new(198, 19, 0, 3)));
        assert_eq!(i.source_for(Ipv4Addr::new(198, 20, 4, 4)), Some(Ipv4Addr::new(198, 18, 1, 3)));
    }
}
