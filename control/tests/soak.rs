//! A soak: request/response, a connection per request and bulk streams in
//! both directions at once, all through a router that loses, duplicates,
//! delays and reorders packets, for a bounded time; then every byte is
//! checked, the frames are all accounted for, and the stack holds no
//! connection, timer or buffer chunk any more.
//!
//! 60 seconds in the test command; longer with `XS_SOAK_SECS` (the
//! 30-minute soak of docs/benchmarks.md:
//! `XS_SOAK_SECS=1800 cargo test --release -p xstack-control --test soak -- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn mixed_traffic_through_a_lossy_router_leaves_nothing_behind() {
    require_root();
    let secs = env_number("XS_SOAK_SECS", 60);
    let name = unique_name("sk");
    let topo = Topology::up(&name, &["--router", "--netem", "loss 1% duplicate 1% delay 1ms reorder 25%"]);
    // A connection per request for minutes: the client's TIME_WAIT ports
    // are reused (timestamps make that safe), as a load generator's are.
    assert!(topo.exec("NS_A", &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]).status.success());
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--source", "19:200000"]);
    let ip = topo.get("IP_STACK").to_owned();
    let script = repo_root().join("control/tests/support/soak.py");
    let started = Instant::now();
    let out = topo.exec(
        "NS_A",
        &[
            "timeout",
            &(secs + 120).to_string(),
            "python3",
            script.to_str().unwrap(),
            &ip,
            "--seconds",
            &secs.to_string(),
            "--source",
            "19:200000",
        ],
    );
    let text = stdout(&out);
    eprintln!("soak of {secs} s took {:?}: {text}", started.elapsed());
    assert!(
        out.status.success(),
        "the soak client failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(text.trim()).expect("soak.py prints JSON");
    for kind in ["rr", "crr", "duplex", "down"] {
        let ops = report["kinds"][kind]["ops"].as_u64().unwrap_or(0);
        assert!(ops > 0, "no {kind} operation completed: {report}");
    }

    // The peers have closed; the stack's side finishes its closes (a LAST_ACK
    // whose FIN was lost waits for its retransmission) and then holds
    // nothing but listeners and TIME_WAIT records (the source service closes
    // first).
    let st = stats_until(&name, Duration::from_secs(30), |st| {
        let held = |k| figure(st, "resources", k);
        held("connections") == held("time_waits")
            && held("timers") == 0
            && held("buffer_chunks") == 0
            && held("sockets") == 2
            && held("requests") == 0
    });
    let resources = &st["workers"][0]["resources"];
    eprintln!("held after the soak: {resources}");
    let held = |k| figure(&st, "resources", k);
    assert_eq!(held("connections"), held("time_waits"), "connections left: {resources}");
    assert_eq!(held("sockets"), 2, "only the two listeners may be left: {resources}");
    assert_eq!(held("timers"), 0, "timers left: {resources}");
    assert_eq!(held("buffer_chunks"), 0, "buffer memory left: {resources}");
    assert!(held("buffer_chunks_peak") > 0, "the buffers were never used: {resources}");
    let tcp = |k| figure(&st, "tcp", k);
    assert!(tcp("retransmits") > 0, "a lossy path must cause retransmissions");
    assert_eq!(tcp("drop_checksum") + tcp("drop_malformed"), 0);

    let summary = daemon.stop();
    let frames = summary.text("summary frames worker=0");
    assert!(frames.contains("balanced=yes"), "{frames}");
}
