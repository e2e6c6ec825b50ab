//! Two stacks joined in memory: what one writes with `poll_transmit` the
//! other reads with `handle_segment`, as bytes, at one instant the caller
//! moves on. No frames, no clock, no loss: the link the benchmarks, the
//! allocation and memory measurements and examples run connections over.

use super::{Config, Instant, SocketId, SocketOption, Stack};
use crate::wire::Ipv4Addr;
use std::time::Duration;

/// The server's address (listening on port 80).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// A client stack and a server stack with a listener on SERVER:80.
#[derive(Debug)]
pub struct Pair {
    pub client: Stack,
    pub server: Stack,
    pub listener: SocketId,
    pub now: Instant,
    buf: Vec<u8>,
}

impl Pair {
    /// Both stacks with the default configuration.
    pub fn new() -> Pair {
        Pair::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Pair {
        Pair::with_client_addresses(config, 1)
    }

    /// A client stack answering for `n` addresses: CLIENT and the ones
    /// after it (for more connections than one address has ports, each
    /// opened with [`Pair::try_handshake_from`]).
    pub fn with_client_addresses(config: Config, n: usize) -> Pair {
        let now = Instant::from_secs(1);
        let mut server = Stack::new(config.clone(), &[SERVER], 1, now);
        let addrs: Vec<Ipv4Addr> = (0..n.max(1) as u32).map(client_address).collect();
        let client = Stack::new(config, &addrs, 2, now);
        let listener = server.socket();
        server.bind(listener, SERVER, 80).expect("a fresh stack binds port 80");
        server.listen(listener, 128).expect("a fresh stack listens");
        Pair { client, server, listener, now, buf: vec![0u8; 1500] }
    }

    /// Carries what `from` has to send to `to`; returns how many segments.
    fn pump(from: &mut Stack, to: &mut Stack, now: Instant, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while let Some(t) = from.poll_transmit(now, buf) {
            let _ = to.handle_segment(now, t.src, t.dst, &buf[..t.len]);
            n += 1;
        }
        n
    }

    /// SYN, SYN|ACK, ACK, accept(); returns the client's and the server's
    /// sockets. None if the handshake did not complete (the accept queue
    /// full, no ephemeral port left).
    pub fn try_handshake(&mut self) -> Option<(SocketId, SocketId)> {
        let c = self.client.socket();
        self.connect_and_accept(c)
    }

    /// `try_handshake` from the client's `addr`:`port` (bound with
    /// SO_REUSEADDR, as a load generator spreading connections over
    /// source addresses binds them).
    pub fn try_handshake_from(&mut self, addr: Ipv4Addr, port: u16) -> Option<(SocketId, SocketId)> {
        let c = self.client.socket();
        self.client.set_option(self.now, c, SocketOption::ReuseAddr(true)).ok()?;
        self.client.bind(c, addr, port).ok()?;
        self.connect_and_accept(c)
    }

    fn connect_and_accept(&mut self, c: SocketId) -> Option<(SocketId, SocketId)> {
        self.client.connect(self.now, c, SERVER, 80).ok()?;
        Self::pump(&mut self.client, &mut self.server, self.now, &mut self.buf);
        Self::pump(&mut self.server, &mut self.client, self.now, &mut self.buf);
        Self::pump(&mut self.client, &mut self.server, self.now, &mut self.buf);
        let s = self.server.accept(self.listener).ok()?;
        Some((c, s))
    }

    /// `try_handshake` for set-ups where it cannot fail.
    pub fn handshake(&mut self) -> (SocketId, SocketId) {
        self.try_handshake().expect("handshake completed")
    }

    /// Carries segments both ways until neither stack has more to send,
    /// and drops the readiness events.
    pub fn settle(&mut self) {
        while Self::pump(&mut self.client, &mut self.server, self.now, &mut self.buf)
            + Self::pump(&mut self.server, &mut self.client, self.now, &mut self.buf)
            > 0
        {}
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
    }

    /// Moves both stacks' clocks on by `d` and runs their timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Abortive close of both ends (RST: no TIME_WAIT left behind).
    pub fn teardown(&mut self, c: SocketId, s: SocketId) {
        let _ = self.client.set_option(self.now, c, SocketOption::Linger(Some(Duration::ZERO)));
        let _ = self.client.close(self.now, c);
        Self::pump(&mut self.client, &mut self.server, self.now, &mut self.buf);
        let _ = self.server.close(self.now, s);
        Self::pump(&mut self.server, &mut self.client, self.now, &mut self.buf);
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
    }
}

/// The client's `i`-th address: CLIENT, then the ones after it.
pub fn client_address(i: u32) -> Ipv4Addr {
    let base = u32::from_be_bytes(CLIENT.0);
    Ipv4Addr((base + i).to_be_bytes())
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_carries_data_and_closes_into_time_wait() {
        let mut p = Pair::new();
        let (c, s) = p.handshake();
        let now = p.now;
        assert_eq!(p.client.write(now, c, b"ping"), Ok(4));
        p.settle();
        let mut buf = [0u8; 8];
        assert_eq!(p.server.read(now, s, &mut buf), Ok(4));
        p.server.close(now, s).unwrap();
        p.settle();
        p.client.close(now, c).unwrap();
        p.settle();
        assert_eq!(p.server.count_by_state()[super::super::State::TimeWait as usize], 1);
        p.advance(Duration::from_secs(60));
        assert_eq!(p.server.resources().connections, 0);
    }
}
