//! The capture filter on arbitrary frames: the workers run it on every
//! frame they receive or send while an operator captures, so it must never
//! panic, whatever the frame; and a filter with neither host nor port
//! matches everything, as the empty tcpdump expression does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::capture::Filter;
use xstack_dataplane::wire::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Some((head, frame)) = data.split_first_chunk::<7>() else { return };
    let host = (head[0] & 1 != 0).then(|| Ipv4Addr([head[1], head[2], head[3], head[4]]));
    let port = (head[0] & 2 != 0).then(|| u16::from_be_bytes([head[5], head[6]]));
    let f = Filter { host, port };
    let m = f.matches(frame);
    assert!(Filter::ALL.matches(frame));
    // Narrowing a filter never matches more.
    if host.is_some() && port.is_some() && m {
        assert!(Filter { host, port: None }.matches(frame));
        assert!(Filter { host: None, port }.matches(frame));
    }
});
