//! What operators and Linux clients see of the server over time: a 10 s
//! iperf (version 2) stream into discard without a stall, the listen
//! backlog of a `hold` service with backlog 1 (section 2 of the behaviour
//! contract), and a restart right after a stop with connections open.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// iperf2 for 10 s into discard: every one-second interval moves data (no
/// stall), and the total is what the stack acknowledged.
#[test]
fn iperf_into_discard_for_ten_seconds_without_a_stall() {
    require_root();
    let name = unique_name("ip");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--discard", "9"]);
    let out = Command::new("timeout")
        .args(["40", "ip", "netns", "exec", topo.get("NS_A"), "iperf", "-c", topo.get("IP_STACK")])
        .args(["-p", "9", "-t", "10", "-i", "1", "-f", "m"])
        .output()
        .unwrap();
    let text = stdout(&out);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // Lines like "[  1] 3.0000-4.0000 sec  61.9 MBytes   519 Mbits/sec".
    let intervals: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" sec ") && l.contains("Mbits/sec"))
        .filter_map(|l| {
            let iv = l.split_whitespace().find(|w| w.contains('-') && w.contains('.'))?;
            let (a, b) = iv.split_once('-')?;
            let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
            let mbits = l.split_whitespace().rev().nth(1)?.parse::<f64>().ok()?;
            ((b - a - 1.0).abs() < 0.01).then_some(mbits)
        })
        .collect();
    assert!(intervals.len() >= 9, "one report per second: {intervals:?}");
    assert!(intervals.iter().all(|&m| m > 1.0), "an interval without progress (stall): {intervals:?}");
    let summary = daemon.stop();
    let tcp = summary.group("summary tcp worker=0");
    assert_eq!(tcp["passive_opens"], 1, "{tcp:?}");
    assert_eq!(tcp["rsts_sent"], 0, "{tcp:?}");
}

/// Counts packets seen by tcpdump on the client side.
struct Capture {
    child: Option<Child>,
}

impl Capture {
    fn start(topo: &Topology, filter: &str) -> Capture {
        let child = Command::new("ip")
            .args(["netns", "exec", topo.get("NS_A"), "tcpdump", "-n", "-l", "-tt", "-i", topo.get("IF_A"), filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // tcpdump needs a moment before it captures.
        std::thread::sleep(Duration::from_millis(700));
        Capture { child: Some(child) }
    }

    fn stop(mut self) -> String {
        let child = self.child.take().expect("stopped once");
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    /// A failed test must not leave tcpdump running.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `hold` with backlog 1 never accepts. As on Linux the accept queue is
/// full when it holds more than the backlog: two connections complete,
/// the third client's SYNs are dropped silently (no SYN|ACK, no RST) and
/// its connect() times out while it retransmits.
#[test]
fn hold_with_backlog_one_behaves_like_linux() {
    require_root();
    let name = unique_name("hb");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--hold", "5001:1"]);
    let ip = topo.get("IP_STACK").to_owned();
    let cap = Capture::start(&topo, "tcp port 5001");
    // Three clients, one after the other; each reports its outcome after
    // at most 4 s and keeps its socket open until all are done.
    let script = format!(
        "import socket,time\nsocks=[]\nfor i in range(3):\n  s=socket.socket();s.settimeout(4);t=time.time()\n  try:\n    s.connect(('{ip}',5001));print('client',i,'connected',s.getsockname()[1],flush=True)\n  except socket.timeout:\n    print('client',i,'timeout',s.getsockname()[1],round(time.time()-t,1),flush=True)\n  except OSError as e:\n    print('client',i,'error',e,flush=True)\n  socks.append(s)\ntime.sleep(0.5)"
    );
    let out = topo.exec("NS_A", &["timeout", "30", "python3", "-c", &script]);
    let text = stdout(&out);
    let dump = cap.stop();
    eprintln!("{text}\n{dump}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("client 0 connected"), "{text}");
    assert!(lines[1].starts_with("client 1 connected"), "{text}");
    assert!(lines[2].starts_with("client 2 timeout"), "{text}");
    let port3 = lines[2].split_whitespace().nth(3).unwrap();
    // The third client's SYNs: the first and its retransmissions (Linux
    // 6.x: 1 s apart at first), none answered.
    let from3 = format!(".{port3} > {ip}.5001: Flags [S]");
    let to3 = format!("{ip}.5001 > ");
    let syns = dump.lines().filter(|l| l.contains(&from3)).count();
    assert!(syns >= 3, "SYN retransmissions of the third client: {syns}\n{dump}");
    let answers = dump.lines().filter(|l| l.contains(&to3) && l.contains(&format!(".{port3}:"))).count();
    assert_eq!(answers, 0, "nothing may answer the third client (no SYN|ACK, no RST):\n{dump}");
    assert!(!dump.contains("Flags [R"), "no RST on the wire:\n{dump}");
    let summary = daemon.stop();
    let tcp = summary.group("summary tcp worker=0");
    assert_eq!(tcp["passive_opens"], 2, "{tcp:?}");
    assert!(tcp["listen_overflows"] as usize >= syns, "every dropped SYN counted: {tcp:?}");
    // Only at the stop: closing the listener resets the two connections
    // still in its accept queue, as Linux does when the process exits.
    assert_eq!(tcp["rsts_sent"], 2, "{tcp:?}");
}

/// Stopping the server with connections open closes them as a process
/// exit does on Linux (the clients read EOF), and a server started right
/// after on the same port serves at once (its listeners use reuse-address,
/// as section 6 says a restarting server must).
#[test]
fn restart_right_after_stop_with_connections_open() {
    require_root();
    let name = unique_name("rs");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let ip = topo.get("IP_STACK").to_owned();
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7"]);
    // Clients that connect, check one echo, then wait for the server to end
    // the connection and report how it ended.
    let script = format!(
        "import socket,sys\nss=[]\nfor i in range(5):\n  s=socket.create_connection(('{ip}',7),timeout=5);s.sendall(b'ping%d'%i)\n  assert s.recv(16)==b'ping%d'%i\n  ss.append(s)\nprint('open',flush=True)\nfor s in ss:\n  s.settimeout(15)\n  try:\n    print('eof' if s.recv(16)==b'' else 'data',flush=True)\n  except OSError as e:\n    print('error',e,flush=True)"
    );
    let mut clients = topo.spawn("NS_A", &["timeout", "30", "python3", "-c", &script]);
    let mut first = [0u8; 5];
    clients.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"open\n");
    let stopped = Instant::now();
    let summary = daemon.stop();
    let out = clients.wait_with_output().unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| *l == "eof").count(), 5, "clients must read EOF:\n{text}\n{:#?}", summary.lines);

    // Start again at once on the same port and echo.
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7"]);
    let restarted = stopped.elapsed();
    let check = format!(
        "import socket\ns=socket.create_connection(('{ip}',7),timeout=5);s.sendall(b'again');print(s.recv(16).decode())"
    );
    let out = topo.exec("NS_A", &["timeout", "20", "python3", "-c", &check]);
    assert_eq!(stdout(&out).trim(), "again", "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("restarted and serving {restarted:?} after the stop");
    let summary = daemon.stop();
    assert_eq!(summary.group("summary tcp worker=0")["passive_opens"], 1);
    let _ = std::io::stderr().flush();
}
