//! Buffer memory limits (tcp_mem, `tcp::memory`): what a connection does
//! when the stack's pool is under pressure or at its hard limit.

use super::*;
use crate::tcp::memory::{MemLimits, CHUNK};

fn limited(pressure: usize, high: usize) -> Config {
    Config { mem: MemLimits { low: 0, pressure: pressure * CHUNK, high: high * CHUNK }, ..plain() }
}

fn data(seq: u32, ack: u32, len: usize) -> Seg {
    let mut d = seg(seq, ack, Flags::ACK);
    d.data = vec![7; len];
    d
}

/// At tcp_mem[2] an out-of-order segment is dropped and the connection's
/// out-of-order data pruned from the top until the pool is below the
/// limit (Linux tcp_try_rmem_schedule -> tcp_prune_ofo_queue), while
/// in-sequence data is still taken: a hole can always be filled.
#[test]
fn out_of_order_data_gives_way_at_the_limit_and_in_order_data_does_not() {
    let mut t = T::new(limited(1, 2));
    let (_, c, iss) = t.established();
    let base = PEER_ISN + 1;
    // Stream offsets 5000 and 9000 fall in chunks 1 and 2: the pool is
    // at its limit of two.
    t.send(&data(base + 5000, iss + 1, 1000)).unwrap();
    t.send(&data(base + 9000, iss + 1, 1000)).unwrap();
    t.recv();
    assert_eq!(t.st.resources().buffer_chunks, 2);
    // A third island needs a chunk the pool refuses.
    t.send(&data(base + 13000, iss + 1, 1000)).unwrap();
    let ack = t.recv().pop().expect("the drop is acknowledged");
    assert_eq!(ack.ack, base, "nothing in order yet");
    assert_eq!(t.st.stats().ofo_dropped_memory, 1);
    assert_eq!(t.st.resources().buffer_chunks, 1, "the highest island (9000) went; 5000 stays");
    assert!(t.st.memory().refused >= 1);
    // In-sequence data is granted at the limit.
    t.send(&data(base + 4000, iss + 1, 1000)).unwrap();
    t.send(&data(base, iss + 1, 4000)).unwrap();
    let ack = t.recv().pop().expect("ACK");
    assert_eq!(ack.ack, base + 6000, "the hole up to the kept island filled");
    let mut buf = vec![0u8; 10_000];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(6000));
    assert_eq!(t.st.resources().buffer_chunks, 0, "read data gives its chunks back");
    assert_eq!(t.st.buffer_memory_walk(), 0);
}

/// Under memory pressure the window stops growing with full-sized
/// segments (tcp_grow_window is skipped, Linux tcp_under_memory_pressure):
/// the same exchange as `the_receive_window_grows_with_full_segments`
/// ends at the first window instead of the whole buffer.
#[test]
fn the_receive_window_does_not_grow_under_memory_pressure() {
    let window_after_full_segments = |config: Config| {
        let mut t = T::new(Config { window_scaling: true, ..config });
        let l = t.listener(8);
        let mut s = syn();
        s.options.window_scale = Some(7);
        t.send(&s).unwrap();
        let sa = t.recv_one();
        t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
        let c = t.st.accept(l).unwrap();
        let mut seq = PEER_ISN + 1;
        let mut last = 0;
        for _ in 0..40 {
            t.send(&data(seq, sa.seq + 1, 1460)).unwrap();
            seq += 1460;
            t.st.read(t.now, c, &mut [0u8; 4096]).unwrap();
            t.advance(Duration::from_millis(300));
            if let Some(a) = t.recv().pop() {
                last = a.window;
            }
        }
        (last, t.st.memory().pressure_entered)
    };
    assert_eq!(window_after_full_segments(plain()), (1024, 0), "131072 >> 7 without pressure");
    // Pressure from the first chunk on (tcp_mem[1] = 0): the window
    // stays at the first one: 44 segments, 64240 bytes, rounded up to
    // the scale unit, >> 7.
    let (w, entered) = window_after_full_segments(limited(0, 1 << 20));
    assert_eq!(w, 502);
    assert!(entered >= 1);
}
