//! ECN (RFC 3168) as Linux with tcp_ecn=2 (accept) and 1 (ask).

use super::*;

const ECT_0: u8 = 2;
const CE: u8 = 3;

/// A passive connection whose SYN asked for ECN (ECE|CWR); returns it,
/// our ISS and the SYN|ACK.
fn ecn_established(t: &mut T) -> (SocketId, u32, Seg) {
    let l = t.listener(8);
    let mut s = syn();
    s.flags = s.flags | Flags::ECE | Flags::CWR;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    (t.st.accept(l).unwrap(), sa.seq, sa)
}

/// tcp_ecn_create_request / tcp_ecn_make_synack: a SYN with ECE and CWR
/// gets ECE in the SYN|ACK (not CWR, not ECT); with tcp_ecn=0, or a SYN
/// asking with one flag only, or a SYN itself ECT, it does not.
#[test]
fn a_syn_asking_for_ecn_gets_ece_in_the_syn_ack() {
    let mut t = T::new(plain());
    let (_, _, sa) = ecn_established(&mut t);
    assert_eq!(sa.flags, Flags::SYN | Flags::ACK | Flags::ECE);
    assert_eq!(sa.ecn, 0);
    for (flags, ecn, config_ecn) in [
        (Flags::SYN | Flags::ECE | Flags::CWR, 0, 0),
        (Flags::SYN | Flags::ECE, 0, 2),
        (Flags::SYN | Flags::ECE | Flags::CWR, ECT_0, 2),
    ] {
        let mut t = T::new(Config { ecn: config_ecn, ..plain() });
        t.listener(8);
        let mut s = syn();
        s.flags = flags;
        s.ecn = ecn;
        t.send(&s).unwrap();
        assert_eq!(t.recv_one().flags, Flags::SYN | Flags::ACK, "{flags:?} ECN {ecn} tcp_ecn {config_ecn}");
    }
}

/// On an ECN connection new data goes out ECT(0); a retransmission and
/// a pure ACK do not (tcp_ecn_send). Without ECN nothing is ECT.
#[test]
fn new_data_is_ect_and_nothing_else() {
    let mut t = T::new(plain());
    let (c, iss, _) = ecn_established(&mut t);
    t.st.write(t.now, c, &[1u8; 100]).unwrap();
    let d = t.recv_one();
    assert_eq!((d.data.len(), d.ecn), (100, ECT_0));
    t.advance(Duration::from_secs(2));
    let again = t.recv();
    assert_eq!(data_seqs(&again), vec![iss + 1]);
    assert!(again.iter().all(|s| s.ecn == 0), "a retransmission is not ECT");
    let mut p = seg(PEER_ISN + 1, iss + 101, Flags::ACK | Flags::PSH);
    p.data = vec![2; 10];
    t.send(&p).unwrap();
    t.advance(Duration::from_millis(200));
    let ack = t.recv_one();
    assert_eq!((ack.data.len(), ack.ecn), (0, 0));

    let mut t = T::new(plain());
    let (_, c, _) = t.established();
    t.st.write(t.now, c, &[1u8; 100]).unwrap();
    assert_eq!(t.recv_one().ecn, 0);
}

/// Data arriving CE: the ACK goes at once and carries ECE, and so does
/// every segment after it, until data with CWR arrives (ACKed at once
/// too); then no more ECE (__tcp_ecn_check_ce, tcp_ecn_accept_cwr).
#[test]
fn ce_marked_data_is_echoed_until_the_peer_sends_cwr() {
    let mut t = T::new(plain());
    let (c, iss, _) = ecn_established(&mut t);
    let mut seq = PEER_ISN + 1;
    let mut data = |t: &mut T, ecn: u8, flags: Flags| {
        let mut p = seg(seq, iss + 1, flags);
        p.data = vec![3; 100];
        p.ecn = ecn;
        seq += 100;
        t.send(&p).unwrap();
    };
    // (Past the quick ACKs of the connection's start.)
    for _ in 0..20 {
        data(&mut t, ECT_0, Flags::ACK);
        t.advance(Duration::from_millis(50));
        t.recv();
    }
    data(&mut t, CE, Flags::ACK);
    let ack = t.recv_one();
    assert_eq!(ack.flags, Flags::ACK | Flags::ECE, "at once, with ECE");
    t.st.write(t.now, c, &[1u8; 10]).unwrap();
    assert!(t.recv_one().flags.contains(Flags::ECE), "data carries it too");
    data(&mut t, ECT_0, Flags::ACK);
    t.advance(Duration::from_millis(50));
    assert!(t.recv_one().flags.contains(Flags::ECE), "until CWR");
    data(&mut t, ECT_0, Flags::ACK | Flags::CWR);
    let ack = t.recv_one();
    assert_eq!(ack.flags, Flags::ACK, "CWR: no more ECE, ACKed at once");
}

/// An ACK with ECE halves (CUBIC: 0.7) the window once, without any
/// retransmission, and the next new data segment carries CWR; a second
/// ECE within the same window changes nothing (tcp_enter_cwr).
#[test]
fn an_ecn_echo_reduces_the_window_once_and_cwr_tells_the_peer() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.flags = s.flags | Flags::ECE | Flags::CWR;
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    t.advance(RTT);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    let c = t.st.accept(l).unwrap();
    let at = |k: u32| sa.seq + 1 + k * 1460;
    t.st.write(t.now, c, &vec![4u8; 30 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 10);
    t.advance(RTT);
    t.send(&ack_with_sack(at(1), &[])).unwrap();
    t.recv();
    let before = t.st.connection_info(c).unwrap().cwnd;
    let mut echo = ack_with_sack(at(2), &[]);
    echo.flags = echo.flags | Flags::ECE;
    t.send(&echo).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.ssthresh, before / 10 * 7, "CUBIC's beta from the window before");
    let out = t.recv();
    assert!(out.iter().all(|s| s.seq >= at(10)), "nothing resent: {:?}", data_seqs(&out));
    let first_new = out.iter().find(|s| !s.data.is_empty());
    assert!(first_new.is_some_and(|s| s.flags.contains(Flags::CWR)), "{out:?}");
    assert_eq!(out.iter().filter(|s| s.flags.contains(Flags::CWR)).count(), 1);
    let mut echo = ack_with_sack(at(3), &[]);
    echo.flags = echo.flags | Flags::ECE;
    t.send(&echo).unwrap();
    assert_eq!(t.st.connection_info(c).unwrap().ssthresh, before / 10 * 7, "once per window");
    assert_eq!(t.st.stats().retransmits, 0);
    assert_eq!(t.st.stats().fast_retransmits, 0);
    // The reduction is no recovery: a loss probe still follows a silence
    // (Linux probes in TCP_CA_CWR).
    t.recv();
    let probes = t.st.stats().loss_probes;
    t.advance(3 * RTT);
    t.recv();
    assert_eq!(t.st.stats().loss_probes, probes + 1);
}

/// tcp_ecn=1: our SYN asks (ECE|CWR); a SYN|ACK with ECE alone agrees,
/// one without ECE (or with CWR too) does not; a retransmitted SYN no
/// longer asks (tcp_ecn_clear_syn).
#[test]
fn with_tcp_ecn_1_our_syn_asks_and_the_syn_ack_decides() {
    for (answer, agreed) in [(Flags::ECE, true), (Flags::NONE, false), (Flags::ECE | Flags::CWR, false)] {
        let mut t = T::new(Config { ecn: 1, ..plain() });
        let c = t.st.socket();
        t.st.bind(c, LOCAL, LPORT).unwrap();
        t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
        let s = t.recv_one();
        assert_eq!(s.flags, Flags::SYN | Flags::ECE | Flags::CWR);
        let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK | answer);
        sa.options.mss = Some(1460);
        t.send(&sa).unwrap();
        t.recv();
        t.st.write(t.now, c, &[1u8; 10]).unwrap();
        assert_eq!(t.recv_one().ecn == ECT_0, agreed, "{answer:?}");
    }
    let mut t = T::new(Config { ecn: 1, ..plain() });
    let c = t.st.socket();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    t.recv_one();
    t.advance(Duration::from_millis(1100));
    assert_eq!(t.recv_one().flags, Flags::SYN, "the retransmitted SYN");
}
