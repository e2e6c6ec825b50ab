//! A listening socket: the SYN queue of embryonic connections (Linux's
//! request sockets, one small record each, no buffers) and the accept
//! queue of established connections waiting for accept().
//!
//! The input logic (SYN, final ACK, SYN cookies, overflow) is in
//! `stack.rs`, which owns the sockets a completed handshake creates.

use super::ctx::Ctx;
use super::output::Header;
use super::siphash::KeyedState;
use super::socket::{FourTuple, SocketId};
use super::syncookie::SynCookies;
use super::time::Instant;
use super::timer_wheel::TimerId;
use super::SeqNum;
use crate::wire::tcp::{Flags, Options};
use std::collections::{HashMap, VecDeque};

/// An embryonic connection in SYN_RCVD (Linux struct request_sock).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub tuple: FourTuple,
    pub iss: SeqNum,
    pub irs: SeqNum,
    pub peer_mss: Option<u16>,
    /// The peer's shift, when both sides scale.
    pub peer_wscale: Option<u8>,
    pub our_wscale: u8,
    pub sack: bool,
    /// The peer's TSval, when both sides use timestamps.
    pub ts_recent: Option<u32>,
    /// The window in our SYN|ACK (unscaled).
    pub syn_window: u16,
    /// SYN|ACK retransmissions so far.
    pub retries: u32,
    pub timer: Option<TimerId>,
    /// The final ACK came while the accept queue was full (Linux
    /// inet_rsk(req)->acked): the request waits for a retransmission.
    pub acked: bool,
}

impl Request {
    /// The SYN|ACK: options only as the peer offered them (RFC 7323
    /// sections 2.2 and 3.2, RFC 2018 section 2).
    pub fn syn_ack(&self, now: Instant, ctx: &Ctx, cookie_ts: bool) -> Header {
        let mut o = Options { mss: Some(ctx.config.our_mss()), ..Options::default() };
        if self.peer_wscale.is_some() {
            o.window_scale = Some(self.our_wscale);
        }
        o.sack_permitted = self.sack;
        if let Some(ts_recent) = self.ts_recent {
            let ts_now = Ctx::ts_clock(now).wrapping_add(ctx.isn.ts_offset(self.tuple.local, self.tuple.remote));
            let tsval =
                if cookie_ts { SynCookies::encode_timestamp(ts_now, self.peer_wscale, self.sack) } else { ts_now };
            o.timestamp = Some((tsval, ts_recent));
        }
        Header {
            src_port: self.tuple.local_port,
            dst_port: self.tuple.remote_port,
            seq: self.iss,
            ack: self.irs + 1u32,
            flags: Flags::SYN | Flags::ACK,
            window: self.syn_window,
            options: o,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Listener {
    /// min(listen backlog, somaxconn).
    pub backlog: usize,
    pub syn_queue: HashMap<FourTuple, Request, KeyedState>,
    pub accept_queue: VecDeque<SocketId>,
    /// When the SYN queue last overflowed into cookies: cookies are only
    /// checked after one (Linux tcp_synq_no_recent_overflow).
    pub last_overflow: Option<Instant>,
}

impl Listener {
    pub fn new(backlog: usize, hasher: KeyedState) -> Self {
        Listener {
            backlog,
            syn_queue: HashMap::with_hasher(hasher),
            accept_queue: VecDeque::new(),
            last_overflow: None,
        }
    }

    /// Linux sk_acceptq_is_full: full when it holds *more* than the
    /// backlog, so backlog 0 still admits one connection.
    pub fn accept_queue_full(&self) -> bool {
        self.accept_queue.len() > self.backlog
    }
}
