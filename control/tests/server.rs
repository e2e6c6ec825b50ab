//! The server's services on the stack, with the Linux kernel as the client:
//! nc against echo (with half-close), source and discard; a closed port
//! refused with RST.

mod common;

use std::process::Stdio;

use common::*;

fn sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut child =
        std::process::Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// Runs `nc` in the peer namespace with `input` on stdin.
fn nc(topo: &Topology, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["20", "ip", "netns", "exec", topo.get("NS_A"), "nc"]).args(args);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

#[test]
fn echo_discard_source_and_refusal_against_linux_clients() {
    require_root();
    let name = unique_name("sv");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon =
        Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--discard", "9", "--source", "19:250000"]);
    let ip = topo.get("IP_STACK").to_owned();

    // Echo 2 MB of random data; nc -N shuts down its sending side at the end
    // of its input (half-close) and must still receive the whole echo.
    let data: Vec<u8> = {
        let mut v = vec![0u8; 2 << 20];
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut v)).unwrap();
        v
    };
    let out = nc(&topo, &["-N", &ip, "7"], &data);
    assert!(out.status.success(), "nc echo: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), data.len(), "echoed length");
    assert_eq!(sha256(&out.stdout), sha256(&data), "echoed bytes differ");

    // Source: exactly the configured bytes of the chargen pattern, then FIN.
    let out = nc(&topo, &["-d", &ip, "19"], b"");
    assert_eq!(out.stdout.len(), 250_000);
    assert_eq!(&out.stdout[..3], b" !\"");

    // Discard: takes everything, closes after our FIN.
    let out = nc(&topo, &["-N", &ip, "9"], &data);
    assert!(out.status.success(), "nc discard: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());

    // A port nobody listens on: RST, ECONNREFUSED at once.
    let out = nc(&topo, &["-z", "-v", &ip, "81"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"), "{}", String::from_utf8_lossy(&out.stderr));

    let summary = daemon.stop();
    let tcp = summary.group("summary tcp worker=0");
    assert_eq!(tcp["passive_opens"], 3, "{tcp:?}");
    assert!(tcp["rsts_sent"] >= 1 && tcp["drop_no_socket"] >= 1, "{tcp:?}");
    assert_eq!(tcp["drop_checksum"] + tcp["drop_malformed"], 0, "{tcp:?}");
    assert!(summary.text("summary frames worker=0").contains("balanced=yes"));
}

/// Through a router that loses, duplicates, delays and reorders packets in
/// both directions, echo and bulk transfers still deliver every byte.
#[test]
fn echo_and_bulk_survive_loss_duplication_delay_and_reordering() {
    require_root();
    let name = unique_name("sf");
    let topo = Topology::up(&name, &["--router", "--netem", "loss 1% duplicate 1% delay 5ms reorder 25%"]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--echo", "7", "--source", "19:3000000"]);
    let ip = topo.get("IP_STACK").to_owned();
    let data: Vec<u8> = {
        let mut v = vec![0u8; 1 << 20];
        std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut v)).unwrap();
        v
    };
    let out = nc(&topo, &["-N", &ip, "7"], &data);
    assert!(out.status.success(), "nc echo: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), data.len(), "echoed length");
    assert_eq!(sha256(&out.stdout), sha256(&data), "echoed bytes differ");
    let out = nc(&topo, &["-d", &ip, "19"], b"");
    assert_eq!(out.stdout.len(), 3_000_000, "bulk from the stack");
    let period = 95 * 74;
    let pattern = &out.stdout[..period];
    assert!(out.stdout.chunks(period).all(|c| c == &pattern[..c.len()]), "bulk bytes differ from the pattern");
    let summary = daemon.stop();
    let tcp = summary.group("summary tcp worker=0");
    assert!(tcp["retransmits"] > 0, "a lossy path must have caused retransmissions: {tcp:?}");
}
