//! The application's operations on a connection: write, read, shutdown,
//! close (RFC 9293 section 3.10.4, with Linux's reset for unread data)
//! and the abortive reset of a listener's queued connections.

use super::timers::Timer;
use super::Connection;
use crate::tcp::error::{Error, Result};
use crate::tcp::memory::BufferPool;
use crate::tcp::shared::Shared;
use crate::tcp::socket::{readiness, Shutdown, State};
use crate::tcp::time::Instant;
use std::time::Duration;

impl Connection {
    /// write(): queues what fits in the send buffer.
    pub fn send(&mut self, pool: &mut BufferPool, data: &[u8]) -> Result<usize> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::SynSent | State::SynReceived => return Err(Error::WouldBlock),
            State::Established | State::CloseWait if !self.fin_queued => {}
            _ => return Err(Error::BrokenPipe),
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.tx.enqueue_slice(pool, data);
        if n < data.len() {
            self.write_blocked = true;
        }
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        Ok(n)
    }

    /// read(): Ok(0) is end-of-file. Queued data stays readable after
    /// shutdown(SHUT_RD); only then does a read see end of file (Linux
    /// tcp_recvmsg copies what is queued before it tests RCV_SHUTDOWN).
    pub fn recv(&mut self, now: Instant, shared: &mut Shared, buf: &mut [u8]) -> Result<usize> {
        if !self.rx.is_empty() {
            let n = self.rx.dequeue_slice(&mut shared.pool, buf);
            self.rcv_space_adjust(now, shared);
            self.maybe_window_update();
            return Ok(n);
        }
        // After the peer's FIN, reads see end of file even if a reset
        // came later (Linux: SOCK_DONE is tested before sk_err).
        if self.rx_fin {
            return Ok(0);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.rd_shut || self.state == State::Closed {
            return Ok(0);
        }
        Err(Error::WouldBlock)
    }

    /// shutdown(): SHUT_RD discards nothing (Linux's tcp_shutdown acts on
    /// SEND_SHUTDOWN only): what is queued, and what still arrives in
    /// ESTABLISHED, stays readable; reads see end of file once it is
    /// read. Data arriving in FIN_WAIT_1/2 after it resets (`receive.rs`).
    pub fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.rd_shut = true;
            // A reader waiting for data wakes to the end of file (tcp_poll
            // reports EPOLLIN | EPOLLRDHUP from RCV_SHUTDOWN).
            self.events |= readiness::READABLE;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.queue_fin();
        }
        Ok(())
    }

    /// Queues our FIN after the data (RFC 9293 section 3.10.4 CLOSE).
    fn queue_fin(&mut self) {
        match self.state {
            State::Established | State::SynReceived => {
                self.fin_queued = true;
                self.set_state(State::FinWait1);
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.set_state(State::LastAck);
            }
            _ => {}
        }
    }

    /// close(): the handle goes away; the connection finishes on its own.
    /// Returns true if the connection is over and can be freed.
    pub fn close(&mut self, now: Instant, shared: &mut Shared) -> bool {
        self.user_closed = true;
        match self.state {
            State::Closed => return true,
            State::SynSent => {
                self.enter_closed(&mut shared.pool, None);
                return true;
            }
            _ => {}
        }
        // RFC 2525 section 2.17 and Linux tcp_close: unread data, or
        // SO_LINGER with a zero timeout, aborts with RST instead of FIN.
        if !self.rx.is_empty() || self.opts.linger == Some(Duration::ZERO) {
            self.abort(now, shared, None);
            return true;
        }
        // Linux tcp_close -> tcp_check_oom: one orphan too many, or data
        // still queued with the buffer memory at its hard limit, and the
        // connection is reset instead of finishing (TCPAbortOnMemory).
        let too_many_orphans = shared.orphans >= shared.config.max_orphans;
        let out_of_memory = !self.tx.is_empty() && shared.pool.at_limit();
        if too_many_orphans || out_of_memory {
            shared.stats.aborts_on_memory += 1;
            self.abort(now, shared, None);
            return true;
        }
        self.rd_shut = true;
        self.queue_fin();
        if self.state == State::FinWait2 {
            let wait = self.fin_time(shared);
            self.timers.set(Timer::FinWait2, now + wait);
        }
        false
    }

    /// Abortive close for connections still in a listener's accept queue
    /// when the listener closes (Linux inet_csk_listen_stop).
    pub fn reset(&mut self, now: Instant, shared: &mut Shared) {
        self.user_closed = true;
        self.abort(now, shared, Some(Error::ConnectionAborted));
    }
}
