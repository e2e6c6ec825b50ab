//! Differential TCP tests: the same crafted segments sent to this
//! machine's Linux kernel and to the stack, the answers compared field by
//! field (flags, sequence and acknowledgment numbers relative to the two
//! ISNs, window, options, payload, timing class). The scripted peer is
//! `support/tcp_diff.py` (packetimpact style); both targets run a discard
//! server and a source server (5 bytes, then close: its side ends in
//! TIME_WAIT) on the same ports in the same topology, one after the other.
//!
//! Where the stack differs today, `KNOWN` says which field of which probe
//! and why. The test fails on any other difference, and on a known one
//! that went away (so the list stays true).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// (probe, or "*" for every probe; answer field; why the stack differs).
const KNOWN: &[(&str, &str, &str)] = &[];

fn run_probes(topo: &Topology, spoof: &str, ip: &str, mac: &str, only: &[&str]) -> BTreeMap<String, Value> {
    let script = repo_root().join("control/tests/support/tcp_diff.py");
    let mut args = vec![
        "python3",
        script.to_str().unwrap(),
        topo.get("IF_A"),
        spoof,
        ip,
        mac,
        "9",
        "10",
        "11",
        "7",
        KEEPALIVE_PORT,
        FULL_QUEUE_PORT,
        SMALL_BUFFER_PORT,
    ];
    args.extend_from_slice(only);
    let out = topo.exec("NS_A", &args);
    assert!(out.status.success(), "tcp_diff.py against {ip}: {}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let mut probes = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let name = v["probe"].as_str().unwrap().to_owned();
        assert!(v["answers"].is_array(), "probe {name} against {ip} could not run: {}", v["answers"]);
        probes.insert(name, v["answers"].clone());
    }
    assert!(only.is_empty() || probes.len() == only.len(), "probes run against {ip}: {:?}", probes.keys());
    assert!(!only.is_empty() || probes.len() >= 15, "probes run against {ip}: {:?}", probes.keys());
    probes
}

/// `answers` without the fields the known differences cover for `probe`.
/// The port of the keep-alive server (`keepalive_server`).
const KEEPALIVE_PORT: &str = "13";

/// The port of a listener with a backlog of 1 that never accepts
/// (`keepalive_server` opens it too).
const FULL_QUEUE_PORT: &str = "15";

/// The port of a listener with SO_RCVBUF 8192 set before listen() that
/// never accepts (`keepalive_server` opens it too).
const SMALL_BUFFER_PORT: &str = "17";

/// A server on `addr` that turns keep-alive on, with one-second idle time
/// and interval and two probes, for each connection it accepts: run as it
/// is on the kernel and through the preload library on the stack, since
/// the daemon's own services have no keep-alive. It also listens with a
/// backlog of 1 on `FULL_QUEUE_PORT`, and with SO_RCVBUF 8192 on
/// `SMALL_BUFFER_PORT`, and never accepts there.
fn keepalive_server(addr: &str) -> String {
    format!(
        "import socket,threading\nfull=socket.create_server(('{addr}',{FULL_QUEUE_PORT}),backlog=1)\nsmall=socket.socket()\nsmall.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,8192)\nsmall.bind(('{addr}',{SMALL_BUFFER_PORT}))\nsmall.listen(8)\nk=socket.create_server(('{addr}',{KEEPALIVE_PORT}),backlog=64)\ndef hold(c):\n  try:\n    while c.recv(65536): pass\n  except OSError: pass\n  c.close()\nwhile True:\n  c,_=k.accept()\n  c.setsockopt(socket.SOL_SOCKET,socket.SO_KEEPALIVE,1)\n  c.setsockopt(socket.IPPROTO_TCP,socket.TCP_KEEPIDLE,1)\n  c.setsockopt(socket.IPPROTO_TCP,socket.TCP_KEEPINTVL,1)\n  c.setsockopt(socket.IPPROTO_TCP,socket.TCP_KEEPCNT,2)\n  threading.Thread(target=hold,args=(c,),daemon=True).start()"
    )
}

fn masked(probe: &str, answers: &Value) -> Value {
    let mut a = answers.clone();
    for seg in a.as_array_mut().unwrap() {
        let obj = seg.as_object_mut().unwrap();
        for (p, field, _) in KNOWN {
            if *p == "*" || *p == probe {
                obj.remove(*field);
            }
        }
    }
    a
}

fn field_differs(field: &str, k: &Value, s: &Value) -> bool {
    let (k, s) = (k.as_array().unwrap(), s.as_array().unwrap());
    k.len() != s.len() || k.iter().zip(s).any(|(a, b)| a.get(field) != b.get(field))
}

#[test]
fn the_stack_answers_crafted_segments_as_linux_does() {
    require_root();
    let name = unique_name("df");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let spoof = format!("198.18.{}.50", topo.get("SUBNET"));
    let mac_a = topo.get("MAC_A").to_owned();

    // Both targets at once: the kernel's discard server on its address in
    // the stack's namespace (the XDP program passes its traffic to the
    // kernel), xstackd's discard service on the stack's address.
    let kernel_ip = topo.get("IP_B_KERNEL").to_owned();
    let neigh = topo.exec(
        "NS_B",
        &["ip", "neigh", "replace", &spoof, "lladdr", &mac_a, "dev", topo.get("IF_B"), "nud", "permanent"],
    );
    assert!(neigh.status.success());
    // The kernel keeps no per-destination metrics for the comparison
    // (tcp_no_metrics_save): the stack has no such cache (a difference
    // noted, not compared), and the probes' half-second handshakes would
    // otherwise seed every later connection's RTO from the spoofed peer's
    // cached RTT.
    let metrics = topo.exec("NS_B", &["sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1"]);
    // The kernel's echo server runs CUBIC, the stack's algorithm (this
    // machine's default is BBR, which the stack does not implement: a
    // difference noted, not compared); the other servers send too little
    // for the algorithm to show.
    assert!(metrics.status.success());
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", topo.get("NS_B"), "python3", "-c"])
        .arg(format!(
            "import socket,threading\ns=socket.create_server(('{kernel_ip}',9),backlog=64)\nsrc=socket.create_server(('{kernel_ip}',11),backlog=64)\nech=socket.create_server(('{kernel_ip}',7),backlog=64)\nech.setsockopt(socket.IPPROTO_TCP,socket.TCP_CONGESTION,b'cubic')\ndef echo(c):\n  try:\n    c.setsockopt(socket.IPPROTO_TCP,socket.TCP_CONGESTION,b'cubic')\n    while True:\n      d=c.recv(65536)\n      if not d: break\n      c.sendall(d)\n  except OSError: pass\n  c.close()\ndef echoes():\n  while True:\n    c,_=ech.accept(); threading.Thread(target=echo,args=(c,),daemon=True).start()\nthreading.Thread(target=echoes,daemon=True).start()\ndef h(c):\n  try:\n    while c.recv(65536): pass\n  except OSError: pass\n  c.close()\ndef source():\n  while True:\n    c,_=src.accept(); c.sendall(b'01234'); c.close()\nthreading.Thread(target=source,daemon=True).start()\nwhile True:\n  c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    topo.wait_listening("NS_B", &kernel_ip, 9);
    topo.wait_listening("NS_B", &kernel_ip, 11);
    topo.wait_listening("NS_B", &kernel_ip, 7);
    let spawn_quiet =
        |cmd: &mut std::process::Command| cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut kernel_keepalive = spawn_quiet(
        std::process::Command::new("ip")
            .args(["netns", "exec", topo.get("NS_B"), "python3", "-c"])
            .arg(keepalive_server(&kernel_ip)),
    );
    topo.wait_listening("NS_B", &kernel_ip, KEEPALIVE_PORT.parse().unwrap());
    let neighbour = format!("{spoof}={mac_a}");
    let daemon = Daemon::start(
        &topo,
        &bpffs,
        &["--discard", "9", "--source", "11:5", "--echo", "7", "--static-neighbour", &neighbour, "--instance", &name],
    );
    let stack_mac = daemon.ready("mac");
    let stack_ip = topo.get("IP_STACK").to_owned();
    let mut stack_keepalive = spawn_quiet(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                topo.get("NS_B"),
                env!("CARGO_BIN_EXE_xstack-run"),
                "--instance",
                &name,
                "python3",
                "-c",
            ])
            .arg(keepalive_server(&stack_ip)),
    );
    // The stack's listener is not the kernel's (ss does not show it):
    // wait until it answers a connection from the peer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !topo.exec("NS_A", &["nc", "-z", "-w", "1", &stack_ip, KEEPALIVE_PORT]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the preloaded keep-alive server did not start on {stack_ip}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mac_b = topo.get("MAC_B").to_owned();
    // XS_DIFF_ONLY=probe,probe runs only those (by hand, while working on
    // them); XS_DIFF_SHOW=probe,probe prints both targets' answers;
    // XS_DIFF_RAW=FILE has the script append every segment it collects,
    // with its time, to FILE.
    let only_env = std::env::var("XS_DIFF_ONLY").unwrap_or_default();
    let only: Vec<&str> = only_env.split(',').filter(|p| !p.is_empty()).collect();
    let mut kernel = run_probes(&topo, &spoof, &kernel_ip, &mac_b, &only);
    let mut stack = run_probes(&topo, &spoof, &stack_ip, &stack_mac, &only);
    for p in std::env::var("XS_DIFF_SHOW").unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        eprintln!(
            "{p}:\n  linux: {}\n  stack: {}",
            kernel.get(p).unwrap_or(&Value::Null),
            stack.get(p).unwrap_or(&Value::Null)
        );
    }

    // A loaded machine can make an immediate answer look delayed: a probe
    // whose answers differ only in their timing class runs again (both
    // targets), up to three times; any agreeing run settles it.
    let timing_only = |k: &Value, s: &Value, probe: &str| {
        let strip = |v: &Value| {
            let mut v = masked(probe, v);
            v.as_array_mut().unwrap().iter_mut().for_each(|seg| {
                seg.as_object_mut().unwrap().remove("when");
            });
            v
        };
        masked(probe, k) != masked(probe, s) && strip(k) == strip(s)
    };
    let names: Vec<String> = kernel.keys().cloned().collect();
    for probe in &names {
        for _ in 0..3 {
            let (Some(k), Some(s)) = (kernel.get(probe), stack.get(probe)) else { break };
            if !timing_only(k, s, probe) {
                break;
            }
            let k2 = run_probes(&topo, &spoof, &kernel_ip, &mac_b, &[probe]);
            let s2 = run_probes(&topo, &spoof, &stack_ip, &stack_mac, &[probe]);
            kernel.insert(probe.clone(), k2[probe].clone());
            stack.insert(probe.clone(), s2[probe].clone());
        }
    }
    for p in [&mut stack_keepalive, &mut kernel_keepalive] {
        let _ = p.kill();
        let _ = p.wait();
    }
    daemon.stop();
    let _ = server.kill();
    let _ = server.wait();

    let mut problems = Vec::new();
    for (probe, k) in &kernel {
        let Some(s) = stack.get(probe) else {
            problems.push(format!("{probe}: no answer from the stack's run"));
            continue;
        };
        if masked(probe, k) != masked(probe, s) {
            problems.push(format!("{probe}:\n    linux: {k}\n    stack: {s}"));
        }
    }
    // Every known difference must still be there.
    for (p, field, why) in KNOWN {
        let seen = kernel.iter().any(|(probe, k)| {
            (*p == "*" || p == probe) && stack.get(probe).is_some_and(|s| field_differs(field, k, s))
        });
        if !seen {
            problems.push(format!("known difference {p}/{field} no longer seen: remove it from KNOWN ({why})"));
        }
    }
    assert!(problems.is_empty(), "differences from Linux:\n  {}", problems.join("\n  "));
}
