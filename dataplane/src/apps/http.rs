//! HTTP/1.1 for the keep-alive responder: request-head parsing, a chunked
//! body skipper and the prepared response heads. Pure code: bytes in,
//! decisions out; the server app does the socket work.
//!
//! What the responder needs from a request is its framing (how long the
//! head and body are), whether the connection persists, and whether the
//! client waits for `100 Continue`; everything else is validated and then
//! ignored. Syntax follows RFC 9112, semantics RFC 9110.

use std::mem::MaybeUninit;

/// Longest request head (request line, fields and the empty line) that is
/// accepted; a longer one is answered 431 (RFC 6585 section 5).
pub const MAX_HEAD: usize = 8192;

/// Length of an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT").
pub const DATE_LEN: usize = 29;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other method: answered like GET once its body is read.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    /// HTTP/1.1 or a later 1.x (RFC 9110 section 6.2: a higher minor version
    /// is understood as the highest one we implement).
    Http11,
}

/// How the request's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The connection stays open after the response (RFC 9112 section 9.3).
    pub keep_alive: bool,
    pub body: Body,
    /// `Expect: 100-continue` (RFC 9110 section 10.1.1).
    pub expect_continue: bool,
}

/// Error statuses: each is answered and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    HeaderTooLarge,
    VersionNotSupported,
}

/// The input's leading empty lines: RFC 9112 section 2.2 asks a server to
/// ignore at least one CRLF before a request line (old clients send one
/// after a POST body). Bare CR and LF are skipped as well.
pub fn leading_blank(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

/// Where the head in `buf` ends (just past the empty line), if it is all
/// there. `from` is where an earlier call stopped looking, so a head that
/// arrives in pieces is scanned once. A bare LF ends a line as well as
/// CRLF (RFC 9112 section 2.2 allows recognising it).
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(buf.len());
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Where to resume [`head_end`] after it found nothing in `len` bytes: a
/// terminator may have started in the last two bytes.
pub fn resume_from(len: usize) -> usize {
    len.saturating_sub(2)
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// No complete head yet.
    Partial,
    /// A head of `len` bytes (leading empty lines included).
    Complete {
        len: usize,
        request: Request,
    },
    Error(Status),
}

/// Parses the request at the start of `buf`: a convenience around
/// [`leading_blank`], [`head_end`] and [`parse_head`] for callers that
/// keep no scan position.
pub fn parse(buf: &[u8]) -> Parsed {
    let skip = leading_blank(buf);
    match head_end(&buf[skip..], 0) {
        Some(end) if end > MAX_HEAD => Parsed::Error(Status::HeaderTooLarge),
        Some(end) => match parse_head(&buf[skip..skip + end]) {
            Ok(request) => Parsed::Complete { len: skip + end, request },
            Err(s) => Parsed::Error(s),
        },
        None if buf.len() - skip >= MAX_HEAD => Parsed::Error(Status::HeaderTooLarge),
        None => Parsed::Partial,
    }
}

/// field-vchar, SP or HTAB (RFC 9110 section 5.5); CR, LF, NUL and other
/// controls are refused there (the chunk decoder's extensions and
/// trailers).
fn is_field_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of a comma-separated list, trimmed, empty ones dropped
/// (RFC 9110 section 5.6.1 requires accepting empty elements).
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

/// Content-Length: 1*DIGIT, or a list of identical values (RFC 9110
/// section 8.6 lets a recipient accept those).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut len = None;
    for e in list(value) {
        if !e.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = e.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
        if len.is_some_and(|l| l != n) {
            return None;
        }
        len = Some(n);
    }
    len
}

fn version(v: &[u8]) -> Result<Version, Status> {
    // HTTP-version = HTTP-name "/" DIGIT "." DIGIT, case-sensitive
    // (RFC 9112 section 2.3).
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            match (major, minor) {
                (b'1', b'0') => Ok(Version::Http10),
                (b'1', _) => Ok(Version::Http11),
                // RFC 9110 section 15.6.6.
                _ => Err(Status::VersionNotSupported),
            }
        }
        _ => Err(Status::BadRequest),
    }
}

/// Field lines parsed into an array on the stack (2 KiB, left
/// uninitialised). A head with more (no client sends that many; browsers
/// send about 10-20) is parsed again into a heap array with room for one
/// field per line, so the only limit on fields stays [`MAX_HEAD`]: those
/// requests, and HTTP/1.2 to 1.9 ([`later_minor`]), are the only ones whose
/// parse allocates.
const FIELDS: usize = 64;

/// Parses a complete head: request line, field lines, empty line (what
/// [`head_end`] delimits; leading empty lines are skipped).
///
/// The syntax is httparse's (RFC 9112 sections 3 and 5: single spaces in
/// the request line, a token method, a target of visible bytes, field
/// names that are tokens directly followed by the colon, field values of
/// field-vchars, SP and HTAB, so a bare CR or an obs-fold is refused; CRLF
/// or a bare LF ends a line). It replaced a hand-written parser because it
/// is faster, measured with `dataplane/benches/http.rs` (p10 of criterion's
/// samples, old and new binaries alternated, two runs each, pinned to one
/// core of the shared 2-core machine): parse_head of a curl GET (3 fields)
/// 120.3-120.6 -> 75.5-75.6 ns, of a browser GET (7 fields, 331 bytes)
/// 509.9-511.6 -> 175.9-177.3 ns; 16 pipelined wrk GETs, with finding each
/// head's end, 1370 -> 1118-1132 ns. It scans the target and the field
/// values with SSE4.2/AVX2 where the CPU has them and checks the other
/// bytes by table lookup, where the hand-written one split the head into
/// lines and tested byte by byte.
///
/// httparse knows HTTP/1.0 and 1.1 only; a later 1.x (which RFC 9110
/// section 6.2 says to answer as 1.1), another major version (505) and a
/// malformed version (400) are told apart by [`later_minor`]. Unlike the
/// hand-written parser, a target with bytes above 0x7f must be UTF-8
/// (RFC 9112 allows none there).
pub fn parse_head(head: &[u8]) -> Result<Request, Status> {
    if head.len() > MAX_HEAD {
        return Err(Status::HeaderTooLarge);
    }
    let mut room = [MaybeUninit::uninit(); FIELDS];
    match parse_into(head, &mut room) {
        Err(Syntax::TooManyFields) => many_fields(head),
        Err(Syntax::Version) => later_minor(head),
        Err(Syntax::Status(s)) => Err(s),
        Ok(r) => Ok(r),
    }
}

enum Syntax {
    TooManyFields,
    /// Not HTTP/1.0 or HTTP/1.1.
    Version,
    Status(Status),
}

fn parse_into<'b>(head: &'b [u8], room: &mut [MaybeUninit<httparse::Header<'b>>]) -> Result<Request, Syntax> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, room) {
        // The head ends at its empty line: nothing may follow it, and it
        // must be there (the caller delimits it with `head_end`).
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Syntax::TooManyFields),
        Err(httparse::Error::Version) => return Err(Syntax::Version),
        _ => return Err(Syntax::Status(Status::BadRequest)),
    }
    let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
    semantics(req.method.unwrap_or_default().as_bytes(), version, req.headers).map_err(Syntax::Status)
}

/// An upper bound on the number of fields in `head`: one per line.
fn lines(head: &[u8]) -> usize {
    head.iter().filter(|&&b| b == b'\n').count()
}

#[cold]
fn many_fields(head: &[u8]) -> Result<Request, Status> {
    let mut room = vec![MaybeUninit::uninit(); lines(head)];
    match parse_into(head, &mut room) {
        Ok(r) => Ok(r),
        Err(Syntax::Status(s)) => Err(s),
        Err(Syntax::Version) => later_minor(head),
        // One field per line at most.
        Err(Syntax::TooManyFields) => Err(Status::BadRequest),
    }
}

/// The request line httparse refused for its version, the method and
/// target having passed: HTTP/1.2 to HTTP/1.9 are parsed as 1.1, HTTP/2.0
/// and other majors are 505, anything else is 400.
#[cold]
fn later_minor(head: &[u8]) -> Result<Request, Status> {
    let head = &head[leading_blank(head)..];
    let eol = head.iter().position(|&b| b == b'\n').ok_or(Status::BadRequest)?;
    let line = &head[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(_target), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Status::BadRequest);
    };
    let version = version(v)?;
    let rest = &head[eol + 1..];
    let mut fields = vec![httparse::EMPTY_HEADER; lines(rest)];
    match httparse::parse_headers(rest, &mut fields) {
        Ok(httparse::Status::Complete((n, fields))) if n == rest.len() => semantics(method, version, fields),
        _ => Err(Status::BadRequest),
    }
}

/// What the responder needs from the fields, and the checks of their
/// meaning that no syntax covers.
fn semantics(method: &[u8], version: Version, fields: &[httparse::Header<'_>]) -> Result<Request, Status> {
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };
    let mut hosts = 0u32;
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked = 0u32;
    let mut te_last_chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for f in fields {
        let (name, value) = (f.name, trim_ows(f.value));
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value).ok_or(Status::BadRequest)?;
            if length.is_some_and(|l| l != n) {
                return Err(Status::BadRequest);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for coding in list(value) {
                let name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or(coding));
                te_last_chunked = name.eq_ignore_ascii_case(b"chunked");
                te_chunked += u32::from(te_last_chunked);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in list(value) {
                close |= opt.eq_ignore_ascii_case(b"close");
                keep_alive |= opt.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 section 3.2: an HTTP/1.1 request needs exactly one Host,
    // and no request may carry two.
    if hosts > 1 || (version == Version::Http11 && hosts == 0) {
        return Err(Status::BadRequest);
    }
    let body = if te_seen {
        // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 request
        // means faulty framing; section 6.3: chunked must be the final
        // coding, applied once; and both Transfer-Encoding and
        // Content-Length is a smuggling attempt this server rejects (which
        // section 6.3 allows).
        if version == Version::Http10 || !te_last_chunked || te_chunked != 1 || length.is_some() {
            return Err(Status::BadRequest);
        }
        Body::Chunked
    } else {
        Body::Length(length.unwrap_or(0))
    };
    // RFC 9112 section 9.3: "close" ends the connection; otherwise 1.1
    // persists, and 1.0 only when it asked for keep-alive.
    let keep_alive = !close && (version == Version::Http11 || keep_alive);
    Ok(Request { method, version, keep_alive, body, expect_continue })
}

/// Skips a chunked body (RFC 9112 section 7.1) without keeping any of it:
/// a byte-at-a-time state machine, so chunks may split anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailer fields so far, bounded like a
    /// head so a peer cannot keep the parser busy on one chunk line.
    meta: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line; `TrailerLine` inside one.
    TrailerStart,
    TrailerStartLf,
    TrailerLine,
    Done,
}

/// The chunked body is malformed: answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

impl Chunked {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn meta_byte(&mut self) -> Result<(), ChunkError> {
        self.meta += 1;
        if self.meta > MAX_HEAD {
            return Err(ChunkError);
        }
        Ok(())
    }

    /// Consumes body bytes from `input`; returns how many belonged to the
    /// body. Stops at the body's end: what follows is the next request.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data => {
                    let take = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        // 16 hex digits fill a u64; more would overflow.
                        if self.digits >= 16 {
                            return Err(ChunkError);
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err(ChunkError),
                    // chunk-ext = *( BWS ";" BWS ext-name [ ... ] ): skipped.
                    b';' | b' ' | b'\t' => self.state = ChunkState::Ext,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return Err(ChunkError),
                },
                ChunkState::Ext => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ if is_field_byte(b) => self.meta_byte()?,
                    _ => return Err(ChunkError),
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.end_size_line();
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => return Err(ChunkError),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::TrailerStartLf,
                    b'\n' => self.state = ChunkState::Done,
                    _ if is_field_byte(b) => {
                        self.meta_byte()?;
                        self.state = ChunkState::TrailerLine;
                    }
                    _ => return Err(ChunkError),
                },
                ChunkState::TrailerStartLf => {
                    if b != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::TrailerLine => match b {
                    b'\n' => self.state = ChunkState::TrailerStart,
                    b'\r' => {}
                    _ if is_field_byte(b) => self.meta_byte()?,
                    _ => return Err(ChunkError),
                },
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        self.digits = 0;
        // last-chunk = 1*"0": the trailer section follows.
        self.state = if self.size == 0 { ChunkState::TrailerStart } else { ChunkState::Data };
    }
}

/// The responses the responder sends, by what they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 200, connection stays open (HTTP/1.1).
    Ok,
    /// 200 to an HTTP/1.0 client that asked for keep-alive: says so, as
    /// 1.0 clients (ab) look for it.
    OkKeepAlive,
    /// 200, then the connection closes.
    OkClose,
    /// `100 Continue`, before reading a body the client holds back.
    Continue,
    BadRequest,
    HeaderTooLarge,
    VersionNotSupported,
}

impl Reply {
    const ALL: [Reply; 7] = [
        Reply::Ok,
        Reply::OkKeepAlive,
        Reply::OkClose,
        Reply::Continue,
        Reply::BadRequest,
        Reply::HeaderTooLarge,
        Reply::VersionNotSupported,
    ];

    pub fn error(s: Status) -> Reply {
        match s {
            Status::BadRequest => Reply::BadRequest,
            Status::HeaderTooLarge => Reply::HeaderTooLarge,
            Status::VersionNotSupported => Reply::VersionNotSupported,
        }
    }
}

/// Every response head of one responder, built once with its body length
/// in place, so answering a request is a copy of prepared bytes: nothing
/// is formatted or allocated per request. Only the Date field changes,
/// patched in place once a second.
#[derive(Debug, Clone)]
pub struct Responses {
    heads: [Vec<u8>; Reply::ALL.len()],
    /// Offset of the Date value in each head (none in `100 Continue`).
    date_at: [Option<usize>; Reply::ALL.len()],
    date_secs: u64,
    body_len: u64,
}

impl Responses {
    /// The heads for a `body_len`-byte body, dated `unix_secs`.
    pub fn new(body_len: u64, unix_secs: u64) -> Responses {
        let mut date = [0u8; DATE_LEN];
        http_date(unix_secs, &mut date);
        let mut heads: [Vec<u8>; Reply::ALL.len()] = Default::default();
        let mut date_at = [None; Reply::ALL.len()];
        for (i, &r) in Reply::ALL.iter().enumerate() {
            let (status, len, connection) = match r {
                Reply::Ok => ("200 OK", body_len, ""),
                Reply::OkKeepAlive => ("200 OK", body_len, "Connection: keep-alive\r\n"),
                Reply::OkClose => ("200 OK", body_len, "Connection: close\r\n"),
                Reply::Continue => {
                    // RFC 9110 section 15.2.1: an interim response, no fields.
                    heads[i] = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                    continue;
                }
                Reply::BadRequest => ("400 Bad Request", 0, "Connection: close\r\n"),
                Reply::HeaderTooLarge => ("431 Request Header Fields Too Large", 0, "Connection: close\r\n"),
                Reply::VersionNotSupported => ("505 HTTP Version Not Supported", 0, "Connection: close\r\n"),
            };
            // RFC 9110 section 6.6.1: an origin server with a clock sends
            // Date in 2xx and 4xx responses (and may in 5xx).
            let mut h = format!("HTTP/1.1 {status}\r\nServer: xstack\r\nDate: ").into_bytes();
            date_at[i] = Some(h.len());
            h.extend_from_slice(&date);
            let ctype = if len > 0 { "Content-Type: text/plain\r\n" } else { "" };
            h.extend_from_slice(format!("\r\n{ctype}Content-Length: {len}\r\n{connection}\r\n").as_bytes());
            heads[i] = h;
        }
        Responses { heads, date_at, date_secs: unix_secs, body_len }
    }

    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    pub fn get(&self, r: Reply) -> &[u8] {
        &self.heads[r as usize]
    }

    /// Re-dates every head; a no-op within the same second.
    pub fn set_date(&mut self, unix_secs: u64) {
        if unix_secs == self.date_secs {
            return;
        }
        self.date_secs = unix_secs;
        let mut date = [0u8; DATE_LEN];
        http_date(unix_secs, &mut date);
        for (h, at) in self.heads.iter_mut().zip(self.date_at) {
            if let Some(at) = at {
                h[at..at + DATE_LEN].copy_from_slice(&date);
            }
        }
    }
}

/// Writes `unix_secs` as an IMF-fixdate, the HTTP-date form senders must
/// use (RFC 9110 section 5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
pub fn http_date(unix_secs: u64, out: &mut [u8; DATE_LEN]) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut [u8], v: u64| {
        out[0] = b'0' + (v / 10 % 10) as u8;
        out[1] = b'0' + (v % 10) as u8;
    };
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    two(&mut out[5..7], d);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    out[11] = b' ';
    // Four digits: years past 9999 wrap, which no clock will reach.
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    out[16] = b' ';
    two(&mut out[17..19], secs / 3600);
    out[19] = b':';
    two(&mut out[20..22], secs / 60 % 60);
    out[22] = b':';
    two(&mut out[23..25], secs % 60);
    out[25..].copy_from_slice(b" GMT");
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the
/// proleptic Gregorian calendar (the era-based conversion: 400-year
/// cycles of 146097 days, years starting in March).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &[u8]) -> Request {
        match parse(s) {
            Parsed::Complete { len, request } => {
                assert_eq!(len, s.len(), "head length");
                request
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    fn err(s: &[u8]) -> Status {
        match parse(s) {
            Parsed::Error(st) => st,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn http11_get_persists_by_default() {
        let r = ok(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            r,
            Request {
                method: Method::Get,
                version: Version::Http11,
                keep_alive: true,
                body: Body::Length(0),
                expect_continue: false
            }
        );
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert_eq!(ok(b"HEAD /x?y HTTP/1.1\r\nHost: x\r\n\r\n").method, Method::Head);
        assert_eq!(ok(b"GET / HTTP/1.9\r\nHost: x\r\n\r\n").version, Version::Http11);
    }

    #[test]
    fn http10_closes_unless_it_asks_for_keep_alive() {
        let r = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((r.version, r.keep_alive), (Version::Http10, false));
        // What ab -k sends.
        let r = ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 198.18.0.3\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked() {
        assert_eq!(ok(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n").body, Body::Length(42));
        assert_eq!(ok(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 7, 7\r\n\r\n").body, Body::Length(7));
        assert_eq!(ok(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").body, Body::Chunked);
        assert_eq!(ok(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n").body, Body::Chunked);
        let r = ok(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        assert!(r.expect_continue);
        assert_eq!(r.method, Method::Other);
    }

    #[test]
    fn bare_lf_and_leading_empty_lines_are_accepted() {
        let r = ok(b"\r\n\nGET / HTTP/1.1\nHost: x\n\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn malformed_requests_are_400() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],                               // no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",              // two Hosts
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",                        // double space
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",                        // trailing space
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",                     // control in target
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",                         // not a token
            b"GET / http/1.1\r\nHost: x\r\n\r\n",                         // case-sensitive name
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",                        // space before colon
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",              // obs-fold
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",              // no colon
            b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",                      // bare CR
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",   // not digits
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n", // differing
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/x.1\r\nHost: x\r\n\r\n",
            b"GET /\r\n\r\n", // HTTP/0.9
        ] {
            assert_eq!(err(bad), Status::BadRequest, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), Status::VersionNotSupported);
    }

    #[test]
    fn fields_are_limited_by_size_only() {
        // More fields than the parser's array on the stack holds.
        let mut many = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..(FIELDS * 3) {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"Content-Length: 9\r\nConnection: close\r\n\r\n");
        let r = ok(&many);
        assert_eq!((r.body, r.keep_alive), (Body::Length(9), false));
        many.splice(18..18, b"Host: y\r\n".iter().copied());
        assert_eq!(err(&many), Status::BadRequest, "two Hosts among many fields");
    }

    #[test]
    fn a_later_minor_version_is_read_as_http11() {
        let r = ok(b"POST / HTTP/1.2\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        assert_eq!((r.version, r.body, r.keep_alive), (Version::Http11, Body::Chunked, false));
        assert_eq!(err(b"GET / HTTP/1.9\r\n\r\n"), Status::BadRequest, "no Host");
        assert_eq!(err(b"GET / HTTP/1.9\r\nHost: x\r\nHost : y\r\n\r\n"), Status::BadRequest);
        assert_eq!(err(b"GET / HTTP/1.9 HTTP/1.1\r\nHost: x\r\n\r\n"), Status::BadRequest);
        assert_eq!(err(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n"), Status::VersionNotSupported);
    }

    #[test]
    fn a_target_must_be_ascii_or_utf8() {
        assert_eq!(ok("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes()).method, Method::Get);
        assert_eq!(err(b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n"), Status::BadRequest);
    }

    #[test]
    fn an_oversized_head_is_431() {
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse(&big), Parsed::Error(Status::HeaderTooLarge), "no end in sight");
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Parsed::Error(Status::HeaderTooLarge), "complete but too long");
        let mut fits = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        fits.resize(MAX_HEAD - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        ok(&fits);
    }

    #[test]
    fn pipelined_requests_parse_in_order() {
        let two = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let Parsed::Complete { len, request } = parse(two) else { panic!() };
        assert_eq!(request.method, Method::Get);
        let Parsed::Complete { len: len2, request } = parse(&two[len..]) else { panic!() };
        assert_eq!((request.method, request.keep_alive), (Method::Head, false));
        assert_eq!(len + len2, two.len());
    }

    #[test]
    fn head_end_resumes_where_it_stopped() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut from = 0;
        for n in 0..head.len() {
            assert_eq!(head_end(&head[..n], from), None);
            from = resume_from(n);
        }
        assert_eq!(head_end(head, from), Some(head.len()));
    }

    #[test]
    fn chunked_bodies_are_skipped_to_their_end() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: t\r\n\r\nGET";
        let end = body.len() - 3;
        let mut c = Chunked::new();
        assert_eq!(c.feed(body), Ok(end));
        assert!(c.is_done());
        // Every split position gives the same answer.
        for split in 0..=body.len() {
            let mut c = Chunked::new();
            let a = c.feed(&body[..split]).unwrap();
            let b = c.feed(&body[a..]).unwrap();
            assert_eq!(a + b, end, "split at {split}");
            assert!(c.is_done());
        }
        let mut c = Chunked::new();
        assert_eq!(c.feed(b"0\n\n"), Ok(3), "bare LF");
        assert!(c.is_done());
        for bad in [&b"x\r\n"[..], b"5\r\nhelloX", b"11111111111111111\r\n", b"\r\n", b"0\r\nX\x01"] {
            assert_eq!(Chunked::new().feed(bad), Err(ChunkError), "{bad:?}");
        }
    }

    #[test]
    fn responses_carry_length_and_date() {
        let mut r = Responses::new(1234, 784_111_777);
        let ok = String::from_utf8(r.get(Reply::Ok).to_vec()).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Length: 1234\r\n"), "{ok}");
        assert!(ok.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n") && !ok.contains("Connection"));
        assert!(String::from_utf8_lossy(r.get(Reply::OkKeepAlive)).contains("Connection: keep-alive\r\n"));
        assert!(String::from_utf8_lossy(r.get(Reply::OkClose)).contains("Connection: close\r\n"));
        let bad = String::from_utf8(r.get(Reply::HeaderTooLarge).to_vec()).unwrap();
        assert!(bad.starts_with("HTTP/1.1 431 ") && bad.contains("Content-Length: 0\r\nConnection: close\r\n\r\n"));
        r.set_date(784_111_778);
        assert!(String::from_utf8_lossy(r.get(Reply::BadRequest)).contains("Date: Sun, 06 Nov 1994 08:49:38 GMT"));
        assert_eq!(r.get(Reply::Continue), b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn dates_match_the_calendar() {
        let d = |s| {
            let mut out = [0u8; DATE_LEN];
            http_date(s, &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(d(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(d(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(d(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(d(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let _ = parse_head(&bytes);
            let _ = Chunked::new().feed(&bytes);
        }

        #[test]
        fn near_valid_heads_never_panic(
            fields in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..6),
            method in "[A-Z]{1,7}",
            minor in 0u8..10,
        ) {
            let mut s = format!("{method} / HTTP/1.{minor}\r\n");
            for f in &fields {
                s.push_str(f);
                s.push_str("\r\n");
            }
            s.push_str("\r\n");
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn chunked_framing_is_independent_of_splits(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            splits in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\nNEXT");
            let end = body.len() - 4;
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % (body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut c = Chunked::new();
            let mut pos = 0;
            for cut in cuts {
                // Never past the cut: what the decoder leaves is not body.
                pos += c.feed(&body[pos..cut]).unwrap();
            }
            prop_assert!(c.is_done());
            prop_assert_eq!(pos, end);
        }
    }
}
