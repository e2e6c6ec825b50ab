//! Hostile load from the peer namespace (`xstack-bench flood`, AF_XDP
//! from one core, as fast as the path takes it), each with what must hold
//! afterwards: the legitimate clients were served during it, and the stack
//! holds nothing the flood left behind.
//!
//! The stack's gateway is the peer's kernel address, so what the stack
//! sends to the flood's random sources (SYN|ACKs, resets) goes there and
//! is dropped (the peer does not forward): into the void, as on the
//! Internet.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A flood takes a core: the tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

struct Setup {
    topo: Topology,
    _bpffs: Bpffs,
    daemon: Option<Daemon>,
    name: String,
}

impl Setup {
    fn new(tag: &str, extra: &[&str]) -> Setup {
        let name = unique_name(tag);
        let topo = Topology::up(&name, &[]);
        let bpffs = Bpffs::mount(&name);
        let mut args = vec!["--instance", &name, "-g", topo.get("IP_A")];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(&topo, &bpffs, &args);
        Setup { daemon: Some(daemon), topo, _bpffs: bpffs, name }
    }

    fn ip(&self) -> String {
        self.topo.get("IP_STACK").to_owned()
    }

    /// Starts `xstack-bench flood KIND` on core 0 of the peer namespace.
    fn flood(&self, kind: &str, port: u16, seconds: f64, extra: &[&str]) -> Child {
        let mac = self.daemon.as_ref().unwrap().ready("mac");
        let target = format!("{}:{port}", self.ip());
        let secs = seconds.to_string();
        let bench = bench();
        let mut args = vec![
            bench.to_str().unwrap(),
            "flood",
            kind,
            "--ifname",
            self.topo.get("IF_A"),
            "--dst-mac",
            &mac,
            "--target",
            &target,
            "--duration",
            &secs,
            "--cpu",
            "0",
        ];
        args.extend_from_slice(extra);
        self.topo.spawn("NS_A", &args)
    }

    fn stats(&self) -> Value {
        ctl_stats(&self.name)
    }

    /// Waits until the stack holds no connection (TIME_WAIT records
    /// aside), request, timer or buffer chunk, and only `sockets` sockets
    /// (its listeners); asserts it did within `timeout`.
    fn settles(&self, sockets: u64, timeout: Duration) -> Value {
        let quiet = |st: &Value| {
            let held = |k| figure(st, "resources", k);
            held("connections") == held("time_waits")
                && held("requests") == 0
                && held("timers") == 0
                && held("buffer_chunks") == 0
                && held("sockets") == sockets
        };
        let st = stats_until(&self.name, timeout, quiet);
        assert!(quiet(&st), "the stack still holds {} after {timeout:?}", st["workers"][0]["resources"]);
        st
    }

    fn stop(mut self) {
        let summary = self.daemon.take().unwrap().stop();
        let frames = summary.text("summary frames worker=0").to_owned();
        assert!(frames.contains("balanced=yes"), "{frames}");
    }
}

/// The flood's JSON line and how long it ran.
fn flood_result(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "flood failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim());
    serde_json::from_slice(&out.stdout).expect("flood prints JSON")
}

/// Python in the peer namespace: `n` connections one after another, each
/// echoing a line; prints how many succeeded and the first error.
fn clients(topo: &Topology, ip: &str, n: usize) -> std::process::Output {
    let script = format!(
        "import socket,time\nok=0\nerr=None\nt=time.monotonic()\nfor i in range({n}):\n  try:\n    s=socket.create_connection(('{ip}',7),timeout=10);s.settimeout(10)\n    m=b'hello %d' % i;s.sendall(m)\n    got=b''\n    while len(got)<len(m):\n      b=s.recv(64)\n      if not b: raise ConnectionError('EOF')\n      got+=b\n    assert got==m,(got,m)\n    s.close();ok+=1\n  except Exception as e:\n    err=err or repr(e)\nprint(ok,round(time.monotonic()-t,2),err)"
    );
    topo.exec("NS_A", &["timeout", "120", "python3", "-c", &script])
}

/// SYNs from random sources, from a second before the clients start until
/// they are done: the listener's SYN queue fills and SYN cookies take
/// over (as Linux's tcp_syncookies=1), so 100 legitimate clients that
/// connect during the flood all get through; when it ends, the half-open
/// requests time out (synack_retries set to 1 to see that within seconds)
/// and nothing is left.
#[test]
fn a_syn_flood_from_random_sources_keeps_no_client_out() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("hsy", &["--echo", "7"]);
    let set = std::process::Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--instance", &s.name, "set", "synack_retries", "1"])
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    // 50,000 SYNs a second: several times what the SYN queue holds per
    // second of its timeout, and within what a debug build's worker takes
    // beside the clients (the release figures at the peer's full rate are
    // in docs/benchmarks.md).
    let mut flood = s.flood("syn", 7, 120.0, &["--rate", "50000"]);
    std::thread::sleep(Duration::from_millis(2000));
    let out = clients(&s.topo, &s.ip(), 100);
    let during = flood.try_wait().unwrap().is_none();
    let text = stdout(&out);
    let st = s.stats();
    let _ = std::process::Command::new("kill").args(["-TERM", &flood.id().to_string()]).status();
    let sent = flood_result(flood);
    eprintln!("clients: {text}");
    assert!(during, "the clients took longer than the flood: nothing was shown");
    assert!(text.starts_with("100 "), "legitimate clients refused during the flood: {text}");
    let tcp = |k| figure(&st, "tcp", k);
    assert!(tcp("syncookies_sent") > 10_000, "{}", st["workers"][0]["tcp"]);
    assert!(tcp("syncookies_recv") > 0, "the clients did not come through cookies: {}", st["workers"][0]["tcp"]);
    assert!(sent["sent"].as_u64().unwrap() > 90_000, "{sent}");
    // SYN-RECV requests go after one resend (1 s + 2 s).
    s.settles(1, Duration::from_secs(15));
    s.stop();
}

/// ACKs, RSTs and data segments for connections that do not exist, from
/// random sources: answered with resets as Linux does (never a reset for
/// a reset), no state made; a client echoing on a connection of its own
/// and opening new ones meanwhile sees nothing of it.
#[test]
fn floods_of_segments_for_no_connection_leave_nothing_and_disturb_no_one() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("hno", &["--echo", "7"]);
    let ip = s.ip();
    // 10 s of echoes on one connection and a new connection every 0.5 s.
    let script = format!(
        "import socket,time\nc=socket.create_connection(('{ip}',7),timeout=10);c.settimeout(10)\nops=new=0\nt=time.monotonic();last=t\nwhile time.monotonic()-t<10:\n  m=b'x'*100;c.sendall(m);got=b''\n  while len(got)<100: got+=c.recv(100)\n  assert got==m\n  ops+=1\n  if time.monotonic()-last>0.5:\n    last=time.monotonic();n=socket.create_connection(('{ip}',7),timeout=10);n.settimeout(10);n.sendall(b'n');assert n.recv(1)==b'n';n.close();new+=1\n  time.sleep(0.01)\nc.close()\nprint(ops,new)"
    );
    let client = s.topo.spawn("NS_A", &["timeout", "60", "python3", "-c", &script]);
    std::thread::sleep(Duration::from_millis(500));
    let before = s.stats();
    let mut sent = std::collections::HashMap::new();
    for kind in ["ack", "rst", "data"] {
        let r = flood_result(s.flood(kind, 9, 2.0, &[]));
        sent.insert(kind, r["sent"].as_u64().unwrap());
    }
    let mid = s.stats();
    // ACKs to the listener's port: no cookie of ours, answered with RST.
    let r = flood_result(s.flood("ack", 7, 2.0, &[]));
    let to_listener = r["sent"].as_u64().unwrap();
    let out = client.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "the client failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("client echoes and new connections: {text}; flood: {sent:?}");
    let after = s.settles(1, Duration::from_secs(10));
    let delta = |a: &Value, b: &Value, k| figure(b, "tcp", k) - figure(a, "tcp", k);
    let answered = delta(&before, &mid, "rsts_sent");
    // Every ACK and data segment that reached the stack was answered with
    // a reset; no RST was (tcp_v4_send_reset never answers one).
    assert!(answered > 0, "no reset answered the flood");
    assert!(answered <= sent["ack"] + sent["data"], "resets answered resets: {answered} > {sent:?}");
    assert!(delta(&before, &mid, "drop_no_socket") >= answered, "{}", mid["workers"][0]["tcp"]);
    let answered = delta(&mid, &after, "rsts_sent");
    assert!(answered > 0 && answered <= to_listener, "{answered} resets for {to_listener} ACKs to the listener");
    assert_eq!(delta(&before, &after, "estab_resets"), 0, "a flood segment reset a real connection");
    s.stop();
}

/// Segments with random sequence and acknowledgment numbers on an
/// established connection's 4-tuple (a blind attack, RFC 5961) at the
/// highest rate: first RSTs, SYNs and ACKs for 3 s, which Linux answers at
/// most once per 500 ms on a connection (tcp_invalid_ratelimit, through
/// tcp_oow_rate_limited for the out-of-window ACK and the challenge ACK to
/// a SYN alike); then data for 1 s, which Linux answers segment for
/// segment (tcp_oow_rate_limited exempts data: no ACK loop can come of
/// it). The connection lives on; so must it on the stack.
#[test]
fn an_out_of_window_flood_on_a_connection_gets_rate_limited_answers_and_kills_nothing() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("how", &["--echo", "7"]);
    let ip = s.ip();
    let script = format!(
        "import socket,sys\nc=socket.create_connection(('{ip}',7),timeout=10);c.settimeout(10)\nc.sendall(b'before');assert c.recv(6)==b'before'\nprint(c.getsockname()[1],flush=True)\nsys.stdin.readline()\ntry:\n  c.sendall(b'after');print(c.recv(5).decode(),flush=True)\nexcept OSError as e:\n  print('error',e,flush=True)"
    );
    let mut client = s.topo.spawn_driven("NS_A", &["timeout", "60", "python3", "-c", &script]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    // The client's delayed ACK of the echo, and nothing else, is behind.
    std::thread::sleep(Duration::from_millis(300));
    let source = format!("{}:{port}", s.topo.get("IP_A"));
    let delta = |a: &Value, b: &Value, k| figure(b, "tcp", k) - figure(a, "tcp", k);

    let before = s.stats();
    let seconds = 3.0;
    let control = flood_result(s.flood("out-of-window", 7, seconds, &["--source", &source]));
    let mid = s.stats();
    let data = flood_result(s.flood("out-of-window-data", 7, 1.0, &["--source", &source]));
    let after = s.stats();
    writeln!(client.stdin.as_mut().unwrap()).unwrap();
    let answer = lines.next().unwrap().unwrap();
    let _ = client.wait();

    let (to_control, to_data) = (delta(&before, &mid, "segments_out"), delta(&mid, &after, "segments_out"));
    let (control, data) = (control["sent"].as_u64().unwrap(), data["sent"].as_u64().unwrap());
    eprintln!(
        "{control} RSTs, SYNs and ACKs: {to_control} answers ({} challenge ACKs); {data} data segments: {to_data} answers",
        delta(&before, &mid, "challenge_acks")
    );
    assert!(control > 10_000 && data > 1_000, "{control} {data}");
    assert_eq!(answer, "after", "the connection did not survive the flood");
    // One answer per 500 ms at most (and one at the start of the flood).
    let bound = (seconds / 0.5) as u64 + 2;
    assert!(to_control >= 1, "the flood went unanswered: is it reaching the connection?");
    assert!(to_control <= bound, "{to_control} answers in {seconds} s, at most {bound} allowed");
    // Each data segment that reached the connection got its ACK.
    assert!(to_data > 100 && to_data <= data, "{to_data} answers to {data} data segments");
    assert_eq!(delta(&before, &after, "rsts_sent"), 0);
    assert_eq!(delta(&before, &after, "estab_resets"), 0);
    s.settles(1, Duration::from_secs(10));
    s.stop();
}

/// 200 clients that connect to the source service (100 MB each) and never
/// read: the stack queues only what the peers' windows and its send
/// buffers allow, a bounded amount per connection, while another client is
/// served; when the readers die (their kernel resets the connections with
/// data unread), every byte of it is given back.
#[test]
fn clients_that_never_read_hold_bounded_memory_and_give_it_all_back() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("hsl", &["--echo", "7", "--source", "19:100000000"]);
    let ip = s.ip();
    let n = 200;
    let script = format!(
        "import socket,sys\nss=[socket.create_connection(('{ip}',19),timeout=10) for _ in range({n})]\nprint('open',flush=True)\nsys.stdin.readline()"
    );
    let mut holders = s.topo.spawn_driven("NS_A", &["timeout", "120", "python3", "-c", &script]);
    let mut lines = BufReader::new(holders.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    // The queues fill until the peers' windows close.
    let started = Instant::now();
    let mut last = 0;
    let full = loop {
        std::thread::sleep(Duration::from_millis(500));
        let st = s.stats();
        let chunks = figure(&st, "resources", "buffer_chunks");
        if (chunks == last && chunks > 0) || started.elapsed() > Duration::from_secs(20) {
            break st;
        }
        last = chunks;
    };
    let chunks = figure(&full, "resources", "buffer_chunks");
    let per_conn = chunks * figure(&full, "resources", "buffer_chunk_bytes") / n;
    eprintln!("{n} connections that never read hold {chunks} chunks, {per_conn} bytes each");
    // Bounded by the send buffer's ceiling (tcp_wmem[2], 4 MiB), and in
    // fact by what the peer's window took plus the send buffer.
    assert!(per_conn > 0 && per_conn <= 4 << 20, "{per_conn} bytes per connection");
    assert_eq!(figure(&full, "tcp", "aborts_on_memory"), 0);
    let out = clients(&s.topo, &ip, 20);
    assert!(stdout(&out).starts_with("20 "), "a client was not served: {}", stdout(&out));
    // The holders exit with data unread: their kernel resets every
    // connection (tcp_close's RST for unread data), and the stack lets go.
    drop(holders.stdin.take());
    let _ = holders.wait();
    s.settles(2, Duration::from_secs(15));
    s.stop();
}

/// 10,000 clients that trickle a request head a byte a second (slowloris)
/// to the HTTP service with a 4-second header limit
/// (`--http-timeouts`): each is closed 4 s after it connected, give or
/// take the batches it connected in, while a legitimate client is served
/// every second; afterwards nothing is held. Without the limit every one
/// of them would hold its connection (and an 8 KiB head buffer) for as
/// long as it kept trickling.
#[test]
fn ten_thousand_slow_clients_are_cut_off_at_the_header_limit() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new("hlo", &["--http", "80:1000", "--http-timeouts", "4:10:10:5"]);
    let script = repo_root().join("control/tests/support/slow_clients.py");
    let out = s.topo.exec(
        "NS_A",
        &[
            "timeout",
            "120",
            "python3",
            script.to_str().unwrap(),
            &s.ip(),
            "80",
            "--clients",
            "10000",
            "--seconds",
            "40",
        ],
    );
    let text = stdout(&out);
    eprintln!("slow clients: {text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(text.trim()).expect("slow_clients.py prints JSON");
    let n = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
    let secs = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!((n("made"), n("connect_failures")), (10_000, 0), "{r}");
    assert_eq!((n("closed_by_server"), n("still_open")), (10_000, 0), "{r}");
    // Not before the limit, and not much after it (a 100 ms timer tick,
    // the accept queue between a client's connect and the accept).
    assert!(secs("lifetime_min") >= 3.5 && secs("lifetime_max") <= 7.0, "{r}");
    assert!(n("legit_served") >= 3 && n("legit_failed") == 0, "{r}");
    let st = s.settles(1, Duration::from_secs(15));
    // The service counts what it cut off (xstackctl stats, "Services").
    assert_eq!(figure(&st, "services", "http_timeouts"), 10_000, "{}", st["workers"][0]["services"]);
    assert!(figure(&st, "services", "http_responses") >= 3);
    s.stop();
}
