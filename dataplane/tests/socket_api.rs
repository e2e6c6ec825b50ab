//! The socket API for application threads, end to end without a network:
//! `sockets::loopback` runs stacks joined by an in-memory link in a driver
//! thread, each with a `Bridge` dispatched like a worker's app, and the
//! tests use the sockets from ordinary threads. Every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};
use xstack_dataplane::sockets::loopback::{DrainStats, Host, Loopback, LoopbackConfig};
use xstack_dataplane::sockets::{Handle, Interest, PollEvent, Poller, TcpListener, TcpSocket, TcpStream};
use xstack_dataplane::tcp::{Error, Shutdown, State};
use xstack_dataplane::wire::Ipv4Addr;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// The bound on any one test's waiting.
const LIMIT: Duration = Duration::from_secs(60);

fn pair() -> (Loopback, Handle, Handle, Ipv4Addr) {
    let net = Loopback::pair().expect("loopback");
    let (server, client) = (net.handle(0).expect("host 0"), net.handle(1).expect("host 1"));
    let addr = net.addr(0).expect("host 0");
    (net, server, client, addr)
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7) % 251) as u8
}

/// The `worker_app` of a loopback whose host 0 runs the echo service on
/// port 7 on every worker, beside its bridge.
fn echo_on_server(host: usize, _worker: usize) -> Option<Box<dyn xstack_dataplane::app::App>> {
    use xstack_dataplane::apps::server::{Server, Service, ServiceSpec};
    (host == 0).then(|| {
        Box::new(Server::new(vec![ServiceSpec { service: Service::Echo, port: 7, backlog: 16 }]))
            as Box<dyn xstack_dataplane::app::App>
    })
}

/// Ends the test process if a test outlives `LIMIT` (a blocking call that
/// never returns would otherwise hang the harness). Dropped at the end of
/// the test.
struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    fn new(name: &'static str) -> Watchdog {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = std::sync::Arc::clone(&done);
        thread::spawn(move || {
            let end = Instant::now() + LIMIT + Duration::from_secs(30);
            while !d.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() > end {
                    eprintln!("{name}: still running after {:?}; aborting", LIMIT + Duration::from_secs(30));
                    std::process::exit(101);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Threads blocked on busy sockets must be woken by the worker, not by the
/// 100 ms backstop timer. A systematic lost wake-up shows as dozens; two
/// are tolerated for a machine so loaded that a worker stalls that long.
fn assert_woken_by_workers(handles: &[&Handle]) {
    let n: u64 = handles.iter().map(|h| h.wait_stats().backstop_wakeups).sum();
    assert!(n <= 2, "{n} sleeps ended by the backstop timer instead of a wake-up");
}

/// Polls `f` until it holds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    f()
}

#[test]
fn echo_of_one_mebibyte() {
    let _watchdog = Watchdog::new("echo_of_one_mebibyte");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7000, 8).expect("listen");
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 32 * 1024];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).expect("server read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).expect("server write");
            total += n;
        }
        total
    });
    let mut c = TcpStream::connect(&ch, addr, 7000).expect("connect");
    assert_eq!(c.peer_addr(), Ok((addr, 7000)));
    let data: Vec<u8> = (0..1 << 20).map(pattern).collect();
    let mut back = vec![0u8; data.len()];
    {
        let (mut r, mut w) = c.split();
        thread::scope(|sc| {
            let writer = sc.spawn(|| {
                w.write_all(&data).expect("client write");
                w.shutdown().expect("shutdown");
            });
            r.read_exact(&mut back).expect("read the echo");
            writer.join().expect("writer");
        });
    }
    assert!(back == data, "the echo differs from what was sent");
    // The server saw our FIN, echoed everything and closed: end of file.
    assert_eq!(c.read(&mut [0u8; 16]), Ok(0));
    assert_eq!(c.read(&mut [0u8; 16]), Ok(0));
    assert_eq!(server.join().expect("server"), 1 << 20);
    assert_woken_by_workers(&[&ch]);
}

#[test]
fn echo_in_rounds_through_the_io_traits() {
    let _watchdog = Watchdog::new("echo_in_rounds_through_the_io_traits");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7001, 8).expect("listen");
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut all = Vec::new();
        // io::Read::read_to_end: reads until the client's FIN.
        Read::read_to_end(&mut s, &mut all).expect("read_to_end");
        Write::write_all(&mut s, &all).expect("write back");
        all.len()
    });
    let mut c = TcpStream::connect(&ch, addr, 7001).expect("connect");
    let data: Vec<u8> = (0..200_000).map(pattern).collect();
    Write::write_all(&mut c, &data).expect("write");
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    Read::read_to_end(&mut c, &mut back).expect("read back");
    assert!(back == data);
    assert_eq!(server.join().expect("server"), data.len());
    assert_woken_by_workers(&[&ch, &sh]);
}

#[test]
fn two_hundred_connections_on_one_poller_each_side() {
    let _watchdog = Watchdog::new("two_hundred_connections_on_one_poller_each_side");
    const N: usize = 200;
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7002, 256).expect("listen");
    listener.set_nonblocking(true);
    let server = thread::spawn(move || {
        let mut poller = Poller::new(&sh);
        poller.register_listener(&listener, usize::MAX, Interest::READABLE).expect("register listener");
        let mut conns: Vec<Option<TcpStream>> = Vec::new();
        let mut events: Vec<PollEvent> = Vec::new();
        let mut buf = [0u8; 4096];
        let (mut accepted, mut finished) = (0usize, 0usize);
        let end = Instant::now() + LIMIT;
        while finished < N && Instant::now() < end {
            poller.wait(&mut events, Some(Duration::from_millis(100))).expect("wait");
            for ev in events.clone() {
                if ev.token == usize::MAX {
                    loop {
                        match listener.accept() {
                            Ok((s, _)) => {
                                s.set_nonblocking(true);
                                poller.register_stream(&s, conns.len(), Interest::READABLE).expect("register");
                                conns.push(Some(s));
                                accepted += 1;
                            }
                            Err(Error::WouldBlock) => break,
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                    continue;
                }
                let Some(s) = conns[ev.token].as_mut() else { continue };
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            // The client's FIN: close ours.
                            poller.deregister(ev.token).expect("deregister");
                            conns[ev.token] = None;
                            finished += 1;
                            break;
                        }
                        Ok(n) => assert_eq!(s.write(&buf[..n]), Ok(n), "small echoes fit the send ring"),
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
            }
        }
        (accepted, finished)
    });

    let mut poller = Poller::new(&ch);
    let mut conns = Vec::new();
    for i in 0..N {
        let mut s = TcpSocket::new(&ch);
        s.set_nonblocking(true);
        s.set_nodelay(true).expect("nodelay");
        let s = s.connect(addr, 7002).expect("connect in progress");
        poller.register_stream(&s, i, Interest::BOTH).expect("register");
        conns.push(s);
    }
    let msg = |i: usize| format!("message from connection {i:04}").into_bytes();
    let mut sent = [false; N];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); N];
    let mut eof = [false; N];
    let mut events = Vec::new();
    let mut buf = [0u8; 256];
    let end = Instant::now() + LIMIT;
    while eof.iter().any(|e| !e) && Instant::now() < end {
        poller.wait(&mut events, Some(Duration::from_millis(100))).expect("wait");
        for ev in &events {
            let i = ev.token;
            assert!(!ev.error, "connection {i} failed: {:?}", conns[i].take_error());
            if ev.writable && !sent[i] {
                let m = msg(i);
                assert_eq!(conns[i].write(&m), Ok(m.len()));
                sent[i] = true;
                poller.modify(i, Interest::READABLE).expect("modify");
            }
            if ev.readable {
                loop {
                    match conns[i].read(&mut buf) {
                        Ok(0) => {
                            eof[i] = true;
                            poller.deregister(i).expect("deregister");
                            break;
                        }
                        Ok(n) => {
                            got[i].extend_from_slice(&buf[..n]);
                            if got[i].len() == msg(i).len() {
                                conns[i].shutdown(Shutdown::Write).expect("half-close");
                            }
                        }
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("client read {i}: {e}"),
                    }
                }
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &msg(i), "echo of connection {i}");
    }
    assert!(eof.iter().all(|&e| e), "every connection ended");
    assert_eq!(server.join().expect("server"), (N, N));
    assert_woken_by_workers(&[&ch]);
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let _watchdog = Watchdog::new("connect_to_a_closed_port_is_refused");
    let (_net, _sh, ch, addr) = pair();
    let start = Instant::now();
    let e = TcpStream::connect(&ch, addr, 9).expect_err("nobody listens on port 9");
    assert_eq!(e, Error::ConnectionRefused);
    assert!(start.elapsed() < Duration::from_secs(1), "refused at once, not after retries");
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
    // Timeouts past the end of time mean "no timeout", not a panic.
    let r = TcpSocket::new(&ch).connect_timeout(addr, 9, Duration::MAX);
    assert_eq!(r.err(), Some(Error::ConnectionRefused));
    let mut s = TcpSocket::new(&ch);
    s.set_nonblocking(true);
    let s = s.connect(addr, 9).expect("in progress");
    s.set_read_timeout(Some(Duration::MAX)).expect("huge timeout");
    let mut p = Poller::new(&ch);
    p.register_stream(&s, 3, Interest::READABLE).expect("register");
    let mut ev = Vec::new();
    assert_eq!(p.wait(&mut ev, Some(Duration::MAX)), Ok(1));
    assert!(ev[0].error);
    assert_eq!(s.take_error(), Some(Error::ConnectionRefused));
}

#[test]
fn silent_and_unreachable_hosts() {
    let _watchdog = Watchdog::new("silent_and_unreachable_hosts");
    let silent = Ipv4Addr::new(10, 0, 0, 77);
    let unreachable = Ipv4Addr::new(10, 0, 0, 99);
    let mut cfg = LoopbackConfig { unreachable: vec![unreachable], ..LoopbackConfig::default() };
    // Two SYN retransmissions 100 ms apart instead of Linux's two minutes.
    cfg.tcp.syn_retries = 2;
    cfg.tcp.initial_rto = Duration::from_millis(100);
    let net = Loopback::start(cfg).expect("loopback");
    let ch = net.handle(1).expect("client");

    let start = Instant::now();
    let e = TcpStream::connect(&ch, silent, 80).expect_err("nobody answers");
    assert_eq!(e, Error::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(250), "after the retransmissions: {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(std::io::Error::from(e).raw_os_error(), Some(libc::ETIMEDOUT));

    let e = TcpStream::connect(&ch, unreachable, 80).expect_err("no route");
    assert_eq!(e, Error::HostUnreachable);
    let io = std::io::Error::from(e);
    assert_eq!(io.kind(), ErrorKind::HostUnreachable);
    assert_eq!(io.raw_os_error(), Some(libc::EHOSTUNREACH));

    // Non-blocking: the failure shows as an error event and SO_ERROR.
    let mut s = TcpSocket::new(&ch);
    s.set_nonblocking(true);
    let s = s.connect(unreachable, 80).expect("in progress");
    let mut p = Poller::new(&ch);
    p.register_stream(&s, 1, Interest::WRITABLE).expect("register");
    let mut ev = Vec::new();
    p.wait(&mut ev, Some(LIMIT)).expect("wait");
    assert!(ev[0].error && ev[0].writable, "{ev:?}");
    assert_eq!(s.take_error(), Some(Error::HostUnreachable));
    assert_eq!(s.take_error(), None, "reported once");

    // connect_timeout gives up on its own clock.
    let start = Instant::now();
    let r = TcpSocket::new(&ch).connect_timeout(silent, 80, Duration::from_millis(50));
    assert_eq!(r.err(), Some(Error::TimedOut));
    // Well before the first SYN retransmission (1 s), with room for a
    // loaded machine.
    assert!(start.elapsed() < Duration::from_millis(900));
}

#[test]
fn half_close_keeps_the_other_direction() {
    let _watchdog = Watchdog::new("half_close_keeps_the_other_direction");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7003, 8).expect("listen");
    let server = thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut req = Vec::new();
        Read::read_to_end(&mut s, &mut req).expect("read until the FIN");
        // The peer half-closed: we are in CLOSE_WAIT and may still write.
        assert!(eventually(LIMIT, || s.state() == State::CloseWait), "state {:?}", s.state());
        let reply = format!("{} bytes from {}:{}", req.len(), peer.0, peer.1);
        s.write_all(reply.as_bytes()).expect("reply after the peer's FIN");
        reply
    });
    let mut c = TcpStream::connect(&ch, addr, 7003).expect("connect");
    c.write_all(b"request body").expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown(write)");
    assert_eq!(c.write(b"more"), Err(Error::BrokenPipe), "no writes after shutdown(write)");
    let mut reply = String::new();
    Read::read_to_string(&mut c, &mut reply).expect("read the reply");
    let expect = server.join().expect("server");
    assert_eq!(reply, expect);
    let local = c.local_addr().expect("local address");
    assert_eq!(reply, format!("12 bytes from {}:{}", local.0, local.1));
    assert_woken_by_workers(&[&ch]);
}

#[test]
fn non_blocking_accept_and_read_would_block() {
    let _watchdog = Watchdog::new("non_blocking_accept_and_read_would_block");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7004, 8).expect("listen");
    listener.set_nonblocking(true);
    assert_eq!(listener.accept().err(), Some(Error::WouldBlock));
    let mut c = TcpStream::connect(&ch, addr, 7004).expect("connect");
    let mut s = None;
    assert!(eventually(LIMIT, || {
        match listener.accept() {
            Ok((st, _)) => s = Some(st),
            Err(e) => assert_eq!(e, Error::WouldBlock),
        }
        s.is_some()
    }));
    let mut s = s.expect("accepted");
    s.set_nonblocking(true);
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), Err(Error::WouldBlock));
    assert_eq!(Read::read(&mut s, &mut buf).expect_err("io error").kind(), ErrorKind::WouldBlock);
    c.write_all(b"x").expect("write");
    let mut got = 0;
    assert!(eventually(LIMIT, || {
        match s.read(&mut buf) {
            Ok(n) => got += n,
            Err(e) => assert_eq!(e, Error::WouldBlock),
        }
        got == 1
    }));
    assert_eq!(buf[0], b'x');
    assert_eq!(s.read(&mut buf), Err(Error::WouldBlock));
    // A blocking read with SO_RCVTIMEO gives up with EAGAIN.
    s.set_nonblocking(false);
    s.set_read_timeout(Some(Duration::from_millis(30))).expect("timeout");
    let start = Instant::now();
    assert_eq!(s.read(&mut buf), Err(Error::WouldBlock));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_woken_by_workers(&[&ch, &sh]);
}

/// Section 2: backlog 1 holds two established connections; a third
/// client's SYN is dropped (no RST), so its connect stays pending until
/// an accept makes room and its SYN is retransmitted.
#[test]
fn backlog_keeps_further_connects_pending() {
    let _watchdog = Watchdog::new("backlog_keeps_further_connects_pending");
    let (net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7005, 1).expect("listen");
    let c1 = TcpStream::connect(&ch, addr, 7005).expect("first connect");
    let c2 = TcpStream::connect(&ch, addr, 7005).expect("second connect");
    let mut s = TcpSocket::new(&ch);
    s.set_nonblocking(true);
    let c3 = s.connect(addr, 7005).expect("third connect in progress");
    thread::sleep(Duration::from_millis(500));
    assert!(!c3.is_connected(), "the third SYN must be dropped while the backlog is full");
    assert_eq!(c3.state(), State::SynSent);
    assert_eq!(net.stats().resets, 0, "overflow is silent");

    let (a1, p1) = listener.accept().expect("accept 1");
    assert_eq!(p1, c1.local_addr().expect("c1 address"));
    // Room again: the retransmitted SYN (1 s after the first) gets in.
    assert!(eventually(Duration::from_secs(10), || c3.is_connected()), "third connect completes after an accept");
    let (_a2, p2) = listener.accept().expect("accept 2");
    let (_a3, p3) = listener.accept().expect("accept 3");
    assert_eq!(p2, c2.local_addr().expect("c2 address"));
    assert_eq!(p3, c3.local_addr().expect("c3 address"));
    drop(a1);
}

#[test]
fn dropping_a_stream_with_unread_data_sends_rst() {
    let _watchdog = Watchdog::new("dropping_a_stream_with_unread_data_sends_rst");
    let (net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7006, 8).expect("listen");
    let mut c = TcpStream::connect(&ch, addr, 7006).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    c.write_all(b"never read").expect("write");
    let mut p = Poller::new(&sh);
    p.register_stream(&s, 7, Interest::READABLE).expect("register");
    let mut ev = Vec::new();
    assert_eq!(p.wait(&mut ev, Some(LIMIT)), Ok(1));
    assert!(ev[0].readable);
    // Level-triggered: still readable while nobody reads.
    assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)), Ok(1));
    let resets = net.stats().resets;
    drop(s);
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf), Err(Error::ConnectionReset), "RST, not FIN");
    assert!(net.stats().resets > resets);
    // The error is reported once: then end of file and EPIPE.
    assert_eq!(c.read(&mut buf), Ok(0));
    assert_eq!(c.write(b"x"), Err(Error::BrokenPipe));
    assert_woken_by_workers(&[&ch, &sh]);
}

#[test]
fn end_of_file_after_fin_and_errors_after_reset() {
    let _watchdog = Watchdog::new("end_of_file_after_fin_and_errors_after_reset");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7007, 8).expect("listen");

    // Orderly close: the data, then end of file, again and again.
    let mut c = TcpStream::connect(&ch, addr, 7007).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    s.write_all(b"bye").expect("write");
    drop(s);
    let mut buf = [0u8; 8];
    let mut got = Vec::new();
    loop {
        let n = c.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"bye");
    assert_eq!(c.read(&mut buf), Ok(0));
    // Writing to a peer that closed is allowed (CLOSE_WAIT)...
    assert_eq!(c.write(b"late"), Ok(4));
    // ... and draws its RST: in CLOSE_WAIT that is EPIPE from the first
    // write on, and reads still see end of file (Linux tcp_reset; checked
    // against the kernel of this machine).
    let mut first = None;
    assert!(eventually(LIMIT, || {
        match c.write(b"x") {
            Ok(_) => false,
            Err(e) => {
                first = Some(e);
                true
            }
        }
    }));
    assert_eq!(first, Some(Error::BrokenPipe));
    let e = c.write(b"x").expect_err("after the reset");
    assert_eq!(e, Error::BrokenPipe);
    assert_eq!(std::io::Error::from(e).kind(), ErrorKind::BrokenPipe);
    assert_eq!(c.read(&mut buf), Ok(0));

    // Abortive close (SO_LINGER 0): the peer's write sees ECONNRESET.
    let mut c = TcpStream::connect(&ch, addr, 7007).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    s.set_linger(Some(Duration::ZERO)).expect("linger 0");
    drop(s);
    let mut p = Poller::new(&ch);
    p.register_stream(&c, 1, Interest::READABLE).expect("register");
    let mut ev = Vec::new();
    p.wait(&mut ev, Some(LIMIT)).expect("wait");
    assert!(ev[0].error && ev[0].hangup, "{ev:?}");
    let e = Write::write(&mut c, b"x").expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    assert_eq!(c.write(b"x"), Err(Error::BrokenPipe));
    assert_eq!(c.read(&mut buf), Ok(0));
    assert_woken_by_workers(&[&ch, &sh]);
}

#[test]
fn listeners_span_workers_and_connections_spread() {
    let _watchdog = Watchdog::new("listeners_span_workers_and_connections_spread");
    let cfg = LoopbackConfig {
        hosts: vec![
            Host { addr: Ipv4Addr::new(10, 0, 0, 1), workers: 2 },
            Host { addr: Ipv4Addr::new(10, 0, 0, 2), workers: 2 },
        ],
        ..LoopbackConfig::default()
    };
    let net = Loopback::start(cfg).expect("loopback");
    let (sh, ch, addr) = (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("addr"));
    assert_eq!(sh.workers(), 2);
    // Port 0: worker 0 picks the port, worker 1 listens on the same one.
    let listener = TcpListener::bind(&sh, ANY, 0, 64).expect("listen");
    let port = listener.local_addr().expect("local").1;
    assert_ne!(port, 0);
    assert_eq!(TcpListener::bind(&sh, ANY, port, 8).err(), Some(Error::AddrInUse));

    let server = thread::spawn(move || {
        let mut workers = [0usize; 2];
        for _ in 0..40 {
            let (mut s, _) = listener.accept().expect("accept");
            workers[s.worker_index()] += 1;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("read");
            s.write_all(&b).expect("write");
        }
        workers
    });
    let mut client_workers = [0usize; 2];
    for i in 0..40u8 {
        // Round robin over the client's workers; replies find their way
        // back to the worker that connected.
        let mut c = TcpStream::connect(&ch, addr, port).expect("connect");
        client_workers[c.worker_index()] += 1;
        c.write_all(&[i]).expect("write");
        let mut b = [0u8; 1];
        c.read_exact(&mut b).expect("read");
        assert_eq!(b[0], i);
    }
    let server_workers = server.join().expect("server");
    assert_eq!(client_workers, [20, 20]);
    assert!(server_workers.iter().all(|&n| n > 0), "both server workers accepted: {server_workers:?}");

    // An explicit worker.
    let mut s = TcpSocket::new(&ch);
    s.set_worker(1).expect("worker 1");
    assert_eq!(TcpSocket::new(&ch).set_worker(2), Err(Error::InvalidInput));
    let c = s.connect(addr, port);
    // The listener is gone: refused.
    assert_eq!(c.err(), Some(Error::ConnectionRefused));
    assert_woken_by_workers(&[&ch]);
}

#[test]
fn options_and_addresses() {
    let _watchdog = Watchdog::new("options_and_addresses");
    let (_net, sh, ch, addr) = pair();
    let mut ls = TcpSocket::new(&sh);
    ls.set_reuseaddr(true).expect("reuseaddr");
    ls.set_recv_buffer_size(8192).expect("rcvbuf");
    assert_eq!(ls.set_option(xstack_dataplane::tcp::SocketOption::KeepCnt(0)), Err(Error::InvalidInput));
    ls.bind(addr, 7008).expect("bind");
    assert_eq!(ls.bind(addr, 7009), Err(Error::InvalidInput), "bound twice");
    let listener = ls.listen(4).expect("listen");
    assert_eq!(listener.local_addr(), Ok((addr, 7008)));
    // Not our address.
    let mut other = TcpSocket::new(&sh);
    other.bind(Ipv4Addr::new(10, 9, 9, 9), 7010).expect("recorded");
    assert_eq!(other.listen(4).err(), Some(Error::AddrNotAvailable));

    let mut cs = TcpSocket::new(&ch);
    cs.set_nodelay(true).expect("nodelay");
    cs.set_keepalive(true).expect("keepalive");
    cs.set_send_buffer_size(4096).expect("sndbuf");
    let mut c = cs.connect(addr, 7008).expect("connect");
    let (mut s, peer) = listener.accept().expect("accept");
    assert_eq!(peer, c.local_addr().expect("local"));
    assert_eq!(s.peer_addr(), Ok(peer));
    assert_eq!(s.local_addr(), Ok((addr, 7008)));
    assert_eq!(c.state(), State::Established);
    s.set_nodelay(true).expect("nodelay on a live stream");
    assert_eq!(s.set_read_timeout(Some(Duration::ZERO)), Err(Error::InvalidInput));
    // Small buffers still carry a lot.
    let data: Vec<u8> = (0..300_000).map(pattern).collect();
    let mut back = vec![0u8; data.len()];
    thread::scope(|sc| {
        sc.spawn(|| c.write_all(&data).expect("write"));
        s.read_exact(&mut back).expect("read");
    });
    assert!(back == data);
    assert_woken_by_workers(&[&ch, &sh]);
}

#[test]
fn blocked_calls_fail_when_the_stack_goes_away() {
    let _watchdog = Watchdog::new("blocked_calls_fail_when_the_stack_goes_away");
    let (net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7011, 8).expect("listen");
    let mut c = TcpStream::connect(&ch, addr, 7011).expect("connect");
    let (_s, _) = listener.accept().expect("accept");
    let reader = thread::spawn(move || {
        let mut b = [0u8; 4];
        let start = Instant::now();
        (c.read(&mut b), start.elapsed())
    });
    let acceptor = thread::spawn(move || listener.accept().map(|_| ()));
    thread::sleep(Duration::from_millis(100));
    drop(net);
    let (r, took) = reader.join().expect("reader");
    assert_eq!(r, Err(Error::ConnectionAborted));
    assert!(took < Duration::from_secs(5));
    assert_eq!(acceptor.join().expect("acceptor"), Err(Error::ConnectionAborted));
    assert!(!ch.is_alive());
    assert_eq!(TcpStream::connect(&ch, addr, 7011).err(), Some(Error::ConnectionAborted));
}

/// Pure spinning, as a benchmark would run it: threads never park, sockets
/// are non-blocking, and timeouts still hold.
#[test]
fn pure_spinning_with_non_blocking_sockets() {
    let _watchdog = Watchdog::new("pure_spinning_with_non_blocking_sockets");
    let mut cfg = LoopbackConfig::default();
    cfg.sockets.spin = u32::MAX;
    let net = Loopback::start(cfg).expect("loopback");
    let (sh, ch, addr) = (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("addr"));
    let listener = TcpListener::bind(&sh, ANY, 7012, 8).expect("listen");
    listener.set_nonblocking(true);
    let mut s = TcpSocket::new(&ch);
    s.set_nonblocking(true);
    s.set_nodelay(true).expect("nodelay");
    let mut c = s.connect(addr, 7012).expect("connect in progress");
    let mut p = Poller::new(&ch);
    p.register_stream(&c, 0, Interest::WRITABLE).expect("register");
    let mut ev = Vec::new();
    assert_eq!(p.wait(&mut ev, Some(LIMIT)), Ok(1), "connected");
    let mut server = None;
    assert!(eventually(LIMIT, || {
        server = listener.accept().ok();
        server.is_some()
    }));
    let (mut srv, _) = server.expect("accepted");
    srv.set_nonblocking(true);

    // An idle poll with a timeout returns on time even though it spins.
    p.modify(0, Interest::READABLE).expect("modify");
    let start = Instant::now();
    assert_eq!(p.wait(&mut ev, Some(Duration::from_millis(30))), Ok(0));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(5), "{took:?}");

    let mut buf = [0u8; 64];
    for round in 0..200u32 {
        let msg = round.to_be_bytes();
        assert_eq!(c.write(&msg), Ok(4));
        let end = Instant::now() + LIMIT;
        let mut got = 0;
        while got < 4 && Instant::now() < end {
            match srv.read(&mut buf[got..4]) {
                Ok(n) => got += n,
                Err(Error::WouldBlock) => std::hint::spin_loop(),
                Err(e) => panic!("server read: {e}"),
            }
        }
        assert_eq!(&buf[..4], &msg);
        assert_eq!(srv.write(&buf[..4]), Ok(4));
        assert_eq!(p.wait(&mut ev, Some(LIMIT)), Ok(1));
        let mut back = [0u8; 4];
        let mut got = 0;
        while got < 4 && Instant::now() < end {
            match c.read(&mut back[got..]) {
                Ok(n) => got += n,
                Err(Error::WouldBlock) => std::hint::spin_loop(),
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert_eq!(back, msg);
    }
    assert_eq!(ch.wait_stats().parks + sh.wait_stats().parks, 0, "nobody parked");
}

/// The connection can end (both FINs acknowledged: CLOSED) while the
/// receiver's stack still holds data its ring had no room for; the reader
/// still gets every byte, then end of file.
#[test]
fn data_left_in_the_stack_survives_a_normal_close() {
    let _watchdog = Watchdog::new("data_left_in_the_stack_survives_a_normal_close");
    let (_net, sh, ch, addr) = pair();
    let listener = TcpListener::bind(&sh, ANY, 7013, 8).expect("listen");
    let mut cs = TcpSocket::new(&ch);
    cs.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut c = cs.connect(addr, 7013).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    let data: Vec<u8> = (0..7000).map(pattern).collect();
    s.write_all(&data).expect("write");
    s.shutdown(Shutdown::Write).expect("FIN");
    // The client's ring (4 KiB) is full, the rest waits in its stack with
    // the FIN: CLOSE_WAIT. Our FIN then takes it through LAST_ACK to CLOSED.
    assert!(eventually(LIMIT, || c.state() == State::CloseWait), "state {:?}", c.state());
    c.shutdown(Shutdown::Write).expect("our FIN");
    assert!(eventually(LIMIT, || c.state() == State::Closed), "state {:?}", c.state());
    let mut got = Vec::new();
    Read::read_to_end(&mut c, &mut got).expect("read everything");
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    drop(s);
    assert_woken_by_workers(&[&ch]);
}

/// The worker side allocates nothing per packet: a hand-rolled driver
/// thread (two stacks, a bridge on each, segments handed over through one
/// buffer) counts its own allocations while two application threads echo
/// through the sockets. Opening a connection allocates (its state and
/// rings); moving its data must not.
#[test]
fn bridge_data_path_does_not_allocate() {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use xstack_dataplane::app;
    use xstack_dataplane::sockets::{self, Config};
    use xstack_dataplane::tcp::{self, Stack};

    let _watchdog = Watchdog::new("bridge_data_path_does_not_allocate");
    let (a_addr, b_addr) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
    let (ha, mut ba) = sockets::new(1, Config::default());
    let (hb, mut bb) = sockets::new(1, Config::default());
    // 0: warm-up, 1: measure, 2: stop.
    let phase = Arc::new(AtomicU8::new(0));
    let driver = {
        let phase = Arc::clone(&phase);
        let (mut ba, mut bb) = (ba.remove(0), bb.remove(0));
        thread::spawn(move || {
            let epoch = Instant::now();
            let now = || tcp::Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
            let mut a = Stack::new(tcp::Config::default(), &[a_addr], 1, tcp::Instant::ZERO);
            let mut b = Stack::new(tcp::Config::default(), &[b_addr], 2, tcp::Instant::ZERO);
            let mut buf = vec![0u8; 1480];
            let end = Instant::now() + LIMIT;
            let mut step = |a: &mut Stack, b: &mut Stack| {
                let t = now();
                for (s, br) in [(&mut *a, &mut ba), (&mut *b, &mut bb)] {
                    if s.poll_timeout().is_some_and(|d| d <= t) {
                        s.handle_timeout(t);
                    }
                    app::dispatch(br, s, t);
                }
                let mut moved = false;
                while let Some(tx) = a.poll_transmit(t, &mut buf) {
                    let _ = b.handle_segment(t, tx.src, tx.dst, &buf[..tx.len]);
                    moved = true;
                }
                while let Some(tx) = b.poll_transmit(t, &mut buf) {
                    let _ = a.handle_segment(t, tx.src, tx.dst, &buf[..tx.len]);
                    moved = true;
                }
                if !moved {
                    // Two cores for three busy threads: let the others run.
                    thread::yield_now();
                }
            };
            while phase.load(Ordering::Acquire) == 0 && Instant::now() < end {
                step(&mut a, &mut b);
            }
            let info = allocation_counter::measure(|| {
                while phase.load(Ordering::Acquire) == 1 && Instant::now() < end {
                    step(&mut a, &mut b);
                }
            });
            while phase.load(Ordering::Acquire) != 3 && Instant::now() < end {
                step(&mut a, &mut b);
            }
            info
        })
    };
    let listener = TcpListener::bind(&ha, ANY, 7100, 8).expect("listen");
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 2048];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => s.write_all(&buf[..n]).expect("echo"),
                Err(e) => panic!("server read: {e}"),
            }
        }
    });
    let mut c = TcpStream::connect(&hb, a_addr, 7100).expect("connect");
    let msg: Vec<u8> = (0..1000).map(pattern).collect();
    let mut back = vec![0u8; msg.len()];
    for round in 0..2200 {
        if round == 200 {
            phase.store(1, Ordering::Release);
        }
        c.write_all(&msg).expect("write");
        c.read_exact(&mut back).expect("read");
        assert!(back == msg);
    }
    phase.store(2, Ordering::Release);
    c.shutdown(Shutdown::Write).expect("shutdown");
    server.join().expect("server");
    assert_eq!(c.read(&mut back), Ok(0));
    drop(c);
    phase.store(3, Ordering::Release);
    let info = driver.join().expect("driver");
    assert_eq!(info.count_total, 0, "worker-side allocations while moving data: {info:?}");
}

/// A bridge shares its worker with another run-to-completion app: the
/// app's echo service and a thread's listener serve side by side, and
/// threads talk to both.
#[test]
fn sockets_beside_a_run_to_completion_app() {
    let _watchdog = Watchdog::new("sockets_beside_a_run_to_completion_app");
    let cfg = LoopbackConfig { worker_app: Some(echo_on_server), ..LoopbackConfig::default() };
    let net = Loopback::start(cfg).expect("loopback");
    let (sh, ch, addr) = (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("addr"));
    // A thread's listener on the same stack as the app's.
    let listener = TcpListener::bind(&sh, ANY, 8000, 8).expect("listen beside the app");
    assert_eq!(TcpListener::bind(&sh, ANY, 7, 8).err(), Some(Error::AddrInUse), "the app holds port 7");
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut v = Vec::new();
        Read::read_to_end(&mut s, &mut v).expect("read");
        v.len()
    });
    // The app's echo service, from a thread.
    let mut e = TcpStream::connect(&ch, addr, 7).expect("connect to the app");
    let data: Vec<u8> = (0..100_000).map(pattern).collect();
    let mut back = vec![0u8; data.len()];
    {
        let (mut r, mut w) = e.split();
        thread::scope(|sc| {
            sc.spawn(|| w.write_all(&data).expect("write"));
            r.read_exact(&mut back).expect("echo from the app");
        });
    }
    assert!(back == data);
    let mut t = TcpStream::connect(&ch, addr, 8000).expect("connect to the thread");
    t.write_all(&data[..5000]).expect("write");
    drop(t);
    assert_eq!(server.join().expect("server"), 5000);
    assert_woken_by_workers(&[&ch]);
}

/// An operator's drain (`xstackctl drain`; here `Loopback::drain`, which
/// runs the same `app::drain` as the daemon's workers): the threads'
/// listeners close like the app's, a thread blocked in accept() wakes with
/// EINVAL (Linux's accept() on a listener that was shut down), a poller
/// sees the listener readable and hung up, connections already open go
/// on, and new ones are refused.
#[test]
fn drain_fails_blocked_accepts_and_keeps_open_connections() {
    use std::sync::{mpsc, Arc};
    let _watchdog = Watchdog::new("drain_fails_blocked_accepts_and_keeps_open_connections");
    let cfg = LoopbackConfig {
        hosts: vec![
            Host { addr: Ipv4Addr::new(10, 0, 0, 1), workers: 2 },
            Host { addr: Ipv4Addr::new(10, 0, 0, 2), workers: 1 },
        ],
        worker_app: Some(echo_on_server),
        ..LoopbackConfig::default()
    };
    let net = Loopback::start(cfg).expect("loopback");
    let (sh, ch, addr) = (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("addr"));
    let listener = Arc::new(TcpListener::bind(&sh, ANY, 7030, 8).expect("listen"));
    let mut c = TcpStream::connect(&ch, addr, 7030).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    let mut e = TcpStream::connect(&ch, addr, 7).expect("connect to the app");
    let mut poller = Poller::new(&sh);
    poller.register_listener(&listener, 1, Interest::READABLE).expect("register");
    let mut events = Vec::new();
    assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)), Ok(0), "nothing to accept yet");

    let (tx, rx) = mpsc::channel();
    let l = Arc::clone(&listener);
    thread::spawn(move || {
        let _ = tx.send(l.accept().map(|_| ()));
    });
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "accept() blocks before the drain");
    assert_eq!(net.drained(0), Some(DrainStats::default()));
    assert!(net.drain(0));
    let woke = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(woke, Ok(Err(Error::InvalidInput)), "the blocked accept() fails");
    assert!(eventually(LIMIT, || net.drained(0).is_some_and(|d| d.drains == 1)));
    // Per worker: the thread's listener and the app's.
    assert_eq!(net.drained(0), Some(DrainStats { drains: 1, listeners_closed: 4 }));
    assert!(!net.drain(2), "no host 2");

    assert_eq!(listener.accept().err(), Some(Error::InvalidInput), "and so does the next one, at once");
    listener.set_nonblocking(true);
    assert_eq!(listener.accept().err(), Some(Error::InvalidInput), "non-blocking too");
    assert_eq!(poller.wait(&mut events, Some(Duration::from_secs(10))), Ok(1));
    assert!(events[0].token == 1 && events[0].readable && events[0].hangup && !events[0].error, "{events:?}");

    // Open connections go on: the thread's and the app's.
    c.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).expect("read");
    s.write_all(&b).expect("write back");
    c.read_exact(&mut b).expect("read back");
    assert_eq!(&b, b"ping");
    e.write_all(b"echo").expect("write to the app");
    e.read_exact(&mut b).expect("echo from the app");
    assert_eq!(&b, b"echo");
    // New ones are refused, on both ports.
    assert_eq!(TcpStream::connect(&ch, addr, 7030).err(), Some(Error::ConnectionRefused));
    assert_eq!(TcpStream::connect(&ch, addr, 7).err(), Some(Error::ConnectionRefused));
    assert_woken_by_workers(&[&ch, &sh]);
}
