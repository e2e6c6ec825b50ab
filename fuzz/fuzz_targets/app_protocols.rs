//! The server's application parsers on arbitrary bytes: HTTP request heads
//! (whole and split at a fuzzer-chosen point, which must agree), chunked
//! request bodies fed in pieces, and sockperf message framing. None may
//! panic, and the sockperf framer never writes more than it was allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::apps::http::{self, Chunked, Parsed};
use xstack_dataplane::apps::sockperf::{Framer, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let _ = http::parse(rest);
    // A partial parse of a prefix never contradicts the whole: an error on
    // the prefix is an error on the whole input.
    let cut = usize::from(split).min(rest.len());
    if let Parsed::Error(_) = http::parse(&rest[..cut]) {
        assert!(matches!(http::parse(rest), Parsed::Error(_)), "prefix failed but whole parsed");
    }
    let mut c = Chunked::new();
    let (a, b) = rest.split_at(cut);
    if let Ok(n) = c.feed(a) {
        assert!(n <= a.len());
        if let Ok(m) = c.feed(b) {
            assert!(m <= b.len());
        }
    }
    let mut f = Framer::new();
    let mut out = Vec::new();
    for piece in [a, b] {
        let before = out.len();
        if f.feed(piece, &mut out).is_err() {
            break;
        }
        assert!(out.len() - before <= piece.len() + HEADER_LEN);
    }
});
