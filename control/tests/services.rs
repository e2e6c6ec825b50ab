//! The HTTP responder and the sockperf server on the stack, with the
//! tools people point at such servers as clients, run by the Linux kernel
//! in the peer namespace: curl (keep-alive re-use, HEAD, errors), wrk and
//! ab (load, keep-alive), sockperf ping-pong and under-load over TCP.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// Each test runs a busy-polling daemon and a load generator; two at once
/// on a two-core machine would measure each other, so they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

const BODY: usize = 10_000;

/// Runs `args` in the peer namespace, killed after `secs` seconds.
fn client(topo: &Topology, secs: u32, args: &[&str], input: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &secs.to_string(), "ip", "netns", "exec", topo.get("NS_A")]).args(args);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs the test tools)", args[0]));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(124), "{args:?} still running after {secs} s:\n{}", text(&out));
    out
}

/// stdout and stderr together, without terminal colour sequences.
fn text(o: &Output) -> String {
    let raw = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            s.push(c);
        }
    }
    s
}

/// The number right after `label` in `s` (e.g. "Complete requests:").
fn number_after(s: &str, label: &str) -> f64 {
    let at = s.find(label).unwrap_or_else(|| panic!("no {label:?} in:\n{s}")) + label.len();
    let rest = s[at..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|_| panic!("no number after {label:?} in:\n{s}"))
}

fn check_summary(daemon: Daemon) {
    let summary = daemon.stop();
    let tcp = summary.group("summary tcp worker=0");
    assert_eq!(tcp["drop_checksum"] + tcp["drop_malformed"], 0, "{tcp:?}");
    assert!(tcp["passive_opens"] > 0, "{tcp:?}");
    assert!(summary.text("summary frames worker=0").contains("balanced=yes"));
}

#[test]
fn http_responder_serves_curl_wrk_and_ab_on_persistent_connections() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("ht");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--http", &format!("80:{BODY}")]);
    let url = format!("http://{}/", topo.get("IP_STACK"));
    let url2 = format!("{url}second");

    // Two requests in one curl: both bodies complete, the second request
    // re-uses the first connection.
    let out = client(&topo, 20, &["curl", "-sS", "-v", &url, &url2], None);
    assert!(out.status.success(), "curl: {}", text(&out));
    assert_eq!(out.stdout.len(), 2 * BODY, "two bodies of {BODY} bytes");
    assert_eq!(&out.stdout[..3], b" !\"", "the chargen pattern");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("Re-using existing connection"), "{verbose}");
    assert_eq!(verbose.matches("< HTTP/1.1 200 OK").count(), 2, "{verbose}");
    assert_eq!(verbose.matches(&format!("< Content-Length: {BODY}")).count(), 2, "{verbose}");
    let out = client(
        &topo,
        20,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects} %{size_download}\n",
            &url,
            &url2,
        ],
        None,
    );
    assert_eq!(stdout(&out), format!("200 1 {BODY}\n200 0 {BODY}\n"), "one connect for two requests");

    // HEAD: the GET's Content-Length, no body.
    let out = client(&topo, 20, &["curl", "-sS", "-I", &url], None);
    let head = stdout(&out);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains(&format!("Content-Length: {BODY}\r\n")), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD response: {head:?}");

    // An upload is read and discarded, with or without chunked framing,
    // exactly to its end: the next request on the connection is answered.
    // curl holds back a body this large until it sees `100 Continue`.
    let upload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    for te in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let w = ["-sS", "-v", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"];
        let mut args = vec!["curl"];
        args.extend_from_slice(&w);
        args.extend_from_slice(&["--data-binary", "@-"]);
        args.extend_from_slice(te);
        args.extend_from_slice(&[&url, "--next"]);
        args.extend_from_slice(&w);
        args.push(&url2);
        let out = client(&topo, 30, &args, Some(&upload));
        assert_eq!(stdout(&out), "200 1\n200 0\n", "{te:?}: {}", text(&out));
        let verbose = String::from_utf8_lossy(&out.stderr);
        assert!(verbose.contains("> Expect: 100-continue") && verbose.contains("< HTTP/1.1 100 Continue"), "{verbose}");
    }

    // A malformed request gets 400 and the connection closes (nc returns
    // long before its timeout); an oversized head gets 431.
    let started = Instant::now();
    let out = client(&topo, 20, &["nc", topo.get("IP_STACK"), "80"], Some(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"));
    let reply = stdout(&out);
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n") && reply.contains("Connection: close\r\n"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(10), "the server kept the connection open");
    let big = format!("X-Big: {}", "a".repeat(9000));
    let out = client(&topo, 20, &["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &big, &url], None);
    assert_eq!(stdout(&out), "431");

    // wrk: 8 connections for 3 s, every response a 200 and no socket
    // errors (wrk prints those lines only when there are any).
    let out = client(&topo, 30, &["wrk", "-t1", "-c8", "-d3s", "--latency", &url], None);
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "wrk: {report}");
    let requests: f64 = report
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{report}"));
    assert!(requests > 0.0, "{report}");
    assert!(!report.contains("Socket errors") && !report.contains("Non-2xx"), "{report}");

    // ab -k: HTTP/1.0 with Connection: Keep-Alive; every request answered,
    // every one on a kept-alive connection.
    let out = client(&topo, 60, &["ab", "-k", "-n", "2000", "-c", "8", &url], None);
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "ab: {report}");
    assert_eq!(number_after(&report, "Complete requests:"), 2000.0, "{report}");
    assert_eq!(number_after(&report, "Failed requests:"), 0.0, "{report}");
    assert_eq!(number_after(&report, "Keep-Alive requests:"), 2000.0, "{report}");
    assert_eq!(number_after(&report, "Document Length:"), BODY as f64, "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");

    check_summary(daemon);
}

/// The statistics block of a sockperf client run: (valid-duration sent,
/// received, observations).
fn sockperf_figures(report: &str) -> (f64, f64, f64) {
    assert!(report.contains("Summary: Latency is"), "no latency summary:\n{report}");
    // No gaps: every reply arrived once and in order.
    for label in ["# dropped messages =", "# duplicated messages =", "# out-of-order messages ="] {
        assert_eq!(number_after(report, label), 0.0, "{label}\n{report}");
    }
    let valid = &report[report.find("[Valid Duration]").unwrap_or_else(|| panic!("no valid duration:\n{report}"))..];
    let total = report.lines().find(|l| l.contains(" observations")).unwrap_or_else(|| panic!("{report}"));
    (number_after(valid, "SentMessages="), number_after(valid, "ReceivedMessages="), number_after(total, "Total"))
}

#[test]
fn sockperf_server_answers_ping_pong_and_under_load_over_tcp() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = unique_name("sp");
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name, "--sockperf", "11111"]);
    let ip = topo.get("IP_STACK").to_owned();
    let base = ["sockperf", "-i", &ip, "-p", "11111", "--tcp"];
    let sockperf = |mode: &str, extra: &[&str]| {
        let mut args = vec![base[0], mode];
        args.extend_from_slice(&base[1..]);
        args.extend_from_slice(extra);
        let out = client(&topo, 40, &args, None);
        let report = text(&out);
        println!("{report}");
        assert!(out.status.success(), "sockperf {mode} {extra:?}: {report}");
        report
    };

    // Ping-pong with the default 14-byte messages: one reply per message.
    let report = sockperf("ping-pong", &["-t", "5"]);
    let (sent, received, observations) = sockperf_figures(&report);
    assert!(sent > 0.0 && received == sent, "{report}");
    assert!(observations > 0.0, "{report}");

    // Messages larger than a segment: the server reframes them.
    let report = sockperf("ping-pong", &["-t", "2", "-m", "4000"]);
    let (sent, received, observations) = sockperf_figures(&report);
    assert!(sent > 0.0 && received == sent && observations > 0.0, "{report}");

    // Under load the client asks for a reply to one message in 100
    // (its default --reply-every) and sends the rest without one.
    let report = sockperf("under-load", &["-t", "2"]);
    let (sent, received, observations) = sockperf_figures(&report);
    assert!(received > 0.0 && observations > 0.0, "{report}");
    assert!((received - sent / 100.0).abs() <= 2.0, "one reply per 100 messages: {report}");

    check_summary(daemon);
}
