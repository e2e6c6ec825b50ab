//! Client mode: connect to a host and port, send a payload, half-close,
//! read the answer until the peer closes, and report each step.

use std::sync::mpsc::Sender;

use crate::app::{App, Io};
use crate::tcp::{Error, Event, EventKind, Shutdown, SocketId};
use crate::wire::Ipv4Addr;

/// What the client reports, in order: `Connected`, then `Done` or
/// `Failed` (a failure may also come first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReport {
    Connected { local: Option<(Ipv4Addr, u16)> },
    Done { sent: usize, received: usize },
    Failed(Error),
}

/// The errno name Linux would report for `e` (what `connect(2)` users see).
pub fn errno_name(e: Error) -> &'static str {
    match e {
        Error::ConnectionRefused => "ECONNREFUSED",
        Error::ConnectionReset => "ECONNRESET",
        Error::TimedOut => "ETIMEDOUT",
        Error::HostUnreachable => "EHOSTUNREACH",
        Error::NetworkUnreachable => "ENETUNREACH",
        Error::AddrInUse => "EADDRINUSE",
        Error::AddrNotAvailable => "EADDRNOTAVAIL",
        Error::WouldBlock => "EAGAIN",
        Error::NotConnected => "ENOTCONN",
        Error::IsConnected => "EISCONN",
        Error::AlreadyInProgress => "EALREADY",
        Error::InvalidInput => "EINVAL",
        Error::BadSocket => "EBADF",
        Error::BrokenPipe => "EPIPE",
        Error::ConnectionAborted => "ECONNABORTED",
        Error::NotSupported => "EOPNOTSUPP",
        Error::HostDown => "EHOSTDOWN",
        Error::NoNetwork => "ENONET",
        Error::ProtocolUnavailable => "ENOPROTOOPT",
        Error::NoBufferSpace => "ENOBUFS",
    }
}

#[derive(Debug)]
pub struct Client {
    addr: Ipv4Addr,
    port: u16,
    payload: Vec<u8>,
    sent: usize,
    received: usize,
    sock: Option<SocketId>,
    connected: bool,
    finished: bool,
    buf: Box<[u8]>,
    reports: Sender<ClientReport>,
}

impl Client {
    pub fn new(addr: Ipv4Addr, port: u16, payload: Vec<u8>, reports: Sender<ClientReport>) -> Self {
        Client {
            addr,
            port,
            payload,
            sent: 0,
            received: 0,
            sock: None,
            connected: false,
            finished: false,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            reports,
        }
    }

    fn report(&mut self, r: ClientReport) {
        if matches!(r, ClientReport::Done { .. } | ClientReport::Failed(_)) {
            if self.finished {
                return;
            }
            self.finished = true;
        }
        let _ = self.reports.send(r);
    }

    fn fail(&mut self, io: &mut Io<'_>, e: Error) {
        if let Some(s) = self.sock.take() {
            let _ = io.close(s);
        }
        self.report(ClientReport::Failed(e));
    }

    fn send_more(&mut self, io: &mut Io<'_>, s: SocketId) {
        while self.sent < self.payload.len() {
            match io.write(s, &self.payload[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(Error::WouldBlock) => return,
                Err(e) => return self.fail(io, e),
            }
        }
        // Everything is in the send buffer: half-close so the peer sees EOF.
        if let Err(e) = io.shutdown(s, Shutdown::Write) {
            if e != Error::NotConnected {
                self.fail(io, e);
            }
        }
    }

    fn drain(&mut self, io: &mut Io<'_>, s: SocketId) {
        loop {
            match io.read(s, &mut self.buf) {
                Ok(0) => {
                    let _ = io.close(s);
                    self.sock = None;
                    let (sent, received) = (self.sent, self.received);
                    self.report(ClientReport::Done { sent, received });
                    return;
                }
                Ok(n) => self.received += n,
                Err(Error::WouldBlock) => return,
                Err(e) => return self.fail(io, e),
            }
        }
    }
}

impl App for Client {
    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error> {
        let s = io.socket();
        self.sock = Some(s);
        match io.connect(s, self.addr, self.port) {
            Ok(()) | Err(Error::AlreadyInProgress) | Err(Error::WouldBlock) => Ok(()),
            Err(e) => {
                self.fail(io, e);
                Ok(())
            }
        }
    }

    fn on_event(&mut self, io: &mut Io<'_>, ev: Event) {
        if Some(ev.socket) != self.sock {
            return;
        }
        match ev.kind {
            EventKind::Connected => {
                self.connected = true;
                let local = io.stack().local_addr(ev.socket);
                self.report(ClientReport::Connected { local });
                self.send_more(io, ev.socket);
            }
            EventKind::Writable if self.connected => self.send_more(io, ev.socket),
            EventKind::Readable => self.drain(io, ev.socket),
            EventKind::Closed { error } => {
                self.sock = None;
                match error {
                    Some(e) => self.report(ClientReport::Failed(e)),
                    None => {
                        let (sent, received) = (self.sent, self.received);
                        self.report(ClientReport::Done { sent, received })
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_are_linux_names() {
        assert_eq!(errno_name(Error::ConnectionRefused), "ECONNREFUSED");
        assert_eq!(errno_name(Error::TimedOut), "ETIMEDOUT");
        assert_eq!(errno_name(Error::HostUnreachable), "EHOSTUNREACH");
    }
}
