//! Neighbour resolution under hostile and unlucky conditions, against the
//! Linux kernel in the peer namespace: an ARP flood from made-up senders,
//! and frames parked while a next hop does not answer.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// A flood of ARP requests from made-up senders keeps the neighbour table
/// within its bound while a client's connections are served.
#[test]
fn arp_flood_is_bounded_and_traffic_is_served() {
    require_root();
    let name = unique_name("nfl");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let conf = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&conf, "[arp]\nmax_entries = 64\n").unwrap();
    let daemon = Daemon::start(
        &topo,
        &bpffs,
        &["--instance", &name, "--config", conf.to_str().unwrap(), "--echo", "7", "--poll", "adaptive"],
    );
    let stack_ip = topo.get("IP_STACK").to_owned();
    let net = stack_ip.rsplit_once('.').unwrap().0.to_owned();
    let flood = repo_root().join("control/tests/support/arp_flood.py");
    let flooder = topo
        .spawn("NS_A", &["python3", flood.to_str().unwrap(), topo.get("IF_A"), &stack_ip, &net, "30000", "20", "7"]);
    let echo = repo_root().join("control/tests/support/echo_load.py");
    let out = Command::new("timeout")
        .args(["90", "ip", "netns", "exec", topo.get("NS_A"), "python3"])
        .arg(&echo)
        .args([stack_ip.as_str(), "7", "--conns", "100", "--bytes", "2048", "--timeout", "60"])
        .output()
        .unwrap();
    let flooded = flooder.wait_with_output().unwrap();
    let ctl = Command::new(env!("CARGO_BIN_EXE_xstackctl")).args(["--instance", &name, "arp"]).output().unwrap();
    let table = stdout(&ctl);
    std::fs::remove_file(&conf).ok();
    let summary = daemon.stop();
    let report = stdout(&out);
    assert!(report.contains("verified=100 failed=0"), "{report}");
    eprintln!("{}", stdout(&flooded));
    let arp = summary.group("summary arp");
    assert!(arp["requests_received"] > 1000, "{arp:?}");
    // The client, the 240-odd made-up senders: at most 64 entries.
    let entries = table.lines().filter(|l| l.starts_with(&net)).count();
    assert!((1..=64).contains(&entries), "{entries} entries:\n{table}");
    assert!(arp["evicted"] > 0, "{arp:?}");
}

/// Frames parked while their next hop does not answer ARP leave in the
/// order they were parked once it does (as Linux's ARP queue releases
/// them): 20 echo replies to a peer that ignores our requests at first.
#[test]
fn parked_frames_leave_in_order() {
    require_root();
    let name = unique_name("npo");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name]);
    let (if_a, stack_ip) = (topo.get("IF_A"), topo.get("IP_STACK"));
    // The peer knows us without asking (so we learn nothing from it) and
    // ignores our requests until told otherwise.
    let mac = daemon.ready("mac");
    let st = topo.exec("NS_A", &["ip", "neigh", "replace", stack_ip, "lladdr", &mac, "nud", "permanent", "dev", if_a]);
    assert!(st.status.success());
    let ignore = format!("net.ipv4.conf.{if_a}.arp_ignore");
    assert!(topo.exec("NS_A", &["sysctl", "-qw", &format!("{ignore}=8")]).status.success());
    let ping = topo.spawn("NS_A", &["ping", "-n", "-c", "20", "-i", "0.01", "-W", "6", stack_ip]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(topo.exec("NS_A", &["sysctl", "-qw", &format!("{ignore}=0")]).status.success());
    let out = ping.wait_with_output().unwrap();
    let summary = daemon.stop();
    let text = stdout(&out);
    let seqs: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(seqs.len(), 20, "{text}\n{:#?}", summary.lines);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "replies left out of order: {seqs:?}");
    let w = summary.group("summary worker=0");
    assert_eq!(w["drop_neigh_unresolved"], 0, "{w:?}");
}
