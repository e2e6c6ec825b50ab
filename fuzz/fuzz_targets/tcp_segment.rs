//! The TCP parser: no input panics, and whatever parses re-emits to bytes
//! that parse to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::wire::tcp::{Options, Packet, Repr};
use xstack_dataplane::wire::Ipv4Addr;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fuzz_target!(|data: &[u8]| {
    let _ = Options::parse(data);
    let Ok(p) = Packet::new_checked(data) else { return };
    let _ = (p.payload(), p.options(), p.segment_len(), p.verify_checksum(SRC, DST));
    let _ = Repr::parse(&p, SRC, DST);
    if let Ok(r) = Repr::parse_unverified(&p) {
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), SRC, DST);
        let p2 = Packet::new_checked(&buf[..]).expect("emitted segments are well formed");
        let r2 = Repr::parse(&p2, SRC, DST).expect("emitted segments verify");
        // Options may be re-laid out (and extra SACK blocks dropped), the
        // rest must survive.
        assert_eq!((r2.src_port, r2.dst_port, r2.seq_number, r2.flags, r2.payload), (r.src_port, r.dst_port, r.seq_number, r.flags, r.payload));
        assert_eq!((r2.options.mss, r2.options.window_scale, r2.options.timestamp), (r.options.mss, r.options.window_scale, r.options.timestamp));
    }
});
