//! The receive window: what we advertise (never moving its right edge
//! left, RFC 9293 section 3.8.6.2.2) and when a read makes a window update
//! worth sending (receiver SWS avoidance).

use super::timers::Timer;
use super::Connection;

impl Connection {
    /// The window we would advertise now, in bytes: the free buffer, at
    /// most `rcv_ssthresh` rounded up to the scale's unit (Linux
    /// __tcp_select_window: ALIGN(min(free, rcv_ssthresh), 1 << wscale)),
    /// never more than is free.
    ///
    /// Receiver silly-window avoidance (RFC 9293 section 3.8.6.2.2, as
    /// __tcp_select_window): with the buffer more than half full, free
    /// space below the peer's segment size or below a sixteenth of the
    /// buffer is announced as a zero window, not as a sliver.
    #[inline]
    pub(super) fn window_now(&self) -> u32 {
        let free = self.rx.free() as u32;
        let full = self.rx.capacity() as u32;
        if free < full / 2 {
            let free = free >> self.rcv_wscale << self.rcv_wscale;
            if free < full >> 4 || free < u32::from(self.rcv_mss).min(full) {
                return 0;
            }
        }
        let max = 65535u32 << self.rcv_wscale;
        // Shifts, not a division by the unit: this runs for every segment.
        let round_up = (1u32 << self.rcv_wscale) - 1;
        let w = if free > self.rcv_ssthresh {
            (self.rcv_ssthresh.saturating_add(round_up) >> self.rcv_wscale) << self.rcv_wscale
        } else {
            free
        };
        w.min(free).min(max) >> self.rcv_wscale << self.rcv_wscale
    }

    /// Linux tcp_grow_window: a full-sized segment of data (Linux: one
    /// whose payload is a fair share of its buffer's truesize) lets the
    /// window grow by twice the larger of our MSS and the segment, up to
    /// the buffer, while the window is below the free space. Small
    /// segments do not grow it (their overhead would not fit).
    ///
    /// Under memory pressure the window does not grow, and once the buffer
    /// is half full it falls back to four segments (Linux
    /// tcp_adjust_rcv_ssthresh from __tcp_select_window; the advertised
    /// right edge still never moves left).
    #[inline]
    pub(super) fn grow_window(&mut self, len: usize, pressure: bool) {
        let capacity = self.rx.capacity() as u32;
        if pressure {
            if 2 * self.rx.free() < self.rx.capacity() {
                self.rcv_ssthresh = self.rcv_ssthresh.min(4 * u32::from(self.our_mss));
            }
            return;
        }
        if len * 2 >= usize::from(self.our_mss)
            && self.rcv_ssthresh < capacity
            && (self.rcv_ssthresh as usize) < self.rx.free()
        {
            let incr = (2 * u32::from(self.our_mss)).max(2 * len as u32);
            self.rcv_ssthresh = (self.rcv_ssthresh + incr).min(capacity);
        }
    }

    /// RCV.WND: what is left of the window last advertised.
    #[inline]
    pub(super) fn rcv_wnd(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv.dist(self.rcv_nxt)
        } else {
            0
        }
    }

    /// The window field of a segment we send, RCV.ADV moved to the right
    /// edge it announces.
    #[inline]
    pub(super) fn window_to_send(&mut self, syn: bool) -> u16 {
        if syn {
            // Unscaled in SYNs; Linux rounds the first window to whole MSS.
            let w = self.window_now().min(65535) as u16;
            return w - w % self.our_mss;
        }
        let w = self.window_now();
        // Never move the advertised right edge left (RFC 9293 section
        // 3.8.6.2.2).
        let edge = self.rcv_nxt + w;
        let w = if edge < self.rcv_adv { self.rcv_wnd() } else { w };
        let window = ((w >> self.rcv_wscale).min(65535)) as u16;
        let adv = self.rcv_nxt + (u32::from(window) << self.rcv_wscale);
        if adv > self.rcv_adv {
            self.rcv_adv = adv;
        }
        window
    }

    /// After a read: announce the larger window only if it grew a lot
    /// (receiver SWS avoidance, RFC 9293 section 3.8.6.2.2), the way
    /// Linux's __tcp_cleanup_rbuf decides: the advertised window has
    /// fallen to half the buffer or less and the new one is at least twice
    /// it; or a delayed ACK is pending for more than a segment of data.
    pub(super) fn maybe_window_update(&mut self) {
        if !self.state.is_synchronized() || self.rx_fin {
            return;
        }
        if self.timers.is_set(Timer::DelayedAck) && self.unacked_bytes > usize::from(self.rcv_mss) {
            self.ack_now = true;
            return;
        }
        // The read emptied the buffer after small pushed segments: ACK now
        // unless the connection is interactive and a reply will carry it
        // (Linux __tcp_cleanup_rbuf, ICSK_ACK_PUSHED/PUSHED2).
        if self.timers.is_set(Timer::DelayedAck)
            && self.rx.is_empty()
            && (self.ack_pushed >= 2 || (self.ack_pushed == 1 && !self.pingpong))
        {
            self.ack_now = true;
            return;
        }
        let advertised = self.rcv_wnd();
        let clamp = (self.rx.capacity() as u32).min(65535 << self.rcv_wscale);
        if 2 * advertised <= clamp {
            let now = self.window_now();
            if now > 0 && now >= 2 * advertised {
                self.ack_now = true;
            }
        }
    }
}
