//! Segments, timers and socket calls against a listener with a tiny
//! backlog and SYN queue (so overflow and SYN cookies are reached).
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;
use xstack_dataplane::tcp::Config;

fuzz_target!(|data: &[u8]| {
    let config = Config { max_syn_backlog: 2, ..Config::default() };
    let mut h = harness::Harness::new(config);
    h.listen(1);
    h.run(data);
    // Whatever happened, closing everything leaves a consistent stack.
    let now = h.now;
    for c in std::mem::take(&mut h.conns) {
        let _ = h.st.close(now, c);
    }
    if let Some(l) = h.listener {
        h.st.close(now, l).unwrap();
    }
    h.drain();
    assert_eq!(h.st.resources().listeners, 0);
});
