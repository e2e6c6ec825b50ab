//! An echo server and its clients on the socket API for application
//! threads, over the in-process loopback network (no NIC, no root):
//!
//! ```sh
//! cargo run --release -p xstack-dataplane --example socket_echo [CONNECTIONS] [ROUNDS]
//! ```
//!
//! Host 10.0.0.1 runs the server: one thread with a `Poller` and
//! non-blocking sockets, echoing whatever arrives. Host 10.0.0.2 runs the
//! clients: one thread per connection with blocking sockets, each sending
//! ROUNDS messages and reading every echo back, then half-closing and
//! waiting for the server's FIN. Each host's stack runs on a "worker"
//! (here the loopback driver thread) behind a `sockets::Bridge`, exactly
//! as it would on an AF_XDP worker; only the link is simulated.
//!
//! The round-trip times printed include two thread-to-worker hand-offs
//! per direction (application thread -> worker -> link -> worker ->
//! application thread) and, when threads outnumber cores, the parking
//! and unparking of threads. They show the socket layer's overhead, not
//! the network's.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use xstack_dataplane::sockets::loopback::Loopback;
use xstack_dataplane::sockets::{Interest, PollEvent, Poller, TcpListener, TcpStream};
use xstack_dataplane::tcp::{Error, Shutdown};
use xstack_dataplane::wire::Ipv4Addr;

const PORT: u16 = 7;
const LISTENER: usize = usize::MAX;

/// A connection on the server: the stream and the echo that did not fit
/// its send buffer yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// Serves echo until `expected` connections have come and gone.
fn serve(listener: TcpListener, mut poller: Poller, expected: usize) -> Result<u64, Error> {
    listener.set_nonblocking(true);
    poller.register_listener(&listener, LISTENER, Interest::READABLE)?;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_token = 0;
    let mut finished = 0;
    let mut echoed = 0u64;
    let mut events: Vec<PollEvent> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while finished < expected {
        poller.wait(&mut events, Some(Duration::from_secs(30)))?;
        if events.is_empty() {
            eprintln!("server: no activity for 30 s, giving up");
            break;
        }
        for ev in &events {
            if ev.token == LISTENER {
                // Level-triggered: take every waiting connection.
                loop {
                    match listener.accept() {
                        Ok((stream, _peer)) => {
                            stream.set_nonblocking(true);
                            poller.register_stream(&stream, next_token, Interest::READABLE)?;
                            conns.insert(next_token, Conn { stream, pending: Vec::new() });
                            next_token += 1;
                        }
                        Err(Error::WouldBlock) => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(&ev.token) else { continue };
            let done = match echo(c, &mut buf, &mut echoed) {
                Ok(done) => done,
                Err(e) => {
                    eprintln!("server: connection {}: {e}", ev.token);
                    true
                }
            };
            if done {
                // Dropping the stream closes it: FIN after the echo.
                poller.deregister(ev.token)?;
                conns.remove(&ev.token);
                finished += 1;
            } else {
                // Wait for room while an echo is pending, else for data.
                let want = if c.pending.is_empty() { Interest::READABLE } else { Interest::WRITABLE };
                poller.modify(ev.token, want)?;
            }
        }
    }
    Ok(echoed)
}

/// Echoes what is readable; true once the client half-closed and
/// everything went back.
fn echo(c: &mut Conn, buf: &mut [u8], echoed: &mut u64) -> Result<bool, Error> {
    // First what an earlier round could not send.
    while !c.pending.is_empty() {
        match c.stream.write(&c.pending) {
            Ok(n) => {
                c.pending.drain(..n);
            }
            Err(Error::WouldBlock) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    loop {
        let n = match c.stream.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(Error::WouldBlock) => return Ok(false),
            Err(e) => return Err(e),
        };
        *echoed += n as u64;
        let w = match c.stream.write(&buf[..n]) {
            Ok(w) => w,
            Err(Error::WouldBlock) => 0,
            Err(e) => return Err(e),
        };
        if w < n {
            // Backpressure: read no more until this is out.
            c.pending.extend_from_slice(&buf[w..n]);
            return Ok(false);
        }
    }
}

/// One client connection: ROUNDS request/response exchanges.
fn client(
    handle: xstack_dataplane::sockets::Handle,
    server: Ipv4Addr,
    id: usize,
    rounds: usize,
) -> Result<Vec<Duration>, Error> {
    let mut s = TcpStream::connect(&handle, server, PORT)?;
    s.set_nodelay(true)?;
    let mut rtts = Vec::with_capacity(rounds);
    let mut back = [0u8; 64];
    for r in 0..rounds {
        let msg = format!("client {id:3} round {r:6}\n");
        let start = Instant::now();
        s.write_all(msg.as_bytes()).map_err(|_| Error::BrokenPipe)?;
        s.read_exact(&mut back[..msg.len()]).map_err(|_| Error::ConnectionReset)?;
        rtts.push(start.elapsed());
        if &back[..msg.len()] != msg.as_bytes() {
            return Err(Error::InvalidInput);
        }
    }
    s.shutdown(Shutdown::Write)?;
    // The server's FIN: end of file.
    let n = s.read(&mut back)?;
    if n != 0 {
        return Err(Error::InvalidInput);
    }
    Ok(rtts)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);

    let net = Loopback::pair().expect("start the loopback network");
    let (server_h, client_h) = (net.handle(0).expect("host 0"), net.handle(1).expect("host 1"));
    let server_addr = net.addr(0).expect("host 0 address");

    let listener = TcpListener::bind(&server_h, Ipv4Addr::UNSPECIFIED, PORT, 128).expect("listen");
    println!("echo server listening on {server_addr}:{PORT}");
    let poller = Poller::new(&server_h);
    let server = std::thread::spawn(move || serve(listener, poller, connections));

    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|id| {
            let h = client_h.clone();
            std::thread::spawn(move || client(h, server_addr, id, rounds))
        })
        .collect();
    let mut all = Vec::new();
    for (id, c) in clients.into_iter().enumerate() {
        match c.join().expect("client thread") {
            Ok(rtts) => all.extend(rtts),
            Err(e) => eprintln!("client {id}: {e}"),
        }
    }
    let elapsed = start.elapsed();
    let echoed = server.join().expect("server thread").expect("server");

    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    println!(
        "{connections} connections x {rounds} rounds: {} round trips in {elapsed:.2?} ({:.0}/s), {echoed} bytes echoed",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    if let (Some(p50), Some(p99), Some(max)) = (pct(0.5), pct(0.99), all.last().copied()) {
        println!("round trip: p50 {p50:.2?}  p99 {p99:.2?}  max {max:.2?}");
    }
    let stats = net.stats();
    println!("link: {} segments, {} resets", stats.segments, stats.resets);
}
