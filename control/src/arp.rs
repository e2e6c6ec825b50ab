//! Neighbour resolution (RFC 826): answering ARP for the stack's addresses,
//! resolving next hops with retried broadcast requests, and a cache whose
//! entries expire.
//!
//! Pure logic: time comes in as an argument and effects go out as
//! [`Action`]s, so every rule is tested with a fake clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xstack_dataplane::iface::Iface;
use xstack_dataplane::wire::arp::{Operation, Repr};
use xstack_dataplane::wire::ethernet::EthernetAddress;
use xstack_dataplane::wire::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpConfig {
    /// How long a learned entry lives without being confirmed again (the
    /// seed documents' "about 20 minutes"; Linux confirms far more often).
    pub timeout: Duration,
    /// Broadcast requests sent before giving up (Linux mcast_solicit = 3).
    pub retries: u32,
    /// Time between requests (Linux retrans_time = 1 s).
    pub retry_interval: Duration,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig { timeout: Duration::from_secs(1200), retries: 3, retry_interval: Duration::from_secs(1) }
    }
}

/// What the resolver wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit an ARP packet.
    Send { dst_mac: EthernetAddress, packet: Repr },
    /// Tell every worker the neighbour's MAC (`None`: forget it / failed).
    Update { ip: Ipv4Addr, mac: Option<EthernetAddress> },
    /// A request for `ip` is outstanding (the steering program lets its
    /// reply through on shared addresses) or no longer is.
    Pending { ip: Ipv4Addr, on: bool },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArpStats {
    pub requests_received: u64,
    pub replies_sent: u64,
    pub requests_sent: u64,
    pub replies_received: u64,
    pub learned: u64,
    pub expired: u64,
    pub failed: u64,
    pub ignored: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Incomplete {
        sent: u32,
        next_try: Instant,
    },
    Reachable {
        mac: EthernetAddress,
        confirmed: Instant,
    },
    /// Configured by the operator (like `ip neigh ... nud permanent`):
    /// never expires, never replaced by what the wire says.
    Permanent {
        mac: EthernetAddress,
    },
}

/// One line of the neighbour table, for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighEntry {
    pub ip: Ipv4Addr,
    pub mac: Option<EthernetAddress>,
    /// Time since the entry was last confirmed (or since resolution began).
    pub age: Duration,
    /// Configured by the operator; never expires.
    pub permanent: bool,
}

#[derive(Debug)]
pub struct Resolver {
    cfg: ArpConfig,
    iface: Iface,
    entries: HashMap<Ipv4Addr, (EntryState, Instant)>,
    stats: ArpStats,
}

impl Resolver {
    pub fn new(cfg: ArpConfig, iface: Iface) -> Self {
        Resolver { cfg, iface, entries: HashMap::new(), stats: ArpStats::default() }
    }

    pub fn stats(&self) -> ArpStats {
        self.stats
    }

    pub fn entries(&self, now: Instant) -> Vec<NeighEntry> {
        let mut v: Vec<NeighEntry> = self
            .entries
            .iter()
            .map(|(ip, (st, since))| NeighEntry {
                ip: *ip,
                mac: match st {
                    EntryState::Reachable { mac, .. } | EntryState::Permanent { mac } => Some(*mac),
                    EntryState::Incomplete { .. } => None,
                },
                age: now.saturating_duration_since(match st {
                    EntryState::Reachable { confirmed, .. } => *confirmed,
                    EntryState::Incomplete { .. } | EntryState::Permanent { .. } => *since,
                }),
                permanent: matches!(st, EntryState::Permanent { .. }),
            })
            .collect();
        v.sort_by_key(|e| e.ip);
        v
    }

    /// Adds a permanent entry.
    pub fn add_static(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress, out: &mut Vec<Action>) {
        self.entries.insert(ip, (EntryState::Permanent { mac }, now));
        out.push(Action::Update { ip, mac: Some(mac) });
    }

    fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress, out: &mut Vec<Action>) {
        if let Some((EntryState::Permanent { .. }, _)) = self.entries.get(&ip) {
            return;
        }
        let prev = self.entries.insert(ip, (EntryState::Reachable { mac, confirmed: now }, now));
        match prev {
            Some((EntryState::Reachable { mac: old, .. }, _)) if old == mac => {}
            Some((EntryState::Incomplete { .. }, _)) => {
                self.stats.learned += 1;
                out.push(Action::Pending { ip, on: false });
                out.push(Action::Update { ip, mac: Some(mac) });
            }
            _ => {
                self.stats.learned += 1;
                out.push(Action::Update { ip, mac: Some(mac) });
            }
        }
    }

    /// Handles an ARP packet that arrived with Ethernet source `src_mac`.
    pub fn on_packet(&mut self, now: Instant, src_mac: EthernetAddress, p: &Repr, out: &mut Vec<Action>) {
        let spa = p.source_protocol_addr;
        let sha = p.source_hardware_addr;
        // A sender must be a unicast station; an all-zero sender address is
        // an address probe (RFC 5227), which we answer but learn nothing from.
        if !sha.is_unicast() || spa.is_broadcast() || spa.is_multicast() || self.iface.has_addr(spa) {
            self.stats.ignored += 1;
            return;
        }
        let _ = src_mac;
        let for_us = self.iface.has_addr(p.target_protocol_addr);
        match p.operation {
            Operation::Request => {
                if !for_us {
                    self.stats.ignored += 1;
                    return;
                }
                self.stats.requests_received += 1;
                // RFC 826 "merge": the requester expects to talk to us, so
                // record it (Linux does the same with a STALE entry).
                if !spa.is_unspecified() {
                    self.learn(now, spa, sha, out);
                }
                self.stats.replies_sent += 1;
                out.push(Action::Send {
                    dst_mac: sha,
                    packet: Repr {
                        operation: Operation::Reply,
                        source_hardware_addr: self.iface.mac,
                        source_protocol_addr: p.target_protocol_addr,
                        target_hardware_addr: sha,
                        target_protocol_addr: spa,
                    },
                });
            }
            Operation::Reply => {
                if spa.is_unspecified() {
                    self.stats.ignored += 1;
                    return;
                }
                self.stats.replies_received += 1;
                // Learn if we asked, or refresh what we already know; never
                // create entries from unsolicited replies (Linux arp_accept=0).
                if self.entries.contains_key(&spa) {
                    self.learn(now, spa, sha, out);
                } else {
                    self.stats.ignored += 1;
                }
            }
            Operation::Unknown(_) => self.stats.ignored += 1,
        }
    }

    fn request(&mut self, ip: Ipv4Addr) -> Action {
        self.stats.requests_sent += 1;
        Action::Send {
            dst_mac: EthernetAddress::BROADCAST,
            packet: Repr {
                operation: Operation::Request,
                source_hardware_addr: self.iface.mac,
                source_protocol_addr: self.iface.source_for(ip).unwrap_or(Ipv4Addr::UNSPECIFIED),
                target_hardware_addr: EthernetAddress::ZERO,
                target_protocol_addr: ip,
            },
        }
    }

    /// A worker needs the MAC of `ip`.
    pub fn resolve(&mut self, now: Instant, ip: Ipv4Addr, out: &mut Vec<Action>) {
        match self.entries.get(&ip) {
            // The worker may have asked before our update reached it.
            Some((EntryState::Reachable { mac, .. } | EntryState::Permanent { mac }, _)) => {
                out.push(Action::Update { ip, mac: Some(*mac) })
            }
            Some((EntryState::Incomplete { .. }, _)) => {}
            None => {
                self.entries
                    .insert(ip, (EntryState::Incomplete { sent: 1, next_try: now + self.cfg.retry_interval }, now));
                out.push(Action::Pending { ip, on: true });
                let req = self.request(ip);
                out.push(req);
            }
        }
    }

    /// Retries, failures and expiry due at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut retry = Vec::new();
        let cfg = self.cfg;
        let stats = &mut self.stats;
        self.entries.retain(|ip, (st, _)| match st {
            EntryState::Reachable { confirmed, .. } if now >= *confirmed + cfg.timeout => {
                stats.expired += 1;
                out.push(Action::Update { ip: *ip, mac: None });
                false
            }
            EntryState::Incomplete { sent, next_try } if now >= *next_try => {
                if *sent >= cfg.retries {
                    stats.failed += 1;
                    out.push(Action::Pending { ip: *ip, on: false });
                    out.push(Action::Update { ip: *ip, mac: None });
                    false
                } else {
                    *sent += 1;
                    *next_try = now + cfg.retry_interval;
                    retry.push(*ip);
                    true
                }
            }
            _ => true,
        });
        for ip in retry {
            let req = self.request(ip);
            out.push(req);
        }
    }

    /// When `poll` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .map(|(st, _)| match st {
                EntryState::Incomplete { next_try, .. } => *next_try,
                EntryState::Reachable { confirmed, .. } => *confirmed + self.cfg.timeout,
                EntryState::Permanent { .. } => Instant::now() + Duration::from_secs(3600),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xstack_dataplane::iface::IfAddr;

    const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 3]);
    const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const OURS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

    fn resolver() -> Resolver {
        let iface =
            Iface { mac: OUR_MAC, addrs: vec![IfAddr { addr: OURS, prefix_len: 24 }], gateway: Some(GW), mtu: 1500 };
        Resolver::new(
            ArpConfig { timeout: Duration::from_secs(10), retries: 3, retry_interval: Duration::from_secs(1) },
            iface,
        )
    }

    fn request_from(ip: Ipv4Addr, mac: EthernetAddress, target: Ipv4Addr) -> Repr {
        Repr {
            operation: Operation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress::ZERO,
            target_protocol_addr: target,
        }
    }

    fn reply_from(ip: Ipv4Addr, mac: EthernetAddress) -> Repr {
        Repr {
            operation: Operation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: OUR_MAC,
            target_protocol_addr: OURS,
        }
    }

    #[test]
    fn answers_requests_for_our_address_and_learns_the_sender() {
        let mut r = resolver();
        let now = Instant::now();
        let mut out = vec![];
        r.on_packet(now, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), &mut out);
        assert_eq!(out[0], Action::Update { ip: PEER, mac: Some(PEER_MAC) });
        let Action::Send { dst_mac, packet } = out[1] else { panic!("{out:?}") };
        assert_eq!(dst_mac, PEER_MAC);
        assert_eq!(packet.operation, Operation::Reply);
        assert_eq!(packet.source_hardware_addr, OUR_MAC);
        assert_eq!(packet.source_protocol_addr, OURS);
        assert_eq!(packet.target_protocol_addr, PEER);
        // Not for us: ignored, nothing learned.
        out.clear();
        r.on_packet(now, PEER_MAC, &request_from(Ipv4Addr::new(198, 18, 0, 7), PEER_MAC, GW), &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().ignored, 1);
    }

    #[test]
    fn address_probes_are_answered_without_learning() {
        let mut r = resolver();
        let mut out = vec![];
        r.on_packet(Instant::now(), PEER_MAC, &request_from(Ipv4Addr::UNSPECIFIED, PEER_MAC, OURS), &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Action::Send { .. }));
        assert!(r.entries(Instant::now()).is_empty());
    }

    #[test]
    fn bogus_senders_are_ignored() {
        let mut r = resolver();
        let mut out = vec![];
        let now = Instant::now();
        r.on_packet(now, PEER_MAC, &request_from(PEER, EthernetAddress::BROADCAST, OURS), &mut out);
        r.on_packet(now, PEER_MAC, &request_from(OURS, PEER_MAC, OURS), &mut out);
        r.on_packet(now, PEER_MAC, &reply_from(PEER, PEER_MAC), &mut out); // unsolicited
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(r.stats().ignored, 3);
    }

    #[test]
    fn resolution_retries_then_fails() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        r.resolve(t0, GW, &mut out);
        assert_eq!(out[0], Action::Pending { ip: GW, on: true });
        assert!(
            matches!(out[1], Action::Send { dst_mac, packet } if dst_mac.is_broadcast() && packet.target_protocol_addr == GW && packet.source_protocol_addr == OURS)
        );
        out.clear();
        r.resolve(t0, GW, &mut out);
        assert!(out.is_empty(), "one resolution at a time");
        r.poll(t0 + Duration::from_millis(999), &mut out);
        assert!(out.is_empty());
        r.poll(t0 + Duration::from_secs(1), &mut out);
        r.poll(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out.iter().filter(|a| matches!(a, Action::Send { .. })).count(), 2);
        out.clear();
        r.poll(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(out, vec![Action::Pending { ip: GW, on: false }, Action::Update { ip: GW, mac: None }]);
        assert_eq!(r.stats().requests_sent, 3);
        assert_eq!(r.stats().failed, 1);
        assert!(r.entries(t0).is_empty());
    }

    #[test]
    fn a_reply_completes_resolution_and_the_entry_expires() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        r.resolve(t0, GW, &mut out);
        out.clear();
        let gw_mac = EthernetAddress([2, 0, 0, 0, 0, 0xfe]);
        r.on_packet(t0 + Duration::from_millis(5), gw_mac, &reply_from(GW, gw_mac), &mut out);
        assert_eq!(out, vec![Action::Pending { ip: GW, on: false }, Action::Update { ip: GW, mac: Some(gw_mac) }]);
        assert_eq!(r.entries(t0 + Duration::from_secs(2))[0].age, Duration::from_millis(1995));
        out.clear();
        r.resolve(t0 + Duration::from_secs(1), GW, &mut out);
        assert_eq!(out, vec![Action::Update { ip: GW, mac: Some(gw_mac) }]);
        out.clear();
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_millis(10_005)));
        r.poll(t0 + Duration::from_secs(10), &mut out);
        assert!(out.is_empty());
        r.poll(t0 + Duration::from_millis(10_005), &mut out);
        assert_eq!(out, vec![Action::Update { ip: GW, mac: None }]);
        assert_eq!(r.stats().expired, 1);
        // Re-resolved on next use.
        out.clear();
        r.resolve(t0 + Duration::from_secs(11), GW, &mut out);
        assert!(out.iter().any(|a| matches!(a, Action::Send { .. })));
    }

    #[test]
    fn static_entries_never_expire_nor_change() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        r.add_static(t0, PEER, PEER_MAC, &mut out);
        assert_eq!(out, vec![Action::Update { ip: PEER, mac: Some(PEER_MAC) }]);
        out.clear();
        r.poll(t0 + Duration::from_secs(100_000), &mut out);
        let other = EthernetAddress([2, 0, 0, 0, 0, 9]);
        r.on_packet(t0, other, &request_from(PEER, other, OURS), &mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Update { .. })), "{out:?}");
        assert_eq!(r.entries(t0)[0].mac, Some(PEER_MAC));
    }

    #[test]
    fn a_changed_mac_is_pushed_and_an_unchanged_one_is_not() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        r.on_packet(t0, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), &mut out);
        out.clear();
        r.on_packet(t0, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), &mut out);
        assert_eq!(out.iter().filter(|a| matches!(a, Action::Update { .. })).count(), 0);
        let new_mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        r.on_packet(t0, new_mac, &request_from(PEER, new_mac, OURS), &mut out);
        assert!(out.contains(&Action::Update { ip: PEER, mac: Some(new_mac) }));
    }
}
