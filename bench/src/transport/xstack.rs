//! Our stack as a bench transport, in library mode: the bench thread is
//! the stack's worker ([`xstack_control::embed::Embedded`]). `poll` runs one
//! run-to-completion round (RX batch, TCP, timers, TX batch); the socket
//! calls go straight to the worker's TCP engine. Nothing blocks and no
//! other thread is involved, so a run measures the stack itself.
//!
//! One thread per process: the embedded stack drives queue 0 of its
//! interface (the namespace topology's veth has one queue unless asked).

use std::io;
use std::net::SocketAddrV4;

use clap::Parser;
use xstack_control::config::{Cli, Config};
use xstack_control::embed::Embedded;
use xstack_dataplane::tcp::{self, SocketId, SocketOption, State};
use xstack_dataplane::wire::Ipv4Addr;

use super::{Backend, Transport};

/// Where the stack runs: the arguments `xstackd` would take for it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct XstackArgs {
    /// Interface the xstack backend drives (its XDP program and queue 0).
    #[arg(long = "xstack-if", id = "xstack-if")]
    pub ifname: Option<String>,
    /// The backend's own address with prefix, e.g. 198.18.0.4/24; again
    /// for more source addresses (a client spreads its connections over
    /// them, one address's ephemeral ports after another's).
    #[arg(long = "xstack-addr", id = "xstack-addr")]
    pub addr: Vec<String>,
    /// Static neighbour IP=MAC (repeatable): skips ARP for the peer.
    #[arg(long = "xstack-neighbour", id = "xstack-neighbour")]
    pub neighbours: Vec<String>,
    /// Gateway for servers off the backend's subnet (as xstackd -g).
    #[arg(long = "xstack-gateway", id = "xstack-gateway")]
    pub gateway: Option<String>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long = "xstack-xdp-mode", id = "xstack-xdp-mode", default_value = "auto")]
    pub xdp_mode: String,
}

impl XstackArgs {
    /// The stack's configuration, validated as `xstackd` validates its own.
    pub fn config(&self) -> io::Result<Config> {
        let (Some(ifname), false) = (&self.ifname, self.addr.is_empty()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the xstack backend needs --xstack-if IFNAME and --xstack-addr ADDR/PREFIX",
            ));
        };
        let mut argv: Vec<String> = vec!["xstack-bench".into(), "-i".into(), ifname.clone()];
        for a in &self.addr {
            argv.extend(["-a".into(), a.clone()]);
        }
        argv.extend(["--xdp-mode".into(), self.xdp_mode.clone(), "--poll".into(), "busy".into()]);
        for n in &self.neighbours {
            argv.extend(["--static-neighbour".into(), n.clone()]);
        }
        if let Some(g) = &self.gateway {
            argv.extend(["-g".into(), g.clone()]);
        }
        let cli = Cli::try_parse_from(&argv).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Config::load(&cli).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:#}")))
    }
}

#[derive(Debug)]
pub struct XstackBackend {
    cfg: Config,
}

impl XstackBackend {
    pub fn new(args: &XstackArgs) -> io::Result<XstackBackend> {
        Ok(XstackBackend { cfg: args.config()? })
    }
}

impl Backend for XstackBackend {
    type T = XstackTransport;
    fn name(&self) -> &'static str {
        "xstack"
    }
    fn blocking(&self) -> bool {
        false
    }
    fn thread(&self, index: usize) -> io::Result<XstackTransport> {
        if index > 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the xstack backend runs one thread per process (one queue); use --threads 1",
            ));
        }
        let e = Embedded::start(&self.cfg).map_err(|e| io::Error::other(format!("starting the stack: {e:#}")))?;
        let sources =
            if self.cfg.addresses.len() > 1 { self.cfg.addresses.iter().map(|a| a.addr).collect() } else { Vec::new() };
        Ok(XstackTransport { e, sources, next_source: 0, ports: self.cfg.tcp.ephemeral_ports })
    }
}

#[derive(Debug)]
pub struct XstackTransport {
    e: Embedded,
    /// With several addresses: each connection binds the next (address,
    /// port) pair in turn, every port of the ephemeral range on one
    /// address before the next, so connections are not bound by one
    /// address's ports (as a load generator binds source addresses).
    sources: Vec<Ipv4Addr>,
    next_source: u64,
    ports: (u16, u16),
}

impl XstackTransport {
    /// A socket bound to the next source (address, port) not in use with
    /// `to`: what `connect` uses with several addresses.
    fn bind_next_source(&mut self, to: SocketAddrV4) -> io::Result<SocketId> {
        let (lo, hi) = self.ports;
        let range = u64::from(hi - lo) + 1;
        let total = range * self.sources.len() as u64;
        for _ in 0..total {
            let k = self.next_source;
            self.next_source = (k + 1) % total;
            let addr = self.sources[(k / range) as usize];
            let port = lo + (k % range) as u16;
            let mut io = self.e.io();
            let s = io.socket();
            let bound = io
                .set_option(s, SocketOption::ReuseAddr(true))
                .and_then(|()| io.bind(s, addr, port))
                .and_then(|()| io.connect(s, ip(*to.ip()), to.port()));
            match bound {
                Ok(()) => return Ok(s),
                // That 4-tuple is taken (a TIME_WAIT record, a connection):
                // the next.
                Err(tcp::Error::AddrInUse) => {
                    let _ = io.close(s);
                }
                Err(e) => {
                    let _ = io.close(s);
                    return Err(e.into());
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "every source address and port is in use"))
    }
}

fn ip(a: std::net::Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr(a.octets())
}

impl Transport for XstackTransport {
    type Conn = SocketId;
    type Listener = SocketId;

    fn blocking(&self) -> bool {
        false
    }

    fn connect(&mut self, to: SocketAddrV4) -> io::Result<SocketId> {
        if !self.sources.is_empty() {
            let s = self.bind_next_source(to)?;
            self.e.io().set_option(s, SocketOption::NoDelay(true)).map_err(io::Error::from)?;
            return Ok(s);
        }
        let mut io = self.e.io();
        let s = io.socket();
        io.set_option(s, SocketOption::NoDelay(true)).map_err(io::Error::from)?;
        io.connect(s, ip(*to.ip()), to.port()).map_err(io::Error::from)?;
        Ok(s)
    }

    fn connected(&mut self, c: &mut SocketId) -> io::Result<bool> {
        let mut io = self.e.io();
        if let Some(err) = io.stack().socket_error(*c) {
            return Err(err.into());
        }
        match io.state(*c) {
            Some(State::SynSent) => Ok(false),
            Some(_) => Ok(true),
            None => Err(tcp::Error::BadSocket.into()),
        }
    }

    fn send(&mut self, c: &mut SocketId, buf: &[u8]) -> io::Result<usize> {
        self.e.io().write(*c, buf).map_err(io::Error::from)
    }

    fn recv(&mut self, c: &mut SocketId, buf: &mut [u8]) -> io::Result<usize> {
        self.e.io().read(*c, buf).map_err(io::Error::from)
    }

    fn close(&mut self, c: SocketId) {
        let _ = self.e.io().close(c);
    }

    fn listen(&mut self, at: SocketAddrV4, backlog: u32) -> io::Result<SocketId> {
        let mut io = self.e.io();
        let s = io.socket();
        io.set_option(s, SocketOption::ReuseAddr(true)).map_err(io::Error::from)?;
        io.bind(s, ip(*at.ip()), at.port()).map_err(io::Error::from)?;
        io.listen(s, backlog).map_err(io::Error::from)?;
        Ok(s)
    }

    fn accept(&mut self, l: &mut SocketId) -> io::Result<SocketId> {
        let mut io = self.e.io();
        let c = io.accept(*l).map_err(io::Error::from)?;
        io.set_option(c, SocketOption::NoDelay(true)).map_err(io::Error::from)?;
        Ok(c)
    }

    fn poll(&mut self) -> io::Result<()> {
        self.e.poll();
        Ok(())
    }

    fn closing(&mut self) -> usize {
        self.e.io().stack().resources().closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend takes xstackd's own checks: a gateway for servers off
    /// its subnet, and a gateway off the subnet refused as xstackd refuses it.
    #[test]
    fn the_backend_takes_a_gateway_as_xstackd_does() {
        let args = |g: &str| XstackArgs {
            ifname: Some("eth9".into()),
            addr: vec!["198.18.0.9/24".into()],
            gateway: Some(g.into()),
            xdp_mode: "auto".into(),
            ..XstackArgs::default()
        };
        let cfg = args("198.18.0.254").config().unwrap();
        assert_eq!(cfg.gateway, Some(Ipv4Addr::new(198, 18, 0, 254)));
        assert!(args("not-an-address").config().is_err());
    }
}
