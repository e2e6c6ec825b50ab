//! Neighbour resolution (RFC 826): answering ARP for the stack's addresses,
//! resolving next hops with retried broadcast requests, and a bounded cache
//! whose entries expire.
//!
//! Learning follows Linux (arp_process, neigh_event_ns): a request for one
//! of our addresses records its on-link sender, since it is about to talk
//! to us, and a reply is taken only for an entry we already have. Such an
//! entry stays here, unused (Linux's NUD_STALE), until a worker needs that
//! next hop; only then does it go to the workers, so a flood of requests
//! from made-up senders costs the workers nothing. The table is bounded
//! (`max_entries`, Linux's gc_thresh3): a new entry first displaces the
//! unused entry confirmed longest ago, then the used one (workers are told
//! to forget it and ask again when they need it); with nothing to
//! displace (resolutions in progress and permanent entries only) a
//! resolution fails and a sender is not learned, counted as `table_full`.
//! Entries are kept in order of their next deadline, so each round costs
//! what is due, never a walk over the table.
//!
//! Pure logic: time comes in as an argument and effects go out as
//! [`Action`]s, so every rule is tested with a fake clock.

use std::collections::{BTreeSet, HashMap};
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
    /// Entries at most, permanent ones included (Linux gc_thresh3 = 1024).
    pub max_entries: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            timeout: Duration::from_secs(1200),
            retries: 3,
            retry_interval: Duration::from_secs(1),
            max_entries: 1024,
        }
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
    /// Entries displaced to make room for a new one.
    pub evicted: u64,
    /// New entries refused: the table was full of entries that cannot go.
    pub table_full: u64,
}

impl ArpStats {
    /// Every counter with its name, for the summary, `stats` and metrics.
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("requests_received", self.requests_received),
            ("replies_sent", self.replies_sent),
            ("requests_sent", self.requests_sent),
            ("replies_received", self.replies_received),
            ("learned", self.learned),
            ("expired", self.expired),
            ("failed", self.failed),
            ("ignored", self.ignored),
            ("evicted", self.evicted),
            ("table_full", self.table_full),
        ]
    }
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

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: EntryState,
    /// When the entry was made (the age of one still resolving).
    since: Instant,
    /// The workers have it (or wait for it): changes and removal are
    /// pushed to them.
    used: bool,
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
    entries: HashMap<Ipv4Addr, Entry>,
    /// Reachable entries no worker asked for, by last confirmation: they
    /// expire in this order and are displaced first.
    unused: BTreeSet<(Instant, Ipv4Addr)>,
    /// Reachable entries the workers hold, by last confirmation.
    used: BTreeSet<(Instant, Ipv4Addr)>,
    /// Resolutions in progress, by next request.
    retries: BTreeSet<(Instant, Ipv4Addr)>,
    stats: ArpStats,
}

impl Resolver {
    pub fn new(cfg: ArpConfig, iface: Iface) -> Self {
        Resolver {
            cfg,
            iface,
            entries: HashMap::new(),
            unused: BTreeSet::new(),
            used: BTreeSet::new(),
            retries: BTreeSet::new(),
            stats: ArpStats::default(),
        }
    }

    pub fn stats(&self) -> ArpStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self, now: Instant) -> Vec<NeighEntry> {
        let mut v: Vec<NeighEntry> = self
            .entries
            .iter()
            .map(|(ip, e)| NeighEntry {
                ip: *ip,
                mac: match e.state {
                    EntryState::Reachable { mac, .. } | EntryState::Permanent { mac } => Some(mac),
                    EntryState::Incomplete { .. } => None,
                },
                age: now.saturating_duration_since(match e.state {
                    EntryState::Reachable { confirmed, .. } => confirmed,
                    EntryState::Incomplete { .. } | EntryState::Permanent { .. } => e.since,
                }),
                permanent: matches!(e.state, EntryState::Permanent { .. }),
            })
            .collect();
        v.sort_by_key(|e| e.ip);
        v
    }

    /// The deadline index an entry is in, if any.
    fn index_of(&mut self, e: &Entry) -> Option<(&mut BTreeSet<(Instant, Ipv4Addr)>, Instant)> {
        match e.state {
            EntryState::Incomplete { next_try, .. } => Some((&mut self.retries, next_try)),
            EntryState::Reachable { confirmed, .. } if e.used => Some((&mut self.used, confirmed)),
            EntryState::Reachable { confirmed, .. } => Some((&mut self.unused, confirmed)),
            EntryState::Permanent { .. } => None,
        }
    }

    /// Puts `e` in the table at `ip`, replacing what was there.
    fn put(&mut self, ip: Ipv4Addr, e: Entry) {
        if let Some(old) = self.entries.insert(ip, e) {
            if let Some((set, t)) = self.index_of(&old) {
                set.remove(&(t, ip));
            }
        }
        if let Some((set, t)) = self.index_of(&e) {
            set.insert((t, ip));
        }
    }

    fn take(&mut self, ip: Ipv4Addr) -> Option<Entry> {
        let e = self.entries.remove(&ip)?;
        if let Some((set, t)) = self.index_of(&e) {
            set.remove(&(t, ip));
        }
        Some(e)
    }

    /// Room for one more entry: displaces the unused entry confirmed
    /// longest ago, else the used one (the workers forget it). False when
    /// nothing can go.
    fn make_room(&mut self, out: &mut Vec<Action>) -> bool {
        if self.entries.len() < self.cfg.max_entries {
            return true;
        }
        let victim = self.unused.first().or_else(|| self.used.first()).map(|&(_, ip)| ip);
        let Some(ip) = victim else {
            self.stats.table_full += 1;
            return false;
        };
        if self.take(ip).is_some_and(|e| e.used) {
            out.push(Action::Update { ip, mac: None });
        }
        self.stats.evicted += 1;
        true
    }

    /// Adds a permanent entry.
    pub fn add_static(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress, out: &mut Vec<Action>) {
        if !self.entries.contains_key(&ip) && !self.make_room(out) {
            tracing::warn!("neighbour table full: static entry {ip} not added");
            return;
        }
        self.put(ip, Entry { state: EntryState::Permanent { mac }, since: now, used: true });
        out.push(Action::Update { ip, mac: Some(mac) });
    }

    /// `ip` is at `mac`, as of `now`: confirms or completes its entry, or
    /// (`create`) makes one.
    fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress, create: bool, out: &mut Vec<Action>) {
        let prev = self.entries.get(&ip).copied();
        let used = match prev {
            Some(Entry { state: EntryState::Permanent { .. }, .. }) => return,
            Some(e) => e.used,
            None if !create => return,
            None => {
                if !self.make_room(out) {
                    return;
                }
                false
            }
        };
        let since = prev.map_or(now, |e| e.since);
        self.put(ip, Entry { state: EntryState::Reachable { mac, confirmed: now }, since, used });
        match prev.map(|e| e.state) {
            Some(EntryState::Reachable { mac: old, .. }) if old == mac => {}
            Some(EntryState::Incomplete { .. }) => {
                self.stats.learned += 1;
                out.push(Action::Pending { ip, on: false });
                out.push(Action::Update { ip, mac: Some(mac) });
            }
            _ => {
                self.stats.learned += 1;
                if used {
                    out.push(Action::Update { ip, mac: Some(mac) });
                }
            }
        }
    }

    /// True if `ip` is on one of the stack's subnets.
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.iface.addrs.iter().any(|a| a.addr.same_subnet(ip, a.prefix_len))
    }

    /// Handles an ARP packet that arrived with Ethernet source `src_mac`.
    /// An ARP packet a worker received; `answered`: the worker replied to
    /// this request already (learn only).
    pub fn on_packet(
        &mut self,
        now: Instant,
        src_mac: EthernetAddress,
        p: &Repr,
        answered: bool,
        out: &mut Vec<Action>,
    ) {
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
                // RFC 826 "merge", Linux neigh_event_ns: the requester is
                // about to talk to us. Only an on-link sender: nothing off
                // our subnets is ever a next hop.
                if !spa.is_unspecified() && self.on_link(spa) {
                    self.learn(now, spa, sha, true, out);
                }
                self.stats.replies_sent += 1;
                if answered {
                    return;
                }
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
                    self.learn(now, spa, sha, false, out);
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
        match self.entries.get(&ip).copied() {
            // Known: from now on the workers hold it. Sent again when
            // already used: the worker may have asked before our update
            // reached it, or lost it.
            Some(e @ Entry { state: EntryState::Reachable { mac, .. } | EntryState::Permanent { mac }, .. }) => {
                if !e.used {
                    self.put(ip, Entry { used: true, ..e });
                }
                out.push(Action::Update { ip, mac: Some(mac) })
            }
            Some(Entry { state: EntryState::Incomplete { .. }, .. }) => {}
            None => {
                if !self.make_room(out) {
                    // Linux: "neighbour table overflow", the packet is
                    // dropped; the worker's frames for it go the same way.
                    out.push(Action::Update { ip, mac: None });
                    return;
                }
                let next_try = now + self.cfg.retry_interval;
                self.put(ip, Entry { state: EntryState::Incomplete { sent: 1, next_try }, since: now, used: true });
                out.push(Action::Pending { ip, on: true });
                let req = self.request(ip);
                out.push(req);
            }
        }
    }

    /// Retries, failures and expiry due at `now`: only the entries due are
    /// looked at.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(&(t, ip)) = self.retries.first() {
            if t > now {
                break;
            }
            let Some(e) = self.take(ip) else { continue };
            let EntryState::Incomplete { sent, .. } = e.state else { continue };
            if sent >= self.cfg.retries {
                self.stats.failed += 1;
                out.push(Action::Pending { ip, on: false });
                out.push(Action::Update { ip, mac: None });
                continue;
            }
            let next_try = now + self.cfg.retry_interval;
            self.put(ip, Entry { state: EntryState::Incomplete { sent: sent + 1, next_try }, ..e });
            let req = self.request(ip);
            out.push(req);
        }
        let timeout = self.cfg.timeout;
        for used in [false, true] {
            loop {
                let set = if used { &self.used } else { &self.unused };
                let Some(&(confirmed, ip)) = set.first() else { break };
                if now < confirmed + timeout {
                    break;
                }
                self.take(ip);
                self.stats.expired += 1;
                if used {
                    out.push(Action::Update { ip, mac: None });
                }
            }
        }
    }

    /// When `poll` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.cfg.timeout;
        [
            self.retries.first().map(|&(t, _)| t),
            self.unused.first().map(|&(t, _)| t + timeout),
            self.used.first().map(|&(t, _)| t + timeout),
        ]
        .into_iter()
        .flatten()
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
            ArpConfig {
                timeout: Duration::from_secs(10),
                retries: 3,
                retry_interval: Duration::from_secs(1),
                max_entries: 1024,
            },
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
    fn a_request_a_worker_answered_is_learned_from_and_not_answered_twice() {
        let mut r = resolver();
        let now = Instant::now();
        let mut out = vec![];
        r.on_packet(now, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), true, &mut out);
        assert_eq!(r.entries(now)[0].mac, Some(PEER_MAC));
        assert!(out.is_empty(), "the worker replied already: {out:?}");
        assert_eq!(r.stats().replies_sent, 1);
    }

    #[test]
    fn answers_requests_for_our_address_and_learns_the_sender() {
        let mut r = resolver();
        let now = Instant::now();
        let mut out = vec![];
        r.on_packet(now, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), false, &mut out);
        // Learned, but kept here until a worker needs it.
        assert_eq!(r.entries(now)[0].mac, Some(PEER_MAC));
        assert_eq!(out.len(), 1, "{out:?}");
        let Action::Send { dst_mac, packet } = out[0] else { panic!("{out:?}") };
        assert_eq!(dst_mac, PEER_MAC);
        assert_eq!(packet.operation, Operation::Reply);
        assert_eq!(packet.source_hardware_addr, OUR_MAC);
        assert_eq!(packet.source_protocol_addr, OURS);
        assert_eq!(packet.target_protocol_addr, PEER);
        // Not for us: ignored, nothing learned.
        out.clear();
        r.on_packet(now, PEER_MAC, &request_from(Ipv4Addr::new(198, 18, 0, 7), PEER_MAC, GW), false, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().ignored, 1);
    }

    #[test]
    fn address_probes_are_answered_without_learning() {
        let mut r = resolver();
        let mut out = vec![];
        r.on_packet(Instant::now(), PEER_MAC, &request_from(Ipv4Addr::UNSPECIFIED, PEER_MAC, OURS), false, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Action::Send { .. }));
        assert!(r.entries(Instant::now()).is_empty());
    }

    #[test]
    fn bogus_senders_are_ignored() {
        let mut r = resolver();
        let mut out = vec![];
        let now = Instant::now();
        r.on_packet(now, PEER_MAC, &request_from(PEER, EthernetAddress::BROADCAST, OURS), false, &mut out);
        r.on_packet(now, PEER_MAC, &request_from(OURS, PEER_MAC, OURS), false, &mut out);
        r.on_packet(now, PEER_MAC, &reply_from(PEER, PEER_MAC), false, &mut out); // unsolicited
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
        r.on_packet(t0 + Duration::from_millis(5), gw_mac, &reply_from(GW, gw_mac), false, &mut out);
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
        r.on_packet(t0, other, &request_from(PEER, other, OURS), false, &mut out);
        assert!(!out.iter().any(|a| matches!(a, Action::Update { .. })), "{out:?}");
        assert_eq!(r.entries(t0)[0].mac, Some(PEER_MAC));
    }

    #[test]
    fn a_changed_mac_is_pushed_and_an_unchanged_one_is_not() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        r.on_packet(t0, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), false, &mut out);
        // A worker needs it: it gets the entry at once, without a request.
        out.clear();
        r.resolve(t0, PEER, &mut out);
        assert_eq!(out, vec![Action::Update { ip: PEER, mac: Some(PEER_MAC) }]);
        out.clear();
        r.on_packet(t0, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), false, &mut out);
        assert_eq!(out.iter().filter(|a| matches!(a, Action::Update { .. })).count(), 0);
        let new_mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        r.on_packet(t0, new_mac, &request_from(PEER, new_mac, OURS), false, &mut out);
        assert!(out.contains(&Action::Update { ip: PEER, mac: Some(new_mac) }));
    }

    /// An ARP flood with made-up senders: the table stays within its
    /// bound, the workers hear nothing of it, and the next hop they use
    /// survives it; off-link senders are answered, never learned.
    #[test]
    fn a_flood_of_senders_is_bounded_and_spares_what_the_workers_use() {
        let iface =
            Iface { mac: OUR_MAC, addrs: vec![IfAddr { addr: OURS, prefix_len: 16 }], gateway: Some(GW), mtu: 1500 };
        let cfg = ArpConfig { max_entries: 64, ..ArpConfig::default() };
        let mut r = Resolver::new(cfg, iface);
        let t0 = Instant::now();
        let mut out = vec![];
        // The gateway, resolved for a worker.
        r.resolve(t0, GW, &mut out);
        let gw_mac = EthernetAddress([2, 0, 0, 0, 0, 0xfe]);
        r.on_packet(t0, gw_mac, &reply_from(GW, gw_mac), false, &mut out);
        out.clear();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for i in 0..100_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ip = Ipv4Addr::new(198, 18, (rng >> 8) as u8, rng as u8);
            if ip == GW {
                continue;
            }
            let mac = EthernetAddress([2, (rng >> 16) as u8, (rng >> 24) as u8, (rng >> 32) as u8, 1, 2]);
            let now = t0 + Duration::from_micros(u64::from(i));
            r.on_packet(now, mac, &request_from(ip, mac, OURS), false, &mut out);
            assert!(r.len() <= 64);
        }
        assert!(!out.iter().any(|a| matches!(a, Action::Update { .. })), "workers are not told of the flood");
        let answered = out.iter().filter(|a| matches!(a, Action::Send { .. })).count() as u64;
        assert_eq!(answered, r.stats().requests_received, "every request for us answered");
        assert!(answered > 99_000, "{:?}", r.stats());
        assert!(r.stats().evicted > 90_000, "{:?}", r.stats());
        let gw = r.entries(t0).into_iter().find(|e| e.ip == GW).expect("the used entry survives");
        assert_eq!(gw.mac, Some(gw_mac));
        // Off-link senders are answered but not learned.
        out.clear();
        let before = r.stats().learned;
        r.on_packet(t0, PEER_MAC, &request_from(Ipv4Addr::new(10, 1, 2, 3), PEER_MAC, OURS), false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.stats().learned, before);
    }

    /// With only used entries, the one confirmed longest ago gives way and
    /// the workers are told; with only resolutions in progress, a new one
    /// fails at once rather than growing the table.
    #[test]
    fn a_full_table_displaces_the_oldest_used_entry_or_refuses() {
        let iface =
            Iface { mac: OUR_MAC, addrs: vec![IfAddr { addr: OURS, prefix_len: 24 }], gateway: Some(GW), mtu: 1500 };
        let mut r = Resolver::new(ArpConfig { max_entries: 2, ..ArpConfig::default() }, iface);
        let t0 = Instant::now();
        let mut out = vec![];
        let (a, b, c) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12));
        for (i, ip) in [a, b].into_iter().enumerate() {
            let t = t0 + Duration::from_secs(i as u64);
            r.resolve(t, ip, &mut out);
            r.on_packet(t, PEER_MAC, &reply_from(ip, PEER_MAC), false, &mut out);
        }
        out.clear();
        r.resolve(t0 + Duration::from_secs(5), c, &mut out);
        assert_eq!(out[0], Action::Update { ip: a, mac: None }, "{out:?}");
        assert_eq!(r.len(), 2);
        // b and c are used; b goes for d, then with b's successor still
        // resolving and c resolving... fill with resolutions only:
        let mut r = Resolver::new(
            ArpConfig { max_entries: 2, ..ArpConfig::default() },
            Iface { mac: OUR_MAC, addrs: vec![IfAddr { addr: OURS, prefix_len: 24 }], gateway: None, mtu: 1500 },
        );
        out.clear();
        r.resolve(t0, a, &mut out);
        r.resolve(t0, b, &mut out);
        out.clear();
        r.resolve(t0, c, &mut out);
        assert_eq!(out, vec![Action::Update { ip: c, mac: None }]);
        assert_eq!(r.stats().table_full, 1);
        assert_eq!(r.len(), 2);
    }

    /// Unused entries expire silently; used ones are withdrawn from the
    /// workers. Only entries due are touched (the others stay in order).
    #[test]
    fn expiry_tells_the_workers_only_of_used_entries() {
        let mut r = resolver();
        let t0 = Instant::now();
        let mut out = vec![];
        let other = Ipv4Addr::new(198, 18, 0, 9);
        r.on_packet(t0, PEER_MAC, &request_from(PEER, PEER_MAC, OURS), false, &mut out);
        r.on_packet(t0 + Duration::from_secs(1), PEER_MAC, &request_from(other, PEER_MAC, OURS), false, &mut out);
        r.resolve(t0 + Duration::from_secs(1), other, &mut out);
        out.clear();
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(10)));
        r.poll(t0 + Duration::from_secs(10), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(r.len(), 1);
        r.poll(t0 + Duration::from_secs(11), &mut out);
        assert_eq!(out, vec![Action::Update { ip: other, mac: None }]);
        assert_eq!(r.stats().expired, 2);
        assert!(r.is_empty());
        assert_eq!(r.next_deadline(), None);
    }
}
