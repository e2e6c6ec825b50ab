//! The operator's view of a running stack, checked against a known state:
//! `xstackctl` (stats, ss, arp, config, set, port, drain, capture, top)
//! with connections opened by the test, the Prometheus endpoint scraped
//! and parsed by the reference parser, a capture read back by tcpdump and
//! tshark, a killed worker's flows reset and reported, and the control
//! socket refusing users who may not use it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn socket(name: &str) -> String {
    format!("/run/xstack/{name}.sock")
}

/// Runs xstackctl against the test's daemon.
fn ctl(name: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--socket", &socket(name)])
        .args(args)
        .output()
        .expect("running xstackctl")
}

/// xstackctl's stdout, which must have succeeded.
fn ctl_ok(name: &str, args: &[&str]) -> String {
    let o = ctl(name, args);
    assert!(o.status.success(), "xstackctl {args:?} failed: {}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

fn ctl_json(name: &str, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ctl_ok(name, args)).expect("xstackctl --json prints JSON")
}

/// Clients in NS_A holding `n` connections to `port` open until stdin
/// closes; each sent and got back one line first.
struct Clients {
    child: Child,
    ports: Vec<u16>,
}

impl Clients {
    fn open(topo: &Topology, ip: &str, port: u16, n: usize) -> Clients {
        let script = format!(
            "import socket,sys\nss=[]\nfor i in range({n}):\n  s=socket.create_connection(('{ip}',{port}),timeout=5)\n  s.sendall(b'hello %d\\n'%i)\n  got=b''\n  while not got.endswith(b'\\n'): got+=s.recv(100)\n  ss.append(s)\n  print(s.getsockname()[1],flush=True)\nprint('ready',flush=True)\nsys.stdin.read()\nfor s in ss: s.close()\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", topo.get("NS_A"), "timeout", "60", "python3", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ports = Vec::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "clients exited early");
            if line.trim() == "ready" {
                break;
            }
            ports.push(line.trim().parse().unwrap());
        }
        Clients { child, ports }
    }

    fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// stats, ss (listing, filters, per-state counts, -i), arp and config
/// against connections the test opened; a knob changed at run time
/// changes what the stack does.
#[test]
fn stats_ss_arp_and_config_show_the_known_state() {
    require_root();
    let name = unique_name("oc");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--poll", "adaptive"]);
    let ip = topo.get("IP_STACK").to_owned();
    let clients = Clients::open(&topo, &ip, 7, 3);

    // ss: the listener and exactly our three connections.
    let all = ctl_ok(&name, &["ss"]);
    eprintln!("{all}");
    assert!(all.lines().next().unwrap().starts_with("State"), "{all}");
    let listen: Vec<&str> = all.lines().filter(|l| l.starts_with("LISTEN")).collect();
    assert_eq!(listen.len(), 1, "{all}");
    assert!(listen[0].contains(&format!("{ip}:7")) || listen[0].contains("0.0.0.0:7"), "{all}");
    let estab: Vec<&str> = all.lines().filter(|l| l.starts_with("ESTAB")).collect();
    assert_eq!(estab.len(), 3, "{all}");
    for p in &clients.ports {
        assert!(estab.iter().any(|l| l.contains(&format!("{}:{p}", topo.get("IP_A")))), "port {p} missing:\n{all}");
    }
    let filtered = ctl_ok(&name, &["ss", "--state", "established", "--port", &clients.ports[1].to_string()]);
    assert_eq!(filtered.lines().count(), 2, "header and one connection:\n{filtered}");
    let counts = ctl_ok(&name, &["ss", "--count"]);
    assert!(counts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ESTAB", "3"]), "{counts}");
    assert!(counts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["LISTEN", "1"]), "{counts}");
    assert!(counts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", "4"]), "{counts}");
    let info = ctl_ok(&name, &["ss", "-i", "--state", "estab"]);
    let details: Vec<&str> = info.lines().filter(|l| l.contains("cwnd:")).collect();
    assert_eq!(details.len(), 3, "{info}");
    assert!(
        details
            .iter()
            .all(|l| l.contains("rtt:") && l.contains("mss:1448") && l.contains("retrans:0") && !l.contains("backoff")),
        "{info}"
    );
    assert!(ctl(&name, &["ss", "--state", "bogus"]).status.code() == Some(1));

    // stats: totals match what the clients did.
    let st = ctl_json(&name, &["stats", "--json"]);
    let w = &st["workers"][0];
    assert_eq!(w["tcp"]["passive_opens"], 3, "{w}");
    assert_eq!(w["states"]["ESTAB"], 3, "{w}");
    assert_eq!(w["alive"], true);
    assert!(w["counters"]["rx_frames"].as_u64().unwrap() >= 9, "three handshakes and data: {w}");
    assert!(st["xdp"]["redirect_tcp"].as_u64().unwrap() >= 9, "{st}");
    assert!(w["round_latency"]["count"].as_u64().unwrap() > 0, "{w}");
    let text = ctl_ok(&name, &["stats"]);
    assert!(text.contains("    3 passive connection openings"), "{text}");
    assert!(text.contains("    3 connections currently established"), "{text}");
    assert!(text.contains("ESTAB 3"), "{text}");

    // arp: the client's entry, learned from the wire.
    let arp = ctl_ok(&name, &["arp"]);
    let line = arp.lines().find(|l| l.starts_with(topo.get("IP_A"))).unwrap_or_else(|| panic!("{arp}"));
    assert!(line.contains(&topo.get("MAC_A").to_ascii_lowercase()) && line.ends_with("REACHABLE"), "{arp}");

    // config: the knobs, one changed at run time.
    let cfg = ctl_ok(&name, &["config"]);
    assert!(
        cfg.lines().any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["syncookies", "1", "yes"]),
        "{cfg}"
    );
    assert!(cfg.contains("net.core.somaxconn"), "{cfg}");
    let refused = ctl(&name, &["set", "mtu", "9000"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("restart"));
    assert!(!ctl(&name, &["set", "syncookies", "7"]).status.success());
    // syncookies=2 sends a cookie for every SYN: the next connection
    // proves the workers run with the new value.
    assert!(ctl_ok(&name, &["set", "syncookies", "2"]).contains("syncookies: \"1\" -> \"2\""));
    let cfg = ctl_json(&name, &["config", "--json"]);
    let k = cfg["knobs"].as_array().unwrap().iter().find(|k| k["name"] == "syncookies").unwrap().clone();
    assert_eq!(k["value"], "2");
    let more = Clients::open(&topo, &ip, 7, 1);
    let st = ctl_json(&name, &["stats", "--json"]);
    assert_eq!(st["workers"][0]["tcp"]["syncookies_sent"], 1, "{st}");
    assert_eq!(st["workers"][0]["tcp"]["syncookies_recv"], 1, "{st}");
    more.close();

    // After the clients close, no connection is left established.
    clients.close();
    wait_for("connections to close", Duration::from_secs(5), || {
        let c = ctl_ok(&name, &["ss", "--count", "--state", "estab"]);
        c.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ESTAB", "0"])
    });
    daemon.stop();
}

/// Root, or members of the configured group; anyone else is refused at
/// connect() by the socket file's mode, and (if the mode was loosened by
/// hand) by the daemon's own credential check.
#[test]
fn control_socket_refuses_unauthorised_users() {
    require_root();
    let name = unique_name("oa");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    // gid 65534 (nogroup) may use it.
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--control-group", "65534"]);
    let sock = socket(&name);
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
    // A copy of xstackctl any user can run.
    let dir = std::env::temp_dir().join(format!("xs-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("xstackctl");
    std::fs::copy(env!("CARGO_BIN_EXE_xstackctl"), &bin).unwrap();
    let as_user = |uid: &str, gid: &str| {
        Command::new("setpriv")
            .args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups"])
            .arg(&bin)
            .args(["--socket", &sock, "stats", "--json"])
            .output()
            .unwrap()
    };
    let member = as_user("65534", "65534");
    assert!(member.status.success(), "group member refused: {}", String::from_utf8_lossy(&member.stderr));
    let outsider = as_user("65534", "4242");
    let err = String::from_utf8_lossy(&outsider.stderr).to_string();
    assert!(!outsider.status.success(), "outsider allowed");
    assert!(err.to_ascii_lowercase().contains("permission denied"), "{err}");
    // Loosen the file's mode: the daemon still refuses, and says why.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let outsider = as_user("65534", "4242");
    let err = String::from_utf8_lossy(&outsider.stderr).to_string();
    assert!(!outsider.status.success(), "outsider allowed by a loosened mode");
    assert!(err.contains("permission denied: uid 65534 may not use this socket"), "{err}");
    assert!(daemon.log_shows("control socket: refused uid 65534", Duration::from_secs(5)), "{}", daemon.stderr());
    let _ = std::fs::remove_dir_all(&dir);
    daemon.stop();
}

/// The Prometheus endpoint, scraped with curl and parsed by the Python
/// client library's OpenMetrics parser; counters match known traffic.
#[test]
fn prometheus_endpoint_is_scraped_and_parsed() {
    require_root();
    let name = unique_name("om");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--metrics", "127.0.0.1:9464"]);
    let ip = topo.get("IP_STACK").to_owned();
    let ping = topo.exec("NS_A", &["ping", "-q", "-c", "20", "-i", "0.02", "-W", "2", &ip]);
    assert_eq!(ping_counts(&ping), (20, 20));
    let clients = Clients::open(&topo, &ip, 7, 2);
    let parse = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print(fam.type, s.name, labels, s.value)
"#;
    let scrape = topo.exec("NS_B", &["curl", "-sS", "-i", "http://127.0.0.1:9464/metrics"]);
    let text = stdout(&scrape);
    assert!(text.contains("Content-Type: application/openmetrics-text"), "{text}");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("").to_owned();
    // Debian's python3-prometheus-client (scripts/setup.sh) is installed
    // for the system interpreter.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "the parser rejected the exposition: {}\n{body}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let samples = stdout(&parsed);
    let value = |kind: &str, sample: &str, labels: &str| -> f64 {
        samples
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 4 && f[0] == kind && f[1] == sample && f[2] == labels).then(|| f[3].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {kind} {sample} {{{labels}}} in\n{samples}"))
    };
    assert_eq!(value("counter", "xstack_worker_icmp_echo_replies_total", "worker=0"), 20.0);
    assert_eq!(value("counter", "xstack_tcp_passive_opens_total", "worker=0"), 2.0);
    assert_eq!(value("gauge", "xstack_tcp_sockets", "state=ESTAB,worker=0"), 2.0);
    assert_eq!(value("gauge", "xstack_worker_up", "worker=0"), 1.0);
    assert!(value("counter", "xstack_xdp_verdicts_total", "verdict=redirect_icmp") >= 20.0);
    assert!(value("gauge", "xstack_ring_frames_free", "worker=0") > 0.0);
    assert!(value("histogram", "xstack_round_latency_seconds_count", "worker=0") > 0.0);
    assert!(value("histogram", "xstack_round_latency_seconds_bucket", "le=+Inf,worker=0") > 0.0);
    let not_found =
        topo.exec("NS_B", &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9464/"]);
    assert_eq!(stdout(&not_found), "404");
    clients.close();
    daemon.stop();
}

/// A capture with a host filter and a duration, read back by tcpdump and
/// tshark: exactly the 20 echo requests and 20 replies of a ping, and a
/// capture with a packet count stops at that count.
#[test]
fn capture_is_read_back_by_tcpdump_and_tshark() {
    require_root();
    let name = unique_name("pc");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--discard", "9"]);
    let ip = topo.get("IP_STACK").to_owned();
    let dir = std::env::temp_dir().join(format!("xs-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ping.pcap");
    let file_s = file.to_str().unwrap().to_owned();
    let cap = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--socket", &socket(&name), "capture", "-w", &file_s, "--host", topo.get("IP_A"), "--duration", "4"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ping = topo.exec("NS_A", &["ping", "-q", "-c", "20", "-i", "0.05", "-W", "2", &ip]);
    assert_eq!(ping_counts(&ping), (20, 20));
    let out = cap.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let captured: u64 = err.lines().find_map(|l| l.strip_suffix(" packets captured")).unwrap().parse().unwrap();
    let read = Command::new("tcpdump").args(["-nn", "-r", &file_s]).output().unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let lines = stdout(&read);
    assert_eq!(lines.lines().count() as u64, captured, "{lines}");
    let requests = lines.lines().filter(|l| l.contains("ICMP echo request")).count();
    let replies = lines.lines().filter(|l| l.contains("ICMP echo reply")).count();
    assert_eq!((requests, replies), (20, 20), "{lines}");
    let tshark = Command::new("tshark").args(["-r", &file_s, "-Y", "icmp"]).output().unwrap();
    assert!(tshark.status.success(), "{}", String::from_utf8_lossy(&tshark.stderr));
    assert_eq!(stdout(&tshark).lines().count(), 40, "{}", stdout(&tshark));

    // A packet count: the capture ends by itself at 10 TCP packets.
    let file2 = dir.join("tcp.pcap");
    let file2_s = file2.to_str().unwrap().to_owned();
    let cap = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--socket", &socket(&name), "capture", "-w", &file2_s, "--port", "7", "-c", "10"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let clients = Clients::open(&topo, &ip, 7, 4);
    let out = cap.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = Command::new("tcpdump").args(["-nn", "-r", &file2_s]).output().unwrap();
    let lines = stdout(&read);
    assert_eq!(lines.lines().count(), 10, "{lines}");
    assert!(lines.lines().all(|l| l.contains(".7 >") || l.contains(".7:")), "only port 7:\n{lines}");
    clients.close();

    // Bulk traffic: far more than the socket buffer between the daemon
    // and xstackctl holds; the capture keeps up or counts drops, and ends
    // on time with its totals.
    let file3 = dir.join("bulk.pcap");
    let file3_s = file3.to_str().unwrap().to_owned();
    let cap = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--socket", &socket(&name), "capture", "-w", &file3_s, "--port", "9", "--duration", "3", "-s", "128"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let bulk = topo.exec("NS_A", &["sh", "-c", &format!("head -c 20000000 /dev/zero | timeout 20 nc -N -q 1 {ip} 9")]);
    assert!(bulk.status.success(), "{}", String::from_utf8_lossy(&bulk.stderr));
    let t = Instant::now();
    let out = cap.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    eprintln!("bulk capture: {err}");
    assert!(t.elapsed() < Duration::from_secs(4), "the duration ends the capture under load");
    let captured: u64 = err.lines().find_map(|l| l.strip_suffix(" packets captured")).unwrap().parse().unwrap();
    let read = Command::new("tcpdump").args(["-nn", "-r", &file3_s]).output().unwrap();
    assert_eq!(stdout(&read).lines().count() as u64, captured, "{err}");
    assert!(captured > 2000, "20 MB is thousands of segments: {err}");

    // Ctrl-C ends a capture cleanly: exit 0, the totals, a readable file.
    let file4 = dir.join("interrupted.pcap");
    let file4_s = file4.to_str().unwrap().to_owned();
    let cap = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--socket", &socket(&name), "capture", "-w", &file4_s, "--host", topo.get("IP_A")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ping = topo.exec("NS_A", &["ping", "-q", "-c", "5", "-i", "0.05", "-W", "2", &ip]);
    assert_eq!(ping_counts(&ping), (5, 5));
    let _ = Command::new("kill").args(["-INT", &cap.id().to_string()]).status();
    let out = cap.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "Ctrl-C: {err}");
    let captured: u64 = err.lines().find_map(|l| l.strip_suffix(" packets captured")).unwrap().parse().unwrap();
    assert!(captured >= 10, "{err}");
    let read = Command::new("tcpdump").args(["-nn", "-r", &file4_s]).output().unwrap();
    assert_eq!(stdout(&read).lines().count() as u64, captured, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    daemon.stop();
}

/// A worker that dies: the control plane unsteers its queue, the peer of
/// an established connection gets an RST for its next segment and a new
/// connection is refused (rather than hanging), and stats report it.
#[test]
fn a_dead_workers_flows_are_reset_and_reported() {
    require_root();
    let name = unique_name("ok");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    // Generic XDP: in native mode veth drops the program's XDP_TX frames
    // unless the peer runs XDP too (README, known limits); real NICs and
    // generic mode deliver them.
    let daemon = Daemon::start(
        &topo,
        &bpffs,
        &["--instance", &name, "--echo", "7", "--fault-injection", "--xdp-mode", "generic"],
    );
    let ip = topo.get("IP_STACK").to_owned();
    // A client that talks, waits for the word, talks again, then connects anew.
    let script = format!(
        "import socket,sys,errno\ns=socket.create_connection(('{ip}',7),timeout=5)\ns.sendall(b'one\\n');print('echo',s.recv(100),flush=True)\nsys.stdin.readline()\ntry:\n  s.sendall(b'two\\n');d=s.recv(100);print('second',d,flush=True)\nexcept OSError as e:\n  print('second',errno.errorcode[e.errno],flush=True)\ntry:\n  socket.create_connection(('{ip}',7),timeout=5);print('new connected',flush=True)\nexcept OSError as e:\n  print('new',errno.errorcode.get(e.errno,e),flush=True)\n"
    );
    let mut client = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_A"), "timeout", "30", "python3", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "echo b'one\\n'");

    assert!(ctl(&name, &["fault", "--worker", "7"]).status.code() == Some(1), "no such worker");
    ctl_ok(&name, &["fault", "--worker", "0"]);
    wait_for("the worker's death to be noticed", Duration::from_secs(5), || {
        ctl_json(&name, &["stats", "--json"])["workers"][0]["alive"] == false
    });
    let st = ctl_json(&name, &["stats", "--json"]);
    let died = st["workers"][0]["died"].as_str().unwrap().to_owned();
    assert!(died.contains("fault injection"), "{died}");
    let text = ctl_ok(&name, &["stats"]);
    assert!(text.contains("worker 0 DIED: "), "{text}");

    client.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    for _ in 0..2 {
        out.read_line(&mut rest).unwrap();
    }
    let _ = client.wait();
    assert!(rest.contains("second ECONNRESET"), "the established flow is reset: {rest}");
    assert!(rest.contains("new ECONNREFUSED"), "a new connection is refused: {rest}");
    assert!(daemon.log_shows("worker 0 died", Duration::from_secs(5)), "{}", daemon.stderr());
    // The daemon keeps running (its control plane answers) and stops cleanly.
    let summary = daemon.stop();
    assert!(summary.text("summary worker=0 died").contains("fault injection"), "{:#?}", summary.lines);
}

/// Runtime changes: a steered port added and removed on a shared address,
/// and a drain that refuses new connections, lets an open one finish and
/// then stops the daemon by itself.
#[test]
fn ports_change_and_drain_stops_after_the_last_connection() {
    require_root();
    let name = unique_name("od");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let kernel_ip = topo.get("IP_B_KERNEL").to_owned();
    let daemon = Daemon::start(
        &topo,
        &bpffs,
        &["--instance", &name, "-a", &format!("{kernel_ip}/24"), "--tcp-ports", "7", "--echo", "7", "--discard", "9"],
    );
    let connect = |port: u16| -> String {
        let script = format!(
            "import socket,errno\ntry:\n  s=socket.create_connection(('{kernel_ip}',{port}),timeout=3);print('connected')\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno,e))\n"
        );
        stdout(&topo.exec("NS_A", &["timeout", "10", "python3", "-c", &script])).trim().to_owned()
    };
    // Port 9 is not steered: the kernel owns it and refuses.
    assert_eq!(connect(9), "ECONNREFUSED");
    assert!(ctl_ok(&name, &["port", "add", "tcp", "9"]).contains("[7,9]"));
    assert_eq!(ctl_ok(&name, &["port", "list"]).trim(), "steered tcp ports: 7,9; udp ports: none");
    assert_eq!(connect(9), "connected", "the stack's discard service now gets port 9");
    assert!(!ctl(&name, &["port", "add", "tcp", "9"]).status.success(), "already steered");
    ctl_ok(&name, &["port", "remove", "tcp", "9"]);
    assert_eq!(connect(9), "ECONNREFUSED", "back to the kernel");
    let cfg = ctl_ok(&name, &["config"]);
    assert!(cfg.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tcp_ports", "7"]), "{cfg}");

    // Drain with one connection open.
    let clients = Clients::open(&topo, &kernel_ip, 7, 1);
    let drained = ctl_ok(&name, &["drain", "--timeout", "20"]);
    assert!(drained.contains("2 listener(s) closed"), "echo and discard: {drained}");
    assert_eq!(connect(7), "ECONNREFUSED", "no more accepts");
    let ss = ctl_ok(&name, &["ss"]);
    assert!(!ss.contains("LISTEN") && ss.contains("ESTAB"), "{ss}");
    assert!(ctl_json(&name, &["stats", "--json"])["draining"] == true);
    // The open connection still works.
    let st = Instant::now();
    clients.close();
    // ... and once it is closed the daemon stops by itself.
    let summary = daemon.wait_exit(Duration::from_secs(15));
    eprintln!("stopped {:?} after the last connection closed", st.elapsed());
    assert!(summary.text("summary tcp worker=0").contains("passive_opens=2"), "{:#?}", summary.lines);
}

/// top: a bounded run prints a frame per refresh with per-worker rates.
#[test]
fn top_shows_per_worker_rates() {
    require_root();
    let name = unique_name("ot");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7"]);
    let ip = topo.get("IP_STACK").to_owned();
    let pinger = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_A"), "ping", "-q", "-c", "100", "-i", "0.01", &ip])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = ctl_ok(&name, &["top", "--interval", "0.5", "--iterations", "2"]);
    let _ = pinger.wait_with_output();
    eprintln!("{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with("xstack on")).collect();
    assert_eq!(frames.len(), 2, "{out}");
    let rows: Vec<Vec<&str>> =
        out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).filter(|f| f.first() == Some(&"0")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let rx_pps: f64 = rows[1][2].parse().unwrap();
    assert!(rx_pps > 20.0, "pings at 100/s show as received packets per second: {out}");
    daemon.stop();
}

/// A README block between `<!-- TAG: begin -->` and `<!-- TAG: end -->`,
/// run as written with this test's names (`placeholder` becomes a unique
/// topology name) and binaries, in a directory of its own: the output, and
/// the daemon's `xstackd.out` if the block wrote one.
fn run_readme_block(tag: &str, placeholder: &str, timeout_s: u32) -> (String, String) {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let block = readme
        .split(&format!("<!-- {tag}: begin -->"))
        .nth(1)
        .and_then(|r| r.split(&format!("<!-- {tag}: end -->")).next())
        .unwrap_or_else(|| panic!("README has the {tag} block"));
    let script: String = block.lines().filter(|l| !l.starts_with("```")).collect::<Vec<_>>().join("\n");
    // A name per block: the tests run at once.
    let name = common::unique_name(&tag[..2]);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_xstackd")).parent().unwrap().to_path_buf();
    let dir = std::env::temp_dir().join(format!("xstack-readme-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = script
        .replace(placeholder, &name)
        .replace("target/release/", &format!("{}/", bin.display()))
        .replace("scripts/", &format!("{}/scripts/", common::repo_root().display()));
    let run = std::process::Command::new("timeout")
        .args(["-k", "5", &timeout_s.to_string(), "bash", "-c"])
        // Root runs the tests; a machine without sudo gets one that only
        // runs its command.
        .arg(format!("set -e\nset -m\ncommand -v sudo >/dev/null || sudo() {{ \"$@\"; }}\n{script}\n"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    let daemon = std::fs::read_to_string(dir.join("xstackd.out")).unwrap_or_default();
    let _ = std::process::Command::new(common::repo_root().join("scripts/topology.sh")).args(["down", &name]).output();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "the {tag} block failed:\n{out}");
    (out, daemon)
}

/// The README's hand-test block, run as written (with this test's names
/// and binaries): it must not drift from the code.
#[test]
fn the_readmes_hand_test_block_runs_as_written() {
    common::require_root();
    let (out, daemon) = run_readme_block("hand-test", "mytest", 60);
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    assert!(out.lines().any(|l| l == "hello"), "no echo:\n{out}");
    assert!(daemon.contains("summary frames worker=0") && daemon.contains("balanced=yes"), "no clean stop:\n{daemon}");
}

/// The README's load-test block: xstack-bench on the stack against a
/// kernel HTTP server, found by ARP, every response checked.
#[test]
fn the_readmes_load_test_block_runs_as_written() {
    common::require_root();
    let (out, _) = run_readme_block("load-test", "myload", 90);
    let summary =
        out.lines().find(|l| l.contains("xstack-bench: http:")).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let ok: u64 = summary
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of responses: {summary}"));
    assert!(ok > 0 && summary.contains(" 0 errors in the whole run"), "{summary}");
}

/// Operator messages: a typo in XSTACK_LOG is said, not silently taken for
/// a target that silences every line; no colour codes into a file.
#[test]
fn a_bad_log_filter_is_said_and_logs_to_files_have_no_colours() {
    let o = Command::new(env!("CARGO_BIN_EXE_xstackd"))
        .args(["-i", "eth9", "-a", "198.18.0.3/24", "--print-config"])
        .env("XSTACK_LOG", "dbug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("XSTACK_LOG=dbug: \"dbug\" is not a level"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_xstack-socket-echo")).arg("--help").output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("usage: xstack-socket-echo PORT"));
}

/// scripts/install.sh into a staging directory: binaries, the preload
/// library where xstack-run finds it, the systemd unit with the prefix,
/// the example configuration and completions.
#[test]
fn install_stages_a_working_layout() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_xstackd")).parent().unwrap().to_path_buf();
    let dest = std::env::temp_dir().join(format!("xstack-install-{}", std::process::id()));
    let o = Command::new(common::repo_root().join("scripts/install.sh"))
        .args(["--no-build", "--prefix", "/opt/xs", "--destdir"])
        .arg(&dest)
        .env("XSTACK_BIN_DIR", &bin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "opt/xs/bin/xstackd",
        "opt/xs/bin/xstackctl",
        "opt/xs/bin/xstack-run",
        "opt/xs/lib/xstack/libxstack_preload.so",
        "etc/xstack/example.toml",
        "usr/share/bash-completion/completions/xstackctl",
    ] {
        assert!(dest.join(f).exists(), "{f} not installed");
    }
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/xstackd@.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/xs/bin/xstackd --config /etc/xstack/%i.toml"), "{unit}");
    // The installed xstack-run finds the library in ../lib/xstack.
    let run = Command::new(dest.join("opt/xs/bin/xstack-run")).args(["--quiet", "true"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let _ = std::fs::remove_dir_all(&dest);
}
