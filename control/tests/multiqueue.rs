//! Two workers on a 2-queue veth. A Linux peer picks each socket's transmit
//! queue at random, so segments of one connection can arrive on either
//! worker's queue: the worker that owns the flow must get all of them
//! (handed over through the lock-free rings, never dropped), and active
//! opens must pick ports whose return traffic they own.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// 1000 concurrent connections, each echoing 64 KiB of its own random data,
/// verified byte for byte by the client.
#[test]
fn thousand_connections_echo_64k_each_over_two_workers() {
    require_root();
    let name = unique_name("mq");
    let topo = Topology::up(&name, &["--queues", "2"]);
    let bpffs = Bpffs::mount(&name);
    let daemon =
        Daemon::start(&topo, &bpffs, &["--instance", &name, "--queues", "2", "--poll", "adaptive", "--echo", "7"]);
    let script = repo_root().join("control/tests/support/echo_load.py");
    let out = Command::new("timeout")
        .args(["180", "ip", "netns", "exec", topo.get("NS_A"), "python3"])
        .arg(&script)
        .args([topo.get("IP_STACK"), "7", "--conns", "1000", "--bytes", "65536", "--timeout", "150"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let report = stdout(&out);
    eprintln!("{report}");
    let summary = daemon.stop();
    for l in &summary.lines {
        eprintln!("{l}");
    }
    assert!(out.status.success(), "{report}\n{}\n{:#?}", String::from_utf8_lossy(&out.stderr), summary.lines);
    assert!(report.contains("verified=1000 failed=0"), "{report}");

    let w: Vec<_> = (0..2).map(|q| summary.group(&format!("summary worker={q}"))).collect();
    let t: Vec<_> = (0..2).map(|q| summary.group(&format!("summary tcp worker={q}"))).collect();
    // Flows are spread over both workers, and every connection was opened
    // exactly once (a segment run on the wrong worker would have been
    // answered with a RST and failed the connection). A stray late ACK
    // for a connection already closed is answered with a RST, as Linux
    // does, so rsts_sent is not asserted.
    assert_eq!(t[0]["passive_opens"] + t[1]["passive_opens"], 1000, "{t:?}");
    assert!(t.iter().all(|t| t["passive_opens"] > 200), "both workers own flows: {t:?}");
    assert_eq!(t[0]["estab_resets"] + t[1]["estab_resets"], 0, "{t:?}");
    // The peer's queue choice ignores our ownership: segments were handed
    // over, and none was lost on the way.
    let out_total = w[0]["handoff_out"] + w[1]["handoff_out"];
    assert!(out_total > 0, "{w:?}");
    assert_eq!(out_total, w[0]["handoff_in"] + w[1]["handoff_in"], "{w:?}");
    assert_eq!(w[0]["drop_handoff_full"] + w[1]["drop_handoff_full"], 0, "{w:?}");
    for q in 0..2 {
        assert!(summary.text(&format!("summary frames worker={q}")).contains("balanced=yes"), "{:?}", summary.lines);
    }
}

/// Client mode with two workers: the connection is opened by worker 0 from
/// a port whose return traffic worker 0 owns, whichever queue the kernel
/// answers on.
#[test]
fn active_opens_pick_ports_owned_by_the_opening_worker() {
    require_root();
    let name = unique_name("mqc");
    let topo = Topology::up(&name, &["--queues", "2"]);
    let bpffs = Bpffs::mount(&name);
    let peer = topo.get("IP_A").to_owned();
    let rounds = 6;
    let server = topo.spawn(
        "NS_A",
        &["python3", "-c", &format!(
            "import socket\ns=socket.create_server(('{peer}',7002));s.settimeout(30)\nfor _ in range({rounds}):\n  c,_=s.accept();c.settimeout(20);d=b''\n  while True:\n    x=c.recv(65536)\n    if not x: break\n    d+=x\n  c.sendall(b'ok:'+d);c.close()\nprint('served')"
        )],
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
    for i in 0..rounds {
        let payload = format!("round {i}");
        let out = Command::new("timeout")
            .args(["40", "ip", "netns", "exec", topo.get("NS_B"), env!("CARGO_BIN_EXE_xstackd")])
            .args(["-i", topo.get("IF_B"), "-a", &addr, "--instance", &name, "--queues", "2", "--bpffs"])
            .arg(&bpffs.path)
            .args(["--connect", &format!("{peer}:7002"), "--payload", &payload])
            .output()
            .unwrap();
        let text = stdout(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}\n{err}");
        assert!(
            text.contains(&format!("sent {} bytes, received {} bytes", payload.len(), payload.len() + 3)),
            "{text}"
        );
        // All of the connection's segments ran on worker 0, none was reset.
        let summary = Summary { lines: err.lines().map(str::to_owned).collect() };
        let (tcp0, tcp1) = (summary.group("summary tcp worker=0"), summary.group("summary tcp worker=1"));
        assert_eq!((tcp0["active_opens"], tcp1["active_opens"]), (1, 0), "{err}");
        assert_eq!(tcp0["rsts_sent"] + tcp1["rsts_sent"] + tcp1["drop_no_socket"], 0, "{err}");
    }
    let served = server.wait_with_output().unwrap();
    assert_eq!(stdout(&served).trim(), "served");
}

/// The default on a multi-queue NIC: one worker per receive queue, so
/// every connection is served whichever queue RSS (on veth: the peer's
/// transmit queue) puts it on. With one worker for four queues, 0 of 100
/// connections succeeded and every frame, ARP included, was passed as
/// `pass_no_socket`.
#[test]
fn default_configuration_serves_every_queue() {
    require_root();
    let name = unique_name("mqd");
    let topo = Topology::up(&name, &["--queues", "4"]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--poll", "adaptive", "--echo", "7"]);
    assert!(daemon.ready_line.contains(" queues=4 "), "{}", daemon.ready_line);
    let script = repo_root().join("control/tests/support/echo_load.py");
    let out = Command::new("timeout")
        .args(["90", "ip", "netns", "exec", topo.get("NS_A"), "python3"])
        .arg(&script)
        .args([topo.get("IP_STACK"), "7", "--conns", "100", "--bytes", "4096", "--timeout", "60"])
        .output()
        .unwrap();
    let report = stdout(&out);
    let summary = daemon.stop();
    assert!(report.contains("verified=100 failed=0"), "{report}\n{:#?}", summary.lines);
    let xdp = summary.group("summary xdp");
    assert_eq!((xdp["pass_no_socket"], xdp["tx_rst"]), (0, 0), "{xdp:?}");
    let opens: Vec<u64> = (0..4).map(|q| summary.group(&format!("summary tcp worker={q}"))["passive_opens"]).collect();
    assert_eq!(opens.iter().sum::<u64>(), 100, "{opens:?}");
}

/// Fewer workers than queues where RSS cannot be confined to them (veth
/// has no indirection table): a clear refusal before anything is
/// attached, not a daemon that refuses most of its connections.
#[test]
fn fewer_workers_than_queues_without_rss_control_is_refused() {
    require_root();
    let name = unique_name("mqr");
    let topo = Topology::up(&name, &["--queues", "4"]);
    let bpffs = Bpffs::mount(&name);
    let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
    let out = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", topo.get("NS_B"), env!("CARGO_BIN_EXE_xstackd")])
        .args(["-i", topo.get("IF_B"), "-a", &addr, "--instance", &name, "--queues", "2", "--echo", "7", "--bpffs"])
        .arg(&bpffs.path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has 4 receive queues and 2 worker(s) were configured"), "{err}");
    assert!(err.contains("RSS cannot be confined to queues 0..2"), "{err}");
    assert!(err.contains("--queues 4"), "{err}");
    assert!(!stdout(&out).contains("xstackd ready"));
    let link = stdout(&topo.exec("NS_B", &["ip", "link", "show", "dev", topo.get("IF_B")]));
    assert!(!link.contains("xdp"), "nothing attached: {link}");
}

/// A worker killed on a 2-queue veth: every new connection is served by
/// the live worker or refused at once (RST from the dead queue), never
/// left to time out. Before, flows whose hash named the dead worker but
/// that arrived on the live worker's queue were handed to rings nobody
/// read, and their SYNs went unanswered until the client gave up.
#[test]
fn a_dead_workers_share_is_served_or_refused_never_left_hanging() {
    require_root();
    let name = unique_name("mqk");
    let topo = Topology::up(&name, &["--queues", "2"]);
    let bpffs = Bpffs::mount(&name);
    // Generic XDP: veth drops the program's XDP_TX frames (the dead
    // queue's RST) in native mode unless the peer runs XDP too.
    let daemon = Daemon::start(
        &topo,
        &bpffs,
        &["--instance", &name, "--echo", "7", "--fault-injection", "--xdp-mode", "generic", "--poll", "adaptive"],
    );
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xstackctl")).args(["--instance", &name]).args(args).output().unwrap()
    };
    assert!(ctl(&["fault", "--worker", "1"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stdout(&ctl(&["stats"])).contains("worker 1 DIED") {
        assert!(std::time::Instant::now() < deadline, "worker 1's death not noticed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let script = repo_root().join("control/tests/support/echo_load.py");
    let out = Command::new("timeout")
        .args(["90", "ip", "netns", "exec", topo.get("NS_A"), "python3"])
        .arg(&script)
        .args([topo.get("IP_STACK"), "7", "--conns", "100", "--bytes", "2048", "--timeout", "40"])
        .output()
        .unwrap();
    let report = stdout(&out);
    let summary = daemon.stop();
    eprintln!("{report}");
    assert!(!report.contains("timeout"), "connections left hanging: {report}\n{:#?}", summary.lines);
    let field = |k: &str| -> u64 {
        report.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))?.parse().ok()).unwrap_or(0)
    };
    assert!(field("verified") > 0, "the live worker serves its share and the dead one's: {report}");
    let refused: u64 = report
        .split("errors=")
        .nth(1)
        .map(|e| {
            e.split_whitespace().next().unwrap_or("").split(',').filter_map(|kv| kv.split_once(':')).fold(
                0,
                |n, (k, v)| {
                    assert!(matches!(k, "ECONNREFUSED" | "ECONNRESET"), "unexpected error {k}: {report}");
                    n + v.parse::<u64>().unwrap_or(0)
                },
            )
        })
        .unwrap_or(0);
    assert_eq!(field("verified") + refused, 100, "{report}");
    let w0 = summary.group("summary worker=0");
    assert_eq!(w0["drop_handoff_full"], 0, "nothing piled up for the dead worker: {w0:?}");
}
