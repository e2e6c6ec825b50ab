//! Sockets for ordinary threads: `TcpListener`, `TcpStream` and a
//! `Poller`, with the semantics of the behaviour contract
//! (`shared/tcp-behaviour.md`), served by the workers' stacks.
//!
//! # Threading model
//!
//! A worker owns its `tcp::Stack` outright and runs one [`App`] to
//! completion in its loop; application threads never touch a stack. They
//! talk to the workers through lock-free structures only:
//!
//! - a command queue per worker (`crossbeam` `ArrayQueue`): connect,
//!   listen, setsockopt, shutdown, close;
//! - per connection, shared state in an `Arc`: an SPSC byte ring each way
//!   ([`rings`]: each side owns its ends; receive: the worker writes what it read from the
//!   stack, the thread reads; send: the thread writes, the worker drains
//!   into the stack), readiness and error bits, the TCP state;
//! - a kick queue per worker: tokens of sockets with new bytes to send or
//!   receive space freed, so the worker looks only at sockets that changed
//!   (and only when it asked to be told: a flag per direction says the
//!   worker stopped looking at that ring);
//! - per listener and worker, a queue of established connections.
//!
//! The worker side is the [`Bridge`], an `App`: each loop iteration it
//! applies commands and kicks ([`App::poll`]), and on the stack's events it
//! moves bytes between the stack's buffers and the rings, publishes
//! readiness and errors and hands connections to accept queues. It never
//! locks, never blocks, and allocates per socket (its shared state and
//! rings), never per packet. With N workers, a listener exists on every
//! worker (each with its own accept queue, taken from in turn by
//! `accept`) and a connection lives on one worker: round robin for
//! `connect`, or the one picked with [`TcpSocket::set_worker`].
//!
//! The listen backlog stays the stack's: the bridge takes connections out
//! of the stack's accept queue only while the threads' queue has room, and
//! lowers the stack listener's backlog by what the threads' queue holds,
//! so a listener nobody accepts from drops SYNs and final ACKs as Linux
//! does (section 2 of the contract), per worker as with one SO_REUSEPORT
//! socket per worker. (Backlog 0 admits two connections rather than one:
//! one in each queue.)
//!
//! A worker that sleeps when idle arms its bridge's [`SleepHook`] before
//! sleeping and gives it a waker (an eventfd write, an unpark): threads
//! that queue work for it call the waker, and only then.
//!
//! Blocking calls spin [`Config::spin`] checks, then park the thread;
//! the worker pays for an unpark only when a thread really sleeps (a
//! per-waiter "sleeping" flag), so spinning applications cost it a few
//! loads per change. `spin: u32::MAX` with non-blocking sockets never
//! parks.
//!
//! # Costs, and when to use the run-to-completion App instead
//!
//! Every byte is copied once more than with an [`App`]: into the ring on
//! one side, out of it on the other (the worker stages through a small,
//! cache-hot buffer as well). Each change crosses cores: a kick or a
//! wake-up, a cache line or two per message. An application thread also
//! needs a core of its own to be fast; on a busy machine, parking and
//! unparking costs microseconds. An [`App`] on the worker has none of
//! that: it reads and writes the stack's buffers directly, in the same
//! loop that handles the packets. Use the sockets for existing
//! thread-per-connection or poll-loop code, blocking libraries, and work
//! that must not stall a worker (disk, long computations); use an `App`
//! for the hot path of a server built for this stack.
//!
//! # Errors
//!
//! Calls return [`tcp::Error`](crate::tcp::Error), named after Linux's
//! errno; `std::io::Read`/`Write` and `From<Error> for std::io::Error`
//! give the same as `std::io::Error` with that errno ([`error`]).
//! ECONNREFUSED, ETIMEDOUT and EHOSTUNREACH from connect, ECONNRESET once
//! then EPIPE from writes after a reset, end of file after the peer's
//! FIN, `WouldBlock` in non-blocking mode.
//!
//! # Example
//!
//! [`loopback`] runs stacks joined by an in-memory link in a thread of
//! this process, which is enough to try the API (and to test
//! applications):
//!
//! ```
//! use std::io::{Read, Write};
//! use xstack_dataplane::sockets::{loopback::Loopback, TcpListener, TcpStream};
//! use xstack_dataplane::wire::Ipv4Addr;
//!
//! let net = Loopback::pair().unwrap();
//! let (server, client) = (net.handle(0).unwrap(), net.handle(1).unwrap());
//! let listener = TcpListener::bind(&server, Ipv4Addr::UNSPECIFIED, 7, 16).unwrap();
//! let echo = std::thread::spawn(move || {
//!     let (mut s, _peer) = listener.accept().unwrap();
//!     let mut buf = [0u8; 64];
//!     let n = s.read(&mut buf).unwrap();
//!     s.write_all(&buf[..n]).unwrap();
//! });
//! let mut c = TcpStream::connect(&client, net.addr(0).unwrap(), 7).unwrap();
//! c.write_all(b"hello").unwrap();
//! let mut back = [0u8; 5];
//! c.read_exact(&mut back).unwrap();
//! assert_eq!(&back, b"hello");
//! echo.join().unwrap();
//! ```

mod api;
mod bridge;
pub mod error;
pub mod loopback;
mod poll;
pub mod rings;
mod shared;
mod spares;
mod wait;

pub use api::{Handle, ReadHalf, TcpListener, TcpSocket, TcpStream, WaitStats, WriteHalf};
pub use bridge::{Bridge, SleepHook};
pub use error::errno;
pub use poll::{Interest, PollEvent, Poller};

#[cfg(doc)]
use crate::app::App;
use std::sync::Arc;
use std::time::Duration;

/// Sizes and policies of the socket runtime.
#[derive(Debug, Clone)]
pub struct Config {
    /// Commands queued per worker before a caller waits for room.
    pub command_queue: usize,
    /// Kick tokens queued per worker; with more sockets changing at once
    /// the worker scans all its sockets once (correct, slower).
    pub kick_queue: usize,
    /// Receive and send ring sizes of a connection without SO_RCVBUF /
    /// SO_SNDBUF; with them, the option's value (rounded up to a power of
    /// two). The stack's own buffers come on top: a ring is staging, the
    /// stack's buffer is what the window advertises.
    pub recv_ring: usize,
    pub send_ring: usize,
    /// Upper bound of any ring.
    pub max_ring: usize,
    /// Readiness checks a blocking call (or `Poller::wait`) spins before
    /// parking the thread. `u32::MAX`: never park.
    pub spin: u32,
    /// Threads that can sleep at once (plus pollers, which keep one slot
    /// each); beyond it waiters nap in short steps instead.
    pub park_slots: usize,
    /// Finished connections' rings (of the default sizes) kept for
    /// reuse, so that opening connections in a steady state zeroes no
    /// ring memory. Runtime-wide; they come back when the connection's
    /// last holder lets go, whichever that is.
    pub spare_streams: usize,
    /// How long listen() waits for the workers to answer, and a command
    /// for room in a full queue.
    pub op_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command_queue: 4096,
            kick_queue: 16384,
            recv_ring: 64 * 1024,
            send_ring: 16 * 1024,
            max_ring: 4 << 20,
            spin: 256,
            park_slots: 1024,
            spare_streams: 256,
            op_timeout: Duration::from_secs(10),
        }
    }
}

/// A socket runtime over `workers` stacks (at least one): the handle for
/// application threads, and one [`Bridge`] per worker (index i for worker
/// i) to run as that worker's app.
pub fn new(workers: usize, cfg: Config) -> (Handle, Vec<Bridge>) {
    let rt = Arc::new(shared::Runtime::new(workers, cfg));
    let bridges = (0..rt.workers.len()).map(|i| Bridge::new(i, Arc::clone(&rt))).collect();
    (Handle { rt }, bridges)
}

#[cfg(test)]
mod tests {
    use super::loopback::Loopback;
    use super::*;
    use crate::wire::Ipv4Addr;
    use std::io::{Read, Write};

    /// A sleeping worker is woken when a thread queues work, an awake one
    /// never, and it does not go to sleep with work queued.
    #[test]
    fn sleep_hook_wakes_only_a_sleeping_worker() {
        use crate::app;
        use crate::tcp::{self, Stack};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let (h, mut bridges) = new(1, Config::default());
        let hook = bridges[0].sleep_hook();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        hook.set_waker(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .expect("first waker");
        assert_eq!(hook.set_waker(|| {}), Err(crate::tcp::Error::InvalidInput));
        let local = Ipv4Addr::new(10, 0, 0, 1);
        let mut stack = Stack::new(tcp::Config::default(), &[local], 1, tcp::Instant::ZERO);
        let connect = || {
            let mut s = TcpSocket::new(&h);
            s.set_nonblocking(true);
            s.connect(Ipv4Addr::new(10, 0, 0, 2), 80).expect("queued")
        };
        let _a = connect();
        assert_eq!(calls.load(Ordering::SeqCst), 0, "an awake worker is not woken");
        assert!(!hook.prepare_sleep(), "work is queued: no sleep");
        app::dispatch(&mut bridges[0], &mut stack, tcp::Instant::from_millis(1));
        assert!(hook.prepare_sleep(), "nothing queued: sleep");
        let _b = connect();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the sleeper is woken");
        hook.woke();
        let _c = connect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn spare_rings(h: &Handle) -> (usize, usize) {
        use spares::Side;
        (h.rt.spares.len(Side::Rx), h.rt.spares.len(Side::Tx))
    }

    /// Rings of the default sizes made so far (rx, tx).
    fn made_rings(h: &Handle) -> (usize, usize) {
        use spares::Side;
        (h.rt.spares.made(Side::Rx), h.rt.spares.made(Side::Tx))
    }

    /// A connection's rings go back to the spares when its last holder
    /// lets go, whoever that is. The interleaving that lost them: the
    /// thread's `TcpStream::drop` queues the close, the worker applies it
    /// (the stack socket closes at once in SYN-SENT, or after the FIN)
    /// and lets go of its reference while the thread still holds its own
    /// (the handle's field is dropped after `drop` returns; a poller's
    /// registration outlives the handle until the next `wait`). The
    /// worker's check of the `Arc`'s uniqueness failed, and the thread's
    /// drop then freed the state instead of recycling it. Both holders
    /// are driven here in that order, one step at a time.
    #[test]
    fn rings_return_when_the_last_holder_lets_go() {
        use crate::app;
        use crate::tcp::{self, Stack};

        let (h, mut bridges) = new(1, Config::default());
        let mut stack = Stack::new(tcp::Config::default(), &[Ipv4Addr::new(10, 0, 0, 1)], 1, tcp::Instant::ZERO);
        let mut ms = 0;
        let mut step = |bridges: &mut Vec<Bridge>, stack: &mut Stack| {
            ms += 1;
            app::dispatch(&mut bridges[0], stack, tcp::Instant::from_millis(ms));
        };
        let connect = || {
            let mut s = TcpSocket::new(&h);
            s.set_nonblocking(true);
            s.connect(Ipv4Addr::new(10, 0, 0, 2), 80).expect("queued")
        };

        // 1. The handle's own reference outlives the worker's close.
        let c = connect();
        step(&mut bridges, &mut stack);
        assert_eq!(stack.active_connections(), 1, "connect applied: SYN-SENT");
        let field = Arc::clone(c.shared());
        drop(c);
        step(&mut bridges, &mut stack);
        assert_eq!(stack.active_connections(), 0, "close applied: the stack socket is gone");
        assert_eq!(spare_rings(&h), (0, 0), "still held by the thread");
        drop(field);
        assert_eq!(spare_rings(&h), (1, 1), "the last holder gave the rings back");

        // 2. A poller's registration outlives the handle; the next
        // connection takes the rings the first gave back.
        let c = connect();
        assert_eq!(spare_rings(&h), (0, 0), "the spares serve the next connection");
        step(&mut bridges, &mut stack);
        let mut poller = Poller::new(&h);
        poller.register_stream(&c, 1, Interest::READABLE).expect("register");
        drop(c);
        step(&mut bridges, &mut stack);
        assert_eq!(stack.active_connections(), 0);
        assert_eq!(spare_rings(&h), (0, 0), "still registered");
        // The next wait forgets the dropped socket.
        let mut events = Vec::new();
        poller.wait(&mut events, Some(std::time::Duration::ZERO)).expect("wait");
        assert!(poller.is_empty());
        assert_eq!(spare_rings(&h), (1, 1));

        // 3. The worker is the last holder (the usual order).
        let c = connect();
        step(&mut bridges, &mut stack);
        drop(c);
        assert_eq!(spare_rings(&h), (0, 0), "the worker still holds it");
        step(&mut bridges, &mut stack);
        assert_eq!(spare_rings(&h), (1, 1));
    }

    /// Over real connections on the loopback: once every handle is
    /// dropped and the workers have closed their sockets, every ring
    /// either side made is back in the spares, and rounds reused them
    /// (how many were made depends on whether a round's connect came
    /// before or after the worker closed the previous round's: one or
    /// two sets, never one per round).
    #[test]
    fn connection_state_is_recycled() {
        let net = Loopback::pair().expect("loopback");
        let (sh, ch, addr) = (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("a"));
        let listener = TcpListener::bind(&sh, Ipv4Addr::UNSPECIFIED, 9000, 8).expect("listen");
        for i in 0..50u8 {
            let mut c = TcpStream::connect(&ch, addr, 9000).expect("connect");
            let (mut s, _) = listener.accept().expect("accept");
            c.write_all(&[i; 100]).expect("write");
            c.shutdown(crate::tcp::Shutdown::Write).expect("shutdown");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read");
            assert_eq!(got, vec![i; 100], "round {i}: a reused ring starts empty");
            drop(s);
            assert_eq!(c.read(&mut [0u8; 8]), Ok(0));
        }
        // The workers apply the last closes asynchronously; the promise is
        // that they do, so wait for it (a broken recycling never gets
        // there and fails at the deadline).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let all_back = |h: &Handle| spare_rings(h) == made_rings(h);
        while !(all_back(&sh) && all_back(&ch)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(spare_rings(&sh), made_rings(&sh), "accepted connections' rings recycled");
        assert_eq!(spare_rings(&ch), made_rings(&ch), "connected connections' rings recycled");
        for h in [&sh, &ch] {
            let (rx, tx) = made_rings(h);
            assert!((1..=2).contains(&rx) && (1..=2).contains(&tx), "rings reused across rounds: made {rx}, {tx}");
        }
        assert_eq!(sh.wait_stats().backstop_wakeups + ch.wait_stats().backstop_wakeups, 0, "no missed wake-ups");
    }
}
