//! The standalone server's services, as one run-to-completion app:
//! echo (RFC 862), discard (RFC 863), source (send N bytes then close, like
//! chargen, RFC 864) and hold (listen and never accept, to show the listen
//! backlog's behaviour).

use std::collections::HashMap;

use crate::app::{App, Io};
use crate::tcp::{Error, Event, EventKind, SocketId};
use crate::wire::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Echo,
    Discard,
    /// Send this many bytes of the chargen pattern, then close.
    Source {
        bytes: u64,
    },
    /// Listen and never accept.
    Hold,
}

impl Service {
    pub fn name(&self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Discard => "discard",
            Service::Source { .. } => "source",
            Service::Hold => "hold",
        }
    }
}

/// One service on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    pub service: Service,
    pub port: u16,
    /// listen() backlog.
    pub backlog: u32,
}

#[derive(Debug)]
struct Conn {
    service: Service,
    /// Echo: bytes read but not yet accepted by the send buffer.
    pending: Vec<u8>,
    /// Echo/discard: the peer finished sending.
    eof: bool,
    /// Source: bytes written so far.
    sent: u64,
}

/// The server app: listeners for every configured service, and per
/// connection state.
#[derive(Debug)]
pub struct Server {
    specs: Vec<ServiceSpec>,
    listeners: HashMap<SocketId, Service>,
    conns: HashMap<SocketId, Conn>,
    buf: Box<[u8]>,
    pattern: Box<[u8]>,
}

const BUF: usize = 64 * 1024;

/// The RFC 864 character generator pattern: lines of 72 printable
/// characters, each line starting one character later, CR LF terminated.
fn chargen(len: usize) -> Box<[u8]> {
    let mut v = Vec::with_capacity(len + 74);
    let mut line = 0usize;
    while v.len() < len {
        for i in 0..72 {
            v.push(b' ' + ((line + i) % 95) as u8);
        }
        v.extend_from_slice(b"\r\n");
        line += 1;
    }
    v.truncate(len);
    v.into_boxed_slice()
}

impl Server {
    pub fn new(specs: Vec<ServiceSpec>) -> Self {
        // The pattern repeats every 95 lines; keep whole periods so a write
        // can start at any offset modulo its length.
        let period = 95 * 74;
        Server {
            specs,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            buf: vec![0u8; BUF].into_boxed_slice(),
            pattern: chargen(period * (BUF / period + 1)),
        }
    }

    fn accept_all(&mut self, io: &mut Io<'_>, listener: SocketId, service: Service) {
        while let Ok(c) = io.accept(listener) {
            self.conns.insert(c, Conn { service, pending: Vec::new(), eof: false, sent: 0 });
            if let Service::Source { .. } = service {
                self.pump_source(io, c);
            }
            // Data may already be waiting (it arrived with the handshake's
            // last ACK).
            self.readable(io, c);
        }
    }

    fn finish(&mut self, io: &mut Io<'_>, c: SocketId) {
        self.conns.remove(&c);
        let _ = io.close(c);
    }

    fn readable(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        match conn.service {
            Service::Echo => {
                // Backpressure: read nothing while an echo is still queued.
                while conn.pending.is_empty() && !conn.eof {
                    match io.read(c, &mut self.buf) {
                        Ok(0) => conn.eof = true,
                        Ok(n) => {
                            let w = io.write(c, &self.buf[..n]).unwrap_or(0);
                            if w < n {
                                conn.pending.extend_from_slice(&self.buf[w..n]);
                            }
                        }
                        Err(Error::WouldBlock) => break,
                        Err(_) => {
                            self.finish(io, c);
                            return;
                        }
                    }
                }
                if conn.eof && conn.pending.is_empty() {
                    self.finish(io, c);
                }
            }
            Service::Discard | Service::Source { .. } | Service::Hold => loop {
                match io.read(c, &mut self.buf) {
                    Ok(0) => {
                        conn.eof = true;
                        if conn.service == Service::Discard {
                            self.finish(io, c);
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(Error::WouldBlock) => break,
                    Err(_) => {
                        self.finish(io, c);
                        break;
                    }
                }
            },
        }
    }

    fn writable(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        match conn.service {
            Service::Echo => {
                if !conn.pending.is_empty() {
                    let w = io.write(c, &conn.pending).unwrap_or(0);
                    conn.pending.drain(..w);
                }
                if conn.pending.is_empty() {
                    self.readable(io, c);
                }
            }
            Service::Source { .. } => self.pump_source(io, c),
            _ => {}
        }
    }

    fn pump_source(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        let Service::Source { bytes } = conn.service else { return };
        let period = 95 * 74;
        while conn.sent < bytes {
            let off = (conn.sent % period as u64) as usize;
            let n = ((bytes - conn.sent) as usize).min(self.pattern.len() - off);
            match io.write(c, &self.pattern[off..off + n]) {
                Ok(0) | Err(Error::WouldBlock) => return,
                Ok(w) => conn.sent += w as u64,
                Err(_) => break,
            }
        }
        self.finish(io, c);
    }
}

impl App for Server {
    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error> {
        for spec in self.specs.clone() {
            let s = io.socket();
            // Servers restart: let them bind over TIME_WAIT (as SO_REUSEADDR).
            io.set_option(s, crate::tcp::SocketOption::ReuseAddr(true))?;
            io.bind(s, Ipv4Addr::UNSPECIFIED, spec.port)?;
            io.listen(s, spec.backlog)?;
            self.listeners.insert(s, spec.service);
        }
        Ok(())
    }

    fn on_event(&mut self, io: &mut Io<'_>, ev: Event) {
        if let Some(&service) = self.listeners.get(&ev.socket) {
            if ev.kind == EventKind::Acceptable && service != Service::Hold {
                self.accept_all(io, ev.socket, service);
            }
            return;
        }
        match ev.kind {
            EventKind::Readable => self.readable(io, ev.socket),
            EventKind::Writable => self.writable(io, ev.socket),
            EventKind::Closed { .. } => {
                if self.conns.remove(&ev.socket).is_some() {
                    let _ = io.close(ev.socket);
                }
            }
            EventKind::Connected | EventKind::Acceptable => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chargen_lines_rotate() {
        let p = chargen(74 * 3);
        assert_eq!(&p[..3], b" !\"");
        assert_eq!(&p[72..74], b"\r\n");
        assert_eq!(p[74], b'!');
        assert_eq!(p[148], b'"');
    }
}
