//! Counters, named after Linux's where one exists (nstat names in comments).

/// Why an input segment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a header, or a data offset past the end.
    Truncated,
    /// Bad data offset, options that overrun, port 0.
    Malformed,
    /// TCP checksum failed (TcpExtTCPCsumErrors / InCsumErrors).
    Checksum,
    /// Addressed to an address that is not ours.
    NotOurAddress,
    /// No socket: answered with RST unless it was an RST.
    NoSocket,
    /// Out of window, PAWS, bad ACK: answered with an ACK at most.
    Invalid,
    /// A listener could not take it (queue full, bad cookie, ...).
    ListenDrop,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub segments_in: u64,
    pub segments_out: u64,
    pub retransmits: u64,
    pub rsts_sent: u64,
    pub drop_truncated: u64,
    pub drop_malformed: u64,
    pub drop_checksum: u64,
    pub drop_not_ours: u64,
    pub drop_no_socket: u64,
    pub drop_invalid: u64,
    /// TcpExtListenOverflows: SYN or final ACK dropped, accept queue full.
    pub listen_overflows: u64,
    /// TcpExtListenDrops: anything a listener dropped.
    pub listen_drops: u64,
    /// SYNs dropped because the SYN queue was full and cookies were off.
    pub syn_queue_drops: u64,
    pub syncookies_sent: u64,
    pub syncookies_recv: u64,
    pub syncookies_failed: u64,
    /// TcpExtTCPChallengeACK.
    pub challenge_acks: u64,
    pub paws_drops: u64,
    pub timeouts: u64,
    pub fast_retransmits: u64,
    pub control_queue_drops: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    pub attempt_fails: u64,
    pub estab_resets: u64,
}

impl Stats {
    pub(crate) fn count_drop(&mut self, r: DropReason) {
        match r {
            DropReason::Truncated => self.drop_truncated += 1,
            DropReason::Malformed => self.drop_malformed += 1,
            DropReason::Checksum => self.drop_checksum += 1,
            DropReason::NotOurAddress => self.drop_not_ours += 1,
            DropReason::NoSocket => self.drop_no_socket += 1,
            DropReason::Invalid => self.drop_invalid += 1,
            DropReason::ListenDrop => self.listen_drops += 1,
        }
    }
}
