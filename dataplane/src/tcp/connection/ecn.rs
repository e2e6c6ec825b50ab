//! Explicit congestion notification (RFC 3168) as Linux runs it with its
//! default tcp_ecn=2: a connection whose peer asks for ECN in its SYN gets
//! it (tcp_ecn_create_request, tcp_ecn_make_synack); with tcp_ecn=1 our own
//! SYN asks too (tcp_ecn_send_syn, tcp_ecn_rcv_synack). On such a
//! connection:
//!
//! - new data goes out ECT(0), retransmissions and segments without data
//!   not-ECT (tcp_ecn_send);
//! - data arriving CE-marked makes every segment we send carry ECE until
//!   the peer's CWR arrives, and is ACKed at once (__tcp_ecn_check_ce,
//!   tcp_ecn_accept_cwr);
//! - an ACK carrying ECE reduces the window once per window of data, as
//!   for a loss but without retransmitting (Linux's CWR state:
//!   tcp_enter_cwr, PRR down to ssthresh), and the next new data segment
//!   carries CWR (tcp_ecn_queue_cwr).

use super::Connection;
use crate::tcp::shared::Shared;
use crate::wire::tcp::{Flags, Repr};

/// ECN was negotiated (TCP_ECN_OK).
pub(super) const OK: u8 = 1;
/// The next new data segment carries CWR (TCP_ECN_QUEUE_CWR).
pub(super) const QUEUE_CWR: u8 = 2;
/// Every segment carries ECE until the peer's CWR (TCP_ECN_DEMAND_CWR).
pub(super) const DEMAND_CWR: u8 = 4;
/// ECT or CE was seen on the peer's data (TCP_ECN_SEEN).
pub(super) const SEEN: u8 = 8;

/// The IP header's ECN field (RFC 3168 section 5).
const NOT_ECT: u8 = 0;
const CE: u8 = 3;

impl Connection {
    /// ECN is in use on this connection.
    #[inline]
    pub(super) fn ecn_ok(&self) -> bool {
        self.ecn & OK != 0
    }

    /// A data segment whose ECN marking header prediction can take: ECN
    /// not in use, or ECT data after ECT was seen (nothing to do).
    #[inline]
    pub(super) fn ecn_quiet(&self, rx_ecn: u8) -> bool {
        self.ecn & OK == 0 || (self.ecn & SEEN != 0 && rx_ecn != NOT_ECT && rx_ecn != CE)
    }

    /// A segment with data arrived (tcp_data_queue: tcp_ecn_accept_cwr,
    /// then __tcp_ecn_check_ce).
    pub(super) fn ecn_on_data(&mut self, shared: &Shared, seg: &Repr<'_>) {
        if self.ecn & OK == 0 {
            return;
        }
        if seg.flags.contains(Flags::CWR) {
            // The peer reduced its window: stop echoing, and ACK at once
            // (its window may be one segment).
            self.ecn &= !DEMAND_CWR;
            self.ack_now = true;
            self.ack_immediate = true;
        }
        match shared.rx_ecn {
            // Not ECT after ECT: probably a retransmission; ACK quickly.
            NOT_ECT => {
                if self.ecn & SEEN != 0 {
                    self.enter_quickack(2);
                }
            }
            CE => {
                if self.ecn & DEMAND_CWR == 0 {
                    // The sender's window may be very small: no delayed ACK.
                    self.enter_quickack(2);
                    self.ecn |= DEMAND_CWR;
                }
                self.ecn |= SEEN;
            }
            _ => self.ecn |= SEEN,
        }
    }

    /// Linux tcp_enter_quickack_mode: the next `n` ACKs go at once, and
    /// the connection is no longer taken as interactive.
    fn enter_quickack(&mut self, n: u32) {
        self.quickacks = self.quickacks.max(n);
        self.pingpong = false;
    }

    /// The peer's ACK carried ECE (tcp_ecn_rcv_ecn_echo): outside loss
    /// recovery the window is reduced once (tcp_try_to_open ->
    /// tcp_enter_cwr).
    pub(super) fn ecn_on_echo(&mut self, seg: &Repr<'_>) {
        if self.ecn & OK == 0 || !seg.flags.contains(Flags::ECE) || seg.flags.syn() {
            return;
        }
        if self.recovery.is_none() && self.rto_recover.is_none() {
            self.enter_cwr();
        }
    }

    /// The flags a segment we send carries for ECN besides its own: ECE
    /// while the peer's CWR is awaited (tcp_ecn_send; not on a SYN).
    #[inline]
    pub(super) fn ecn_echo(&self) -> Flags {
        if self.ecn & DEMAND_CWR != 0 {
            Flags::ECE
        } else {
            Flags::NONE
        }
    }

    /// CWR for a new data segment, once after each reduction.
    #[inline]
    pub(super) fn ecn_take_cwr(&mut self) -> Flags {
        if self.ecn & QUEUE_CWR != 0 {
            self.ecn &= !QUEUE_CWR;
            Flags::CWR
        } else {
            Flags::NONE
        }
    }
}
