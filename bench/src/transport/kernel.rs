//! The Linux kernel's TCP through ordinary sockets, in two modes:
//! - [`Mode::Blocking`]: blocking calls, the thread sleeps in the kernel
//!   until data arrives (how most applications use TCP; what netperf and
//!   sockperf measure by default);
//! - [`Mode::Spin`]: non-blocking sockets polled in a loop, the thread never
//!   sleeps (the kernel's lowest latency, at the cost of a full core).
//!
//! Every socket has TCP_NODELAY (request/response traffic must not wait for
//! Nagle). Blocking sockets get send/receive timeouts (a second, or the
//! workload's shorter request timeout) so that a dead peer cannot hang a
//! bounded run.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Backend, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Blocking,
    Spin,
}

/// Timeout of every blocking call, unless the workload asks for less
/// (`Transport::set_io_timeout`).
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct KernelBackend {
    mode: Mode,
}

impl KernelBackend {
    pub fn new(mode: Mode) -> KernelBackend {
        KernelBackend { mode }
    }
}

impl Backend for KernelBackend {
    type T = KernelTransport;
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::Blocking => "kernel-default",
            Mode::Spin => "kernel-spin",
        }
    }
    fn blocking(&self) -> bool {
        self.mode == Mode::Blocking
    }
    fn thread(&self, _index: usize) -> io::Result<KernelTransport> {
        Ok(KernelTransport { mode: self.mode, io_timeout: IO_TIMEOUT })
    }
}

#[derive(Debug)]
pub struct KernelTransport {
    mode: Mode,
    io_timeout: Duration,
}

const EINPROGRESS: i32 = 115;

impl KernelTransport {
    fn setup(&self, s: &TcpStream) -> io::Result<()> {
        s.set_nodelay(true)?;
        match self.mode {
            Mode::Blocking => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(self.io_timeout))?;
                s.set_write_timeout(Some(self.io_timeout))?;
            }
            Mode::Spin => s.set_nonblocking(true)?,
        }
        Ok(())
    }
}

impl Transport for KernelTransport {
    type Conn = TcpStream;
    type Listener = TcpListener;

    fn blocking(&self) -> bool {
        self.mode == Mode::Blocking
    }

    fn connect(&mut self, to: SocketAddrV4) -> io::Result<TcpStream> {
        let addr = SocketAddr::V4(to);
        match self.mode {
            Mode::Blocking => {
                let s = TcpStream::connect_timeout(&addr, self.io_timeout)?;
                self.setup(&s)?;
                Ok(s)
            }
            Mode::Spin => {
                let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                sock.set_nonblocking(true)?;
                sock.set_tcp_nodelay(true)?;
                match sock.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                Ok(sock.into())
            }
        }
    }

    fn set_io_timeout(&mut self, d: Duration) {
        // Zero would mean no timeout at all to the kernel.
        self.io_timeout = d.clamp(Duration::from_millis(1), IO_TIMEOUT);
    }

    fn connected(&mut self, c: &mut TcpStream) -> io::Result<bool> {
        if self.mode == Mode::Blocking {
            return Ok(true);
        }
        if let Some(e) = c.take_error()? {
            return Err(e);
        }
        match c.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, c: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
        c.write(buf)
    }

    fn recv(&mut self, c: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        c.read(buf)
    }

    fn close(&mut self, c: TcpStream) {
        drop(c);
    }

    fn listen(&mut self, at: SocketAddrV4, backlog: u32) -> io::Result<TcpListener> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.bind(&SocketAddr::V4(at).into())?;
        sock.listen(backlog.min(i32::MAX as u32) as i32)?;
        sock.set_nonblocking(self.mode == Mode::Spin)?;
        Ok(sock.into())
    }

    fn accept(&mut self, l: &mut TcpListener) -> io::Result<TcpStream> {
        let (s, _) = l.accept()?;
        self.setup(&s)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pair(mode: Mode) -> (KernelTransport, TcpStream, TcpStream) {
        let mut t = KernelBackend::new(mode).thread(0).unwrap();
        let mut l = t.listen(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 16).unwrap();
        let to = match l.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut c = t.connect(to).unwrap();
        let s = loop {
            match t.accept(&mut l) {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        while !t.connected(&mut c).unwrap() {
            std::thread::yield_now();
        }
        (t, c, s)
    }

    #[test]
    fn both_modes_move_bytes_over_loopback() {
        for mode in [Mode::Blocking, Mode::Spin] {
            let (mut t, mut c, mut s) = pair(mode);
            assert_eq!(t.blocking(), mode == Mode::Blocking);
            assert_eq!(t.send(&mut c, b"ping").unwrap(), 4);
            let mut buf = [0u8; 16];
            let n = loop {
                match t.recv(&mut s, &mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(&buf[..n], b"ping");
            t.close(c);
            let n = loop {
                match t.recv(&mut s, &mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(n, 0, "end of stream after close");
        }
    }
}
