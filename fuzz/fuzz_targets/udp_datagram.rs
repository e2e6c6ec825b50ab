//! The UDP parser: no input panics; parsed datagrams round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::wire::udp::{Packet, Repr};
use xstack_dataplane::wire::Ipv4Addr;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else { return };
    let _ = p.payload();
    if let Ok(r) = Repr::parse(&p, SRC, DST) {
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), SRC, DST);
        let p2 = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p2, SRC, DST).unwrap(), r);
    }
});
