//! Client mode against the Linux kernel: a listener (data verified), a
//! closed port (ECONNREFUSED at once), a silent host (SYN retransmissions,
//! then ETIMEDOUT on schedule) and a host that does not answer ARP
//! (EHOSTUNREACH).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn client(topo: &Topology, bpffs: &Bpffs, name: &str, args: &[&str]) -> (Output, Duration) {
    let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
    let t0 = Instant::now();
    let out = Command::new("timeout")
        .args(["40", "ip", "netns", "exec", topo.get("NS_B"), env!("CARGO_BIN_EXE_xstackd")])
        .args(["-i", topo.get("IF_B"), "-a", &addr, "--instance", name, "--bpffs"])
        .arg(&bpffs.path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out, t0.elapsed())
}

fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().filter(|l| !l.starts_with("xstackd ready")).map(str::to_owned).collect()
}

#[test]
fn client_mode_reports_like_connect() {
    require_root();
    let name = unique_name("cl");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let peer = topo.get("IP_A").to_owned();
    let subnet = peer.rsplit_once('.').unwrap().0.to_owned();

    // A kernel listener that checks what it receives and answers.
    let server = topo.spawn(
        "NS_A",
        &["python3", "-c", &format!(
            "import socket\ns=socket.create_server(('{peer}',7001));s.settimeout(20);c,_=s.accept();c.settimeout(20);d=b''\nwhile True:\n  x=c.recv(65536)\n  if not x: break\n  d+=x\nprint(d.decode());c.sendall(b'ok:'+d);c.close()"
        )],
    );
    topo.wait_listening("NS_A", &peer, 7001);
    let (out, _) =
        client(&topo, &bpffs, &name, &["--connect", &format!("{peer}:7001"), "--payload", "payload from the stack"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out), vec!["connected", "sent 22 bytes, received 25 bytes"]);
    let got = server.wait_with_output().unwrap();
    assert_eq!(stdout(&got).trim(), "payload from the stack", "the kernel received other data");

    // Closed port: RST, ECONNREFUSED at once.
    let (out, took) = client(&topo, &bpffs, &name, &["--connect", &format!("{peer}:7999")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out), vec!["ECONNREFUSED"]);
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Silent host: its frames reach the peer's MAC (static neighbour), which
    // drops them (not its address, no forwarding). syn_retries = 2 with the
    // linear schedule, as Linux 6.x: SYNs at 0, 1, 2, 3, 4, 5 s, ETIMEDOUT
    // at 7 s (the time 2 doubling retransmissions would take; the 6.18
    // kernel here does the same).
    let silent = format!("{subnet}.77");
    let mut dump = Command::new("timeout")
        .args(["25", "ip", "netns", "exec", topo.get("NS_A"), "tcpdump", "-n", "-l", "-i", topo.get("IF_A")])
        .args(["tcp[tcpflags] & tcp-syn != 0 and dst host", &silent])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (out, took) = client(
        &topo,
        &bpffs,
        &name,
        &[
            "--connect",
            &format!("{silent}:7999"),
            "--static-neighbour",
            &format!("{silent}={}", topo.get("MAC_A")),
            "--syn-retries",
            "2",
        ],
    );
    assert_eq!(lines(&out), vec!["ETIMEDOUT"], "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert!(took >= Duration::from_millis(6900) && took < Duration::from_secs(11), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let mut text = String::new();
    std::io::Read::read_to_string(dump.stdout.as_mut().unwrap(), &mut text).unwrap();
    let _ = dump.wait();
    assert_eq!(text.lines().filter(|l| l.contains("Flags [S]")).count(), 6, "SYNs on the wire:\n{text}");

    // No ARP answer for the destination: EHOSTUNREACH as soon as neighbour
    // resolution fails (3 requests 1 s apart), as Linux does (3.3 s
    // measured with a kernel client on this topology).
    let (out, took) = client(&topo, &bpffs, &name, &["--connect", &format!("{subnet}.78:7999")]);
    assert_eq!(lines(&out), vec!["EHOSTUNREACH"], "{}", String::from_utf8_lossy(&out.stderr));
    // The bound leaves room for a slow start-up of the client; without the
    // neighbour failure it would wait for the SYN timeout (minutes).
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(8), "{took:?}");

    // Off every subnet with no gateway: no route, ENETUNREACH at once, as
    // Linux's connect reports it.
    let far = format!("198.19.{}.98", topo.get("SUBNET"));
    let (out, took) = client(&topo, &bpffs, &name, &["--connect", &format!("{far}:7999")]);
    assert_eq!(lines(&out), vec!["ENETUNREACH"], "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(3), "at once: {took:?}");

    // A router that refuses the destination with ICMP (administratively
    // prohibited, code 13): the connect fails at once with EHOSTUNREACH,
    // as the kernel's does on the same path (Linux tcp_v4_err), instead
    // of retrying SYNs for the whole timeout.
    let far = format!("198.19.{}.99", topo.get("SUBNET"));
    assert!(topo.exec("NS_A", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]).status.success());
    assert!(topo.exec("NS_A", &["ip", "route", "add", "prohibit", &far]).status.success());
    let gateway = ["--gateway", &peer];
    let (out, took) =
        client(&topo, &bpffs, &name, &[&["--connect", &format!("{far}:7999")][..], &gateway[..]].concat());
    assert_eq!(lines(&out), vec!["EHOSTUNREACH"], "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(3), "at once, not after SYN timeouts: {took:?}");
    // The kernel on the stack's side, through the same router.
    assert!(topo.exec("NS_B", &["ip", "route", "replace", &far, "via", &peer]).status.success());
    let kernel = topo.exec(
        "NS_B",
        &["python3", "-c", &format!(
            "import socket,errno\ntry:\n  socket.create_connection(('{far}',7999),timeout=10)\nexcept OSError as e: print(errno.errorcode.get(e.errno, e))"
        )],
    );
    assert_eq!(stdout(&kernel).trim(), "EHOSTUNREACH", "the kernel's answer on this path");
}
