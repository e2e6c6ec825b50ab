//! HTTP/1.1 (RFC 9112): the request a run repeats, built once, and an
//! incremental response parser that frames each response the way RFC 9112
//! section 6.3 says a client must:
//!
//! 1. the response to HEAD, and every 1xx, 204 and 304 response, ends with
//!    its header section (1xx are interim: the final response follows);
//! 2. Transfer-Encoding with chunked last: the chunked coding (section 7.1,
//!    chunk extensions ignored, trailer fields read and dropped);
//!    Transfer-Encoding without chunked last: the body runs to the close;
//! 3. a valid Content-Length: that many bytes (a list of identical values
//!    is one value; different values are an unrecoverable error);
//! 4. neither: the body runs until the server closes the connection.
//!
//! Bodies are counted, not kept.

use super::{decimal, line, take_data, Eof, Head, Parser, ProtoError, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[value(name = "GET")]
    Get,
    #[value(name = "HEAD")]
    Head,
    #[value(name = "POST")]
    Post,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }
}

/// The request of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The request target in origin form (RFC 9112 section 3.2.1).
    pub path: &'a str,
    /// The Host field's value (RFC 9112 section 3.2: required in HTTP/1.1).
    pub host: &'a str,
    /// POST: the body's size (the body is `Content-Length` bytes of 'x').
    pub body_size: usize,
    /// `Connection: close`: one request per connection (RFC 9112 section 9.6).
    pub close: bool,
}

impl Request<'_> {
    /// The request's bytes, sent as they are for every request of the run.
    pub fn build(&self) -> Result<Vec<u8>, String> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !self.path.starts_with('/') || !printable(self.path) {
            return Err(format!("bad path {:?}: it must start with / and have no spaces or controls", self.path));
        }
        if self.host.is_empty() || !printable(self.host) {
            return Err(format!("bad host {:?}", self.host));
        }
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xstack-bench\r\nAccept: */*\r\n",
            self.method.name(),
            self.path,
            self.host
        );
        if self.method == Method::Post {
            r.push_str(&format!("Content-Type: application/octet-stream\r\nContent-Length: {}\r\n", self.body_size));
        }
        if self.close {
            r.push_str("Connection: close\r\n");
        }
        r.push_str("\r\n");
        let mut bytes = r.into_bytes();
        if self.method == Method::Post {
            bytes.resize(bytes.len() + self.body_size, b'x');
        }
        Ok(bytes)
    }
}

/// What `--url http://HOST[:PORT]/PATH` says: the host (an IPv4 literal
/// can be the target), the port and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| format!("{url}: bad port {p:?}"))?)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(Url { host: host.to_string(), port, path: path.to_string() })
}

/// The Host field for `host` reached on `port`: uri-host [ ":" port ],
/// the port left out when it is http's default (RFC 9110 section 7.2).
pub fn host_field(host: &str, port: u16) -> String {
    if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// One final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes (chunked: the sum of the chunk sizes).
    pub body: u64,
    /// The server closes the connection after this response
    /// (`Connection: close`, HTTP/1.0 without keep-alive, framing by
    /// close, or Transfer-Encoding beside Content-Length or in an
    /// HTTP/1.0 response: RFC 9112 sections 9.3 and 6.1).
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Status,
    Fields,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
}

/// The field last read, for obsolete line folding (RFC 9112 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Framing,
    Other,
}

/// The response parser of one connection.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    /// The requests are HEAD: no response has a body.
    head_request: bool,
    st: St,
    head: Head,
    status: u16,
    minor: u8,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    conn_close: bool,
    keep_alive: bool,
    last: Last,
    body: u64,
}

/// Chunk sizes and Content-Length values above this are refused (no
/// counter can overflow below it).
const MAX_BODY: u64 = 1 << 60;

impl ResponseParser {
    pub fn new(head_request: bool) -> ResponseParser {
        ResponseParser {
            head_request,
            st: St::Status,
            head: Head::default(),
            status: 0,
            minor: 1,
            content_length: None,
            transfer_encoding: false,
            chunked: false,
            conn_close: false,
            keep_alive: false,
            last: Last::Other,
            body: 0,
        }
    }

    fn finish(&mut self) -> Response {
        // RFC 9112 section 6.1: Transfer-Encoding with Content-Length, or
        // in an HTTP/1.0 message, is faulty framing: the connection must
        // close after the message.
        let close = self.conn_close
            || (self.minor == 0 && !self.keep_alive)
            || self.st == St::UntilClose
            || (self.transfer_encoding && (self.content_length.is_some() || self.minor == 0));
        let r = Response { status: self.status, body: self.body, close };
        self.st = St::Status;
        self.head.end();
        r
    }

    /// RFC 9112 section 4: HTTP-version SP status-code SP [ reason-phrase ].
    fn status_line(&mut self, l: &[u8]) -> Result<(), ProtoError> {
        let v = l.get(..8).ok_or(ProtoError("not an HTTP/1.x status line"))?;
        if &v[..7] != b"HTTP/1." || !v[7].is_ascii_digit() {
            return Err(ProtoError("not an HTTP/1.x status line"));
        }
        let code = l.get(9..12).filter(|_| l[8] == b' ').ok_or(ProtoError("no status code"))?;
        if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' || (l.len() > 12 && l[12] != b' ') {
            return Err(ProtoError("bad status code"));
        }
        self.minor = v[7] - b'0';
        self.status = code.iter().fold(0u16, |s, &d| s * 10 + u16::from(d - b'0'));
        self.content_length = None;
        self.transfer_encoding = false;
        self.chunked = false;
        self.conn_close = false;
        self.keep_alive = false;
        self.last = Last::Other;
        self.body = 0;
        Ok(())
    }

    /// One field line (RFC 9112 section 5): only the framing fields and
    /// Connection matter here.
    fn field(&mut self, l: &[u8]) -> Result<(), ProtoError> {
        if l[0] == b' ' || l[0] == b'\t' {
            // obs-fold: a recipient may replace it with a space; only a
            // folded framing field would change what we do.
            return match self.last {
                Last::Framing => Err(ProtoError("obsolete line folding in a framing field")),
                Last::Other => Ok(()),
            };
        }
        let colon = l.iter().position(|&b| b == b':').ok_or(ProtoError("field line without a colon"))?;
        let name = &l[..colon];
        // field-name is a token: one character at least (section 5.1).
        if name.is_empty() || name.iter().any(|b| !b.is_ascii_graphic()) {
            return Err(ProtoError("bad field name"));
        }
        let value = trim(&l[colon + 1..]);
        self.last = Last::Other;
        if name.eq_ignore_ascii_case(b"content-length") {
            self.last = Last::Framing;
            // A list of identical values is one value (section 6.3 item 5).
            for v in value.split(|&b| b == b',').map(trim) {
                let n = decimal(v).filter(|&n| n <= MAX_BODY).ok_or(ProtoError("invalid Content-Length"))?;
                if self.content_length.is_some_and(|c| c != n) {
                    return Err(ProtoError("conflicting Content-Length values"));
                }
                self.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.last = Last::Framing;
            self.transfer_encoding = true;
            for coding in value.split(|&b| b == b',').map(trim).filter(|c| !c.is_empty()) {
                let token = trim(coding.split(|&b| b == b';').next().unwrap_or(coding));
                self.chunked = token.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim) {
                self.conn_close |= opt.eq_ignore_ascii_case(b"close");
                self.keep_alive |= opt.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The end of the header section: where the body ends (section 6.3).
    fn framing(&mut self) -> Result<St, ProtoError> {
        if self.status == 101 {
            return Err(ProtoError("101 Switching Protocols: the server left HTTP"));
        }
        if (100..200).contains(&self.status) {
            return Ok(St::Status);
        }
        if self.head_request || self.status == 204 || self.status == 304 {
            return Ok(St::Status);
        }
        if self.transfer_encoding {
            return Ok(if self.chunked { St::ChunkSize } else { St::UntilClose });
        }
        Ok(match self.content_length {
            Some(0) => St::Status,
            Some(n) => St::Body(n),
            None => St::UntilClose,
        })
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// RFC 9112 section 7.1: chunk-size [ chunk-ext ], the size in hex.
fn chunk_size(l: &[u8]) -> Result<u64, ProtoError> {
    let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ProtoError("bad chunk size"));
    }
    let ext = trim(&l[digits..]);
    if !ext.is_empty() && ext[0] != b';' {
        return Err(ProtoError("bad chunk size"));
    }
    let n = l[..digits].iter().fold(0u64, |n, &d| n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0)));
    if n > MAX_BODY {
        return Err(ProtoError("chunk too large"));
    }
    Ok(n)
}

impl Parser for ResponseParser {
    type Response = Response;

    fn feed(&mut self, buf: &[u8]) -> Step<Response> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.st {
                St::UntilClose => {
                    self.head.push(rest);
                    self.body += rest.len() as u64;
                    return Step::More(buf.len());
                }
                St::Body(n) | St::ChunkData(n) => {
                    let Some((take, left)) = take_data(&mut self.head, rest, n) else {
                        return Step::More(at);
                    };
                    at += take;
                    self.body += take as u64;
                    self.st = match self.st {
                        St::Body(_) if left == 0 => return Step::Done(at, self.finish()),
                        St::Body(_) => St::Body(left),
                        _ if left == 0 => St::ChunkEnd,
                        _ => St::ChunkData(left),
                    };
                }
                _ => {
                    let (l, n) = match line(rest, false) {
                        Ok(Some(x)) => x,
                        Ok(None) => return Step::More(at),
                        Err(e) => {
                            self.head.refused(rest);
                            return Step::Bad(e);
                        }
                    };
                    self.head.begin();
                    self.head.push(&rest[..n]);
                    at += n;
                    let r = match self.st {
                        St::Status => self.status_line(l).map(|()| St::Fields),
                        St::Fields if l.is_empty() => self.framing(),
                        St::Fields => self.field(l).map(|()| St::Fields),
                        St::ChunkSize => chunk_size(l).map(|n| if n == 0 { St::Trailers } else { St::ChunkData(n) }),
                        St::ChunkEnd if l.is_empty() => Ok(St::ChunkSize),
                        St::ChunkEnd => Err(ProtoError("chunk data longer than its size")),
                        St::Trailers if l.is_empty() => Ok(St::Status),
                        St::Trailers if l[0] != b' ' && l[0] != b'\t' && l.contains(&b':') => Ok(St::Trailers),
                        St::Trailers => Err(ProtoError("bad trailer field")),
                        // Not line states: handled above.
                        St::Body(_) | St::ChunkData(_) | St::UntilClose => Ok(self.st),
                    };
                    match r {
                        Ok(St::Status) if (100..200).contains(&self.status) => self.st = St::Status,
                        Ok(St::Status) => {
                            self.st = St::Status;
                            return Step::Done(at, self.finish());
                        }
                        Ok(st) => self.st = st,
                        Err(e) => return Step::Bad(e),
                    }
                }
            }
        }
    }

    fn eof(&mut self, rest: &[u8]) -> Eof<Response> {
        if !rest.is_empty() {
            self.head.refused(rest);
            return Eof::Truncated;
        }
        match self.st {
            St::Status if !self.head.is_open() => Eof::Clean,
            St::UntilClose => Eof::Done(self.finish()),
            _ => Eof::Truncated,
        }
    }

    fn head(&self) -> &Head {
        &self.head
    }

    fn reset(&mut self) {
        *self = ResponseParser::new(self.head_request);
    }
}

/// Why a complete response is not the expected one.
pub fn check(r: &Response, expect_body: Option<u64>) -> Result<(), super::tally::Problem> {
    use super::tally::{ErrorKind, Problem};
    if !(200..300).contains(&r.status) {
        return Err(Problem { kind: ErrorKind::Status, what: "status is not 2xx" });
    }
    if expect_body.is_some_and(|n| n != r.body) {
        return Err(Problem { kind: ErrorKind::WrongValue, what: "body size differs from --expect-size" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::{parse_cut, parse_every_way, Parsed};

    fn parse(input: &[u8]) -> Parsed<Response> {
        parse_every_way(|| ResponseParser::new(false), input)
    }
    fn ok(status: u16, body: u64, close: bool) -> Response {
        Response { status, body, close }
    }

    #[test]
    fn request_bytes() {
        let r = Request { method: Method::Get, path: "/1k.html", host: "h:8080", body_size: 0, close: false };
        assert_eq!(
            r.build().unwrap(),
            b"GET /1k.html HTTP/1.1\r\nHost: h:8080\r\nUser-Agent: xstack-bench\r\nAccept: */*\r\n\r\n"
        );
        let r = Request { method: Method::Post, path: "/p", host: "h", body_size: 3, close: true };
        let b = String::from_utf8(r.build().unwrap()).unwrap();
        assert!(b.starts_with("POST /p HTTP/1.1\r\n"), "{b}");
        assert!(b.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\nxxx"), "{b}");
        for (path, host) in [("x", "h"), ("/a b", "h"), ("/", ""), ("/", "h\r\nX: y")] {
            assert!(Request { method: Method::Get, path, host, body_size: 0, close: false }.build().is_err());
        }
    }

    #[test]
    fn urls() {
        let u = parse_url("http://198.18.0.2:8080/a/b?c").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("198.18.0.2", Some(8080), "/a/b?c"));
        assert_eq!(host_field("h", 80), "h");
        assert_eq!(host_field("h", 8080), "h:8080");
        let u = parse_url("http://example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (None, "/"));
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://x:99999/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn content_length_framing_with_pipelined_responses() {
        let p = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n",
        );
        assert_eq!(p.responses, vec![ok(200, 5, false), ok(404, 0, false)]);
        assert_eq!(p.eof, Some(Eof::Clean));
        // A list of identical values is one value; bare LF ends lines.
        let p = parse(b"HTTP/1.1 200 OK\nContent-Length: 3, 3\nContent-Length: 3\n\nabc");
        assert_eq!(p.responses, vec![ok(200, 3, false)]);
    }

    #[test]
    fn chunked_framing_with_extensions_and_trailers() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                     5;name=value\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\nY: u\r\n\r\n";
        let p = parse(body);
        assert_eq!(p.responses, vec![ok(200, 31, false)]);
        assert_eq!(p.eof, Some(Eof::Clean));
        // Transfer-Encoding overrides Content-Length and the connection closes after.
        let p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(p.responses, vec![ok(200, 0, true)]);
    }

    #[test]
    fn framing_by_close() {
        let p = parse(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body bytes");
        assert_eq!(p.responses, vec![]);
        assert_eq!(p.eof, Some(Eof::Done(ok(200, 15, true))));
        // Transfer-Encoding without chunked last: to the close too.
        let p = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nab");
        assert_eq!(p.eof, Some(Eof::Done(ok(200, 2, true))));
        // An HTTP/1.0 response closes unless it says keep-alive.
        let p = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(p.responses, vec![ok(200, 1, true), ok(200, 0, false)]);
        let p = parse(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(p.responses, vec![ok(200, 0, true)]);
        // Transfer-Encoding in HTTP/1.0 is faulty framing: close after it,
        // keep-alive or not (RFC 9112 section 6.1).
        let p = parse(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(p.responses, vec![ok(200, 0, true)]);
    }

    #[test]
    fn no_body_for_head_1xx_204_304() {
        let p = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
              HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        );
        assert_eq!(p.responses, vec![ok(200, 2, false), ok(204, 0, false), ok(304, 0, false)]);
        assert_eq!(p.eof, Some(Eof::Clean));
        let p = parse_every_way(
            || ResponseParser::new(true),
            b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(p.responses, vec![ok(200, 0, false), ok(200, 0, false)]);
        // An interim response alone is not a response: its close truncates.
        assert_eq!(parse(b"HTTP/1.1 100 Continue\r\n\r\n").eof, Some(Eof::Truncated));
    }

    #[test]
    fn truncations_are_reported_at_the_close() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        let first = 42;
        for n in 0..full.len() {
            let p = parse_cut(&mut ResponseParser::new(false), &full[..n], &[]);
            assert_eq!(p.error, None, "{n}");
            let want = if n == 0 || n == first || n == full.len() { Eof::Clean } else { Eof::Truncated };
            assert_eq!(p.eof, Some(want), "truncated at {n}");
            assert_eq!(p.responses.len(), usize::from(n >= first), "{n}");
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"SSH-2.0-OpenSSH\r\n", "not an HTTP/1.x status line"),
            (b"+PONG\r\n", "not an HTTP/1.x status line"),
            (b"HTTP/2.0 200 OK\r\n", "not an HTTP/1.x status line"),
            (b"HTTP/1.1 20 OK\r\n", "bad status code"),
            (b"HTTP/1.1 2000 OK\r\n", "bad status code"),
            (b"HTTP/1.1 099 OK\r\n", "bad status code"),
            (b"HTTP/1.1200 OK\r\n", "no status code"),
            (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "field line without a colon"),
            (b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", "bad field name"),
            (b"HTTP/1.1 200 OK\r\n:v\r\nContent-Length: 0\r\n\r\n", "bad field name"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting Content-Length values"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length values"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "invalid Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 2\r\n\r\n", "obsolete line folding in a framing field"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000001\r\n", "chunk too large"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n", "chunk data longer than its size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n", "bad trailer field"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols: the server left HTTP"),
        ];
        for (input, what) in cases {
            let p = parse(input);
            assert_eq!(p.error, Some(ProtoError(what)), "{}", crate::apps::excerpt(input));
        }
        // Folding a field that does not frame the body is tolerated.
        let p = parse(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(p.responses, vec![ok(200, 0, false)]);
        // The refused bytes are kept for the error's example.
        let mut rp = ResponseParser::new(false);
        assert!(parse_cut(&mut rp, b"HTTP/1.1 200 OK\r\nbroken\r\n", &[]).error.is_some());
        assert_eq!(rp.head().excerpt(), "HTTP/1.1 200 OK\\r\\nbroken\\r\\n");
        // A line that never ends is refused, not buffered for ever; the
        // longest line is not.
        let long = vec![b'H'; crate::apps::MAX_LINE + 10];
        assert_eq!(parse_cut(&mut ResponseParser::new(false), &long, &[]).error, Some(ProtoError("line too long")));
        let field = format!("X: {}\r\n", "v".repeat(crate::apps::MAX_LINE - 4));
        let p = parse_cut(
            &mut ResponseParser::new(false),
            format!("HTTP/1.1 200 OK\r\n{field}Content-Length: 0\r\n\r\n").as_bytes(),
            &[],
        );
        assert_eq!((p.error, p.responses), (None, vec![ok(200, 0, false)]));
    }

    #[test]
    fn the_example_is_of_the_response_at_fault() {
        crate::apps::testing::example_is_the_new_response(
            || ResponseParser::new(false),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
    }

    #[test]
    fn checks() {
        assert!(check(&ok(200, 10, false), Some(10)).is_ok());
        assert!(check(&ok(204, 0, false), None).is_ok());
        assert_eq!(check(&ok(200, 9, false), Some(10)).unwrap_err().kind, crate::apps::tally::ErrorKind::WrongValue);
        assert_eq!(check(&ok(301, 0, false), None).unwrap_err().kind, crate::apps::tally::ErrorKind::Status);
    }

    crate::apps::testing::parser_proptests!(
        || ResponseParser::new(false),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 200 OK\r\n\r\nx"
    );
}
