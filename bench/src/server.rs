//! `xstack-bench serve`: the four services of [`crate::proto`] on one
//! address.
//!
//! The per-connection logic ([`Handler`]) is written once against
//! [`Transport`]. Two drivers run it:
//! - [`serve_polled`]: for polled transports (kernel-spin, and xstack later):
//!   `threads` threads, each with its own listeners (SO_REUSEPORT on the
//!   kernel) and connections, busy polling all of them.
//! - [`serve_blocking`]: kernel-default: for each service a pool of threads
//!   blocked in `accept`, each serving one connection to its end with
//!   blocking calls; a new thread is started whenever the last idle one
//!   takes a connection, so threads are reused (a CRR run does not pay a
//!   thread creation per connection).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{self, Service};
use crate::transport::kernel::{KernelBackend, Mode};
use crate::transport::{Backend, Transport};

const BUF: usize = 1 << 16;

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Made progress or would block: call again.
    Continue,
    /// The connection is finished: close it.
    Close,
}

/// The state of one served connection.
#[derive(Debug)]
pub struct Handler {
    svc: Service,
    buf: Vec<u8>,
    /// Echo: bytes received and not yet sent back.
    filled: usize,
    sent: usize,
    /// CRR: bytes of the request received, its header, its total length.
    got: usize,
    header: [u8; proto::CRR_HEADER],
    total: Option<usize>,
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut)
}

impl Handler {
    pub fn new(svc: Service) -> Handler {
        let mut buf = vec![0u8; BUF];
        if svc == Service::Source {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i * 131 % 251) as u8;
            }
        }
        Handler { svc, buf, filled: 0, sent: 0, got: 0, header: [0; proto::CRR_HEADER], total: None }
    }

    /// Does one non-blocking (or, on a blocking transport, one blocking)
    /// unit of work on `c`.
    pub fn step<T: Transport>(&mut self, t: &mut T, c: &mut T::Conn) -> io::Result<Step> {
        match self.svc {
            Service::Echo => {
                if self.sent < self.filled {
                    match t.send(c, &self.buf[self.sent..self.filled]) {
                        Ok(n) => self.sent += n,
                        Err(e) if retry(&e) => {}
                        Err(e) => return Err(e),
                    }
                    if self.sent == self.filled {
                        self.sent = 0;
                        self.filled = 0;
                    }
                    return Ok(Step::Continue);
                }
                match t.recv(c, &mut self.buf) {
                    Ok(0) => Ok(Step::Close),
                    Ok(n) => {
                        self.filled = n;
                        self.sent = 0;
                        Ok(Step::Continue)
                    }
                    Err(e) if retry(&e) => Ok(Step::Continue),
                    Err(e) => Err(e),
                }
            }
            Service::Crr => match self.total {
                Some(total) if self.got >= total => {
                    let want = (total - self.sent).min(self.buf.len());
                    match t.send(c, &self.buf[..want]) {
                        Ok(n) => self.sent += n,
                        Err(e) if retry(&e) => {}
                        Err(e) => return Err(e),
                    }
                    Ok(if self.sent >= total { Step::Close } else { Step::Continue })
                }
                _ => match t.recv(c, &mut self.buf) {
                    Ok(0) => Ok(Step::Close),
                    Ok(n) => {
                        let h = proto::CRR_HEADER;
                        if self.got < h {
                            let k = (h - self.got).min(n);
                            self.header[self.got..self.got + k].copy_from_slice(&self.buf[..k]);
                        }
                        self.got += n;
                        if self.total.is_none() && self.got >= h {
                            self.total =
                                Some(proto::crr_total(&self.header).ok_or_else(|| {
                                    io::Error::new(io::ErrorKind::InvalidData, "bad CRR request header")
                                })?);
                        }
                        Ok(Step::Continue)
                    }
                    Err(e) if retry(&e) => Ok(Step::Continue),
                    Err(e) => Err(e),
                },
            },
            Service::Sink => match t.recv(c, &mut self.buf) {
                Ok(0) => Ok(Step::Close),
                Ok(_) => Ok(Step::Continue),
                Err(e) if retry(&e) => Ok(Step::Continue),
                Err(e) => Err(e),
            },
            Service::Source => match t.send(c, &self.buf) {
                Ok(_) => Ok(Step::Continue),
                Err(e) if retry(&e) => Ok(Step::Continue),
                Err(_) => Ok(Step::Close),
            },
        }
    }
}

/// Server options.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: Ipv4Addr,
    pub base_port: u16,
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// The server exits after this long whatever happens (runs are bounded).
    pub max_time: Duration,
}

fn pin(cpus: &[usize], i: usize) {
    if !cpus.is_empty() {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpus[i % cpus.len()] });
    }
}

/// Serves with a polled transport until `stop` is set or the time is up.
/// `ready` is called once every listener is open.
pub fn serve_polled<B: Backend>(
    backend: &B,
    cfg: &ServeConfig,
    stop: &AtomicBool,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let deadline = Instant::now() + cfg.max_time;
    let opened = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = cfg.threads.max(1);
    std::thread::scope(|s| -> io::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (opened, failed) = (&opened, &failed);
                s.spawn(move || -> io::Result<()> {
                    pin(&cfg.cpus, i);
                    let r = (|| {
                        let mut t = backend.thread(i)?;
                        let mut ls = Vec::new();
                        for svc in Service::ALL {
                            ls.push((svc, t.listen(SocketAddrV4::new(cfg.addr, svc.port(cfg.base_port)), 4096)?));
                        }
                        Ok::<_, io::Error>((t, ls))
                    })();
                    let (mut t, mut ls) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            return Err(e);
                        }
                    };
                    opened.fetch_add(1, Ordering::SeqCst);
                    let mut conns: Vec<(Handler, <B::T as Transport>::Conn)> = Vec::new();
                    let mut n: u64 = 0;
                    loop {
                        n += 1;
                        if n % 1024 == 0 && (stop.load(Ordering::Relaxed) || Instant::now() >= deadline) {
                            break;
                        }
                        t.poll()?;
                        // New connections are rare next to data: look for
                        // them every 16th pass (always when idle), so that
                        // request/response pays fewer useless accept calls.
                        let look = conns.is_empty() || n % 16 == 0;
                        for (svc, l) in ls.iter_mut().filter(|_| look) {
                            match t.accept(l) {
                                Ok(c) => conns.push((Handler::new(*svc), c)),
                                Err(e) if retry(&e) => {}
                                Err(e) => eprintln!("xstack-bench serve: accept on {}: {e}", svc.name()),
                            }
                        }
                        let mut i = 0;
                        while i < conns.len() {
                            let (h, c) = &mut conns[i];
                            match h.step(&mut t, c) {
                                Ok(Step::Continue) => i += 1,
                                Ok(Step::Close) | Err(_) => {
                                    let (_, c) = conns.swap_remove(i);
                                    t.close(c);
                                }
                            }
                        }
                    }
                    for (_, c) in conns {
                        t.close(c);
                    }
                    Ok(())
                })
            })
            .collect();
        while opened.load(Ordering::SeqCst) < threads && !failed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !failed.load(Ordering::SeqCst) {
            ready();
        }
        for h in handles {
            h.join().map_err(|_| io::Error::other("server thread panicked"))??;
        }
        Ok(())
    })
}

/// Serves with blocking kernel sockets until the time is up (or `stop`).
pub fn serve_blocking(cfg: &ServeConfig, stop: &AtomicBool, ready: impl FnOnce()) -> io::Result<()> {
    let backend = KernelBackend::new(Mode::Blocking);
    let mut t = backend.thread(0)?;
    let spawned = Arc::new(AtomicUsize::new(0));
    for svc in Service::ALL {
        let l = t.listen(SocketAddrV4::new(cfg.addr, svc.port(cfg.base_port)), 4096)?;
        let idle = Arc::new(AtomicUsize::new(1));
        spawn_acceptor(l, svc, idle, cfg.cpus.clone(), spawned.clone())?;
    }
    ready();
    let deadline = Instant::now() + cfg.max_time;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Acceptor threads are blocked in accept(): the process exit ends them.
    Ok(())
}

fn spawn_acceptor(
    l: TcpListener,
    svc: Service,
    idle: Arc<AtomicUsize>,
    cpus: Vec<usize>,
    spawned: Arc<AtomicUsize>,
) -> io::Result<()> {
    let index = spawned.fetch_add(1, Ordering::SeqCst);
    std::thread::Builder::new().name(format!("{}-{index}", svc.name())).spawn(move || {
        pin(&cpus, 0);
        let mut t = KernelBackend::new(Mode::Blocking).thread(index).expect("kernel transport");
        let mut l = l;
        loop {
            let mut c = match t.accept(&mut l) {
                Ok(c) => c,
                Err(e) if retry(&e) => continue,
                Err(e) => {
                    eprintln!("xstack-bench serve: accept on {}: {e}", svc.name());
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // The last idle thread took a connection: start another one.
            if idle.fetch_sub(1, Ordering::SeqCst) == 1 {
                // The new thread starts idle.
                idle.fetch_add(1, Ordering::SeqCst);
                match l.try_clone() {
                    Ok(l2) => {
                        if let Err(e) = spawn_acceptor(l2, svc, idle.clone(), cpus.clone(), spawned.clone()) {
                            eprintln!("xstack-bench serve: cannot start a thread: {e}");
                        }
                    }
                    Err(e) => eprintln!("xstack-bench serve: cannot clone the listener: {e}"),
                }
            }
            // Timeouts of the blocking calls come back as Continue: the
            // connection is served until the client closes it.
            let mut h = Handler::new(svc);
            while let Ok(Step::Continue) = h.step(&mut t, &mut c) {}
            t.close(c);
            idle.fetch_add(1, Ordering::SeqCst);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn services_behave_as_documented() {
        // A polled kernel server on loopback, driven with plain sockets.
        let stop = AtomicBool::new(false);
        // This process's own loopback address (see the workload test).
        let pid = std::process::id();
        let addr = Ipv4Addr::new(127, 8, (pid >> 8) as u8, (pid % 250) as u8 + 2);
        let base = 20_000;
        let cfg = ServeConfig { addr, base_port: base, threads: 1, cpus: vec![], max_time: Duration::from_secs(20) };
        let backend = KernelBackend::new(Mode::Spin);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let h = s.spawn(|| serve_polled(&backend, &cfg, &stop, move || tx.send(()).unwrap()));
            rx.recv_timeout(Duration::from_secs(5)).expect("server ready");
            let conn = |svc: Service| {
                let c = TcpStream::connect((addr, svc.port(base))).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            };
            // echo
            let mut c = conn(Service::Echo);
            c.write_all(b"hello world").unwrap();
            let mut b = [0u8; 11];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hello world");
            // crr: 100-byte request, 100 bytes back, then the server closes
            let mut c = conn(Service::Crr);
            let mut req = vec![7u8; 100];
            proto::crr_header(100, &mut req);
            c.write_all(&req).unwrap();
            let mut resp = Vec::new();
            c.read_to_end(&mut resp).unwrap();
            assert_eq!(resp.len(), 100);
            // source sends, sink swallows
            let mut c = conn(Service::Source);
            let mut b = vec![0u8; 100_000];
            c.read_exact(&mut b).unwrap();
            let mut c = conn(Service::Sink);
            c.write_all(&b).unwrap();
            stop.store(true, Ordering::SeqCst);
            h.join().unwrap().unwrap();
        });
    }
}
