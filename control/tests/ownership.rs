//! Who owns the interface's XDP program: a second daemon never takes a
//! running daemon's interface (not even with --replace) and the first
//! keeps serving; a killed daemon's leftover program is replaced by the
//! next start, so a supervisor's restart brings the stack back; a daemon
//! whose program is detached under it stops with a clear error and a
//! non-zero status instead of serving nothing.

mod common;

use common::{require_root, unique_name, Bpffs, Daemon, Topology};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn xstackd(topo: &Topology, bpffs: &Bpffs, instance: &str, extra: &[&str]) -> std::process::Output {
    let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
    Command::new("timeout")
        .args(["-k", "5", "20", "ip", "netns", "exec", topo.get("NS_B"), env!("CARGO_BIN_EXE_xstackd")])
        .args(["-i", topo.get("IF_B"), "-a", &addr, "--instance", instance, "--bpffs"])
        .arg(&bpffs.path)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn pings(topo: &Topology) -> bool {
    let o = topo.exec("NS_A", &["ping", "-c", "3", "-i", "0.2", "-W", "1", topo.get("IP_STACK")]);
    o.status.success()
}

#[test]
fn a_second_daemon_never_takes_a_running_daemons_interface() {
    require_root();
    let name = unique_name("own");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let first = Daemon::start(&topo, &bpffs, &["--instance", &name]);
    let other = format!("{name}x");
    for extra in [&[][..], &["--replace"][..]] {
        let o = xstackd(&topo, &bpffs, &other, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "the second daemon started ({extra:?}):\n{err}");
        assert!(
            err.contains(&format!("served by a running xstackd (instance {name}")),
            "the refusal does not name the owner ({extra:?}):\n{err}"
        );
    }
    assert!(pings(&topo), "the first daemon stopped serving:\n{}", first.stderr());
    let summary = first.stop();
    assert!(summary.text("summary frames worker=0").contains("balanced=yes"));
}

#[test]
fn a_killed_daemons_program_is_replaced_by_the_next_start() {
    require_root();
    let name = unique_name("okl");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let first = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7"]);
    // A kernel peer with a connection to the echo service, driven line by
    // line: it sends each line and reports the echo, a timeout or an error.
    let peer_script = format!(
        "import errno, socket, sys\n\
         c = socket.create_connection(('{}', 7), timeout=5)\n\
         for line in sys.stdin:\n\
         \x20   word, wait = line.split()\n\
         \x20   c.settimeout(float(wait))\n\
         \x20   try:\n\
         \x20       c.sendall(word.encode())\n\
         \x20       print('echo', c.recv(100).decode(), flush=True)\n\
         \x20   except socket.timeout:\n\
         \x20       print('timeout', flush=True)\n\
         \x20   except OSError as e:\n\
         \x20       print('error', errno.errorcode.get(e.errno, e.errno), flush=True)\n",
        topo.get("IP_STACK")
    );
    let mut peer = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_A"), "python3", "-c", &peer_script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_peer = peer.stdin.take().unwrap();
    let mut from_peer = std::io::BufReader::new(peer.stdout.take().unwrap());
    let mut ask = |line: &str| {
        use std::io::{BufRead, Write};
        writeln!(to_peer, "{line}").unwrap();
        let mut answer = String::new();
        from_peer.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    };
    assert_eq!(ask("one 5"), "echo one");

    let _ = Command::new("kill").args(["-KILL", &first.pid().to_string()]).status();
    std::thread::sleep(Duration::from_millis(200));
    // The operator's tool says what happened instead of "connection refused".
    let o = Command::new(env!("CARGO_BIN_EXE_xstackctl")).args(["--instance", &name, "stats"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(&format!("no daemon is running for instance {name} (stale socket removed")),
        "{err}"
    );
    drop(first);
    // While it is down its program stays on the interface (its record
    // names a dead pid) and frames for its queue go nowhere: peers see
    // silence, their retransmissions unanswered.
    let shown = topo.exec("NS_B", &["ip", "link", "show", "dev", topo.get("IF_B")]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("xdp"), "the program went with the daemon");
    assert!(!pings(&topo), "something answered while the daemon was down");
    assert_eq!(ask("two 1"), "timeout");

    let second = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7"]);
    assert!(
        second.log_shows("no longer running (killed or crashed): replacing it", Duration::from_secs(2)),
        "{}",
        second.stderr()
    );
    assert!(pings(&topo), "the restarted daemon does not serve:\n{}", second.stderr());
    // The old connection is unknown to the new daemon: the peer's next
    // retransmission is answered with RST. New connections are served.
    assert_eq!(ask("three 15"), "error ECONNRESET");
    let fresh = topo.exec("NS_A", &["sh", "-c", &format!("echo again | timeout 5 nc -N {} 7", topo.get("IP_STACK"))]);
    assert_eq!(String::from_utf8_lossy(&fresh.stdout).trim(), "again");
    drop(to_peer);
    let _ = peer.wait();
    second.stop();
}

#[test]
fn a_daemon_whose_program_is_detached_stops_with_a_clear_error() {
    require_root();
    let name = unique_name("odt");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let mut d = Daemon::start(&topo, &bpffs, &["--instance", &name]);
    let o = topo.exec("NS_B", &["ip", "link", "set", "dev", topo.get("IF_B"), "xdp", "off"]);
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = d.exit_status() {
            break st;
        }
        assert!(Instant::now() < deadline, "the daemon still runs without its program:\n{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the daemon exited successfully:\n{}", d.stderr());
    assert!(d.stderr().contains("was detached by someone else"), "{}", d.stderr());
}

#[test]
fn topology_down_stops_a_running_daemon_cleanly() {
    require_root();
    let name = unique_name("otd");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let d = Daemon::start(&topo, &bpffs, &["--instance", &name]);
    let o = Command::new(common::repo_root().join("scripts/topology.sh")).args(["down", &name]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // SIGTERM first, the interface still there: a clean stop with its
    // summary (wait_exit checks the status).
    let summary = d.wait_exit(Duration::from_secs(15));
    assert!(summary.text("summary frames worker=0").contains("balanced=yes"), "{:#?}", summary.lines);
}

#[test]
fn shared_mode_refuses_a_port_a_kernel_listener_holds() {
    require_root();
    let name = unique_name("osh");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let kernel = topo.get("IP_B_KERNEL").to_owned();
    let mut listener = topo.spawn("NS_B", &["python3", "-m", "http.server", "8080", "--bind", &kernel]);
    topo.wait_listening("NS_B", &kernel, 8080);
    let addr = format!("{kernel}/{}", topo.get("PREFIX"));
    let o = Command::new("timeout")
        .args(["-k", "5", "20", "ip", "netns", "exec", topo.get("NS_B"), env!("CARGO_BIN_EXE_xstackd")])
        .args(["-i", topo.get("IF_B"), "-a", &addr, "--tcp-ports", "8080", "--instance", &name, "--bpffs"])
        .arg(&bpffs.path)
        .output()
        .unwrap();
    let _ = listener.kill();
    let _ = listener.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started over a kernel listener:\n{err}");
    assert!(err.contains(&format!("kernel listeners on {kernel}:8080")), "{err}");
}
