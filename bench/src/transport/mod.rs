//! The pluggable transport: what a workload needs from a TCP stack.
//!
//! Every workload (RR, CRR, STREAM, RATE) and the spinning server are
//! written once against [`Transport`], so the kernel and xstack runs execute
//! the same client code and differ only in the backend.
//!
//! # The model
//!
//! A [`Backend`] is shared by the threads of a run; each thread asks it for
//! its own [`Transport`] (for a user-space stack: that thread's stack
//! instance or worker handle, which it drives with [`Transport::poll`]).
//! Connections belong to the transport of the thread that made them.
//!
//! Two kinds of transport exist, told apart by [`Transport::blocking`]:
//! - blocking: `connect` returns an established connection, `send` and
//!   `recv` wait until they made progress (or a timeout of about a second
//!   passed, an error). Workloads then run one connection per thread.
//! - non-blocking (polled): `connect` starts a handshake, `send`/`recv`
//!   return `ErrorKind::WouldBlock` when they cannot progress, and the
//!   workload loops over all its connections calling `poll` once per pass.
//!   A user-space stack is of this kind.
//!
//! Semantics the workloads rely on (those of a TCP socket):
//! - `send` returns how many bytes were accepted (possibly fewer than given).
//! - `recv` returns `Ok(0)` at end of stream (the peer closed).
//! - errors other than `WouldBlock`/`Interrupted` end the connection; the
//!   workload counts them and drops the connection with [`Transport::close`].
//!
//! # The backends
//!
//! - [`kernel`]: Linux sockets, blocking (`kernel-default`) or spinning on
//!   non-blocking sockets (`kernel-spin`).
//! - [`xstack`]: our stack in library mode; the bench thread is the
//!   stack's worker and `poll` runs one round of it. Configured with
//!   `--xstack-if`, `--xstack-addr` (and optionally `--xstack-neighbour`).

pub mod kernel;
pub mod xstack;

use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

/// One thread's view of a TCP stack.
pub trait Transport {
    type Conn;
    type Listener;

    /// True if calls wait for progress; false if they return `WouldBlock`.
    fn blocking(&self) -> bool;

    /// Opens a connection to `to`. Blocking transports return it
    /// established; polled ones may return it still connecting (see
    /// [`Transport::connected`]).
    fn connect(&mut self, to: SocketAddrV4) -> io::Result<Self::Conn>;

    /// Whether the handshake of `c` has completed. An error means it failed.
    fn connected(&mut self, c: &mut Self::Conn) -> io::Result<bool>;

    fn send(&mut self, c: &mut Self::Conn, buf: &[u8]) -> io::Result<usize>;

    fn recv(&mut self, c: &mut Self::Conn, buf: &mut [u8]) -> io::Result<usize>;

    /// Closes the connection (a normal close: FIN, not RST).
    fn close(&mut self, c: Self::Conn);

    fn listen(&mut self, at: SocketAddrV4, backlog: u32) -> io::Result<Self::Listener>;

    /// Takes one established connection off the listener's queue
    /// (`WouldBlock` if none, for polled transports).
    fn accept(&mut self, l: &mut Self::Listener) -> io::Result<Self::Conn>;

    /// Lets the stack make progress (receive, transmit, timers). A no-op
    /// for the kernel, which does this in its own context.
    fn poll(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Connections closed by the application that the stack is still
    /// closing (FIN exchanges under way; open ones do not count): a client
    /// that exits before they are done leaves its peer's FINs unanswered.
    /// The kernel does that work after the process exits: 0 there.
    fn closing(&mut self) -> usize {
        0
    }

    /// How long one blocking call may wait (connect, send, receive), so
    /// that a request timeout shorter than the default second is seen in
    /// time. Polled transports never wait: a no-op for them.
    fn set_io_timeout(&mut self, _d: Duration) {}
}

/// Makes one [`Transport`] per thread.
pub trait Backend: Sync {
    type T: Transport;
    /// The name in reports: `kernel-default`, `kernel-spin`, `xstack`.
    fn name(&self) -> &'static str;
    /// Whether its transports block (see [`Transport::blocking`]).
    fn blocking(&self) -> bool;
    fn thread(&self, index: usize) -> io::Result<Self::T>;
}

/// The stacks a run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackKind {
    /// Linux sockets, blocking calls (the default way applications use TCP).
    KernelDefault,
    /// Linux sockets, non-blocking, busy polled (the kernel's lowest latency).
    KernelSpin,
    /// The xstack user-space stack over AF_XDP, in library mode.
    Xstack,
}

impl StackKind {
    pub fn name(self) -> &'static str {
        match self {
            StackKind::KernelDefault => "kernel-default",
            StackKind::KernelSpin => "kernel-spin",
            StackKind::Xstack => "xstack",
        }
    }
}

/// Something generic over the backend, run by [`with_backend`].
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, backend: &B) -> Self::Output;
}

/// Builds the backend for `kind` and runs `f` with it; `xs` configures
/// the xstack backend (ignored by the others).
pub fn with_backend<F: WithBackend>(kind: StackKind, xs: &xstack::XstackArgs, f: F) -> io::Result<F::Output> {
    match kind {
        StackKind::KernelDefault => Ok(f.run(&kernel::KernelBackend::new(kernel::Mode::Blocking))),
        StackKind::KernelSpin => Ok(f.run(&kernel::KernelBackend::new(kernel::Mode::Spin))),
        StackKind::Xstack => Ok(f.run(&xstack::XstackBackend::new(xs)?)),
    }
}
