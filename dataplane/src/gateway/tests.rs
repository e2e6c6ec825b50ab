//! A process's sockets served by a worker's gateway: the worker runs in
//! the loopback (stacks joined by an in-memory link), the process side is
//! this thread, talking through a real arena (memfd) and registration
//! over a unix socket pair; the peer is a thread using the socket API on
//! the other host.

use super::arena::Geometry;
use super::serve::{admit, Gateway, Inbox, Order};
use super::Process;
use crate::app::App;
use crate::sockets::loopback::{Host, Loopback, LoopbackConfig};
use crate::sockets::{TcpListener, TcpStream};
use crate::tcp::Error;
use crate::wire::Ipv4Addr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The gateways' inboxes of the loopback that is running (tests here run
/// one at a time: see `serial`).
static INBOX: OnceLock<Mutex<Option<Arc<Inbox>>>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn gateway_app(host: usize, worker: usize) -> Option<Box<dyn App>> {
    let inbox = INBOX.get()?.lock().unwrap().clone()?;
    (host == 0).then(|| Box::new(Gateway::new(worker, inbox)) as Box<dyn App>)
}

struct Setup {
    lo: Loopback,
    process: Process,
    inbox: Arc<Inbox>,
    _wake: OwnedFd,
    _daemon_end: UnixStream,
}

fn setup() -> Setup {
    let inbox = Inbox::new();
    *INBOX.get_or_init(|| Mutex::new(None)).lock().unwrap() = Some(Arc::clone(&inbox));
    let lo = Loopback::start(LoopbackConfig {
        hosts: vec![Host { addr: SERVER, workers: 1 }, Host { addr: Ipv4Addr::new(10, 0, 0, 2), workers: 1 }],
        worker_app: Some(gateway_app),
        ..LoopbackConfig::default()
    })
    .unwrap();
    let (daemon_end, app_end) = UnixStream::pair().unwrap();
    let wake: OwnedFd = nix::sys::eventfd::EventFd::new().unwrap().into();
    let g = Geometry { workers: 1, slots: 256, app_slots: 64, commands: 64, events: 64, heap: 8 << 20 };
    let app = std::thread::spawn(move || Process::over(app_end).unwrap());
    let mut d = daemon_end.try_clone().unwrap();
    let hello = super::register::read_hello(&mut d).unwrap();
    assert_eq!(hello, super::register::Hello::Register { pid: u64::from(std::process::id()) });
    let addrs = [crate::iface::IfAddr { addr: SERVER, prefix_len: 24 }];
    let owner = crate::app::Owner { pid: std::process::id(), name: "test".into() };
    admit(&daemon_end, 1, owner, g, (&addrs, None), &[Arc::clone(&inbox)], &[wake.as_fd()]).unwrap();
    let process = app.join().unwrap();
    Setup { lo, process, inbox, _wake: wake, _daemon_end: daemon_end }
}

/// Retries a non-blocking call until it stops saying WouldBlock.
fn retry<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let start = Instant::now();
    loop {
        match f() {
            Err(Error::WouldBlock) if start.elapsed() < Duration::from_secs(10) => std::thread::yield_now(),
            r => return r,
        }
    }
}

#[test]
fn a_process_listens_accepts_and_echoes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let l = p.listen(Ipv4Addr::UNSPECIFIED, 7, 16, &[]).unwrap();
    assert_eq!(p.listener_addr(&l).1, 7);
    assert!(!p.listener_ready(&l).read);
    let h = s.lo.handle(1).unwrap();
    let peer = std::thread::spawn(move || {
        let mut c = TcpStream::connect(&h, SERVER, 7).unwrap();
        c.write_all(b"hello through the arena").unwrap();
        let mut back = vec![0u8; 23];
        c.read_exact(&mut back).unwrap();
        c.shutdown(crate::tcp::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        (back, rest)
    });
    let c = retry(|| p.accept(&l)).unwrap();
    assert_eq!(p.peer_addr(&c).map(|a| a.0), Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(p.local_addr(&c), Some((SERVER, 7)));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 23 {
        let n = retry(|| p.read(&c, &mut buf)).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"hello through the arena");
    assert!(p.ready(&c).write);
    assert_eq!(retry(|| p.write(&c, &got)).unwrap(), 23);
    // The peer's FIN: end of file, and EPOLLRDHUP.
    assert_eq!(retry(|| p.read(&c, &mut buf)).unwrap(), 0);
    let r = p.ready(&c);
    assert!(r.read && r.rdhup && !r.hup && !r.err, "{r:?}");
    p.write(&c, b"bye").unwrap();
    p.close_stream(c);
    let (back, rest) = peer.join().unwrap();
    assert_eq!(&back, b"hello through the arena");
    assert_eq!(&rest, b"bye", "written before close arrives before the FIN");
    p.close_listener(l);
    drop(s.inbox);
}

/// An edge-triggered epoll waiter on a listener reports it again when its
/// readiness stamp moves: every arrival must move it, also one that comes
/// after the queue was emptied and lands in the place the last one had
/// (the stamp once came from the last queued slot's number).
#[test]
fn every_arrival_moves_a_listener_s_readiness_stamp() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let l = p.listen(Ipv4Addr::UNSPECIFIED, 9, 16, &[]).unwrap();
    let h = s.lo.handle(1).unwrap();
    let mut seen = vec![p.listener_ready(&l).seq];
    for _ in 0..4 {
        let h = h.clone();
        let peer = std::thread::spawn(move || {
            let c = TcpStream::connect(&h, SERVER, 9).unwrap();
            c.set_option(crate::tcp::SocketOption::Linger(Some(Duration::ZERO))).unwrap();
            drop(c);
        });
        let c = retry(|| p.accept(&l)).unwrap();
        let r = p.listener_ready(&l);
        assert!(!r.read, "one arrival, accepted");
        assert!(!seen.contains(&r.seq), "arrival {} left the stamp at {} (seen {seen:?})", seen.len(), r.seq);
        seen.push(r.seq);
        peer.join().unwrap();
        p.close_stream(c);
        // The place frees once the worker has closed it.
        std::thread::sleep(Duration::from_millis(50));
    }
    p.close_listener(l);
    drop(s.inbox);
}

/// A forked child that could not join the arena (every member number
/// taken) holds nothing: its close() of an inherited listener must not
/// close the listener for the parent that still holds it (a close() on
/// Linux drops one reference to a shared socket).
#[test]
fn a_child_without_a_member_number_does_not_close_what_others_hold() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let l = p.listen(SERVER, 11, 4, &[]).unwrap();
    let inherited = l.inherited();
    let me = p.set_member(None);
    p.close_listener(inherited);
    p.set_member(me);
    let h = s.lo.handle(1).unwrap();
    let peer = std::thread::spawn(move || {
        let mut c = TcpStream::connect(&h, SERVER, 11).map_err(|e| format!("connect: {e}"))?;
        c.write_all(b"x").map_err(|e| format!("write: {e}"))
    });
    let c = retry(|| p.accept(&l)).expect("the parent's listener still accepts");
    let mut b = [0u8; 1];
    assert_eq!(retry(|| p.read(&c, &mut b)), Ok(1));
    peer.join().unwrap().unwrap();
    p.close_stream(c);
    p.close_listener(l);
}

/// bind() holds the port at once (inet_bind): port 0 is named before
/// listen, a second bind of the port is EADDRINUSE, listen keeps the
/// port, and a bound socket connects from its port.
#[test]
fn bind_holds_the_port_until_listen_or_connect_goes_on_from_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let b = p.bind(SERVER, 0, &[]).unwrap();
    let (addr, port) = p.listener_addr(&b);
    assert_eq!(addr, SERVER);
    assert_ne!(port, 0, "port 0 named at bind");
    assert_eq!(p.bind(SERVER, port, &[]).unwrap_err(), Error::AddrInUse);
    assert_eq!(p.listen(SERVER, port, 4, &[]).unwrap_err(), Error::AddrInUse);
    p.listen_bound(&b, 4).unwrap();
    assert_eq!(p.listener_addr(&b), (SERVER, port));
    let h = s.lo.handle(1).unwrap();
    let peer = std::thread::spawn(move || TcpStream::connect(&h, SERVER, port).map(drop));
    let c = retry(|| p.accept(&b)).expect("the bound listener accepts");
    peer.join().unwrap().unwrap();
    p.close_stream(c);
    p.close_listener(b);

    // A bound client connects from its port; the port is free again after.
    let h = s.lo.handle(1).unwrap();
    let server = TcpListener::bind(&h, Ipv4Addr::new(10, 0, 0, 2), 80, 4).unwrap();
    let t = std::thread::spawn(move || server.accept().map(|(_, from)| from));
    let b = p.bind(SERVER, 0, &[]).unwrap();
    let port = p.listener_addr(&b).1;
    let c = p.connect_bound(b, (Ipv4Addr::new(10, 0, 0, 2), 80)).unwrap();
    assert_eq!(p.local_addr(&c), Some((SERVER, port)));
    assert_eq!(t.join().unwrap().unwrap(), (SERVER, port));
    p.close_stream(c);
    drop(s.inbox);
}

#[test]
fn a_second_listener_on_the_port_gets_eaddrinuse_and_connect_works() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let l = p.listen(SERVER, 9, 4, &[]).unwrap();
    assert_eq!(p.listen(SERVER, 9, 4, &[]).unwrap_err(), Error::AddrInUse);
    // An outgoing connection to the other host's listener.
    let h = s.lo.handle(1).unwrap();
    let server = TcpListener::bind(&h, Ipv4Addr::new(10, 0, 0, 2), 80, 4).unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = server.accept().unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        b
    });
    let c = p.connect((Ipv4Addr::new(10, 0, 0, 2), 80), None, &[]).unwrap();
    let start = Instant::now();
    while !p.ready(&c).write {
        assert!(start.elapsed() < Duration::from_secs(10), "connect never completed");
        std::thread::yield_now();
    }
    assert!(p.is_connected(&c));
    assert_eq!(p.write(&c, b"ping").unwrap(), 4);
    assert_eq!(&t.join().unwrap(), b"ping");
    // Refused: nothing listens on port 81.
    let c2 = p.connect((Ipv4Addr::new(10, 0, 0, 2), 81), None, &[]).unwrap();
    let start = Instant::now();
    while !p.ready(&c2).err {
        assert!(start.elapsed() < Duration::from_secs(10), "refusal never came");
        std::thread::yield_now();
    }
    let r = p.ready(&c2);
    assert!(r.hup && r.read && r.write, "{r:?}");
    assert_eq!(p.take_error(&c2), Some(Error::ConnectionRefused));
    assert_eq!(p.take_error(&c2), None, "SO_ERROR is consumed");
    p.close_stream(c);
    p.close_stream(c2);
    p.close_listener(l);
}

#[test]
fn a_dead_process_s_connections_are_closed_as_linux_closes_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup();
    let p = &s.process;
    let l = p.listen(SERVER, 7, 16, &[]).unwrap();
    let h = s.lo.handle(1).unwrap();
    // One connection accepted with nothing unread (FIN on death), one
    // accepted with unread data (RST), one never accepted (RST).
    let mut quiet = TcpStream::connect(&h, SERVER, 7).unwrap();
    let c1 = retry(|| p.accept(&l)).unwrap();
    let mut chatty = TcpStream::connect(&h, SERVER, 7).unwrap();
    chatty.write_all(b"unread").unwrap();
    let c2 = retry(|| p.accept(&l)).unwrap();
    let start = Instant::now();
    while p.readable_bytes(&c2) < 6 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::yield_now();
    }
    let mut waiting = TcpStream::connect(&h, SERVER, 7).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::mem::forget((c1, c2, l));
    s.inbox.send(Order::Detach { id: 1 }).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(quiet.read(&mut b).unwrap(), 0, "FIN");
    let e = chatty.read(&mut b).unwrap_err();
    assert_eq!(std::io::Error::from(e).raw_os_error(), Some(libc::ECONNRESET));
    let e = waiting.read(&mut b).unwrap_err();
    assert_eq!(std::io::Error::from(e).raw_os_error(), Some(libc::ECONNRESET), "never accepted");
}
