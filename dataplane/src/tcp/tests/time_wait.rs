//! TIME_WAIT as a record (`tcp/time_wait.rs`, carried out by
//! `stack/demux.rs`): what the peer sees from it, segment by segment, as
//! Linux tcp_timewait_state_process answers.

use super::*;

/// An orphan in TIME_WAIT: the application closed first, the peer ACKed
/// our FIN and sent its own, which we ACKed. Returns the listener and our
/// ISS; the peer's next sequence number is PEER_ISN + 2.
fn orphan_in_time_wait(t: &mut T) -> (SocketId, u32) {
    let (l, c, iss) = t.established();
    t.st.close(t.now, c).unwrap();
    assert_eq!(t.recv_one().flags, Flags::FIN | Flags::ACK);
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.seq, ack.ack), (Flags::ACK, iss + 2, PEER_ISN + 2));
    assert_eq!(t.st.count_by_state()[State::TimeWait.index()], 1);
    (l, iss)
}

fn time_wait_count(t: &T) -> usize {
    t.st.count_by_state()[State::TimeWait.index()]
}

#[test]
fn an_orphan_becomes_a_record_that_acks_a_retransmitted_fin() {
    let mut t = T::new(plain());
    let (_, iss) = orphan_in_time_wait(&mut t);
    let r = t.st.resources();
    assert_eq!((r.connections, r.buffer_chunks, r.sockets), (1, 0, 1), "the record; the listener the one socket");
    t.advance(Duration::from_secs(20));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.seq, ack.ack), (Flags::ACK, iss + 2, PEER_ISN + 2));
    // The FIN restarted 2 MSL.
    t.advance(Duration::from_secs(59));
    assert_eq!(time_wait_count(&t), 1);
    t.advance(Duration::from_secs(1));
    assert_eq!(time_wait_count(&t), 0);
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn an_exact_reset_ends_the_record_silently_and_others_are_ignored() {
    let mut t = T::new(plain());
    let (_, iss) = orphan_in_time_wait(&mut t);
    // Not at RCV.NXT: no challenge ACK from TIME_WAIT, nothing changes.
    t.send(&seg(PEER_ISN + 100, 0, Flags::RST)).unwrap();
    assert!(t.recv().is_empty());
    assert_eq!(time_wait_count(&t), 1);
    // At RCV.NXT: the record goes (RFC 1337's assassination, allowed by
    // Linux's default), nothing sent; the 4-tuple is free again.
    t.send(&seg(PEER_ISN + 2, iss + 2, Flags::RST | Flags::ACK)).unwrap();
    assert!(t.recv().is_empty());
    assert_eq!(time_wait_count(&t), 0);
    assert_eq!(t.st.resources().connections, 0);
    // A segment for it now meets the listener, which resets it.
    let _ = t.send(&seg(PEER_ISN + 2, iss + 2, Flags::ACK));
    assert_eq!(t.recv_one().flags, Flags::RST);
}

#[test]
fn data_and_old_segments_get_the_records_ack() {
    let mut t = T::new(plain());
    let (_, iss) = orphan_in_time_wait(&mut t);
    let mut d = seg(PEER_ISN + 2, iss + 2, Flags::ACK | Flags::PSH);
    d.data = b"late".to_vec();
    t.send(&d).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.seq, ack.ack), (Flags::ACK, iss + 2, PEER_ISN + 2));
    // Data is never rate-limited.
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 2);
    // A bare ACK in the window: taken silently.
    t.send(&seg(PEER_ISN + 2, iss + 2, Flags::ACK)).unwrap();
    assert!(t.recv().is_empty());
    // An old SYN (below RCV.NXT, no newer timestamp): our ACK.
    let mut old = syn();
    old.seq = PEER_ISN;
    t.send(&old).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.ack), (Flags::ACK, PEER_ISN + 2));
    assert_eq!(time_wait_count(&t), 1);
}

#[test]
fn a_newer_syn_reopens_the_tuple_through_the_listener() {
    let mut t = T::new(plain());
    let (l, iss) = orphan_in_time_wait(&mut t);
    let mut again = syn();
    again.seq = PEER_ISN + 1000;
    t.send(&again).unwrap();
    let sa = t.recv_one();
    assert_eq!((sa.flags, sa.ack), (Flags::SYN | Flags::ACK, PEER_ISN + 1001));
    // RFC 1122 section 4.2.2.13: the new ISN lies above the old sequence
    // space (Linux: tw_snd_nxt + 65535 + 2).
    assert_eq!(sa.seq, iss.wrapping_add(2).wrapping_add(65537));
    assert_eq!(time_wait_count(&t), 0);
    t.send(&seg(PEER_ISN + 1001, sa.seq.wrapping_add(1), Flags::ACK)).unwrap();
    assert!(t.st.accept(l).is_ok());
}

/// "TW buckets are converted to open requests without limitations, they
/// conserve resources and peer is evidently real one" (Linux
/// tcp_conn_request): a SYN that reopens a TIME_WAIT 4-tuple is queued
/// with its ISN even when the SYN queue is full, never dropped nor
/// answered with a cookie. Under a SYN flood a client that reuses its
/// ports (a load generator against a server that closes first) would
/// otherwise never get in again.
#[test]
fn a_reopening_syn_gets_in_with_the_syn_queue_full() {
    let mut t = T::new(Config { max_syn_backlog: 4, syncookies: 1, ..plain() });
    let (l, iss) = orphan_in_time_wait(&mut t);
    // Four half-open requests from other ports fill the queue.
    for k in 0..4u16 {
        let mut s = syn();
        s.src_port = RPORT + 1 + k;
        t.send(&s).unwrap();
        let sa = t.recv_one();
        assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
    }
    let cookies = t.st.stats().syncookies_sent;
    let mut again = syn();
    again.seq = PEER_ISN + 1000;
    t.send(&again).unwrap();
    let sa = t.recv_one();
    assert_eq!((sa.flags, sa.ack), (Flags::SYN | Flags::ACK, PEER_ISN + 1001));
    assert_eq!(sa.seq, iss.wrapping_add(2).wrapping_add(65537), "the record's ISN, not a cookie");
    assert_eq!(t.st.stats().syncookies_sent, cookies);
    assert_eq!(t.st.stats().syn_queue_drops, 0);
    t.send(&seg(PEER_ISN + 1001, sa.seq.wrapping_add(1), Flags::ACK)).unwrap();
    assert!(t.st.accept(l).is_ok());
}

#[test]
fn a_newer_syn_without_a_listener_gets_the_records_ack() {
    let mut t = T::new(plain());
    let (l, iss) = orphan_in_time_wait(&mut t);
    t.st.close(t.now, l).unwrap();
    let mut again = syn();
    again.seq = PEER_ISN + 1000;
    t.send(&again).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.seq, ack.ack), (Flags::ACK, iss + 2, PEER_ISN + 2));
    assert_eq!(time_wait_count(&t), 1);
}

#[test]
fn paws_rejects_an_old_timestamp_and_the_ack_echoes_ts_recent() {
    let mut t = T::new(Config { timestamps: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.timestamp = Some((5000, 0));
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let iss = sa.seq;
    let mut a = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    a.options.timestamp = Some((5001, 0));
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.close(t.now, c).unwrap();
    t.recv_one();
    let mut fin = seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK);
    fin.options.timestamp = Some((5002, 0));
    t.send(&fin).unwrap();
    t.recv_one();
    assert_eq!(time_wait_count(&t), 1);
    let paws_before = t.st.stats().paws_drops;
    let mut old = seg(PEER_ISN + 2, iss + 2, Flags::ACK);
    old.options.timestamp = Some((4000, 0));
    t.send(&old).unwrap();
    let ack = t.recv_one();
    assert_eq!(ack.options.timestamp.map(|(_, ecr)| ecr), Some(5002), "TS.Recent echoed");
    assert_eq!(t.st.stats().paws_drops, paws_before + 1);
}

#[test]
fn a_held_connection_is_closed_for_its_holder_and_the_record_outlives_it() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"unread".to_vec();
    t.send(&d).unwrap();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    t.recv();
    t.send(&seg(PEER_ISN + 7, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 8);
    while t.st.poll_event().is_some() {}
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(time_wait_count(&t), 1);
    // What arrived is still readable, then end of file.
    let mut buf = [0u8; 16];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(6));
    assert_eq!(&buf[..6], b"unread");
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(0));
    // The record answers for the 4-tuple, not the handle.
    t.send(&seg(PEER_ISN + 7, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 8);
    t.st.close(t.now, c).unwrap();
    assert_eq!(time_wait_count(&t), 1);
    t.advance(Duration::from_secs(60));
    assert_eq!(t.st.resources().connections, 0);
    assert_eq!(t.st.resources().sockets, 1, "the listener only");
}

/// An orphan whose FIN the peer acknowledged without closing its side:
/// FIN_WAIT_2, kept as a record. Returns our ISS.
fn orphan_in_fin_wait_2(t: &mut T) -> u32 {
    let (_, c, iss) = t.established();
    t.st.close(t.now, c).unwrap();
    assert_eq!(t.recv_one().flags, Flags::FIN | Flags::ACK);
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert!(t.recv().is_empty());
    let n = t.st.count_by_state();
    assert_eq!((n[State::FinWait2.index()], n[State::TimeWait.index()]), (1, 0));
    iss
}

#[test]
fn an_orphan_in_fin_wait_2_is_a_record_until_fin_timeout() {
    let mut t = T::new(plain());
    orphan_in_fin_wait_2(&mut t);
    let r = t.st.resources();
    assert_eq!((r.connections, r.sockets, r.buffer_chunks), (1, 1, 0), "a record, the listener the one socket");
    let rows = t.st.sockets();
    assert!(rows.iter().any(|r| r.state == State::FinWait2 && r.socket.is_none()), "{rows:?}");
    // tcp_fin_timeout (60 s): gone, nothing sent.
    t.advance(Duration::from_secs(59));
    assert_eq!(t.st.count_by_state()[State::FinWait2.index()], 1);
    t.advance(Duration::from_secs(1));
    assert_eq!(t.st.resources().connections, 0);
    assert!(t.recv().is_empty());
}

#[test]
fn the_peers_fin_moves_a_fin_wait_2_record_to_time_wait() {
    let mut t = T::new(plain());
    let iss = orphan_in_fin_wait_2(&mut t);
    t.advance(Duration::from_secs(30));
    // A duplicate ACK: nothing.
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert!(t.recv().is_empty());
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    let ack = t.recv_one();
    assert_eq!((ack.flags, ack.seq, ack.ack), (Flags::ACK, iss + 2, PEER_ISN + 2));
    let n = t.st.count_by_state();
    assert_eq!((n[State::FinWait2.index()], n[State::TimeWait.index()]), (0, 1));
    // 2 MSL from the FIN, not from FIN_WAIT_2's start.
    t.advance(Duration::from_secs(59));
    assert_eq!(t.st.count_by_state()[State::TimeWait.index()], 1);
    t.advance(Duration::from_secs(1));
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn a_fin_wait_2_record_resets_a_syn_and_dies_of_a_reset() {
    let mut t = T::new(plain());
    let iss = orphan_in_fin_wait_2(&mut t);
    // Out of the window: ACKed.
    let mut far = seg(PEER_ISN + 1_000_000, iss + 2, Flags::ACK | Flags::PSH);
    far.data = b"far".to_vec();
    t.send(&far).unwrap();
    assert_eq!(t.recv_one().flags, Flags::ACK);
    // A SYN at RCV.NXT: reset (Linux TCP_TW_RST), and the record goes.
    let mut s = syn();
    s.seq = PEER_ISN + 1;
    t.send(&s).unwrap();
    let rst = t.recv_one();
    assert_eq!((rst.flags, rst.ack), (Flags::RST | Flags::ACK, PEER_ISN + 2));
    assert_eq!(t.st.resources().connections, 0);
    // Another orphan: an exact reset ends it silently.
    let mut t = T::new(plain());
    let iss = orphan_in_fin_wait_2(&mut t);
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::RST)).unwrap();
    assert!(t.recv().is_empty());
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn a_held_connection_in_fin_wait_2_stays_a_connection() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::FinWait2));
    // Data still reaches the application (half-close).
    let mut d = seg(PEER_ISN + 1, iss + 2, Flags::ACK | Flags::PSH);
    d.data = b"more".to_vec();
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut [0; 8]), Ok(4));
    // Closed now, with nothing unread: an orphan, so a record.
    t.st.close(t.now, c).unwrap();
    let n = t.st.count_by_state();
    assert_eq!(n[State::FinWait2.index()], 1);
    assert_eq!(t.st.resources().sockets, 1, "the listener only");
}
