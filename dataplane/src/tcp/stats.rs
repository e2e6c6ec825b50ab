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
    /// Valid segments (checksum and header) carrying RST, in any state.
    pub rsts_received: u64,
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
    /// TcpExtTCPSpuriousRTOs: timeouts F-RTO found spurious and undid.
    pub spurious_rtos: u64,
    /// TcpExtTCPFullUndo and TcpExtTCPDSACKUndo: fast recoveries undone
    /// because D-SACKs returned every resend.
    pub recovery_undos: u64,
    /// TcpExtTCPLossUndo: timeouts undone because timestamps showed the
    /// originals arrived.
    pub loss_undos: u64,
    /// TcpExtTCPPartialUndo: fast recoveries undone on a partial ACK that
    /// timestamps showed was for a late original.
    pub partial_undos: u64,
    pub fast_retransmits: u64,
    /// TcpExtTCPLossProbes: tail loss probes sent.
    pub loss_probes: u64,
    /// TcpExtTCPLossProbeRecovery: losses a probe repaired by itself.
    pub loss_probe_recoveries: u64,
    pub control_queue_drops: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    pub attempt_fails: u64,
    pub estab_resets: u64,
    /// TcpExtTCPHPHits: in-order data segments taken by header prediction.
    pub header_predicted: u64,
    /// TcpExtTCPSACKReneging: the peer dropped data it had SACKed.
    pub sack_renegings: u64,
    /// TcpExtOfoPruned: out-of-order data dropped to make room for data
    /// closer to the next expected byte.
    pub ofo_pruned: u64,
    /// Out-of-order segments above every held range dropped because the
    /// out-of-order table was full (a limit Linux does not have).
    pub ofo_table_drops: u64,
    /// Out-of-order segments dropped, with the connection's out-of-order
    /// data, because the buffer pool was at tcp_mem[2] (TCPOFODrop).
    pub ofo_dropped_memory: u64,
    /// Connections closed without TIME_WAIT with tcp_max_tw_buckets
    /// reached (TCPTimeWaitOverflow).
    pub tw_overflows: u64,
    /// Receive buffers grown by autotuning (dynamic right-sizing).
    pub rcvbuf_grown: u64,
    /// Send buffers grown with the congestion window (tcp_sndbuf_expand).
    pub sndbuf_grown: u64,
    /// close() answered with a reset for too many orphans or the buffer
    /// memory at its limit (TCPAbortOnMemory).
    pub aborts_on_memory: u64,
    /// ICMP destination unreachables acted on (a connect failed, or a
    /// soft error recorded).
    pub icmp_unreachables: u64,
    /// TcpExtOutOfWindowIcmps: quoting a sequence number not in flight.
    pub icmp_out_of_window: u64,
    /// ICMP errors for no connection, or of a kind not acted on.
    pub icmp_ignored: u64,
}

impl Stats {
    /// Every counter with its name, in declaration order (for statistics
    /// output and metrics).
    pub fn fields(&self) -> [(&'static str, u64); 44] {
        [
            ("segments_in", self.segments_in),
            ("segments_out", self.segments_out),
            ("retransmits", self.retransmits),
            ("rsts_sent", self.rsts_sent),
            ("rsts_received", self.rsts_received),
            ("drop_truncated", self.drop_truncated),
            ("drop_malformed", self.drop_malformed),
            ("drop_checksum", self.drop_checksum),
            ("drop_not_ours", self.drop_not_ours),
            ("drop_no_socket", self.drop_no_socket),
            ("drop_invalid", self.drop_invalid),
            ("listen_overflows", self.listen_overflows),
            ("listen_drops", self.listen_drops),
            ("syn_queue_drops", self.syn_queue_drops),
            ("syncookies_sent", self.syncookies_sent),
            ("syncookies_recv", self.syncookies_recv),
            ("syncookies_failed", self.syncookies_failed),
            ("challenge_acks", self.challenge_acks),
            ("paws_drops", self.paws_drops),
            ("timeouts", self.timeouts),
            ("spurious_rtos", self.spurious_rtos),
            ("recovery_undos", self.recovery_undos),
            ("loss_undos", self.loss_undos),
            ("partial_undos", self.partial_undos),
            ("fast_retransmits", self.fast_retransmits),
            ("loss_probes", self.loss_probes),
            ("loss_probe_recoveries", self.loss_probe_recoveries),
            ("control_queue_drops", self.control_queue_drops),
            ("active_opens", self.active_opens),
            ("passive_opens", self.passive_opens),
            ("attempt_fails", self.attempt_fails),
            ("estab_resets", self.estab_resets),
            ("header_predicted", self.header_predicted),
            ("sack_renegings", self.sack_renegings),
            ("ofo_pruned", self.ofo_pruned),
            ("ofo_table_drops", self.ofo_table_drops),
            ("ofo_dropped_memory", self.ofo_dropped_memory),
            ("tw_overflows", self.tw_overflows),
            ("rcvbuf_grown", self.rcvbuf_grown),
            ("sndbuf_grown", self.sndbuf_grown),
            ("aborts_on_memory", self.aborts_on_memory),
            ("icmp_unreachables", self.icmp_unreachables),
            ("icmp_out_of_window", self.icmp_out_of_window),
            ("icmp_ignored", self.icmp_ignored),
        ]
    }

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

#[cfg(test)]
mod fields_tests {
    use super::Stats;

    /// `fields` lists every counter: the Debug form (which derive keeps
    /// complete) has as many entries, in the same order.
    #[test]
    fn fields_list_every_counter() {
        let s = Stats::default();
        let debug = format!("{s:?}");
        let names: Vec<&str> = debug
            .trim_start_matches("Stats {")
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once(':').map(|(k, _)| k.trim()))
            .collect();
        let listed: Vec<&str> = s.fields().iter().map(|(n, _)| *n).collect();
        assert_eq!(listed, names);
    }
}
