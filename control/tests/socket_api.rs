//! The socket API for application threads on the real stack: the
//! `xstack-socket-echo` program (blocking TcpListener/TcpStream, one thread per
//! connection, running on the daemon's workers) against Linux clients, on
//! one and on two queues; stopped by a signal, or drained by the operator.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How the test stops the server once the load is done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Signal,
    /// `xstackctl drain`: the listener closes on every worker, the thread
    /// blocked in accept() fails with EINVAL and the program ends by
    /// itself once no connection is left.
    Drain,
}

fn run(queues: &str, tag: &str, how: Stop) {
    require_root();
    let name = unique_name(tag);
    let topo = Topology::up(&name, &["--queues", queues]);
    let bpffs = Bpffs::mount(&name);
    let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
    let exe = env!("CARGO_BIN_EXE_xstack-socket-echo");
    let mut server = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_B")])
        .arg(exe)
        .args(["7", "-i", topo.get("IF_B"), "-a", &addr, "--instance", &name, "--queues", queues])
        .args(["--poll", "adaptive", "--bpffs"])
        .arg(&bpffs.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    // Read all along, so a chatty daemon never blocks on a full pipe.
    let err_pipe = server.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || BufReader::new(err_pipe).lines().map_while(Result::ok).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = lines.next().expect("xstack-socket-echo ended before listening").unwrap();
        if l.starts_with("xstack-socket-echo listening") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // 50 concurrent connections, 64 KiB each, echoed and verified, with
    // half-close.
    let script = repo_root().join("control/tests/support/echo_load.py");
    let out = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", topo.get("NS_A"), "python3"])
        .arg(&script)
        .args([topo.get("IP_STACK"), "7", "--conns", "50", "--bytes", "65536", "--timeout", "100"])
        .output()
        .unwrap();
    let report = stdout(&out);
    let mut drained = String::new();
    match how {
        Stop::Signal => {
            let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
        }
        Stop::Drain => {
            let o = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
                .args(["--socket", &format!("/run/xstack/{name}.sock"), "drain", "--timeout", "20"])
                .output()
                .unwrap();
            drained = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
        }
    }
    // Bounded: a server that does not end is killed, and the test fails.
    let end = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = server.kill();
            let _ = server.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let log = stderr.join().unwrap();
    assert!(
        out.status.success() && report.contains("verified=50 failed=0"),
        "{report}{}\n{rest:#?}\n{log:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("xstack-socket-echo did not end\n{drained}\n{log:#?}"));
    assert!(status.success(), "xstack-socket-echo exited with {status}\n{log:#?}");
    if how == Stop::Drain {
        let workers = queues.parse::<usize>().unwrap();
        assert!(drained.contains(&format!("{workers} listener(s) closed")), "{drained}");
        // The accept loop's thread woke with EINVAL rather than staying
        // blocked on a listener that is gone.
        assert!(log.iter().any(|l| l.contains("xstack-socket-echo: accept: invalid argument")), "{log:#?}");
        assert!(log.iter().any(|l| l.contains("drained")), "{log:#?}");
    }
    // The daemon's summary: every frame accounted for.
    for q in 0..queues.parse::<usize>().unwrap() {
        let frames = rest.iter().find(|l| l.starts_with(&format!("summary frames worker={q} "))).unwrap();
        assert!(frames.contains("balanced=yes"), "{frames}");
    }
}

#[test]
fn threads_echo_through_the_socket_api_on_one_queue() {
    run("1", "sa", Stop::Signal);
}

#[test]
fn threads_echo_through_the_socket_api_on_two_queues_then_drain() {
    run("2", "sab", Stop::Drain);
}
