//! Segment output (`connection/send.rs`): the MSS, Nagle, window
//! scaling of what we send.

use super::*;

#[test]
fn mss_is_clamped_to_the_peers_option() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let s = t.recv_one();
    let lport = s.src_port;
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.dst_port = lport;
    sa.options.mss = Some(500);
    t.send(&sa).unwrap();
    t.recv();
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, &[7u8; 1800]).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![500, 500, 500, 300]);
}

#[test]
fn established_nagle_holds_small_segments_unless_no_delay() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, b"a").unwrap();
    assert_eq!(t.recv_one().data, b"a");
    t.st.write(t.now, c, b"b").unwrap();
    t.st.write(t.now, c, b"c").unwrap();
    assert!(t.recv().is_empty(), "Nagle: unacknowledged data in flight");
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().data, b"bc", "coalesced once acknowledged");
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, b"d").unwrap();
    assert_eq!(t.recv_one().data, b"d");
}

/// Minshall's variant, as Linux: the short tail of a write follows its
/// full-size segments at once; only a second small segment waits for the
/// first to be acknowledged.
#[test]
fn established_nagle_lets_the_tail_of_a_write_go() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mss = 1460;
    t.st.write(t.now, c, &vec![7u8; mss + 100]).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![mss, 100], "tail sent at once");
    t.st.write(t.now, c, b"x").unwrap();
    assert!(t.recv().is_empty(), "a small segment is unacknowledged");
    t.send(&seg(PEER_ISN + 1, iss + 1 + mss as u32, Flags::ACK)).unwrap();
    assert!(t.recv().is_empty(), "the small one is still unacknowledged");
    t.send(&seg(PEER_ISN + 1, iss + 1 + mss as u32 + 100, Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().data, b"x");
}

#[test]
fn established_window_scale_is_applied() {
    let mut t = T::new(Config { window_scaling: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.window_scale = Some(2);
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert_eq!(sa.options.window_scale, Some(7));
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.window = 1000; // 4000 bytes
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, &[0u8; 10000]).unwrap();
    let out = t.recv();
    // 4000 bytes of window: two full segments; the 1080 left wait for a
    // full segment's worth (sender SWS avoidance, as Linux's
    // tcp_snd_wnd_test).
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![1460, 1460]);
    // Our window is scaled by 7: the first window, 64 KiB in whole
    // segments (44 * 1460 = 64240), rounded up to the scale's unit (Linux
    // tcp_select_initial_window, then ALIGN in __tcp_select_window).
    assert_eq!(out[0].window, (64256 >> 7) as u16);
}

/// The receive window starts at 64 KiB and grows with full-sized data up to
/// the buffer (Linux rcv_ssthresh and tcp_grow_window); small segments do
/// not grow it. (Found by the differential suite: the stack announced its
/// whole 128 KiB buffer at once.)
#[test]
fn the_receive_window_grows_with_full_segments() {
    let mut t = T::new(Config { window_scaling: true, ..plain() });
    let (c, iss) = established_with_wscale(&mut t);
    let mut seq = PEER_ISN + 1;
    let mut last = 0;
    // Small segments: the window stays.
    for _ in 0..10 {
        let mut d = seg(seq, iss + 1, Flags::ACK | Flags::PSH);
        d.data = vec![1; 100];
        t.send(&d).unwrap();
        seq += 100;
        t.advance(Duration::from_millis(300));
        t.st.read(t.now, c, &mut [0u8; 4096]).unwrap();
        if let Some(a) = t.recv().pop() {
            last = a.window;
        }
    }
    assert_eq!(last, 502, "64256 bytes >> 7 while only small segments came");
    // Full segments: it grows to the 128 KiB buffer.
    for _ in 0..40 {
        let mut d = seg(seq, iss + 1, Flags::ACK);
        d.data = vec![2; 1460];
        t.send(&d).unwrap();
        seq += 1460;
        t.st.read(t.now, c, &mut [0u8; 4096]).unwrap();
        t.advance(Duration::from_millis(300));
        if let Some(a) = t.recv().pop() {
            last = a.window;
        }
    }
    assert_eq!(last, 1024, "131072 bytes >> 7");
}

/// Receiver silly-window avoidance (Linux __tcp_select_window and
/// __tcp_cleanup_rbuf): with the buffer more than half full, free space
/// below one segment or below a sixteenth of the buffer (8 KiB of 128)
/// is a zero window, not a sliver the peer would fill with a small
/// segment. The peer fills every window offered until the window is
/// shut; a read of 3000 bytes then announces nothing (and a probe gets a
/// zero window); a read that frees 23000 bytes opens it.
#[test]
fn a_read_that_frees_a_sliver_announces_no_window() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut seq = PEER_ISN + 1;
    let mut edge = seq + 65535;
    for _ in 0..400 {
        if edge <= seq {
            break;
        }
        let len = (edge - seq).min(1460);
        let mut d = seg(seq, iss + 1, Flags::ACK);
        d.data = vec![3; len as usize];
        t.send(&d).unwrap();
        seq += len;
        t.advance(Duration::from_millis(50));
        if let Some(a) = t.recv().into_iter().rfind(|a| a.flags == Flags::ACK) {
            edge = a.ack + u32::from(a.window);
        }
    }
    assert_eq!(edge, seq, "the window is shut");
    let queued = t.st.recv_queue(c);
    t.st.read(t.now, c, &mut vec![0u8; 3000]).unwrap();
    t.advance(Duration::from_millis(50));
    let update = t.recv();
    assert!(update.iter().all(|a| a.window == 0), "no sliver after reading 3000 of {queued}: {update:?}");
    let _ = t.send(&seg(seq - 1, iss + 1, Flags::ACK));
    assert_eq!(t.recv_one().window, 0, "a probe learns the window is still shut");
    t.st.read(t.now, c, &mut vec![0u8; 20000]).unwrap();
    t.advance(Duration::from_millis(50));
    let open = t.recv().into_iter().map(|a| a.window).max().unwrap_or(0);
    assert!(open >= 8192, "23000 bytes free open the window: {open}");
}

/// Into a peer whose largest window is 1000 bytes, segments of 500
/// (Linux tcp_bound_to_half_wnd, seen on the wire from this machine's
/// kernel), so the window is never one segment the peer waits out.
#[test]
fn segments_are_bounded_to_half_a_small_window() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    let mut s = syn();
    s.window = 1000;
    t.send(&s).unwrap();
    let iss = t.recv_one().seq;
    let mut a = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    a.window = 1000;
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, &[1u8; 3000]).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![500, 500], "the window filled in halves");
    // A peer whose window grows past twice the MSS gets full segments.
    let mut a = seg(PEER_ISN + 1, iss + 1001, Flags::ACK);
    a.window = 65535;
    t.send(&a).unwrap();
    let out = t.recv();
    assert_eq!(out.first().map(|s| s.data.len()), Some(1460), "{out:?}");
}

/// The IPv4 identification (Linux ip_select_ident_segs): a connection
/// numbers its datagrams one apart from its own start; two connections'
/// starts differ; segments no connection sends (a listener's SYN|ACK, a
/// reset) carry 0, as Linux's control socket and ip_build_and_send_pkt
/// send them with DF.
#[test]
fn each_connection_numbers_its_datagrams_from_its_own_start() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    let mut buf = [0u8; 1600];
    let mut starts = vec![];
    for k in 0..2u16 {
        let mut s = syn();
        s.src_port = RPORT + k;
        t.send(&s).unwrap();
        let synack = t.st.poll_transmit(t.now, &mut buf).unwrap();
        assert_eq!(synack.ip_id, 0, "a listener's SYN|ACK");
        let iss = Packet::new_checked(&buf[..synack.len]).unwrap().seq_number();
        let mut a = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
        a.src_port = RPORT + k;
        t.send(&a).unwrap();
        let c = t.st.accept(l).unwrap();
        t.st.write(t.now, c, &[1u8; 3000]).unwrap();
        let ids: Vec<u16> = std::iter::from_fn(|| t.st.poll_transmit(t.now, &mut buf)).map(|x| x.ip_id).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "one apart: {ids:?}");
        starts.push(ids[0]);
    }
    assert_ne!(starts[0], starts[1], "each from its own start");
    // A segment for no connection: a reset, identification 0.
    let mut stray = seg(5, 6, Flags::ACK);
    stray.dst_port = LPORT + 1;
    let _ = t.send(&stray);
    assert_eq!(t.st.poll_transmit(t.now, &mut buf).map(|x| x.ip_id), Some(0));
}
