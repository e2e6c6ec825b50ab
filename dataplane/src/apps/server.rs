//! The standalone server's services, as one run-to-completion app:
//! echo (RFC 862), discard (RFC 863), source (send N bytes then close, like
//! chargen, RFC 864), hold (listen and never accept, to show the listen
//! backlog's behaviour), an HTTP/1.1 keep-alive responder (the load target
//! of wrk and ab; protocol in [`super::http`]) and a sockperf server (the
//! latency target of `sockperf ping-pong --tcp`; protocol in
//! [`super::sockperf`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::http::{self, Chunked, Reply, Responses};
use super::sockperf::Framer;
use crate::app::{App, Io};
use crate::tcp::timer_wheel::{TimerId, TimerWheel};
use crate::tcp::{Error, Event, EventKind, Instant, Shutdown, SocketId};
use crate::wire::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Echo,
    Discard,
    /// Send this many bytes of the chargen pattern, then close.
    Source {
        bytes: u64,
    },
    /// Listen and never accept.
    Hold,
    /// Answer every HTTP request with 200 and a body of this many bytes
    /// (the chargen pattern), on persistent connections.
    Http {
        body: u64,
    },
    /// Answer sockperf's ping messages as `sockperf server --tcp` does.
    Sockperf,
}

impl Service {
    pub fn name(&self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Discard => "discard",
            Service::Source { .. } => "source",
            Service::Hold => "hold",
            Service::Http { .. } => "http",
            Service::Sockperf => "sockperf",
        }
    }
}

/// One service on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    pub service: Service,
    pub port: u16,
    /// listen() backlog.
    pub backlog: u32,
}

/// What the HTTP and sockperf services have seen, per worker. Bad input is
/// counted here, never a panic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Request heads parsed.
    pub http_requests: u64,
    /// Complete responses written (error responses included).
    pub http_responses: u64,
    /// Malformed requests or bodies, answered 400, 431 or 505.
    pub http_errors: u64,
    /// Connections closed by a time limit (`HttpTimeouts`).
    pub http_timeouts: u64,
    pub sockperf_messages: u64,
    pub sockperf_replies: u64,
    /// Connections closed for an unframeable message length.
    pub sockperf_errors: u64,
}

#[derive(Debug)]
struct Conn {
    service: Service,
    /// Echo, sockperf: bytes to send that the send buffer did not take.
    pending: Vec<u8>,
    /// Echo/discard/sockperf: the peer finished sending.
    eof: bool,
    /// Source: bytes written so far.
    sent: u64,
    proto: Proto,
}

/// Protocol state of the services that have some.
#[derive(Debug)]
enum Proto {
    Plain,
    Http(Box<HttpConn>),
    Sockperf(Framer),
}

/// How long an HTTP connection may wait, as nginx bounds it, so that
/// clients that trickle bytes or go silent (slowloris) cannot hold
/// connections for ever: a whole request head from the accept or from its
/// first byte (client_header_timeout), idle between requests
/// (keepalive_timeout), between two reads of a body or two writes of a
/// response (client_body_timeout, send_timeout), and reading after the
/// response until the client closes (lingering_time). Past a limit the
/// connection is closed (a reset if input is left unread, as close(2)
/// does), and counted in `ServerStats::http_timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub header: Duration,
    pub idle: Duration,
    pub progress: Duration,
    pub linger: Duration,
}

impl Default for HttpTimeouts {
    /// nginx's defaults.
    fn default() -> Self {
        HttpTimeouts {
            header: Duration::from_secs(60),
            idle: Duration::from_secs(75),
            progress: Duration::from_secs(60),
            linger: Duration::from_secs(30),
        }
    }
}

/// What an HTTP connection waits for, each with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet timed (just accepted).
    Untimed,
    /// The first request's head, from the accept.
    FirstHead,
    /// Between requests, nothing of the next one yet.
    Idle,
    /// A later request's head, from its first byte.
    Head,
    /// A body to read or a response to write: the limit runs from the
    /// last progress.
    Transfer,
    /// After the response, until the client closes.
    Linger,
}

impl HttpTimeouts {
    fn limit(&self, p: Phase) -> Option<Duration> {
        match p {
            Phase::Untimed => None,
            Phase::FirstHead | Phase::Head => Some(self.header),
            Phase::Idle => Some(self.idle),
            Phase::Transfer => Some(self.progress),
            Phase::Linger => Some(self.linger),
        }
    }
}

/// An HTTP connection: its request buffer (allocated once, at accept) and
/// where it is in the request/response cycle.
#[derive(Debug)]
struct HttpConn {
    /// Index of the service's prepared responses in `Server::http`.
    responses: usize,
    /// Received bytes not yet consumed are `buf[start..end]`. Its size is
    /// the longest head accepted: a head that fills it is answered 431.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// How far (from `start`) the search for the head's end has looked.
    scanned: usize,
    step: Step,
    /// No request head parsed yet.
    first: bool,
    /// Responses completed; and how many there were when the idle limit
    /// last (re)started.
    served: u32,
    idle_from: u32,
    /// The phase its time limit runs for, that limit's end (a transfer
    /// moves it as it goes), and its timer in `Server::deadlines`.
    timed: Phase,
    due: Instant,
    timer: Option<TimerId>,
}

/// The response a request gets once its body has been read.
#[derive(Debug, Clone, Copy)]
struct Answer {
    reply: Reply,
    /// Body bytes to send: the configured size, 0 for HEAD and errors.
    body: u64,
    close: bool,
}

#[derive(Debug, Clone, Copy)]
enum Discard {
    Length(u64),
    Chunked(Chunked),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Writing `100 Continue` (from `off`), then reading the body.
    Continue { off: usize, body: Discard, then: Answer },
    /// Reading and dropping the request body.
    Body { body: Discard, then: Answer },
    /// Writing the response: head from `off`, then the body.
    Send { answer: Answer, off: usize, body_sent: u64 },
    /// Response sent and write side shut: reading until the peer closes,
    /// at most `left` more bytes.
    Linger { left: usize },
}

/// After closing its side, an HTTP connection reads what the client still
/// sends until the client closes, so unread data does not turn the close
/// into a reset that could destroy the response before the client reads
/// it (RFC 9112 section 9.6). A client that keeps sending past this many
/// bytes is cut off.
const LINGER_BYTES: usize = 64 * 1024;

enum Flow {
    /// Waiting for input or for room to send.
    Wait,
    /// The connection is over: close it.
    Close,
}

enum Fill {
    Got,
    WouldBlock,
    End,
}

impl HttpConn {
    fn new(responses: usize) -> HttpConn {
        HttpConn {
            responses,
            buf: vec![0u8; http::MAX_HEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            step: Step::Head,
            first: true,
            served: 0,
            idle_from: 0,
            timed: Phase::Untimed,
            due: Instant::ZERO,
            timer: None,
        }
    }

    fn phase(&self) -> Phase {
        match self.step {
            Step::Head if self.first => Phase::FirstHead,
            Step::Head if self.start == self.end => Phase::Idle,
            Step::Head => Phase::Head,
            Step::Linger { .. } => Phase::Linger,
            Step::Continue { .. } | Step::Body { .. } | Step::Send { .. } => Phase::Transfer,
        }
    }

    /// After the connection ran: a new phase starts its limit with a
    /// timer of its own (the last phase's is cancelled); a transfer that
    /// went on, or an idle connection that served requests in between,
    /// moves its limit (the timer finds out when it fires, so busy
    /// connections cost no timer operation).
    fn retime(&mut self, now: Instant, c: SocketId, limits: &HttpTimeouts, wheel: &mut TimerWheel<SocketId>) {
        let phase = self.phase();
        if phase == self.timed {
            let moved = match phase {
                Phase::Transfer => true,
                Phase::Idle => self.served != self.idle_from,
                _ => false,
            };
            if let (true, Some(limit)) = (moved, limits.limit(phase)) {
                self.due = now + limit;
                self.idle_from = self.served;
            }
            return;
        }
        self.idle_from = self.served;
        self.timed = phase;
        if let Some(id) = self.timer.take() {
            wheel.cancel(id);
        }
        if let Some(limit) = limits.limit(phase) {
            self.due = now + limit;
            self.timer = Some(wheel.insert(self.due, c));
        }
    }

    /// Reads more of the request into the buffer, first moving what is
    /// left to its front.
    fn fill(&mut self, io: &mut Io<'_>, c: SocketId) -> Fill {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Callers check for a full buffer first; a zero-length read
            // would look like end of file.
            return Fill::End;
        }
        match io.read(c, &mut self.buf[self.end..]) {
            Ok(0) => Fill::End,
            Ok(n) => {
                self.end += n;
                Fill::Got
            }
            Err(Error::WouldBlock) => Fill::WouldBlock,
            Err(_) => Fill::End,
        }
    }

    fn error(&mut self, status: http::Status, stats: &mut ServerStats) {
        stats.http_errors += 1;
        tracing::debug!(?status, "http: malformed request, answering and closing");
        let answer = Answer { reply: Reply::error(status), body: 0, close: true };
        self.step = Step::Send { answer, off: 0, body_sent: 0 };
    }

    /// The steps for a parsed request.
    fn plan(&self, req: http::Request, body_len: u64) -> Step {
        let reply = match (req.keep_alive, req.version) {
            (false, _) => Reply::OkClose,
            (true, http::Version::Http10) => Reply::OkKeepAlive,
            (true, http::Version::Http11) => Reply::Ok,
        };
        // RFC 9110 section 9.3.2: HEAD gets GET's header fields, no body.
        let body_bytes = if req.method == http::Method::Head { 0 } else { body_len };
        let then = Answer { reply, body: body_bytes, close: !req.keep_alive };
        let body = match req.body {
            http::Body::Length(n) => Discard::Length(n),
            http::Body::Chunked => Discard::Chunked(Chunked::new()),
        };
        let has_body = !matches!(body, Discard::Length(0));
        // RFC 9110 section 10.1.1: an HTTP/1.1 client that expects 100
        // waits for it before sending the body; none is needed once body
        // bytes have arrived.
        if req.expect_continue && req.version == http::Version::Http11 && has_body && self.start == self.end {
            Step::Continue { off: 0, body, then }
        } else {
            Step::Body { body, then }
        }
    }

    /// Runs the connection as far as input and send buffer allow.
    fn drive(
        &mut self,
        io: &mut Io<'_>,
        c: SocketId,
        resp: &Responses,
        pattern: &[u8],
        scratch: &mut [u8],
        stats: &mut ServerStats,
    ) -> Flow {
        loop {
            match self.step {
                Step::Head => {
                    if self.scanned == 0 {
                        self.start += http::leading_blank(&self.buf[self.start..self.end]);
                    }
                    let avail = &self.buf[self.start..self.end];
                    if let Some(n) = http::head_end(avail, self.scanned) {
                        let parsed = http::parse_head(&avail[..n]);
                        self.start += n;
                        self.scanned = 0;
                        match parsed {
                            Ok(req) => {
                                stats.http_requests += 1;
                                self.first = false;
                                self.step = self.plan(req, resp.body_len());
                            }
                            Err(s) => self.error(s, stats),
                        }
                        continue;
                    }
                    self.scanned = http::resume_from(avail.len());
                    if avail.len() >= self.buf.len() {
                        self.error(http::Status::HeaderTooLarge, stats);
                        continue;
                    }
                    match self.fill(io, c) {
                        Fill::Got => {}
                        Fill::WouldBlock => return Flow::Wait,
                        // A client closing between requests, or in the
                        // middle of one: nothing to answer.
                        Fill::End => return Flow::Close,
                    }
                }
                Step::Continue { off, body, then } => {
                    let bytes = resp.get(Reply::Continue);
                    match put(io, c, &bytes[off..]) {
                        Ok(n) if off + n == bytes.len() => self.step = Step::Body { body, then },
                        Ok(n) => {
                            self.step = Step::Continue { off: off + n, body, then };
                            return Flow::Wait;
                        }
                        Err(_) => return Flow::Close,
                    }
                }
                Step::Body { body: Discard::Length(mut n), then } => {
                    let buffered = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
                    self.start += buffered;
                    n -= buffered as u64;
                    // The rest goes through the shared scratch buffer,
                    // never past the body: what follows is the next request.
                    while n > 0 {
                        let want = scratch.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                        match io.read(c, &mut scratch[..want]) {
                            Ok(0) => return Flow::Close,
                            Ok(k) => n -= k as u64,
                            Err(Error::WouldBlock) => {
                                self.step = Step::Body { body: Discard::Length(n), then };
                                return Flow::Wait;
                            }
                            Err(_) => return Flow::Close,
                        }
                    }
                    self.step = Step::Send { answer: then, off: 0, body_sent: 0 };
                }
                Step::Body { body: Discard::Chunked(mut dec), then } => {
                    match dec.feed(&self.buf[self.start..self.end]) {
                        Ok(k) => self.start += k,
                        Err(http::ChunkError) => {
                            self.error(http::Status::BadRequest, stats);
                            continue;
                        }
                    }
                    if dec.is_done() {
                        self.step = Step::Send { answer: then, off: 0, body_sent: 0 };
                        continue;
                    }
                    self.step = Step::Body { body: Discard::Chunked(dec), then };
                    // The decoder took everything buffered: room to read.
                    match self.fill(io, c) {
                        Fill::Got => {}
                        Fill::WouldBlock => return Flow::Wait,
                        Fill::End => return Flow::Close,
                    }
                }
                Step::Send { answer, mut off, mut body_sent } => {
                    let head = resp.get(answer.reply);
                    while off < head.len() || body_sent < answer.body {
                        let r = if off < head.len() {
                            put(io, c, &head[off..])
                        } else {
                            let at = (body_sent % PERIOD as u64) as usize;
                            let n = (answer.body - body_sent).min((pattern.len() - at) as u64) as usize;
                            put(io, c, &pattern[at..at + n])
                        };
                        match r {
                            Ok(0) => {
                                self.step = Step::Send { answer, off, body_sent };
                                return Flow::Wait;
                            }
                            Ok(n) if off < head.len() => off += n,
                            Ok(n) => body_sent += n as u64,
                            Err(_) => return Flow::Close,
                        }
                    }
                    stats.http_responses += 1;
                    self.served = self.served.wrapping_add(1);
                    if answer.close {
                        // FIN after the response; what the client pipelined
                        // behind a closing request is not answered.
                        let _ = io.shutdown(c, Shutdown::Write);
                        self.start = self.end;
                        self.step = Step::Linger { left: LINGER_BYTES };
                    } else {
                        self.step = Step::Head;
                    }
                }
                Step::Linger { mut left } => loop {
                    match io.read(c, scratch) {
                        Ok(k) if k > 0 && k < left => left -= k,
                        Err(Error::WouldBlock) => {
                            self.step = Step::Linger { left };
                            return Flow::Wait;
                        }
                        _ => return Flow::Close,
                    }
                },
            }
        }
    }
}

/// Writes what the send buffer takes of `data`: Ok(0) when it is full
/// (a Writable event follows), Err when the connection is gone.
fn put(io: &mut Io<'_>, c: SocketId, data: &[u8]) -> Result<usize, Error> {
    match io.write(c, data) {
        Ok(n) => Ok(n),
        Err(Error::WouldBlock) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The server app: listeners for every configured service, and per
/// connection state.
#[derive(Debug)]
pub struct Server {
    specs: Vec<ServiceSpec>,
    /// Each listener's service and, for HTTP, its index in `http`.
    listeners: HashMap<SocketId, (Service, usize)>,
    conns: HashMap<SocketId, Conn>,
    /// Prepared responses of each HTTP service.
    http: Vec<Responses>,
    /// When the HTTP Date was last brought up to date.
    dated: Option<Instant>,
    buf: Box<[u8]>,
    /// Sockperf replies produced by one read, before they are written.
    out: Vec<u8>,
    pattern: Box<[u8]>,
    stats: ServerStats,
    timeouts: HttpTimeouts,
    /// One timer per HTTP connection with a time limit running (O(1) to
    /// arm and cancel, nothing left behind by a closed connection), in
    /// 100 ms ticks; and the earliest it may have something due.
    deadlines: TimerWheel<SocketId>,
    next_due: Option<Instant>,
}

const BUF: usize = 64 * 1024;

/// The chargen pattern repeats every 95 lines of 74 bytes.
const PERIOD: usize = 95 * 74;

/// The RFC 864 character generator pattern: lines of 72 printable
/// characters, each line starting one character later, CR LF terminated.
fn chargen(len: usize) -> Box<[u8]> {
    let mut v = Vec::with_capacity(len + 74);
    let mut line = 0usize;
    while v.len() < len {
        for i in 0..72 {
            v.push(b' ' + ((line + i) % 95) as u8);
        }
        v.extend_from_slice(b"\r\n");
        line += 1;
    }
    v.truncate(len);
    v.into_boxed_slice()
}

/// Seconds since the Unix epoch by the wall clock, for the HTTP Date.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Server {
    pub fn new(specs: Vec<ServiceSpec>) -> Self {
        // Keep whole periods of the pattern so a write can start at any
        // offset modulo its length.
        Server {
            specs,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            http: Vec::new(),
            dated: None,
            buf: vec![0u8; BUF].into_boxed_slice(),
            out: Vec::with_capacity(BUF + super::sockperf::HEADER_LEN),
            pattern: chargen(PERIOD * (BUF / PERIOD + 1)),
            stats: ServerStats::default(),
            timeouts: HttpTimeouts::default(),
            deadlines: TimerWheel::with_tick(Instant::ZERO, 100_000_000),
            next_due: None,
        }
    }

    /// The HTTP services' time limits (nginx's defaults otherwise).
    pub fn with_http_timeouts(mut self, t: HttpTimeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// Closes the HTTP connections whose time limit passed.
    fn expire(&mut self, io: &mut Io<'_>) {
        let now = io.now();
        while let Some(c) = self.deadlines.poll(now) {
            let Some(Conn { proto: Proto::Http(h), .. }) = self.conns.get_mut(&c) else { continue };
            h.timer = None;
            if h.due > now {
                // A transfer that made progress since: its limit moved.
                h.timer = Some(self.deadlines.insert(h.due, c));
                continue;
            }
            self.stats.http_timeouts += 1;
            tracing::debug!(?c, phase = ?h.timed, "http: time limit reached, closing");
            self.finish(io, c);
        }
        self.next_due = self.deadlines.next_deadline();
    }

    /// Forgets connection `c` (and cancels its timer); false if unknown.
    fn forget(&mut self, c: SocketId) -> bool {
        match self.conns.remove(&c) {
            Some(Conn { proto: Proto::Http(h), .. }) => {
                if let Some(id) = h.timer {
                    self.deadlines.cancel(id);
                }
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    fn accept_all(&mut self, io: &mut Io<'_>, listener: SocketId, service: Service, http: usize) {
        while let Ok(c) = io.accept(listener) {
            if matches!(service, Service::Http { .. } | Service::Sockperf) {
                // Request/response traffic: a response's last, partial
                // segment must not wait for the ACK of the ones before it
                // (which a client may delay 40 ms). `sockperf server`
                // sets TCP_NODELAY too, and so do HTTP servers on
                // keep-alive connections.
                let _ = io.set_option(c, crate::tcp::SocketOption::NoDelay(true));
            }
            let proto = match service {
                Service::Http { .. } => Proto::Http(Box::new(HttpConn::new(http))),
                Service::Sockperf => Proto::Sockperf(Framer::new()),
                _ => Proto::Plain,
            };
            self.conns.insert(c, Conn { service, pending: Vec::new(), eof: false, sent: 0, proto });
            if let Service::Source { .. } = service {
                self.pump_source(io, c);
            }
            // Data may already be waiting (it arrived with the handshake's
            // last ACK).
            self.readable(io, c);
        }
    }

    fn finish(&mut self, io: &mut Io<'_>, c: SocketId) {
        self.forget(c);
        let _ = io.close(c);
    }

    /// Keeps the HTTP Date current to the second without reading the wall
    /// clock more than once a second (the worker's clock says when).
    fn refresh_date(&mut self, now: Instant) {
        if self.http.is_empty() || self.dated.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.dated = Some(now);
        let secs = unix_now();
        for r in &mut self.http {
            r.set_date(secs);
        }
    }

    fn http_drive(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Server { conns, http, pattern, buf, stats, timeouts, deadlines, next_due, .. } = self;
        let Some(Conn { proto: Proto::Http(h), .. }) = conns.get_mut(&c) else { return };
        let Some(resp) = http.get(h.responses) else { return };
        if let Flow::Close = h.drive(io, c, resp, pattern, buf, stats) {
            self.finish(io, c);
            return;
        }
        h.retime(io.now(), c, timeouts, deadlines);
        if h.timer.is_some() && next_due.is_none_or(|d| h.due < d) {
            *next_due = Some(h.due);
        }
    }

    fn sockperf_drive(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Server { conns, buf, out, stats, .. } = self;
        let Some(Conn { proto: Proto::Sockperf(framer), pending, eof, .. }) = conns.get_mut(&c) else { return };
        let flow = loop {
            // Backpressure: read nothing while replies are still queued.
            if !pending.is_empty() {
                match put(io, c, pending) {
                    Ok(n) => drop(pending.drain(..n)),
                    Err(_) => break Flow::Close,
                }
                if !pending.is_empty() {
                    break Flow::Wait;
                }
            }
            if *eof {
                break Flow::Close;
            }
            match io.read(c, buf) {
                Ok(0) => *eof = true,
                Ok(n) => {
                    out.clear();
                    match framer.feed(&buf[..n], out) {
                        Ok(fed) => {
                            stats.sockperf_messages += fed.messages;
                            stats.sockperf_replies += fed.replies;
                        }
                        Err(e) => {
                            stats.sockperf_errors += 1;
                            tracing::debug!(?e, "sockperf: unframeable message, closing");
                            break Flow::Close;
                        }
                    }
                    match put(io, c, out) {
                        Ok(w) => pending.extend_from_slice(&out[w..]),
                        Err(_) => break Flow::Close,
                    }
                }
                Err(Error::WouldBlock) => break Flow::Wait,
                Err(_) => break Flow::Close,
            }
        };
        if let Flow::Close = flow {
            self.finish(io, c);
        }
    }

    fn readable(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        match conn.service {
            Service::Http { .. } => self.http_drive(io, c),
            Service::Sockperf => self.sockperf_drive(io, c),
            Service::Echo => {
                // Backpressure: read nothing while an echo is still queued.
                while conn.pending.is_empty() && !conn.eof {
                    match io.read(c, &mut self.buf) {
                        Ok(0) => conn.eof = true,
                        Ok(n) => {
                            let w = io.write(c, &self.buf[..n]).unwrap_or(0);
                            if w < n {
                                conn.pending.extend_from_slice(&self.buf[w..n]);
                            }
                        }
                        Err(Error::WouldBlock) => break,
                        Err(_) => {
                            self.finish(io, c);
                            return;
                        }
                    }
                }
                if conn.eof && conn.pending.is_empty() {
                    self.finish(io, c);
                }
            }
            Service::Discard | Service::Source { .. } | Service::Hold => loop {
                match io.read(c, &mut self.buf) {
                    Ok(0) => {
                        conn.eof = true;
                        if conn.service == Service::Discard {
                            self.finish(io, c);
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(Error::WouldBlock) => break,
                    Err(_) => {
                        self.finish(io, c);
                        break;
                    }
                }
            },
        }
    }

    fn writable(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        match conn.service {
            Service::Echo => {
                if !conn.pending.is_empty() {
                    let w = io.write(c, &conn.pending).unwrap_or(0);
                    conn.pending.drain(..w);
                }
                if conn.pending.is_empty() {
                    self.readable(io, c);
                }
            }
            Service::Source { .. } => self.pump_source(io, c),
            // Both stop reading while output waits, so input may be
            // buffered with no Readable event to come: run them.
            Service::Http { .. } => self.http_drive(io, c),
            Service::Sockperf => self.sockperf_drive(io, c),
            Service::Discard | Service::Hold => {}
        }
    }

    fn pump_source(&mut self, io: &mut Io<'_>, c: SocketId) {
        let Some(conn) = self.conns.get_mut(&c) else { return };
        let Service::Source { bytes } = conn.service else { return };
        while conn.sent < bytes {
            let off = (conn.sent % PERIOD as u64) as usize;
            let n = ((bytes - conn.sent) as usize).min(self.pattern.len() - off);
            match io.write(c, &self.pattern[off..off + n]) {
                Ok(0) | Err(Error::WouldBlock) => return,
                Ok(w) => conn.sent += w as u64,
                Err(_) => break,
            }
        }
        self.finish(io, c);
    }
}

impl App for Server {
    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error> {
        let now = unix_now();
        for spec in self.specs.clone() {
            let s = io.socket();
            // Servers restart: let them bind over TIME_WAIT (as SO_REUSEADDR).
            io.set_option(s, crate::tcp::SocketOption::ReuseAddr(true))?;
            io.bind(s, Ipv4Addr::UNSPECIFIED, spec.port)?;
            io.listen(s, spec.backlog)?;
            let mut http = 0;
            if let Service::Http { body } = spec.service {
                http = self.http.len();
                self.http.push(Responses::new(body, now));
            }
            self.listeners.insert(s, (spec.service, http));
        }
        self.dated = Some(io.now());
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("http_requests", s.http_requests),
            ("http_responses", s.http_responses),
            ("http_errors", s.http_errors),
            ("http_timeouts", s.http_timeouts),
            ("sockperf_messages", s.sockperf_messages),
            ("sockperf_replies", s.sockperf_replies),
            ("sockperf_errors", s.sockperf_errors),
        ]
    }

    fn poll(&mut self, io: &mut Io<'_>) {
        // One comparison per loop round while nothing is due.
        if self.next_due.is_some_and(|d| d <= io.now()) {
            self.expire(io);
        }
    }

    fn on_event(&mut self, io: &mut Io<'_>, ev: Event) {
        // Before any response is written, accepts included: a request may
        // arrive with the handshake and be answered from the accept.
        self.refresh_date(io.now());
        if let Some(&(service, http)) = self.listeners.get(&ev.socket) {
            if ev.kind == EventKind::Acceptable && service != Service::Hold {
                self.accept_all(io, ev.socket, service, http);
            }
            return;
        }
        match ev.kind {
            EventKind::Readable => self.readable(io, ev.socket),
            EventKind::Writable => self.writable(io, ev.socket),
            EventKind::Closed { .. } => {
                if self.forget(ev.socket) {
                    let _ = io.close(ev.socket);
                }
            }
            EventKind::Connected | EventKind::Acceptable => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app;
    use crate::tcp::{Config, Stack, State};

    #[test]
    fn chargen_lines_rotate() {
        let p = chargen(74 * 3);
        assert_eq!(&p[..3], b" !\"");
        assert_eq!(&p[72..74], b"\r\n");
        assert_eq!(p[74], b'!');
        assert_eq!(p[148], b'"');
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// The server app on one stack, a client stack beside it, segments
    /// carried between them in memory and time jumping to the next timer
    /// when nothing moves.
    struct Net {
        server: Stack,
        client: Stack,
        app: Server,
        now: Instant,
        seg: Vec<u8>,
    }

    impl Net {
        fn new(specs: &[ServiceSpec]) -> Net {
            Net::with_timeouts(specs, HttpTimeouts::default())
        }

        fn with_timeouts(specs: &[ServiceSpec], limits: HttpTimeouts) -> Net {
            let now = Instant::from_secs(1);
            let mut server = Stack::new(Config::default(), &[SERVER], 1, now);
            let client = Stack::new(Config::default(), &[CLIENT], 2, now);
            let mut app = Server::new(specs.to_vec()).with_http_timeouts(limits);
            app.start(&mut Io::new(&mut server, now)).unwrap();
            Net { server, client, app, now, seg: vec![0u8; 1500] }
        }

        /// Moves segments and events until nothing happens, then fires
        /// the earliest timer if `timers`; returns when quiet.
        fn run(&mut self, timers: bool) {
            for _ in 0..100_000 {
                let mut moved = false;
                while let Some(t) = self.client.poll_transmit(self.now, &mut self.seg) {
                    let _ = self.server.handle_segment(self.now, t.src, t.dst, &self.seg[..t.len]);
                    moved = true;
                }
                app::dispatch(&mut self.app, &mut self.server, self.now);
                while let Some(t) = self.server.poll_transmit(self.now, &mut self.seg) {
                    let _ = self.client.handle_segment(self.now, t.src, t.dst, &self.seg[..t.len]);
                    moved = true;
                }
                while self.client.poll_event().is_some() {}
                if moved || self.server.has_output() || self.client.has_output() {
                    continue;
                }
                let next = [self.server.poll_timeout(), self.client.poll_timeout()].into_iter().flatten().min();
                match next {
                    Some(t) if timers && t <= self.now + Duration::from_secs(1) => {
                        self.now = t.max(self.now);
                        self.server.handle_timeout(self.now);
                        self.client.handle_timeout(self.now);
                    }
                    _ => return,
                }
            }
            panic!("the network never went quiet");
        }

        /// Lets exactly `d` pass, 100 ms at a time, running the timers
        /// due and the app.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now = (self.now + Duration::from_millis(100)).min(end);
                self.server.handle_timeout(self.now);
                self.client.handle_timeout(self.now);
                self.run(false);
            }
        }

        /// Writes `data` from the client, if it still can, without
        /// letting time pass.
        fn push(&mut self, c: SocketId, data: &[u8]) {
            let _ = self.client.write(self.now, c, data);
            self.run(false);
        }

        fn connect(&mut self, port: u16) -> SocketId {
            let c = self.client.socket();
            self.client.connect(self.now, c, SERVER, port).unwrap();
            self.run(true);
            assert_eq!(self.client.state(c), Some(State::Established));
            c
        }

        /// Sends `data` from the client, all of it.
        fn send(&mut self, c: SocketId, mut data: &[u8]) {
            while !data.is_empty() {
                match self.client.write(self.now, c, data) {
                    Ok(n) => data = &data[n..],
                    Err(Error::WouldBlock) => {}
                    Err(e) => panic!("client write: {e}"),
                }
                self.run(true);
            }
        }

        /// What the client can read now; None once the server has closed.
        fn recv(&mut self, c: SocketId) -> (Vec<u8>, bool) {
            self.run(true);
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match self.client.read(self.now, c, &mut buf) {
                    Ok(0) => return (got, true),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        self.run(true);
                    }
                    Err(_) => return (got, false),
                }
            }
        }
    }

    fn http(body: u64) -> ServiceSpec {
        ServiceSpec { service: Service::Http { body }, port: 80, backlog: 16 }
    }

    /// Splits responses: (status line, body length) of each.
    fn responses(mut s: &[u8], head_request: &[bool]) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        for &is_head in head_request {
            let end = http::head_end(s, 0).expect("a complete response head");
            let text = String::from_utf8(s[..end].to_vec()).unwrap();
            let status = text.lines().next().unwrap().to_owned();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length on every response")
                .parse()
                .unwrap();
            let body = if is_head || status.contains(" 100 ") { 0 } else { len };
            v.push((status, body));
            s = &s[end + body..];
        }
        assert!(s.is_empty(), "trailing bytes: {:?}", String::from_utf8_lossy(s));
        v
    }

    #[test]
    fn http_keeps_the_connection_and_answers_pipelined_requests_in_order() {
        let mut n = Net::new(&[http(100_000)]);
        let c = n.connect(80);
        n.send(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (got, closed) = n.recv(c);
        assert!(!closed);
        assert_eq!(responses(&got, &[false]), [("HTTP/1.1 200 OK".into(), 100_000)]);
        let body = &got[got.len() - 100_000..];
        assert_eq!(&body[..3], b" !\"", "the chargen pattern");
        // Three pipelined requests in one write, one with a body and one a
        // HEAD; bodies larger than the send buffer need Writable events.
        n.send(
            c,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloHEAD /c HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (got, closed) = n.recv(c);
        assert!(!closed);
        let r = responses(&got, &[false, false, true]);
        assert_eq!(r.iter().map(|x| x.1).collect::<Vec<_>>(), [100_000, 100_000, 0]);
        assert_eq!(n.app.stats().http_requests, 4);
        assert_eq!(n.app.stats().http_responses, 4);
    }

    /// A head trickled a byte at a time (slowloris) is cut off when the
    /// header limit runs out, however often bytes come; so is a connection
    /// that never sends anything; a keep-alive connection waits for its
    /// next request for the idle limit, and a client that keeps sending
    /// after a closing response is cut off after the linger limit.
    #[test]
    fn http_connections_are_closed_at_their_time_limits() {
        let limits = HttpTimeouts {
            header: Duration::from_secs(20),
            idle: Duration::from_secs(40),
            progress: Duration::from_secs(10),
            linger: Duration::from_secs(5),
        };
        let mut n = Net::with_timeouts(&[http(10)], limits);
        let open = |n: &Net, c| n.client.state(c) == Some(State::Established);

        // (Each handshake lets up to a second or so pass.)
        let slow = n.connect(80);
        let silent = n.connect(80);
        let kept = n.connect(80);
        let lingering = n.connect(80);
        let start = n.now;
        n.push(kept, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        n.push(lingering, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        for _ in 0..3 {
            n.push(slow, b"X-Slow: 1\r\n");
            n.push(lingering, b"more");
            n.advance(Duration::from_secs(3));
        }
        // 9 s: everything open but the lingering one, cut off 5 s after
        // its response.
        assert!(open(&n, slow) && open(&n, silent) && open(&n, kept), "cut off too early");
        assert_eq!(n.client.state(lingering), Some(State::Closed), "the lingering read outlived its limit");
        for _ in 0..4 {
            n.push(slow, b"X");
            n.advance(Duration::from_secs(4));
        }
        // 25 s: the head limit (20 s from the accepts) has passed for both.
        assert_eq!(n.now - start, Duration::from_secs(25));
        assert!(!open(&n, slow), "the trickled head outlived its limit");
        assert!(!open(&n, silent), "the silent connection outlived the head limit");
        assert!(open(&n, kept), "a keep-alive connection waits for the idle limit");
        n.advance(Duration::from_secs(20));
        assert!(!open(&n, kept), "the idle connection outlived its limit");
        assert_eq!(n.app.stats().http_timeouts, 4);
        assert!(n.app.deadlines.is_empty(), "timers left behind: {}", n.app.deadlines.len());
    }

    /// The idle limit runs from the last response, not from the first:
    /// a connection busy with requests for longer than it lives on. A
    /// response the client stops reading is cut off once no byte of it has
    /// gone for the progress limit.
    #[test]
    fn http_busy_connections_live_and_stalled_transfers_are_cut_off() {
        let limits = HttpTimeouts {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            progress: Duration::from_secs(5),
            linger: Duration::from_secs(5),
        };
        let mut n = Net::with_timeouts(&[http(10_000_000)], limits);
        let busy = n.connect(80);
        n.push(busy, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        for _ in 0..10 {
            n.advance(Duration::from_secs(2));
            let _ = n.recv(busy);
            n.push(busy, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        assert_eq!(n.client.state(busy), Some(State::Established), "a busy connection was cut off");
        let stalled = n.connect(80);
        n.push(stalled, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        n.advance(Duration::from_secs(3));
        assert_eq!((n.app.stats().http_timeouts, n.app.conns.len()), (0, 2));
        n.advance(Duration::from_secs(4));
        // Both limits ran out: the busy connection's idle one (from its
        // last response) and the stalled response's (its last progress).
        // The response stays queued behind the closed window, its FIN
        // after it, as after close(2) on Linux.
        assert_eq!(n.app.stats().http_timeouts, 2);
        assert!(n.app.conns.is_empty() && n.app.deadlines.is_empty());
        assert_eq!(n.client.state(busy), Some(State::CloseWait));
    }

    #[test]
    fn http_request_split_at_every_byte() {
        let mut n = Net::new(&[http(10)]);
        let c = n.connect(80);
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for &b in req.iter() {
            n.send(c, &[b]);
        }
        let (got, closed) = n.recv(c);
        assert!(!closed);
        assert_eq!(responses(&got, &[false]), [("HTTP/1.1 200 OK".into(), 10)]);
    }

    #[test]
    fn http_close_and_http10_end_the_connection() {
        let mut n = Net::new(&[http(3)]);
        let c = n.connect(80);
        n.send(c, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (got, closed) = n.recv(c);
        assert!(closed, "FIN after a Connection: close response");
        assert!(String::from_utf8_lossy(&got).contains("Connection: close\r\n"));
        let c = n.connect(80);
        n.send(c, b"GET / HTTP/1.0\r\n\r\n");
        let (got, closed) = n.recv(c);
        assert!(closed && got.ends_with(b" !\""));
        let c = n.connect(80);
        n.send(c, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let (got, closed) = n.recv(c);
        assert!(!closed && String::from_utf8_lossy(&got).contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn http_errors_are_answered_then_closed() {
        let mut n = Net::new(&[http(3)]);
        let c = n.connect(80);
        n.send(c, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
        let (got, closed) = n.recv(c);
        assert!(closed);
        assert_eq!(responses(&got, &[false])[0].0, "HTTP/1.1 400 Bad Request");
        let c = n.connect(80);
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        big.resize(20_000, b'a');
        n.send(c, &big);
        let (got, closed) = n.recv(c);
        assert!(closed);
        assert_eq!(responses(&got, &[false])[0].0, "HTTP/1.1 431 Request Header Fields Too Large");
        assert_eq!(n.app.stats().http_errors, 2);
    }

    #[test]
    fn http_date_follows_the_wall_clock() {
        let mut n = Net::new(&[http(0)]);
        let c = n.connect(80);
        // As if the heads were dated at the epoch and that was long ago.
        n.app.http[0].set_date(0);
        n.app.dated = Some(Instant::ZERO);
        n.send(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (got, _) = n.recv(c);
        let text = String::from_utf8(got).unwrap();
        let mut today = [0u8; http::DATE_LEN];
        http::http_date(unix_now(), &mut today);
        let year = &today[12..16];
        assert!(text.contains("\r\nDate: ") && !text.contains("1970"), "{text}");
        assert!(text.contains(std::str::from_utf8(year).unwrap()), "{text}");
    }

    #[test]
    fn http_expect_continue_gets_100_before_the_body() {
        let mut n = Net::new(&[http(4)]);
        let c = n.connect(80);
        n.send(c, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        let (got, _) = n.recv(c);
        assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
        n.send(c, b"abc");
        let (got, closed) = n.recv(c);
        assert!(!closed);
        assert_eq!(responses(&got, &[false]), [("HTTP/1.1 200 OK".into(), 4)]);
    }

    /// Request/response rounds on one connection with buffers made
    /// beforehand: `respond` bytes back for each `request`.
    fn rounds(n: &mut Net, c: SocketId, request: &[u8], respond: usize, count: usize) {
        let mut buf = [0u8; 4096];
        for _ in 0..count {
            assert_eq!(n.client.write(n.now, c, request), Ok(request.len()));
            n.run(true);
            let mut got = 0;
            while got < respond {
                match n.client.read(n.now, c, &mut buf) {
                    Ok(k) if k > 0 => got += k,
                    other => panic!("after {got} of {respond} bytes: {other:?}"),
                }
                n.run(true);
            }
            assert_eq!(got, respond);
        }
    }

    #[test]
    fn requests_and_pings_allocate_nothing() {
        let mut n = Net::new(&[http(1000), ServiceSpec { service: Service::Sockperf, port: 11111, backlog: 16 }]);
        let h = n.connect(80);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let respond = n.app.http[0].get(Reply::Ok).len() + 1000;
        let s = n.connect(11111);
        let ping = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 14];
        // Warm up: per-connection buffers, queues, the timer wheel.
        rounds(&mut n, h, request, respond, 50);
        rounds(&mut n, s, &ping, 14, 50);
        let info = allocation_counter::measure(|| {
            rounds(&mut n, h, request, respond, 200);
            rounds(&mut n, s, &ping, 14, 200);
        });
        assert_eq!(info.count_total, 0, "allocations per request: {info:?}");
        assert_eq!(n.app.stats().http_responses, 250);
        assert_eq!(n.app.stats().sockperf_replies, 250);
        // Both services answer without Nagle's wait, as sockperf does.
        assert_eq!(n.app.conns.len(), 2);
        for &id in n.app.conns.keys() {
            assert!(n.server.options(id).unwrap().no_delay);
        }
    }

    #[test]
    fn sockperf_pings_are_answered_across_splits() {
        let mut n = Net::new(&[ServiceSpec { service: Service::Sockperf, port: 11111, backlog: 16 }]);
        let c = n.connect(11111);
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for seq in 0..50u64 {
            let flags: u16 = if seq % 5 == 0 { 3 } else { 1 };
            let len = 14 + (seq as usize * 37) % 300;
            let mut m = vec![0u8; len];
            m[..8].copy_from_slice(&seq.to_be_bytes());
            m[8..10].copy_from_slice(&flags.to_be_bytes());
            m[10..14].copy_from_slice(&(len as u32).to_be_bytes());
            m[14..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            stream.extend_from_slice(&m);
            if flags == 3 {
                m[9] = 2;
                want.extend_from_slice(&m);
            }
        }
        for chunk in stream.chunks(97) {
            n.send(c, chunk);
        }
        let (got, closed) = n.recv(c);
        assert!(!closed);
        assert_eq!(got, want);
        assert_eq!((n.app.stats().sockperf_messages, n.app.stats().sockperf_replies), (50, 10));
        // A length past the maximum ends the connection.
        let mut bad = [0u8; 14];
        bad[9] = 3;
        bad[10..14].copy_from_slice(&100_000u32.to_be_bytes());
        n.send(c, &bad);
        let (_, closed) = n.recv(c);
        assert!(closed);
        assert_eq!(n.app.stats().sockperf_errors, 1);
    }
}
