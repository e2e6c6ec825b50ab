//! The socket API for application threads on the real stack: the
//! `xstack-socket-echo` program (blocking TcpListener/TcpStream, one thread per
//! connection, running on the daemon's workers) against Linux clients, on
//! one and on two queues.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(queues: &str, tag: &str) {
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
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = server.wait().unwrap();
    assert!(out.status.success() && report.contains("verified=50 failed=0"), "{report}\n{rest:#?}");
    assert!(status.success(), "xstack-socket-echo exited with {status}");
    // The daemon's summary: every frame accounted for.
    for q in 0..queues.parse::<usize>().unwrap() {
        let frames = rest.iter().find(|l| l.starts_with(&format!("summary frames worker={q} "))).unwrap();
        assert!(frames.contains("balanced=yes"), "{frames}");
    }
}

#[test]
fn threads_echo_through_the_socket_api_on_one_queue() {
    run("1", "sa");
}

#[test]
fn threads_echo_through_the_socket_api_on_two_queues() {
    run("2", "sab");
}
