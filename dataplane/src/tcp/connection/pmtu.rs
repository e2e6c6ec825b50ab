//! Path MTU discovery (RFC 1191) from ICMP "fragmentation needed", as
//! Linux's tcp_v4_err -> tcp_v4_mtu_reduced -> tcp_sync_mss, then
//! tcp_simple_retransmit.

use super::Connection;
use crate::tcp::path_mtu::MIN_PMTU;
use crate::tcp::socket::State;
use crate::tcp::SeqNum;

/// IPv4 and TCP headers without options.
const HEADERS: u16 = 40;

impl Connection {
    /// ICMP "fragmentation needed" quoting our segment `seq`, with the next
    /// hop's MTU. False (nothing done) when `seq` is not one in flight (as
    /// tcp_v4_err checks, RFC 5927 section 4.1).
    ///
    /// A path narrower than the one the send MSS was made for lowers it,
    /// and every segment in flight too large for it is known dropped: all
    /// that is not SACKed goes out again now in segments of the new size
    /// (Linux marks the oversized ones lost and enters TCP_CA_Loss; the
    /// congestion window is not touched, since no more data is in the
    /// network, only in smaller units). A path at least as wide changes
    /// nothing, and neither does one the peer's MSS already fits.
    pub fn on_frag_needed(&mut self, seq: SeqNum, mtu: u16) -> bool {
        if seq < self.snd_una || seq > self.snd_max {
            return false;
        }
        let mtu = mtu.max(MIN_PMTU);
        if matches!(self.state, State::Closed | State::Listen | State::TimeWait) || mtu >= self.pmtu {
            return true;
        }
        self.pmtu = mtu;
        // tcp_mtu_to_mss: the path's MTU less the headers, within the
        // peer's MSS, less the timestamp option when it rides along. (While
        // connecting, set_mss applies the path when the SYN|ACK comes.)
        let options = if self.ts_ok { 12 } else { 0 };
        let mss = (mtu - HEADERS - options).min(self.send_mss);
        if mss == self.send_mss || self.state == State::SynSent {
            return true;
        }
        self.send_mss = mss;
        self.cc.set_mss(mss);
        let mss = u32::from(mss);
        if self.sent.iter().any(|s| !s.sacked() && s.len() > mss) {
            // (No timeout to prove spurious: F-RTO stays out of it.)
            self.frto = super::frto::Frto::Off;
            self.go_back();
        }
        true
    }
}
