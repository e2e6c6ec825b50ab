//! The AF_XDP port: one socket on one NIC queue with its own UMEM.
//!
//! One of the two modules of the crate that use `unsafe` (with `shm`, the
//! memory shared with application processes): the rings are
//! shared with the kernel, and xsk-rs leaves their ownership rules to the
//! caller. We keep them with one rule: every UMEM frame is, at any time, in
//! exactly one place, and [`Frame`] (a move-only token) is the only way user
//! space names a frame it owns.
//!
//! ```text
//!   free ──refill──▶ fill ring ──kernel──▶ RX ring ──recv──▶ Frame (held)
//!    ▲                                                      │    │
//!    │◀─────────────────────── release ─────────────────────┘    │ transmit
//!    │                                                           ▼
//!    └────────── completion ring ◀──kernel── TX ring ◀─flush─ tx pending
//! ```
//!
//! [`Accounting`] counts each place, and `free + fill + held + tx_pending +
//! tx_ring == total` holds after every call (checked in debug builds and
//! reported in statistics), so a leaked frame shows up as a broken sum.
#![allow(unsafe_code)]

mod pool;

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};

use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

pub use pool::Accounting;
type Pool = pool::Pool<FrameDesc>;

/// How to open a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub ifname: String,
    pub queue: u32,
    /// UMEM frames (each `frame_size` bytes). Counts against RLIMIT_MEMLOCK
    /// unless the process has CAP_IPC_LOCK (root does).
    pub frame_count: u32,
    /// Power of two, 2048 or 4096.
    pub frame_size: u32,
    /// Size of each of the four rings (power of two).
    pub ring_size: u32,
    /// Zero-copy bind: only drivers that support it (not veth).
    pub zero_copy: bool,
    /// Frames per RX/TX/completion batch.
    pub batch: usize,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            ifname: String::new(),
            queue: 0,
            frame_count: 4096,
            frame_size: 4096,
            ring_size: 2048,
            zero_copy: false,
            batch: 64,
        }
    }
}

/// A UMEM frame owned by user space. Move-only: it is handed back to the
/// port with [`Port::transmit`] or [`Port::release`].
#[derive(Debug)]
#[must_use = "a frame must be transmitted or released, or it leaks"]
pub struct Frame {
    desc: FrameDesc,
    port: u32,
}

/// Ring statistics kept by the port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// `transmit` found the TX ring full at flush: the frame waits in
    /// `tx_pending` (counted once per flush that could not place it all).
    pub tx_ring_full: u64,
    /// `alloc` found no free frame.
    pub no_free_frame: u64,
    /// Wakeup syscalls made (sendto for TX, poll for fill).
    pub wakeups: u64,
    /// The kernel's view (XDP_STATISTICS): frames it dropped because our RX
    /// ring was full or the fill ring was empty.
    pub kernel_rx_dropped: u64,
    pub kernel_rx_ring_full: u64,
    pub kernel_fill_empty: u64,
    pub kernel_rx_invalid: u64,
    pub kernel_tx_invalid: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port configuration: {0}")]
    Config(String),
    #[error(
        "creating a UMEM of {bytes} bytes failed: {error} \
         (UMEM is locked memory: run as root, grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK)"
    )]
    // `error`, not `source`: the message already carries it, and a source
    // would be printed a second time by an error chain ({:#}).
    Umem { bytes: u64, error: io::Error },
    #[error("binding an AF_XDP socket to {ifname} queue {queue} failed: {error}{hint}")]
    Bind { ifname: String, queue: u32, error: io::Error, hint: &'static str },
}

/// The OS error under an xsk-rs error, its errno kept (the hints match on
/// it), else the error's text.
fn os_error(e: &(dyn std::error::Error + 'static)) -> io::Error {
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(s) => match s.raw_os_error() {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(s.kind(), s.to_string()),
        },
        None => io::Error::other(e.to_string()),
    }
}

/// One AF_XDP socket with its UMEM and rings.
#[derive(Debug)]
pub struct Port {
    id: u32,
    // Field order is drop order: the rings before the UMEM they map.
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    umem: Umem,
    pool: Pool,
    /// Reused batch buffer for ring consumption (never reallocated).
    scratch: Vec<FrameDesc>,
    /// Frames received and not yet handed out by `recv`.
    rx_ready: Vec<FrameDesc>,
    rx_next: usize,
    batch: usize,
    ring_size: u32,
    frame_capacity: usize,
    stats: PortStats,
}

static NEXT_PORT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn pow2(v: u32, what: &str) -> Result<(), PortError> {
    if v.is_power_of_two() {
        Ok(())
    } else {
        Err(PortError::Config(format!("{what} must be a power of two, got {v}")))
    }
}

impl Port {
    pub fn open(cfg: &PortConfig) -> Result<Port, PortError> {
        pow2(cfg.frame_size, "frame size")?;
        pow2(cfg.ring_size, "ring size")?;
        if cfg.frame_count < 2 * cfg.ring_size {
            return Err(PortError::Config(format!(
                "frame count {} must be at least twice the ring size {} (fill ring plus TX)",
                cfg.frame_count, cfg.ring_size
            )));
        }
        if cfg.batch == 0 || cfg.batch > cfg.ring_size as usize {
            return Err(PortError::Config(format!("batch must be in 1..={}", cfg.ring_size)));
        }
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| PortError::Config(e.to_string()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(cfg.frame_size).map_err(|e| PortError::Config(e.to_string()))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| PortError::Config(e.to_string()))?;
        let frames = NonZeroU32::new(cfg.frame_count).ok_or_else(|| PortError::Config("frame count is 0".into()))?;
        let bytes = u64::from(cfg.frame_count) * u64::from(cfg.frame_size);
        let (umem, descs) =
            Umem::new(umem_cfg, frames, false).map_err(|e| PortError::Umem { bytes, error: os_error(&e) })?;

        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        bind |= if cfg.zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // Our own steering program is loaded by the control plane; the
            // socket only has to be inserted into its XSKMAP.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let iface: Interface = cfg.ifname.parse().map_err(|_| PortError::Config("interface name has a NUL".into()))?;
        // Safety: the UMEM is new and not shared with any other socket, so
        // the (ifname, queue) pair is bound once from it; we inhibit program
        // loading as xsk-rs requires for shared use anyway.
        let (tx, rx, fq_cq) = unsafe { Socket::new(sock_cfg, &umem, &iface, cfg.queue) }.map_err(|e| {
            let error = os_error(&e);
            let hint = match error.raw_os_error() {
                Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
                Some(libc::EOPNOTSUPP) if cfg.zero_copy => " (the driver has no zero-copy mode: veth is copy-only)",
                Some(libc::EINVAL) => " (is the queue index below the interface's queue count?)",
                _ => "",
            };
            PortError::Bind { ifname: cfg.ifname.clone(), queue: cfg.queue, error, hint }
        })?;
        let (fill, comp) =
            fq_cq.ok_or_else(|| PortError::Config("socket came without fill/completion rings".into()))?;

        let frame_capacity = (cfg.frame_size - umem_cfg.xdp_headroom() - umem_cfg.frame_headroom()) as usize;
        let mut port = Port {
            id: NEXT_PORT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rx,
            tx,
            fill,
            comp,
            umem,
            pool: Pool::new(descs),
            scratch: vec![FrameDesc::default(); cfg.batch.max(cfg.ring_size as usize)],
            rx_ready: Vec::with_capacity(cfg.batch),
            rx_next: 0,
            batch: cfg.batch,
            ring_size: cfg.ring_size,
            frame_capacity,
            stats: PortStats::default(),
        };
        port.refill();
        Ok(port)
    }

    /// The socket's descriptor, for the steering program's XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // Safety: the descriptor belongs to `self.rx`'s socket, which lives
        // as long as `self`; the borrow ties the result to `self`.
        unsafe { BorrowedFd::borrow_raw(self.rx.fd().as_raw_fd()) }
    }

    /// Bytes a frame can hold.
    pub fn frame_capacity(&self) -> usize {
        self.frame_capacity
    }

    pub fn accounting(&self) -> Accounting {
        self.pool.accounting()
    }

    pub fn stats(&mut self) -> PortStats {
        if let Ok(k) = self.rx.fd().xdp_statistics() {
            self.stats.kernel_rx_dropped = k.rx_dropped();
            self.stats.kernel_rx_ring_full = k.rx_ring_full();
            self.stats.kernel_fill_empty = k.rx_fill_ring_empty_descs();
            self.stats.kernel_rx_invalid = k.rx_invalid_descs();
            self.stats.kernel_tx_invalid = k.tx_invalid_descs();
        }
        self.stats
    }

    /// Takes up to one batch of received frames off the RX ring. Returns the
    /// number now ready for [`Port::recv`]. No syscall.
    pub fn poll_rx(&mut self) -> usize {
        if self.rx_next < self.rx_ready.len() {
            return self.rx_ready.len() - self.rx_next;
        }
        self.rx_ready.clear();
        self.rx_next = 0;
        let scratch = &mut self.scratch[..self.batch];
        // Safety: `scratch` is ours to overwrite; the RX ring only hands out
        // frames of this port's UMEM (the one it was created with).
        let n = unsafe { self.rx.consume(scratch) };
        self.rx_ready.extend_from_slice(&scratch[..n]);
        self.pool.received(n);
        self.stats.rx_packets += n as u64;
        n
    }

    /// The next received frame, if any.
    pub fn recv(&mut self) -> Option<Frame> {
        let desc = *self.rx_ready.get(self.rx_next)?;
        self.rx_next += 1;
        Some(Frame { desc, port: self.id })
    }

    /// A free frame for a new outgoing packet, with length 0.
    pub fn alloc(&mut self) -> Option<Frame> {
        match self.pool.alloc() {
            Some(mut desc) => {
                // Safety: the pool only holds frames of this UMEM that neither
                // the kernel nor another `Frame` owns.
                unsafe { self.umem.data_mut(&mut desc) }.cursor().set_pos(0);
                Some(Frame { desc, port: self.id })
            }
            None => {
                self.stats.no_free_frame += 1;
                None
            }
        }
    }

    fn check(&self, f: &Frame) {
        // Mixing ports is a bug in the caller, never caused by input.
        assert_eq!(f.port, self.id, "frame used with a port it does not belong to");
    }

    /// The frame's packet bytes (its current length).
    pub fn data<'a>(&'a self, f: &'a Frame) -> &'a [u8] {
        self.check(f);
        // Safety: `f` is a live token of this port, so the frame is owned by
        // user space (not in any ring) and belongs to this UMEM; the shared
        // borrow of `f` excludes a concurrent `data_mut` on it.
        unsafe { self.umem.data(&f.desc) }.contents()
    }

    /// The frame's packet bytes for writing, after setting its length to
    /// `len` (clamped to [`Port::frame_capacity`]). Derefs to `[u8]`.
    pub fn data_mut<'a>(&'a self, f: &'a mut Frame, len: usize) -> DataMut<'a> {
        self.check(f);
        // Safety: as in `data`; the exclusive borrow of `f` makes this the
        // only access to the frame.
        let mut d = unsafe { self.umem.data_mut(&mut f.desc) };
        d.cursor().set_pos(len);
        d
    }

    /// Queues the frame for transmission with its current length; it goes
    /// on the TX ring at the next [`Port::flush`].
    pub fn transmit(&mut self, f: Frame) {
        self.check(&f);
        self.pool.queue_tx(f.desc);
    }

    /// Gives the frame back to the free pool (to be refilled for RX).
    pub fn release(&mut self, f: Frame) {
        self.check(&f);
        self.pool.free(f.desc);
    }

    /// Moves queued frames onto the TX ring and wakes the kernel once for
    /// the whole batch, reaps completed transmissions and refills the fill
    /// ring. Call once per loop iteration.
    pub fn flush(&mut self) {
        let pending = self.pool.tx_pending().len();
        if pending > 0 {
            let room = self.tx.nb_free(pending as u32) as usize;
            let n = room.min(pending);
            if n > 0 {
                // Safety: the pending frames are owned by the pool (no
                // `Frame` token refers to them) and belong to this UMEM; the
                // ring has room for `n`, so all `n` are handed over.
                let done = unsafe { self.tx.produce(&self.pool.tx_pending()[..n]) };
                self.pool.sent_tx(done);
                self.stats.tx_packets += done as u64;
            }
            if n < pending {
                self.stats.tx_ring_full += 1;
            }
        }
        // In copy mode the kernel transmits only inside a syscall: always
        // kick when the TX ring holds frames and the kernel asks for it.
        if self.pool.accounting().tx_ring > 0 && self.tx.needs_wakeup() {
            self.stats.wakeups += 1;
            // EAGAIN/EBUSY/ENOBUFS mean "ring busy, try again": the frames
            // stay on the ring and the next flush kicks again.
            let _ = self.tx.wakeup();
        }
        self.reap();
        self.refill();
    }

    /// Takes completed transmissions off the completion ring.
    fn reap(&mut self) {
        let outstanding = self.pool.accounting().tx_ring as usize;
        if outstanding == 0 {
            return;
        }
        let n = outstanding.min(self.scratch.len());
        // Safety: completed descriptors are frames of this UMEM that the
        // kernel has finished with; `scratch` is ours.
        let got = unsafe { self.comp.consume(&mut self.scratch[..n]) };
        self.pool.completed(&self.scratch[..got]);
    }

    /// Keeps the fill ring stocked from the free pool, leaving a reserve of
    /// a batch of frames for transmission.
    fn refill(&mut self) {
        let acct = self.pool.accounting();
        let want = self.ring_size.saturating_sub(acct.fill);
        if want < self.batch as u32 / 2 || acct.free <= self.batch as u32 {
            return;
        }
        let give = want.min(acct.free - self.batch as u32) as usize;
        let room = self.fill.nb_free(give as u32) as usize;
        let n = room.min(give);
        if n == 0 {
            return;
        }
        let descs = self.pool.take_for_fill(n);
        // Safety: `descs` were just moved out of the free pool: frames of
        // this UMEM that nothing else owns. The ring has room for all `n`.
        let done = unsafe { self.fill.produce(descs) };
        self.pool.filled(done);
        if self.fill.needs_wakeup() {
            self.stats.wakeups += 1;
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }
}
