//! The sockperf server's side of its TCP protocol, as a pure framer: bytes
//! from the client in, the reply stream out.
//!
//! sockperf (github.com/Mellanox/sockperf, `src/message.h`, `src/server.h`)
//! sends messages that start with a 14-byte header, all fields in network
//! byte order:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | sequence number |
//! | 8 | 2 | flags: 1 client, 2 pong request, 4 warm-up |
//! | 10 | 4 | length of the whole message, header included |
//!
//! then `length - 14` bytes of payload. `sockperf server` answers a message
//! that comes from a client, is not a warm-up message and asks for a pong,
//! with the same bytes and the client flag cleared; it drops every other
//! message, and closes a connection whose message is longer than its
//! maximum (65507 bytes by default). Over TCP messages split and coalesce
//! freely, so the framer keeps a partial header across calls and streams
//! payload bytes through as they come: its state is a few bytes, however
//! large the message.

/// Bytes of the message header.
pub const HEADER_LEN: usize = 14;

/// The longest message `sockperf server` accepts by default (its `-m`).
pub const MAX_MESSAGE: u32 = 65_507;

const FLAG_CLIENT: u16 = 1;
const FLAG_PONG_REQUEST: u16 = 2;
const FLAG_WARMUP: u16 = 4;

/// The header as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub flags: u16,
    pub length: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            sequence: u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            flags: u16::from_be_bytes([b[8], b[9]]),
            length: u32::from_be_bytes([b[10], b[11], b[12], b[13]]),
        }
    }

    pub fn emit(&self, b: &mut [u8; HEADER_LEN]) {
        b[..8].copy_from_slice(&self.sequence.to_be_bytes());
        b[8..10].copy_from_slice(&self.flags.to_be_bytes());
        b[10..].copy_from_slice(&self.length.to_be_bytes());
    }

    pub fn is_client(&self) -> bool {
        self.flags & FLAG_CLIENT != 0
    }

    pub fn is_pong_request(&self) -> bool {
        self.flags & FLAG_PONG_REQUEST != 0
    }

    pub fn is_warmup(&self) -> bool {
        self.flags & FLAG_WARMUP != 0
    }

    /// Whether `sockperf server` answers it: the order of its checks
    /// (not from a client, then warm-up, then pong request) decides.
    pub fn wants_reply(&self) -> bool {
        self.is_client() && !self.is_warmup() && self.is_pong_request()
    }
}

/// A header whose length the server cannot frame: the connection ends,
/// as `sockperf server` closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its own header: the stream cannot advance.
    TooShort(u32),
    TooLong(u32),
}

/// What one [`Framer::feed`] call saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Messages whose last byte arrived.
    pub messages: u64,
    /// Of those, the ones answered.
    pub replies: u64,
    /// Warm-up messages (never answered).
    pub warmups: u64,
}

/// One connection's framing state.
#[derive(Debug, Clone, Default)]
pub struct Framer {
    header: [u8; HEADER_LEN],
    /// Header bytes held; `HEADER_LEN` once it is complete.
    have: usize,
    /// Payload bytes of the current message still to come.
    left: usize,
    /// The current message is being answered.
    replying: bool,
    warmup: bool,
    failed: Option<FrameError>,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `input`, appending the reply bytes it causes to `out`
    /// (at most `input.len() + HEADER_LEN` of them). After an error the
    /// framer stays failed: the stream has lost its framing.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<Fed, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut fed = Fed::default();
        while !input.is_empty() {
            if self.have < HEADER_LEN {
                let take = (HEADER_LEN - self.have).min(input.len());
                self.header[self.have..self.have + take].copy_from_slice(&input[..take]);
                self.have += take;
                input = &input[take..];
                if self.have < HEADER_LEN {
                    break;
                }
                let mut h = Header::parse(&self.header);
                if (h.length as usize) < HEADER_LEN {
                    return Err(*self.failed.insert(FrameError::TooShort(h.length)));
                }
                if h.length > MAX_MESSAGE {
                    return Err(*self.failed.insert(FrameError::TooLong(h.length)));
                }
                self.left = h.length as usize - HEADER_LEN;
                self.replying = h.wants_reply();
                self.warmup = h.is_warmup();
                if self.replying {
                    // The answer is the message itself, from the server.
                    h.flags &= !FLAG_CLIENT;
                    let mut b = [0u8; HEADER_LEN];
                    h.emit(&mut b);
                    out.extend_from_slice(&b);
                }
            } else {
                let take = self.left.min(input.len());
                if self.replying {
                    out.extend_from_slice(&input[..take]);
                }
                self.left -= take;
                input = &input[take..];
            }
            if self.have == HEADER_LEN && self.left == 0 {
                fed.messages += 1;
                fed.replies += u64::from(self.replying);
                fed.warmups += u64::from(self.warmup);
                self.have = 0;
            }
        }
        Ok(fed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(seq: u64, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = [0u8; HEADER_LEN];
        Header { sequence: seq, flags, length: (HEADER_LEN + payload.len()) as u32 }.emit(&mut b);
        let mut v = b.to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// What `sockperf server` sends back for `msgs`, concatenated.
    fn expected(msgs: &[(u64, u16, Vec<u8>)]) -> Vec<u8> {
        msgs.iter()
            .filter(|(_, f, _)| f & FLAG_CLIENT != 0 && f & FLAG_WARMUP == 0 && f & FLAG_PONG_REQUEST != 0)
            .flat_map(|(s, f, p)| message(*s, f & !FLAG_CLIENT, p))
            .collect()
    }

    #[test]
    fn a_ping_is_answered_with_the_client_flag_cleared() {
        // As captured from sockperf 3.7 ping-pong: seq 1, client|pong, 14 bytes.
        let ping = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 14];
        let mut out = Vec::new();
        let fed = Framer::new().feed(&ping, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 14]);
        assert_eq!(fed, Fed { messages: 1, replies: 1, warmups: 0 });
    }

    #[test]
    fn only_pong_requests_from_clients_are_answered() {
        let msgs = vec![
            (1, FLAG_CLIENT, vec![1, 2, 3]),                            // under-load, no pong wanted
            (2, FLAG_CLIENT | FLAG_PONG_REQUEST | FLAG_WARMUP, vec![]), // warm-up
            (3, FLAG_PONG_REQUEST, vec![9; 20]),                        // from a server
            (4, FLAG_CLIENT | FLAG_PONG_REQUEST, (0..200).collect::<Vec<u8>>()), // answered
        ];
        let stream: Vec<u8> = msgs.iter().flat_map(|(s, f, p)| message(*s, *f, p)).collect();
        let mut out = Vec::new();
        let fed = Framer::new().feed(&stream, &mut out).unwrap();
        assert_eq!(out, expected(&msgs));
        assert_eq!(fed, Fed { messages: 4, replies: 1, warmups: 1 });
    }

    #[test]
    fn bad_lengths_end_the_stream() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        assert_eq!(f.feed(&message(1, 3, &[])[..10], &mut out), Ok(Fed::default()));
        let mut long = [0u8; HEADER_LEN];
        Header { sequence: 0, flags: 3, length: MAX_MESSAGE + 1 }.emit(&mut long);
        assert_eq!(Framer::new().feed(&long, &mut out), Err(FrameError::TooLong(MAX_MESSAGE + 1)));
        let mut short = [0u8; HEADER_LEN];
        Header { sequence: 0, flags: 3, length: 13 }.emit(&mut short);
        let mut f = Framer::new();
        assert_eq!(f.feed(&short, &mut out), Err(FrameError::TooShort(13)));
        assert_eq!(f.feed(&message(1, 3, &[]), &mut out), Err(FrameError::TooShort(13)), "stays failed");
        assert!(out.is_empty());
    }

    #[test]
    fn split_at_every_position() {
        let msgs = vec![
            (7, FLAG_CLIENT | FLAG_PONG_REQUEST, vec![0xab; 30]),
            (8, FLAG_CLIENT, vec![0xcd; 5]),
            (9, FLAG_CLIENT | FLAG_PONG_REQUEST, vec![]),
        ];
        let stream: Vec<u8> = msgs.iter().flat_map(|(s, f, p)| message(*s, *f, p)).collect();
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut f = Framer::new();
                let mut out = Vec::new();
                let mut total = Fed::default();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    let fed = f.feed(part, &mut out).unwrap();
                    total.messages += fed.messages;
                    total.replies += fed.replies;
                }
                assert_eq!(out, expected(&msgs), "split at {i} and {j}");
                assert_eq!((total.messages, total.replies), (3, 2));
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_bound_the_output(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..10),
        ) {
            let mut f = Framer::new();
            for c in &chunks {
                let mut out = Vec::new();
                if f.feed(c, &mut out).is_err() {
                    break;
                }
                prop_assert!(out.len() <= c.len() + HEADER_LEN);
            }
        }

        #[test]
        fn any_split_of_valid_messages_gives_the_same_replies(
            msgs in proptest::collection::vec(
                (any::<u64>(), 0u16..8, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let stream: Vec<u8> = msgs.iter().flat_map(|(s, f, p)| message(*s, *f, p)).collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            at.push(stream.len());
            at.sort_unstable();
            let mut f = Framer::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut messages = 0;
            for cut in at {
                messages += f.feed(&stream[pos..cut], &mut out).unwrap().messages;
                pos = cut;
            }
            prop_assert_eq!(out, expected(&msgs));
            prop_assert_eq!(messages, msgs.len() as u64);
        }
    }
}
