//! Application protocols spoken by the load generator to real servers:
//! HTTP/1.1 ([`http`]), redis's RESP2 ([`resp`]) and memcached's text
//! protocol ([`memcached`]).
//!
//! The codecs are sans-IO: a request builder writes pre-built bytes (only
//! a key's digits change from one request to the next), and a response
//! parser is fed the bytes as they arrive and says, through [`Step`],
//! whether it needs more, has a complete response, or has seen something
//! that is not a response of its protocol. Parsers never buffer a body:
//! they count its bytes and let the caller drop them, so a 10 MiB file costs
//! no more memory than a 1 KiB one. The caller keeps the unconsumed bytes
//! (an incomplete line) in an [`RxBuf`]; [`next`] is the one loop that
//! feeds a parser from it, shared by the workload and the tests.
//!
//! [`client`] runs these protocols as workloads of `xstack-bench run`.

pub mod client;
pub mod http;
pub mod keys;
pub mod memcached;
pub mod resp;
pub mod rx;
pub mod tally;

pub use rx::RxBuf;

/// The longest line (status line, field line, RESP or memcached line) a
/// parser waits for, its terminator aside; longer is a protocol error
/// rather than unbounded buffering. The [`RxBuf`] of a connection is
/// larger than this.
pub const MAX_LINE: usize = 16 * 1024;

/// Why some bytes are not a valid response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The result of feeding bytes to a parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<R> {
    /// The first `n` bytes were consumed; the response is not complete.
    /// Unconsumed bytes (an incomplete line) must be given again with more.
    More(usize),
    /// The first `n` bytes were consumed and completed a response; the rest
    /// belongs to the next one.
    Done(usize, R),
    /// Not a response of this protocol: the stream cannot be resynchronised.
    Bad(ProtoError),
}

/// What the end of the stream means to a parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eof<R> {
    /// Between responses: a clean close.
    Clean,
    /// The close completed a response (HTTP's framing by close).
    Done(R),
    /// In the middle of a response.
    Truncated,
}

/// An incremental response parser.
pub trait Parser {
    type Response;
    /// Consumes a prefix of `buf` (see [`Step`]).
    fn feed(&mut self, buf: &[u8]) -> Step<Self::Response>;
    /// The peer closed the stream; `rest` is what was fed and not consumed
    /// (an incomplete line: then the response is truncated).
    fn eof(&mut self, rest: &[u8]) -> Eof<Self::Response>;
    /// The first bytes of the current (or last) response, kept for the
    /// example of an error; after [`Step::Bad`] they include the bytes
    /// that were refused.
    fn head(&self) -> &Head;
    /// Forgets any partial response (a new connection).
    fn reset(&mut self);
}

/// What [`next`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<R> {
    /// Everything buffered was consumed or is an incomplete line.
    Need,
    Response(R),
    Bad(ProtoError),
}

/// Feeds the buffered bytes to `p` until it needs more, completes a
/// response or fails; consumed bytes leave the buffer.
pub fn next<P: Parser>(p: &mut P, rx: &mut RxBuf) -> Next<P::Response> {
    match p.feed(rx.data()) {
        Step::More(n) => {
            rx.consume(n);
            Next::Need
        }
        Step::Done(n, r) => {
            rx.consume(n);
            Next::Response(r)
        }
        Step::Bad(e) => Next::Bad(e),
    }
}

/// The first [`Head::CAP`] bytes of a response, without allocating, and
/// whether that response is under way. The bytes of a complete response
/// stay until the next one begins: the example of a wrong response is
/// taken after it is complete.
#[derive(Debug, Clone)]
pub struct Head {
    bytes: [u8; Head::CAP],
    len: usize,
    open: bool,
}

impl Default for Head {
    fn default() -> Self {
        Head { bytes: [0; Head::CAP], len: 0, open: false }
    }
}

impl Head {
    pub const CAP: usize = 96;

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes of a response follow: if none was under way, a new one
    /// begins and the previous one's bytes are dropped (true then).
    pub fn begin(&mut self) -> bool {
        if self.open {
            return false;
        }
        self.clear();
        self.open = true;
        true
    }

    /// The response is complete.
    pub fn end(&mut self) {
        self.open = false;
    }

    /// Whether a response is under way.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Bytes that were refused or cut short by the close: kept for the
    /// example, after those of the response they belong to, or alone if
    /// they start a new one (not after the previous response's).
    pub fn refused(&mut self, b: &[u8]) {
        self.begin();
        self.push(b);
    }

    pub fn push(&mut self, b: &[u8]) {
        let n = b.len().min(Self::CAP - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes as printable text (CR, LF and other controls escaped).
    pub fn excerpt(&self) -> String {
        excerpt(self.as_bytes())
    }
}

/// Bytes as printable text: ASCII as is, CR/LF/TAB as escapes, others as
/// `\xNN`.
pub fn excerpt(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 8);
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// A complete line at the start of `buf`: the line without its terminator
/// and the bytes it took. `crlf_only` refuses a bare LF (RESP, memcached);
/// otherwise a bare LF ends a line too (RFC 9112 section 2.2 lets a
/// recipient accept one). `Ok(None)`: no line yet.
pub(crate) fn line(buf: &[u8], crlf_only: bool) -> Result<Option<(&[u8], usize)>, ProtoError> {
    // A line of MAX_LINE bytes has its LF at index MAX_LINE.
    let scan = &buf[..buf.len().min(MAX_LINE + 1)];
    match scan.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let has_cr = i > 0 && buf[i - 1] == b'\r';
            if crlf_only && !has_cr {
                return Err(ProtoError("line ends with LF without CR"));
            }
            let end = if has_cr { i - 1 } else { i };
            Ok(Some((&buf[..end], i + 1)))
        }
        None if buf.len() > MAX_LINE => Err(ProtoError("line too long")),
        None => Ok(None),
    }
}

/// Counts the bytes of a body or data block of which `left` remain, at
/// the start of `rest` (the first ones go into the example): how many
/// were taken and how many remain; None when `rest` is empty.
pub(crate) fn take_data(head: &mut Head, rest: &[u8], left: u64) -> Option<(usize, u64)> {
    if rest.is_empty() {
        return None;
    }
    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    head.push(&rest[..take]);
    Some((take, left - take as u64))
}

/// The CRLF that ends a length-prefixed data block (a RESP bulk string, a
/// memcached data block), at the start of `rest`: `Ok(true)` when it is
/// there (2 bytes to consume), `Ok(false)` when more bytes are needed,
/// `Err(too_long)` when something else follows the data: it is longer
/// than its announced length.
pub(crate) fn data_end(head: &mut Head, rest: &[u8], too_long: ProtoError) -> Result<bool, ProtoError> {
    match rest {
        [b'\r', b'\n', ..] => {
            head.push(b"\r\n");
            Ok(true)
        }
        [] | [b'\r'] => Ok(false),
        _ => {
            head.push(rest);
            Err(too_long)
        }
    }
}

/// The end of the stream for a parser whose responses end with a
/// complete line or data block (RESP, memcached): clean between
/// responses, truncated in one or in an unfinished line (`rest`).
pub(crate) fn eof_between<R>(head: &mut Head, rest: &[u8]) -> Eof<R> {
    if rest.is_empty() && !head.is_open() {
        return Eof::Clean;
    }
    head.refused(rest);
    Eof::Truncated
}

/// A decimal number of at most 18 digits (no sign, no spaces).
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')))
}

/// Test support: every parser is fed the same way the workload feeds it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A parsed stream: each response or the error, then the end.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed<R> {
        pub responses: Vec<R>,
        pub error: Option<ProtoError>,
        /// What the end of the input meant (None after an error).
        pub eof: Option<Eof<R>>,
    }

    /// Feeds `input` to `p` through an [`RxBuf`] in pieces cut at `cuts`
    /// (ascending offsets), then signals the end of the stream.
    pub fn parse_cut<P: Parser>(p: &mut P, input: &[u8], cuts: &[usize]) -> Parsed<P::Response> {
        let mut rx = RxBuf::new(64 * 1024);
        let mut out = Parsed { responses: Vec::new(), error: None, eof: None };
        let mut from = 0;
        let bounds = cuts.iter().copied().filter(|&c| c > 0 && c < input.len()).chain([input.len()]);
        for to in bounds {
            let mut piece = &input[from..to];
            from = to;
            while !piece.is_empty() {
                let space = rx.space();
                assert!(!space.is_empty(), "the parser left a full buffer unconsumed");
                let n = space.len().min(piece.len());
                space[..n].copy_from_slice(&piece[..n]);
                rx.filled(n);
                piece = &piece[n..];
                loop {
                    match next(p, &mut rx) {
                        Next::Need => break,
                        Next::Response(r) => out.responses.push(r),
                        Next::Bad(e) => {
                            out.error = Some(e);
                            return out;
                        }
                    }
                }
            }
        }
        out.eof = Some(p.eof(rx.data()));
        out
    }

    /// All at once, one byte at a time, and cut in two at every offset:
    /// asserts the results are the same and returns it.
    pub fn parse_every_way<P: Parser>(mut make: impl FnMut() -> P, input: &[u8]) -> Parsed<P::Response>
    where
        P::Response: PartialEq + std::fmt::Debug,
    {
        let whole = parse_cut(&mut make(), input, &[]);
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_cut(&mut make(), input, &bytes), whole, "one byte at a time: {}", excerpt(input));
        for i in 1..input.len() {
            assert_eq!(parse_cut(&mut make(), input, &[i]), whole, "cut at {i}: {}", excerpt(input));
        }
        whole
    }

    /// Property tests of the parser made by `$make` (no-panic, and
    /// agreement whatever the cuts): arbitrary bytes, and mutations of
    /// the valid stream `$valid` (one byte changed, then truncated), each
    /// parsed whole and cut in two.
    macro_rules! parser_proptests {
        ($make:expr, $valid:expr) => {
            proptest::proptest! {
                #[test]
                fn arbitrary_bytes_never_panic(
                    input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                    cut in 0usize..300,
                ) {
                    let a = $crate::apps::testing::parse_cut(&mut $make(), &input, &[]);
                    let b = $crate::apps::testing::parse_cut(&mut $make(), &input, &[cut]);
                    proptest::prop_assert_eq!(a, b);
                }

                #[test]
                fn mutated_responses_never_panic(
                    pos in 0usize..1000,
                    byte in proptest::prelude::any::<u8>(),
                    cut in 0usize..1000,
                ) {
                    let mut v = $valid.to_vec();
                    let pos = pos % v.len();
                    v[pos] = byte;
                    v.truncate(cut % (v.len() + 1));
                    let a = $crate::apps::testing::parse_cut(&mut $make(), &v, &[]);
                    let b = $crate::apps::testing::parse_cut(&mut $make(), &v, &[pos]);
                    proptest::prop_assert_eq!(a, b);
                }
            }
        };
    }
    pub(crate) use parser_proptests;

    /// The example of an error shows the bytes of the response at fault,
    /// not those of the `complete` one before it: after a line too long,
    /// and after a close in an unfinished line.
    pub fn example_is_the_new_response<P: Parser>(mut make: impl FnMut() -> P, complete: &[u8])
    where
        P::Response: PartialEq + std::fmt::Debug,
    {
        let long = [complete, &vec![b'Z'; MAX_LINE + 1]].concat();
        let mut p = make();
        assert_eq!(parse_cut(&mut p, &long, &[]).error, Some(ProtoError("line too long")));
        assert!(p.head().excerpt().starts_with("ZZZ"), "{}", p.head().excerpt());
        let mut p = make();
        assert_eq!(parse_cut(&mut p, &[complete, b"ZZZ"].concat(), &[]).eof, Some(Eof::Truncated));
        assert_eq!(p.head().excerpt(), "ZZZ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_numbers() {
        assert_eq!(line(b"abc\r\nx", true), Ok(Some((&b"abc"[..], 5))));
        assert_eq!(line(b"abc\nx", false), Ok(Some((&b"abc"[..], 4))));
        assert_eq!(line(b"abc\nx", true), Err(ProtoError("line ends with LF without CR")));
        assert_eq!(line(b"abc\r", true), Ok(None));
        // The longest line, with either terminator; one byte more is refused.
        let longest = vec![b'a'; MAX_LINE];
        assert_eq!(line(&[&longest[..], b"\nx"].concat(), false), Ok(Some((&longest[..], MAX_LINE + 1))));
        let crlf = [&longest[..MAX_LINE - 1], b"\r\n"].concat();
        assert_eq!(line(&crlf, true), Ok(Some((&longest[..MAX_LINE - 1], MAX_LINE + 1))));
        assert_eq!(line(&longest, true), Ok(None), "its LF may still come");
        assert_eq!(line(&vec![b'a'; MAX_LINE + 1], true), Err(ProtoError("line too long")));
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"123456789012345678"), Some(123_456_789_012_345_678));
        for bad in [&b""[..], b"1234567890123456789", b"-1", b"+1", b" 1", b"1a"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn head_keeps_the_first_bytes_and_escapes_them() {
        let mut h = Head::default();
        h.push(b"HTTP/1.1 200\r\n");
        h.push(&[b'x'; 200]);
        assert_eq!(h.as_bytes().len(), Head::CAP);
        assert!(h.excerpt().starts_with("HTTP/1.1 200\\r\\nxxx"));
        assert_eq!(excerpt(&[0, 0x7f, b'a']), "\\x00\\x7fa");
        h.clear();
        assert!(h.is_empty());
        // A response's bytes stay after its end, until the next begins.
        assert!(h.begin() && h.is_open() && !h.begin());
        h.push(b"one");
        h.end();
        assert_eq!(h.excerpt(), "one");
        h.refused(b"two");
        assert_eq!(h.excerpt(), "two");
        h.refused(b"2");
        assert_eq!(h.excerpt(), "two2");
    }
}
