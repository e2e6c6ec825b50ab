//! The XDP program alone, with no worker behind it: a dedicated address on
//! a queue whose socket is gone (as after its worker died and the control
//! plane unregistered it). The kernel does not have the address, so the
//! program answers TCP with resets itself; everything else still goes to the
//! kernel.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use xstack_bpf::{ModeRequest, Steering};

/// Set for the helper process: "IFNAME ADDRESS|- native|generic".
const HELPER_ENV: &str = "XSTACK_TEST_STEERING_HELPER";

/// Not a test of its own: the process the tests below start inside the
/// stack's namespace (where `ip netns exec` mounts that namespace's /sys,
/// which `Steering::load` reads), loading the program for a dedicated
/// address with no socket registered. Prints `ready mode=...`, then one
/// `counters ...` line per line read from stdin; detaches on EOF.
#[test]
#[ignore = "helper process for the tests in this file; does nothing on its own"]
fn steering_helper() {
    let Ok(spec) = std::env::var(HELPER_ENV) else { return };
    let args: Vec<&str> = spec.split_whitespace().collect();
    let [ifname, addr, mode] = args[..] else { panic!("{HELPER_ENV}={spec:?}") };
    let mode = match mode {
        "native" => ModeRequest::Native,
        _ => ModeRequest::Generic,
    };
    let steering = Steering::load(ifname, mode, false, None).unwrap();
    if addr != "-" {
        let a = addr.parse::<Ipv4Addr>().unwrap();
        steering.add_address(a, false).unwrap();
        // Its /24's broadcast, as the daemon declares its subnets'.
        let o = a.octets();
        steering.add_local_broadcast(Ipv4Addr::new(o[0], o[1], o[2], 255)).unwrap();
    }
    println!("ready mode={}", steering.mode());
    for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
        println!("counters {}", steering.counters().unwrap());
    }
}

/// The helper, running in the topology's stack namespace.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    /// The program on interface fact `ifname` of namespace fact `ns`,
    /// steering `addr` ("-": none).
    fn start(topo: &Topology, ns: &str, ifname: &str, addr: &str, mode: &str) -> Helper {
        let mut child = Command::new("ip")
            .args(["netns", "exec", topo.get(ns)])
            .arg(std::env::current_exe().unwrap())
            .args(["steering_helper", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(HELPER_ENV, format!("{} {addr} {mode}", topo.get(ifname)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut h = Helper { stdin: child.stdin.take(), child, lines: rx };
        let ready = h.line("ready ");
        assert_eq!(ready, format!("ready mode={mode}"));
        h
    }

    /// The next line with `prefix`, from there (libtest prints its own
    /// lines, and "test steering_helper ... " before the first).
    fn line(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains(prefix) => return l[l.find(prefix).unwrap()..].to_owned(),
                Ok(_) => {}
                Err(e) => panic!("no {prefix:?} line from the steering helper ({e}): {:?}", self.child.try_wait()),
            }
        }
    }

    fn counters(&mut self) -> HashMap<String, u64> {
        writeln!(self.stdin.as_mut().unwrap(), "counters").unwrap();
        fields(&self.line("counters "))
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "steering helper: {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn fields(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v)))
        .collect()
}

/// The probe's line for one probe, as fields (numbers only) and text.
fn probe_line<'a>(out: &'a str, name: &str) -> (HashMap<String, u64>, &'a str) {
    let l = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}: {out}"));
    assert!(l.ends_with(" problems=none"), "{l}");
    (fields(l), l)
}

fn run(mode: &str, tag: &str) {
    require_root();
    let name = unique_name(tag);
    let topo = Topology::up(&name, &[]);
    // veth hands a native-mode XDP_TX frame on only to a peer that runs an
    // XDP program itself (otherwise it is dropped or left in the peer's
    // ring); real NICs have no such condition. The same program with no
    // address passes everything on the peer's side.
    let peer = (mode == "native").then(|| Helper::start(&topo, "NS_A", "IF_A", "-", mode));
    let mut helper = Helper::start(&topo, "NS_B", "IF_B", topo.get("IP_STACK"), mode);
    let stack_ip = topo.get("IP_STACK").to_owned();
    // Nothing answers ARP for the address any more (the peer would have
    // kept the entry from before the worker died): a permanent entry.
    let (mac_b, if_a) = (topo.get("MAC_B"), topo.get("IF_A"));
    let neigh = ["ip", "neigh", "replace", &stack_ip, "lladdr", mac_b, "dev", if_a, "nud", "permanent"];
    let out = topo.exec("NS_A", &neigh);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let script = repo_root().join("control/tests/support/rst_probe.py");
    let probe = topo.exec(
        "NS_A",
        &["python3", script.to_str().unwrap(), topo.get("IF_A"), topo.get("IP_A"), &stack_ip, topo.get("MAC_B")],
    );
    let out = stdout(&probe);
    print!("{out}");
    assert!(probe.status.success(), "{out}{}", String::from_utf8_lossy(&probe.stderr));

    // connect() is refused at once by RST|ACK <SEQ=0><ACK=ISN+1>.
    let (f, l) = probe_line(&out, "connect");
    assert!(l.contains("outcome=refused") && f["replies"] == 1, "{l}");
    assert!(l.contains("flags=0x14 seq=0 ") && f["ack_minus_isn"] == 1, "{l}");
    let ms: f64 = l.split("ms=").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!(ms < 500.0, "refused after {ms} ms: {l}");
    // ACK set: RST alone, <SEQ=SEG.ACK>, with or without IP options in.
    for name in ["ack_data", "ack_ip_options"] {
        let (f, l) = probe_line(&out, name);
        assert!(f["replies"] == 1 && l.contains("flags=0x04 ") && l.contains(" ack=0 "), "{l}");
        assert_eq!(f["seq_is_our_ack"], 1, "{l}");
    }
    assert_eq!(probe_line(&out, "ack_ip_options").0["sent_ihl"], 6);
    // No ACK: RST|ACK <SEQ=0><ACK=SEG.SEQ+7 bytes+FIN>.
    let (f, l) = probe_line(&out, "fin_data");
    assert!(f["replies"] == 1 && l.contains("flags=0x14 seq=0 "), "{l}");
    assert_eq!(f["ack_minus_our_seq"], 8, "{l}");
    // Resets, non-TCP and malformed TCP: no answer.
    for name in ["rst", "rst_ack", "udp", "tcp_bad_offset"] {
        assert_eq!(probe_line(&out, name).0["replies"], 0, "{name}: {out}");
    }
    // A SYN built whole is answered; addressed to another MAC, or from a
    // martian source, it is not (Linux: PACKET_HOST only, fib_validate_source).
    assert_eq!(probe_line(&out, "syn_frame").0["replies"], 1, "{out}");
    for name in ["other_mac", "src_own", "src_broadcast", "src_loopback"] {
        assert_eq!(probe_line(&out, name).0["replies"], 0, "{name}: {out}");
    }

    let c = helper.counters();
    let seen: u64 = out.lines().find_map(|l| l.strip_prefix("resets_seen=")).unwrap().parse().unwrap();
    assert_eq!(seen, 5, "{out}");
    assert_eq!(c["tx_rst"], seen, "{c:?}");
    assert!(c["pass_no_socket"] >= 8, "RST, RST|ACK, UDP, bad offset, other MAC, three martians: {c:?}");
    assert_eq!(c["redirect_tcp"] + c["redirect_udp"], 0, "nothing was redirected: {c:?}");
    helper.stop();
    if let Some(p) = peer {
        p.stop();
    }
}

/// A dedicated address on a queue with no socket, native XDP: TCP segments
/// are answered with resets as Linux answers a closed port; resets, UDP and
/// malformed segments are not.
#[test]
fn socketless_queue_resets_tcp_native() {
    run("native", "nsn");
}

/// The same in generic (skb) mode.
#[test]
fn socketless_queue_resets_tcp_generic() {
    run("generic", "nsg");
}
