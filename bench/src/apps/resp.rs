//! Redis's RESP2 (the redis protocol specification, "RESP protocol
//! description"): requests are arrays of bulk strings; replies are simple
//! strings (`+`), errors (`-`), integers (`:`), bulk strings (`$`, length
//! -1 for nil) and arrays (`*`, count -1 for nil, elements of any type,
//! nested). Every part ends with CRLF; a bulk string's data is
//! length-prefixed and followed by CRLF.
//!
//! The parser reports the type of the top-level reply and its size; bulk
//! data is counted, not kept.

use super::keys::{write_digits, MixOp, DIGITS};
use super::tally::{ErrorKind, Problem};
use super::{data_end, decimal, eof_between, line, take_data, Eof, Head, Parser, ProtoError, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    Incr,
}

impl MixOp for Op {
    fn from_name(s: &str) -> Option<Op> {
        match s.to_ascii_lowercase().as_str() {
            "get" => Some(Op::Get),
            "set" => Some(Op::Set),
            "incr" => Some(Op::Incr),
            _ => None,
        }
    }
}

/// The requests of a run, built once; [`Requests::write`] appends one with
/// its key's digits filled in.
#[derive(Debug, Clone)]
pub struct Requests {
    get: Vec<u8>,
    set: Vec<u8>,
    incr: Vec<u8>,
    /// Where the digits of the key start in each (the same offset for GET
    /// and SET, whose keys are the 4th element; INCR's command is longer).
    at_get_set: usize,
    at_incr: usize,
}

/// `$13\r\nkey:000000000\r\n`: a bulk string of a key.
fn bulk_key(out: &mut Vec<u8>, prefix: &str) -> usize {
    out.extend_from_slice(format!("${}\r\n{prefix}", prefix.len() + DIGITS).as_bytes());
    let at = out.len();
    out.extend_from_slice(&[b'0'; DIGITS]);
    out.extend_from_slice(b"\r\n");
    at
}

impl Requests {
    /// SET writes `value_size` bytes; INCR uses keys of its own (`ctr:`),
    /// since incrementing a SET value would be an error.
    pub fn new(value_size: usize) -> Requests {
        let mut get = b"*2\r\n$3\r\nGET\r\n".to_vec();
        let at_get_set = bulk_key(&mut get, "key:");
        let mut set = b"*3\r\n$3\r\nSET\r\n".to_vec();
        bulk_key(&mut set, "key:");
        set.extend_from_slice(format!("${value_size}\r\n").as_bytes());
        set.extend((0..value_size).map(|i| b'a' + (i % 26) as u8));
        set.extend_from_slice(b"\r\n");
        let mut incr = b"*2\r\n$4\r\nINCR\r\n".to_vec();
        let at_incr = bulk_key(&mut incr, "ctr:");
        Requests { get, set, incr, at_get_set, at_incr }
    }

    /// Appends the request `op` on key number `key` to `out`.
    pub fn write(&self, op: Op, key: u64, out: &mut Vec<u8>) {
        let (tpl, at) = match op {
            Op::Get => (&self.get, self.at_get_set),
            Op::Set => (&self.set, self.at_get_set),
            Op::Incr => (&self.incr, self.at_incr),
        };
        let start = out.len();
        out.extend_from_slice(tpl);
        write_digits(&mut out[start + at..], key);
    }
}

/// A top-level reply: its type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `+...`; `ok` when it is exactly `+OK`.
    Simple {
        ok: bool,
    },
    Error,
    Integer(i64),
    /// A bulk string of this many bytes.
    Bulk(u64),
    /// The nil bulk string (`$-1`).
    Nil,
    /// An array of this many elements.
    Array(u64),
    /// The nil array (`*-1`).
    NilArray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Type,
    Bulk(u64),
    BulkEnd,
}

/// Arrays nested deeper than this are refused.
const MAX_DEPTH: usize = 16;
/// redis's own limit on a bulk string (proto-max-bulk-len).
const MAX_BULK: u64 = 512 << 20;

#[derive(Debug, Clone)]
pub struct ReplyParser {
    st: St,
    head: Head,
    top: Option<Reply>,
    /// Elements still expected by each open array, outermost first.
    open: [u64; MAX_DEPTH],
    depth: usize,
}

impl Default for ReplyParser {
    fn default() -> Self {
        ReplyParser { st: St::Type, head: Head::default(), top: None, open: [0; MAX_DEPTH], depth: 0 }
    }
}

/// `-1` or a decimal number.
fn length(s: &[u8]) -> Option<Option<u64>> {
    if s == b"-1" {
        return Some(None);
    }
    decimal(s).map(Some)
}

fn integer(s: &[u8]) -> Option<i64> {
    match s.strip_prefix(b"-") {
        Some(d) => decimal(d).map(|v| -(v as i64)),
        None => decimal(s).map(|v| v as i64),
    }
}

impl ReplyParser {
    /// An element ended: closes the arrays it completes. True when the
    /// top-level reply is complete.
    fn element_done(&mut self) -> bool {
        while self.depth > 0 {
            self.open[self.depth - 1] -= 1;
            if self.open[self.depth - 1] > 0 {
                return false;
            }
            self.depth -= 1;
        }
        true
    }

    fn begin(&mut self, r: Reply) {
        if self.top.is_none() {
            self.top = Some(r);
        }
    }

    fn finish(&mut self, at: usize) -> Step<Reply> {
        self.head.end();
        self.st = St::Type;
        match self.top.take() {
            Some(r) => Step::Done(at, r),
            None => Step::Bad(ProtoError("empty reply")),
        }
    }

    /// One type line: whether it completed an element.
    fn type_line(&mut self, l: &[u8]) -> Result<bool, ProtoError> {
        let (&t, body) = l.split_first().ok_or(ProtoError("empty line"))?;
        match t {
            b'+' => self.begin(Reply::Simple { ok: body == b"OK" }),
            b'-' => self.begin(Reply::Error),
            b':' => self.begin(Reply::Integer(integer(body).ok_or(ProtoError("bad integer"))?)),
            b'$' => match length(body) {
                Some(None) => self.begin(Reply::Nil),
                Some(Some(n)) if n <= MAX_BULK => {
                    self.begin(Reply::Bulk(n));
                    self.st = if n == 0 { St::BulkEnd } else { St::Bulk(n) };
                    return Ok(false);
                }
                _ => return Err(ProtoError("bad bulk string length")),
            },
            b'*' => match length(body) {
                Some(None) => self.begin(Reply::NilArray),
                Some(Some(0)) => self.begin(Reply::Array(0)),
                Some(Some(n)) if n <= u64::from(u32::MAX) => {
                    if self.depth == MAX_DEPTH {
                        return Err(ProtoError("arrays nested too deep"));
                    }
                    self.begin(Reply::Array(n));
                    self.open[self.depth] = n;
                    self.depth += 1;
                    return Ok(false);
                }
                _ => return Err(ProtoError("bad array length")),
            },
            _ => return Err(ProtoError("not a RESP2 type")),
        }
        Ok(true)
    }
}

impl Parser for ReplyParser {
    type Response = Reply;

    fn feed(&mut self, buf: &[u8]) -> Step<Reply> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.st {
                St::Type => {
                    let (l, n) = match line(rest, true) {
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
                    match self.type_line(l) {
                        Ok(true) if self.element_done() => return self.finish(at),
                        Ok(_) => {}
                        Err(e) => return Step::Bad(e),
                    }
                }
                St::Bulk(left) => {
                    let Some((take, left)) = take_data(&mut self.head, rest, left) else {
                        return Step::More(at);
                    };
                    at += take;
                    self.st = if left == 0 { St::BulkEnd } else { St::Bulk(left) };
                }
                St::BulkEnd => match data_end(&mut self.head, rest, ProtoError("bulk string longer than its length")) {
                    Ok(false) => return Step::More(at),
                    Ok(true) => {
                        at += 2;
                        self.st = St::Type;
                        if self.element_done() {
                            return self.finish(at);
                        }
                    }
                    Err(e) => return Step::Bad(e),
                },
            }
        }
    }

    fn eof(&mut self, rest: &[u8]) -> Eof<Reply> {
        eof_between(&mut self.head, rest)
    }

    fn head(&self) -> &Head {
        &self.head
    }

    fn reset(&mut self) {
        *self = ReplyParser::default();
    }
}

/// Whether `r` is the right reply to `op`: SET answers +OK, GET a bulk
/// string of the size written or nil, INCR an integer.
pub fn check(op: Op, r: &Reply, value_size: usize) -> Result<(), Problem> {
    let wrong = |what| Err(Problem { kind: ErrorKind::WrongValue, what });
    match (op, r) {
        (_, Reply::Error) => Err(Problem { kind: ErrorKind::ServerError, what: "error reply" }),
        (Op::Get, Reply::Bulk(n)) if *n == value_size as u64 => Ok(()),
        (Op::Get, Reply::Nil) => Ok(()),
        (Op::Get, Reply::Bulk(_)) => wrong("GET returned a value of another size than SET writes"),
        (Op::Get, _) => wrong("GET did not return a bulk string or nil"),
        (Op::Set, Reply::Simple { ok: true }) => Ok(()),
        (Op::Set, _) => wrong("SET did not answer +OK"),
        (Op::Incr, Reply::Integer(_)) => Ok(()),
        (Op::Incr, _) => wrong("INCR did not answer an integer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::{parse_cut, parse_every_way, Parsed};

    fn parse(input: &[u8]) -> Parsed<Reply> {
        parse_every_way(ReplyParser::default, input)
    }

    #[test]
    fn requests_are_arrays_of_bulk_strings() {
        let r = Requests::new(5);
        let mut out = Vec::new();
        r.write(Op::Get, 123, &mut out);
        r.write(Op::Set, 999_999_999, &mut out);
        r.write(Op::Incr, 7, &mut out);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$13\r\nkey:000000123\r\n\
              *3\r\n$3\r\nSET\r\n$13\r\nkey:999999999\r\n$5\r\nabcde\r\n\
              *2\r\n$4\r\nINCR\r\n$13\r\nctr:000000007\r\n"
        );
    }

    #[test]
    fn every_reply_type() {
        let p = parse(
            b"+OK\r\n+QUEUED\r\n-ERR unknown command 'x'\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n\
              *-1\r\n*0\r\n*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n$3\r\n\r\n\r\r\n",
        );
        assert_eq!(p.error, None);
        assert_eq!(
            p.responses,
            vec![
                Reply::Simple { ok: true },
                Reply::Simple { ok: false },
                Reply::Error,
                Reply::Integer(42),
                Reply::Integer(-7),
                Reply::Bulk(5),
                Reply::Bulk(0),
                Reply::Nil,
                Reply::NilArray,
                Reply::Array(0),
                Reply::Array(3),
                Reply::Bulk(3),
            ]
        );
        assert_eq!(p.eof, Some(Eof::Clean));
    }

    #[test]
    fn truncations_are_reported_at_the_close() {
        let full = b"*2\r\n$3\r\nabc\r\n:1\r\n$2\r\nxy\r\n";
        for n in 0..=full.len() {
            let p = parse_cut(&mut ReplyParser::default(), &full[..n], &[]);
            assert_eq!(p.error, None, "{n}");
            let done = usize::from(n >= 17) + usize::from(n == full.len());
            assert_eq!(p.responses.len(), done, "{n}");
            let clean = n == 0 || n == 17 || n == full.len();
            assert_eq!(p.eof, Some(if clean { Eof::Clean } else { Eof::Truncated }), "{n}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"HTTP/1.1 200 OK\r\n", "not a RESP2 type"),
            (b"\r\n", "empty line"),
            (b"+OK\n", "line ends with LF without CR"),
            (b":12a\r\n", "bad integer"),
            (b":\r\n", "bad integer"),
            (b"$-2\r\n", "bad bulk string length"),
            (b"$x\r\n", "bad bulk string length"),
            (b"$999999999999\r\n", "bad bulk string length"),
            (b"$1\r\nab\r\n", "bulk string longer than its length"),
            (b"$1\r\na\n\n", "bulk string longer than its length"),
            (b"*-2\r\n", "bad array length"),
            (b"*99999999999\r\n", "bad array length"),
            (b"_\r\n", "not a RESP2 type"),
            (&[b"*1\r\n".repeat(17), b":1\r\n".to_vec()].concat(), "arrays nested too deep"),
        ];
        for (input, what) in cases {
            assert_eq!(parse(input).error, Some(ProtoError(what)), "{}", crate::apps::excerpt(input));
        }
        let mut p = ReplyParser::default();
        assert!(parse_cut(&mut p, b"garbage\r\n", &[]).error.is_some());
        assert_eq!(p.head().excerpt(), "garbage\\r\\n");
        // Sixteen levels are fine.
        let deep = [b"*1\r\n".repeat(16), b":1\r\n".to_vec()].concat();
        assert_eq!(parse(&deep).responses, vec![Reply::Array(1)]);
    }

    #[test]
    fn the_example_is_of_the_reply_at_fault() {
        crate::apps::testing::example_is_the_new_response(ReplyParser::default, b"$2\r\nok\r\n");
    }

    #[test]
    fn checks() {
        assert!(check(Op::Get, &Reply::Bulk(10), 10).is_ok());
        assert!(check(Op::Get, &Reply::Nil, 10).is_ok());
        assert!(check(Op::Set, &Reply::Simple { ok: true }, 10).is_ok());
        assert!(check(Op::Incr, &Reply::Integer(-3), 10).is_ok());
        let kind = |op, r| check(op, &r, 10).unwrap_err().kind;
        assert_eq!(kind(Op::Get, Reply::Bulk(9)), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Get, Reply::Integer(1)), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Set, Reply::Simple { ok: false }), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Incr, Reply::Bulk(1)), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Set, Reply::Error), ErrorKind::ServerError);
    }

    crate::apps::testing::parser_proptests!(
        ReplyParser::default,
        b"*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n-E\r\n$-1\r\n+OK\r\n:12\r\n$0\r\n\r\n"
    );
}
