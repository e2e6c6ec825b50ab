//! memcached's text protocol (protocol.txt in memcached's sources):
//! `set <key> <flags> <exptime> <bytes>\r\n<data block>\r\n` answered by
//! `STORED` (or `NOT_STORED`, `EXISTS`, `NOT_FOUND`), and `get <key>\r\n`
//! answered by zero or more `VALUE <key> <flags> <bytes> [<cas unique>]\r\n`
//! lines each followed by its data block and CRLF, then `END\r\n`. Any
//! command may instead get `ERROR`, `CLIENT_ERROR <error>` or
//! `SERVER_ERROR <error>`. Every line ends with CRLF.
//!
//! The load generator's gets ask for one key each, so a reply with a second
//! VALUE is refused as a protocol error (it also bounds what a server that
//! streams VALUE lines can make the parser count).

use super::keys::{write_digits, MixOp, DIGITS};
use super::tally::{ErrorKind, Problem};
use super::{data_end, decimal, eof_between, line, take_data, Eof, Head, Parser, ProtoError, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

impl MixOp for Op {
    fn from_name(s: &str) -> Option<Op> {
        match s.to_ascii_lowercase().as_str() {
            "get" => Some(Op::Get),
            "set" => Some(Op::Set),
            _ => None,
        }
    }
}

/// The key prefix (keys are `key:` and nine digits).
pub const PREFIX: &[u8] = b"key:";
/// protocol.txt: "the key must not include control characters or
/// whitespace" and is at most 250 characters.
pub const MAX_KEY: usize = 250;
/// The largest value a stock memcached stores under our keys: an item
/// of its default maximum size (`-I 1m`) holds a 48-byte header, the
/// 13-byte key and its NUL, the data and its CRLF, and the 8-byte CAS:
/// 72 bytes of overhead (memcached 1.6; measured with 1.6.18, which
/// answers `SERVER_ERROR object too large for cache` one byte above).
pub const MAX_VALUE: usize = (1 << 20) - 72;

/// The requests of a run, built once; [`Requests::write`] appends one with
/// its key's digits filled in.
#[derive(Debug, Clone)]
pub struct Requests {
    get: Vec<u8>,
    set: Vec<u8>,
}

/// Where the key's digits start in both requests (after `get ` / `set ` and
/// the prefix).
const AT: usize = 4 + PREFIX.len();

impl Requests {
    pub fn new(value_size: usize) -> Requests {
        let key = [PREFIX, &[b'0'; DIGITS][..]].concat();
        let mut get = b"get ".to_vec();
        get.extend_from_slice(&key);
        get.extend_from_slice(b"\r\n");
        let mut set = b"set ".to_vec();
        set.extend_from_slice(&key);
        set.extend_from_slice(format!(" 0 0 {value_size}\r\n").as_bytes());
        set.extend((0..value_size).map(|i| b'a' + (i % 26) as u8));
        set.extend_from_slice(b"\r\n");
        Requests { get, set }
    }

    /// Appends the request `op` on key number `key` to `out`.
    pub fn write(&self, op: Op, key: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(match op {
            Op::Get => &self.get,
            Op::Set => &self.set,
        });
        write_digits(&mut out[start + AT..], key);
    }
}

/// The key of number `n` as the server spells it.
pub fn key_bytes(n: u64) -> [u8; 4 + DIGITS] {
    let mut k = [0u8; 4 + DIGITS];
    k[..4].copy_from_slice(PREFIX);
    write_digits(&mut k[4..], n);
    k
}

/// A complete reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Stored,
    NotStored,
    Exists,
    NotFound,
    /// A retrieval: `None` for a miss (`END` alone), or the data size
    /// of the one item (its key is [`ReplyParser::key`]).
    Value(Option<u64>),
    Error,
    ClientError,
    ServerError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Line,
    Data(u64),
    DataEnd,
}

/// Data blocks above this are refused (memcached's item size limit is at
/// most 1 GiB).
const MAX_DATA: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct ReplyParser {
    st: St,
    head: Head,
    /// Inside a retrieval (after a VALUE line).
    values: bool,
    /// The data size of the item of the current retrieval.
    value: Option<u64>,
    key: [u8; MAX_KEY],
    key_len: usize,
}

impl Default for ReplyParser {
    fn default() -> Self {
        ReplyParser { st: St::Line, head: Head::default(), values: false, value: None, key: [0; MAX_KEY], key_len: 0 }
    }
}

impl ReplyParser {
    /// The key of the item of the last retrieval.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// `VALUE <key> <flags> <bytes> [<cas unique>]`: the data size.
    fn value_line(&mut self, l: &[u8]) -> Result<u64, ProtoError> {
        let bad = ProtoError("bad VALUE line");
        let mut t = l.split(|&b| b == b' ');
        let (_, key, flags, bytes) = (t.next(), t.next().ok_or(bad)?, t.next().ok_or(bad)?, t.next().ok_or(bad)?);
        let cas = t.next();
        if t.next().is_some() || cas.is_some_and(|c| decimal(c).is_none()) {
            return Err(bad);
        }
        if key.is_empty() || key.len() > MAX_KEY || !key.iter().all(u8::is_ascii_graphic) {
            return Err(ProtoError("bad key in VALUE line"));
        }
        decimal(flags).filter(|&f| f <= u64::from(u32::MAX)).ok_or(bad)?;
        let n = decimal(bytes).filter(|&n| n <= MAX_DATA).ok_or(bad)?;
        if self.value.is_some() {
            return Err(ProtoError("a second item for a get of one key"));
        }
        self.value = Some(n);
        self.key[..key.len()].copy_from_slice(key);
        self.key_len = key.len();
        Ok(n)
    }

    fn done(&mut self, at: usize, r: Reply) -> Step<Reply> {
        self.head.end();
        self.values = false;
        self.st = St::Line;
        Step::Done(at, r)
    }
}

impl Parser for ReplyParser {
    type Response = Reply;

    fn feed(&mut self, buf: &[u8]) -> Step<Reply> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.st {
                St::Line => {
                    let (l, n) = match line(rest, true) {
                        Ok(Some(x)) => x,
                        Ok(None) => return Step::More(at),
                        Err(e) => {
                            self.head.refused(rest);
                            return Step::Bad(e);
                        }
                    };
                    if self.head.begin() {
                        self.value = None;
                        self.key_len = 0;
                    }
                    self.head.push(&rest[..n]);
                    at += n;
                    let simple = match l {
                        b"END" => Some(Reply::Value(self.value)),
                        _ if l.starts_with(b"CLIENT_ERROR ") => Some(Reply::ClientError),
                        _ if l.starts_with(b"SERVER_ERROR ") => Some(Reply::ServerError),
                        _ if l.starts_with(b"VALUE ") => None,
                        _ if self.values => return Step::Bad(ProtoError("expected VALUE or END")),
                        b"STORED" => Some(Reply::Stored),
                        b"NOT_STORED" => Some(Reply::NotStored),
                        b"EXISTS" => Some(Reply::Exists),
                        b"NOT_FOUND" => Some(Reply::NotFound),
                        _ if l == b"ERROR" || l.starts_with(b"ERROR ") => Some(Reply::Error),
                        _ => return Step::Bad(ProtoError("not a memcached reply")),
                    };
                    if let Some(r) = simple {
                        return self.done(at, r);
                    }
                    self.values = true;
                    match self.value_line(l) {
                        Ok(0) => self.st = St::DataEnd,
                        Ok(n) => self.st = St::Data(n),
                        Err(e) => return Step::Bad(e),
                    }
                }
                St::Data(left) => {
                    let Some((take, left)) = take_data(&mut self.head, rest, left) else {
                        return Step::More(at);
                    };
                    at += take;
                    self.st = if left == 0 { St::DataEnd } else { St::Data(left) };
                }
                St::DataEnd => match data_end(&mut self.head, rest, ProtoError("data block longer than its size")) {
                    Ok(false) => return Step::More(at),
                    Ok(true) => {
                        at += 2;
                        self.st = St::Line;
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

/// Whether `r` is the right reply to `op` on key `key`: a set is STORED; a
/// get is a miss (END alone) or the item of the key asked for, of the size
/// written. `got_key` is [`ReplyParser::key`].
pub fn check(op: Op, r: &Reply, value_size: usize, key: &[u8], got_key: &[u8]) -> Result<(), Problem> {
    let wrong = |what| Err(Problem { kind: ErrorKind::WrongValue, what });
    match (op, r) {
        (_, Reply::Error | Reply::ClientError | Reply::ServerError) => {
            Err(Problem { kind: ErrorKind::ServerError, what: "error reply" })
        }
        (Op::Set, Reply::Stored) => Ok(()),
        (Op::Set, Reply::NotStored | Reply::Exists | Reply::NotFound) => {
            Err(Problem { kind: ErrorKind::ServerError, what: "the set was not stored" })
        }
        (Op::Set, _) => wrong("a set answered with values"),
        (Op::Get, Reply::Value(None)) => Ok(()),
        (Op::Get, Reply::Value(Some(n))) if *n != value_size as u64 => {
            wrong("get returned a value of another size than set writes")
        }
        (Op::Get, Reply::Value(Some(_))) if got_key != key => wrong("get returned another key"),
        (Op::Get, Reply::Value(Some(_))) => Ok(()),
        (Op::Get, _) => wrong("get answered as a store"),
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
    fn request_bytes() {
        let r = Requests::new(3);
        let mut out = Vec::new();
        r.write(Op::Set, 42, &mut out);
        r.write(Op::Get, 7, &mut out);
        assert_eq!(out, b"set key:000000042 0 0 3\r\nabc\r\nget key:000000007\r\n");
        assert_eq!(&key_bytes(42), b"key:000000042");
    }

    #[test]
    fn every_reply() {
        let p = parse(
            b"STORED\r\nNOT_STORED\r\nEXISTS\r\nNOT_FOUND\r\nEND\r\nVALUE k 0 3\r\nabc\r\nEND\r\n\
              VALUE a 5 0 99\r\n\r\nEND\r\nVALUE bb 1 2\r\n\r\n\r\nEND\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\n\
              SERVER_ERROR out of memory\r\nVALUE k 0 1\r\nx\r\nSERVER_ERROR oops\r\n",
        );
        assert_eq!(p.error, None);
        assert_eq!(
            p.responses,
            vec![
                Reply::Stored,
                Reply::NotStored,
                Reply::Exists,
                Reply::NotFound,
                Reply::Value(None),
                Reply::Value(Some(3)),
                Reply::Value(Some(0)),
                Reply::Value(Some(2)),
                Reply::Error,
                Reply::ClientError,
                Reply::ServerError,
                Reply::ServerError,
            ]
        );
        assert_eq!(p.eof, Some(Eof::Clean));
        let mut rp = ReplyParser::default();
        let p = parse_cut(&mut rp, b"VALUE key:000000001 0 2\r\nab\r\nEND\r\n", &[]);
        assert_eq!(p.responses, vec![Reply::Value(Some(2))]);
        assert_eq!(rp.key(), b"key:000000001");
    }

    #[test]
    fn truncations_are_reported_at_the_close() {
        let full = b"STORED\r\nVALUE k 0 2\r\nab\r\nEND\r\n";
        for n in 0..=full.len() {
            let p = parse_cut(&mut ReplyParser::default(), &full[..n], &[]);
            assert_eq!(p.error, None, "{n}");
            assert_eq!(p.responses.len(), usize::from(n >= 8) + usize::from(n == full.len()), "{n}");
            let clean = n == 0 || n == 8 || n == full.len();
            assert_eq!(p.eof, Some(if clean { Eof::Clean } else { Eof::Truncated }), "{n}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"HTTP/1.1 400 Bad Request\r\n", "not a memcached reply"),
            (b"+OK\r\n", "not a memcached reply"),
            (b"STORED\n", "line ends with LF without CR"),
            (b"VALUE k 0\r\n", "bad VALUE line"),
            (b"VALUE k 0 x\r\n", "bad VALUE line"),
            (b"VALUE k 0 1 2 3\r\n", "bad VALUE line"),
            (b"VALUE k 0 1 c\r\n", "bad VALUE line"),
            (b"VALUE k 99999999999 1\r\n", "bad VALUE line"),
            (b"VALUE k 0 9999999999\r\n", "bad VALUE line"),
            (b"VALUE  0 1\r\n", "bad key in VALUE line"),
            (b"VALUE k 0 1\r\nab\r\n", "data block longer than its size"),
            (b"VALUE k 0 1\r\na\r\nSTORED\r\n", "expected VALUE or END"),
            (b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\n", "a second item for a get of one key"),
        ];
        for (input, what) in cases {
            assert_eq!(parse(input).error, Some(ProtoError(what)), "{}", crate::apps::excerpt(input));
        }
        let long_key = [b"VALUE ".to_vec(), vec![b'k'; 251], b" 0 1\r\n".to_vec()].concat();
        assert_eq!(parse(&long_key).error, Some(ProtoError("bad key in VALUE line")));
        // A server streaming VALUE lines for one get: refused at the
        // second, no count to overflow.
        let stream = b"VALUE k 0 0\r\n\r\n".repeat(1000);
        assert_eq!(
            parse_cut(&mut ReplyParser::default(), &stream, &[]).error,
            Some(ProtoError("a second item for a get of one key"))
        );
    }

    #[test]
    fn the_example_is_of_the_reply_at_fault() {
        crate::apps::testing::example_is_the_new_response(ReplyParser::default, b"VALUE k 0 2\r\nok\r\nEND\r\n");
    }

    #[test]
    fn checks() {
        let k = key_bytes(1);
        assert!(check(Op::Set, &Reply::Stored, 10, &k, b"").is_ok());
        assert!(check(Op::Get, &Reply::Value(None), 10, &k, b"").is_ok());
        assert!(check(Op::Get, &Reply::Value(Some(10)), 10, &k, &k).is_ok());
        let kind = |op, r, got: &[u8]| check(op, &r, 10, &k, got).unwrap_err().kind;
        assert_eq!(kind(Op::Get, Reply::Value(Some(9)), &k), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Get, Reply::Value(Some(10)), b"key:000000002"), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Get, Reply::Stored, &k), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Set, Reply::Value(None), &k), ErrorKind::WrongValue);
        assert_eq!(kind(Op::Set, Reply::NotStored, &k), ErrorKind::ServerError);
        assert_eq!(kind(Op::Get, Reply::ServerError, &k), ErrorKind::ServerError);
    }

    crate::apps::testing::parser_proptests!(
        ReplyParser::default,
        b"VALUE key:1 0 3 9\r\nabc\r\nEND\r\nSTORED\r\nEND\r\nSERVER_ERROR x\r\n"
    );
}
