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

/// At tcp_mem[2] (Linux tcp_try_rmem_schedule -> tcp_prune_ofo_queue):
/// an out-of-order segment that would land above every range is dropped
/// and prunes nothing; one below the highest range makes room by dropping
/// ranges above it, highest first, and is kept; in-sequence data is
/// charged at the limit too (a hole can always be filled from its start).
#[test]
fn out_of_order_data_gives_way_at_the_limit_and_in_order_data_does_not() {
    let mut t = T::new(limited(1, 2));
    let (_, c, iss) = t.established();
    let base = PEER_ISN + 1;
    // Stream offsets 5000 and 13000 fall in chunks 1 and 3: the pool is
    // at its limit of two.
    t.send(&data(base + 5000, iss + 1, 1000)).unwrap();
    t.send(&data(base + 13000, iss + 1, 1000)).unwrap();
    t.recv();
    assert_eq!(t.st.resources().buffer_chunks, 2);
    // Above every range (chunk 4): dropped, nothing pruned.
    t.send(&data(base + 17000, iss + 1, 1000)).unwrap();
    assert_eq!(t.recv().pop().map(|a| a.ack), Some(base), "the drop is acknowledged; nothing in order yet");
    let s = t.st.stats();
    assert_eq!((s.ofo_dropped_memory, s.ofo_pruned), (1, 0));
    assert_eq!(t.st.resources().buffer_chunks, 2);
    assert!(t.st.memory().refused >= 1);
    // Below the highest range (chunk 2): 13000 goes, 9000 is kept.
    t.send(&data(base + 9000, iss + 1, 1000)).unwrap();
    t.recv();
    let s = t.st.stats();
    assert_eq!((s.ofo_dropped_memory, s.ofo_pruned), (1, 1));
    assert_eq!(t.st.resources().buffer_chunks, 2, "chunks 1 and 2");
    // In sequence (chunk 0) at the limit: granted, counted over it.
    let over = t.st.memory().over_limit;
    t.send(&data(base, iss + 1, 1000)).unwrap();
    assert_eq!(t.recv().pop().map(|a| a.ack), Some(base + 1000));
    assert_eq!(t.st.memory().over_limit, over + 1);
    // The holes fill up to the kept ranges.
    t.send(&data(base + 1000, iss + 1, 4000)).unwrap();
    t.send(&data(base + 6000, iss + 1, 3000)).unwrap();
    assert_eq!(t.recv().pop().map(|a| a.ack), Some(base + 10000));
    let mut buf = vec![0u8; 20_000];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(10000));
    assert_eq!(t.st.resources().buffer_chunks, 0, "read data gives its chunks back");
    assert_eq!(t.st.buffer_memory_walk(), 0);
}

/// A connection reset while the application still holds it keeps its
/// unread in-order data (readable, then the error) but gives back the
/// chunks of out-of-order data that can never be read.
#[test]
fn a_reset_gives_back_out_of_order_data_and_keeps_what_is_readable() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let base = PEER_ISN + 1;
    t.send(&data(base, iss + 1, 100)).unwrap();
    t.send(&data(base + 9000, iss + 1, 100)).unwrap();
    assert_eq!(t.st.resources().buffer_chunks, 2);
    t.send(&seg(base + 100, iss + 1, Flags::RST)).unwrap();
    assert_eq!(t.st.resources().buffer_chunks, 1, "only the readable bytes' chunk");
    let mut buf = [0u8; 200];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(100));
    assert_eq!(t.st.resources().buffer_chunks, 0);
}

/// Under memory pressure the window stops growing with full-sized
/// segments (tcp_grow_window is skipped, Linux tcp_under_memory_pressure):
/// the same exchange as `the_receive_window_grows_with_full_segments`
/// ends at the first window instead of the whole buffer.
#[test]
fn the_receive_window_does_not_grow_under_memory_pressure() {
    let window_after_full_segments = |config: Config| {
        let mut t = T::new(Config { window_scaling: true, ..config });
        let (c, iss) = established_with_wscale(&mut t);
        let mut seq = PEER_ISN + 1;
        let mut last = 0;
        for _ in 0..40 {
            t.send(&data(seq, iss + 1, 1460)).unwrap();
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

/// Opens a passive connection from the peer's port `rport` on the
/// listener `l`; returns it and our ISS.
fn accept_from(t: &mut T, l: SocketId, rport: u16) -> (SocketId, u32) {
    let mut s = syn();
    s.src_port = rport;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.src_port = rport;
    t.send(&a).unwrap();
    (t.st.accept(l).unwrap(), sa.seq)
}

/// We close, the peer acknowledges our FIN and sends its own: TIME_WAIT,
/// or, with tcp_max_tw_buckets reached, CLOSED at once. Returns what we
/// sent in answer to the peer's FIN.
fn active_close(t: &mut T, c: SocketId, iss: u32, rport: u16) -> Vec<Seg> {
    t.st.close(t.now, c).unwrap();
    let fin = t.recv_one();
    assert!(fin.flags.fin());
    let mut a = seg(PEER_ISN + 1, iss + 2, Flags::ACK | Flags::FIN);
    a.src_port = rport;
    t.send(&a).unwrap();
    t.recv()
}

/// Linux tcp_time_wait: past tcp_max_tw_buckets a closing connection goes
/// straight to CLOSED ("time wait bucket table overflow",
/// TCPTimeWaitOverflow), but the peer's FIN is still acknowledged.
#[test]
fn time_wait_overflow_closes_at_once_and_still_acknowledges_the_fin() {
    let mut t = T::new(Config { max_tw_buckets: 1, ..plain() });
    let l = t.listener(8);
    let (a, iss_a) = accept_from(&mut t, l, RPORT);
    let (b, iss_b) = accept_from(&mut t, l, RPORT + 1);
    let acks = active_close(&mut t, a, iss_a, RPORT);
    assert_eq!(acks.last().map(|s| (s.flags, s.ack)), Some((Flags::ACK, PEER_ISN + 2)));
    assert_eq!(t.st.count_by_state()[State::TimeWait.index()], 1);
    let acks = active_close(&mut t, b, iss_b, RPORT + 1);
    assert_eq!(acks.last().map(|s| (s.flags, s.ack)), Some((Flags::ACK, PEER_ISN + 2)), "the FIN is acknowledged");
    assert_eq!(t.st.stats().tw_overflows, 1);
    assert_eq!(t.st.count_by_state()[State::TimeWait.index()], 1, "the second one did not stay");
    assert_eq!(t.st.resources().connections, 1);
}

/// Linux tcp_close -> tcp_check_oom: with tcp_max_orphans connections
/// already closed by the application and still finishing, one more
/// close() resets the connection instead of sending FIN
/// (TCPAbortOnMemory).
#[test]
fn one_orphan_too_many_is_reset() {
    let mut t = T::new(Config { max_orphans: 1, ..plain() });
    let l = t.listener(8);
    let (a, _) = accept_from(&mut t, l, RPORT);
    let (b, _) = accept_from(&mut t, l, RPORT + 1);
    t.st.close(t.now, a).unwrap();
    assert!(t.recv_one().flags.fin(), "the first orphan finishes normally");
    t.st.close(t.now, b).unwrap();
    let rst = t.recv_one();
    assert_eq!(rst.flags, Flags::RST | Flags::ACK);
    assert_eq!(t.st.stats().aborts_on_memory, 1);
    assert_eq!(t.st.resources().connections, 1, "only the first orphan is left");
}

/// A write into a full send buffer takes no chunk (one taken there would
/// lie past the data and never be given back), and acknowledged data
/// gives every chunk back.
#[test]
fn writes_into_a_full_send_buffer_take_nothing() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    // tcp_wmem[1], grown at establishment for twice the initial window
    // (Linux tcp_init_buffer_space: 2 x 10 segments x 4352 bytes).
    let sndbuf = t.st.connection_info(c).unwrap().send_buffer;
    assert_eq!(sndbuf, 87040);
    assert_eq!(t.st.write(t.now, c, &vec![1u8; sndbuf]), Ok(sndbuf));
    for _ in 0..3 {
        assert_eq!(t.st.write(t.now, c, &[2u8; 100]), Err(Error::WouldBlock));
    }
    let chunks = t.st.resources().buffer_chunks;
    // The data's chunks and one table of their ids (the ring spans more
    // than its eight inline ids).
    assert_eq!(chunks, sndbuf.div_ceil(CHUNK) + 1);
    assert_eq!(t.st.buffer_memory_walk(), chunks * CHUNK, "every chunk the pool lent is a connection's");
    // The initial window first, the rest once it is acknowledged.
    let mut acked = 0u32;
    while (acked as usize) < sndbuf {
        let sent: u32 = t.recv().iter().map(|s| s.data.len() as u32).sum();
        assert!(sent > 0);
        acked += sent;
        t.send(&seg(PEER_ISN + 1, iss + 1 + acked, Flags::ACK)).unwrap();
    }
    assert_eq!(t.st.resources().buffer_chunks, 0);
}

/// A runtime change of knobs (the host's whole configuration, sent to
/// every worker) leaves the worker's share of the host limits alone.
#[test]
fn a_runtime_config_change_keeps_the_workers_share_of_the_limits() {
    let host = Config { max_orphans: 1000, max_tw_buckets: 2000, ..plain() };
    let mut t = T::new(host.for_worker(4));
    t.st.set_config(Config { syn_retries: 3, ..host });
    let c = t.st.config();
    assert_eq!((c.syn_retries, c.max_orphans, c.max_tw_buckets), (3, 250, 500));
    assert_eq!(c.mem, plain().for_worker(4).mem);
}

/// Under memory pressure a receive buffer more than half full brings the
/// window down to four segments (Linux tcp_adjust_rcv_ssthresh from
/// __tcp_select_window), never moving its right edge left; without
/// pressure the window is what is free.
#[test]
fn under_pressure_a_half_full_buffer_shrinks_the_window_to_four_segments() {
    let last_window = |config: Config| {
        let mut t = T::new(Config { recv_buffer: 16384, ..config });
        let (_, _, iss) = t.established();
        for k in 0..7u32 {
            t.send(&data(PEER_ISN + 1 + 1460 * k, iss + 1, 1460)).unwrap();
        }
        // The delayed ACK for the seventh.
        t.advance(Duration::from_millis(50));
        t.recv().pop().expect("an ACK").window
    };
    // 7 segments unread: 10220 of 16384 bytes taken, 6164 free.
    assert_eq!(last_window(plain()), 6164);
    assert_eq!(last_window(limited(0, 1 << 20)), 4 * 1460);
}

/// A buffer size above what a ring holds (32 MiB) reads back as the size
/// in use, even where net.core.rmem_max/wmem_max allow more.
#[test]
fn buffer_sizes_read_back_as_the_ring_holds_them() {
    use crate::tcp::buffer::MAX_CAPACITY;
    let mut t = T::new(Config { core_rmem_max: 1 << 30, core_wmem_max: 1 << 30, ..plain() });
    let c = t.st.socket();
    t.st.set_option(t.now, c, SocketOption::RecvBuffer(1 << 30)).unwrap();
    t.st.set_option(t.now, c, SocketOption::SendBuffer(1 << 30)).unwrap();
    let o = t.st.options(c).unwrap();
    assert_eq!((o.recv_buffer, o.send_buffer), (MAX_CAPACITY, MAX_CAPACITY));
}
