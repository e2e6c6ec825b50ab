//! The load generator's protocol workloads (`xstack-bench run http |
//! redis | memcached`) against the real Debian servers: nginx with a 1 KiB
//! and a 1 MiB file, redis-server and memcached, each on the kernel in one
//! namespace of a topology and driven from the peer namespace on both
//! kernel transports (and one run on our stack, `--stack xstack`). Every
//! response is checked by the load generator; a clean run has no error at
//! all. Servers that speak another protocol or reset every connection must
//! show up as errors of their kind within the run's time, never as a hang.
//!
//! The bench binary is found by `common::bench`.

mod common;

use common::{bench, dep_info_sources, newer_sources, repo_root, require_root, unique_name, Topology};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Servers, load generators and a busy-polling client on two cores: the
/// tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn dep_info_is_read_as_cargo_writes_it() {
    let info = "/t/debug/xstack-bench: /w/bench/src/main.rs /w/a\\ b.rs  rel/c.rs\n\n/w/bench/src/main.rs:\n";
    assert_eq!(dep_info_sources(info), ["/w/bench/src/main.rs", "/w/a b.rs", "rel/c.rs"]);
    assert!(dep_info_sources("").is_empty());
}

/// Only the sources the dep-info file lists count: a newer file beside
/// them (an editor's swap file) does not make the binary stale, a newer
/// or deleted listed source does.
#[test]
fn a_binary_is_stale_when_a_source_it_was_built_from_changed() {
    let dir = TempDir::new(&unique_name("lgd"));
    let (bin, src, swap) = (dir.0.join("xstack-bench"), dir.0.join("main.rs"), dir.0.join(".main.rs.swp"));
    let built = SystemTime::now() - Duration::from_secs(100);
    let touch = |f: &PathBuf, t: SystemTime| {
        std::fs::write(f, "").unwrap();
        std::fs::File::options().write(true).open(f).unwrap().set_modified(t).unwrap();
    };
    touch(&bin, built);
    touch(&src, built - Duration::from_secs(10));
    touch(&swap, built + Duration::from_secs(10));
    std::fs::write(bin.with_extension("d"), format!("{}: {}\n", bin.display(), src.display())).unwrap();
    assert_eq!(newer_sources(&bin, built), None);
    touch(&src, built + Duration::from_secs(10));
    assert_eq!(newer_sources(&bin, built), Some(src.display().to_string()));
    std::fs::remove_file(&src).unwrap();
    assert!(newer_sources(&bin, built).is_some_and(|s| s.starts_with(&src.display().to_string())));
}

/// A temporary directory, removed on drop (also when an assertion fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process, stopped (SIGTERM, then SIGKILL) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = self.0.try_wait() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.wait();
    }
}

struct Setup {
    topo: Topology,
    name: String,
    /// The servers' address (namespace A, the kernel's).
    server: String,
}

fn setup(tag: &str) -> Setup {
    require_root();
    let name = unique_name(tag);
    let topo = Topology::up(&name, &[]);
    let server = topo.get("IP_A").to_owned();
    Setup { topo, name, server }
}

/// nginx and its directory: stopped, then removed, on drop (the fields
/// drop in this order), also when an assertion fails first.
struct Nginx {
    _server: Server,
    _dir: TempDir,
}

/// One finished `xstack-bench run`.
struct Run {
    json: Value,
    stderr: String,
    took: Duration,
}

impl Run {
    fn u(&self, k: &str) -> u64 {
        self.json[k].as_u64().unwrap_or_else(|| panic!("no {k} in {}", self.json))
    }

    fn ok(&self) -> u64 {
        self.json["app"]["ok"].as_u64().unwrap_or_else(|| panic!("no app.ok in {}", self.json))
    }

    /// Errors of one kind (status, protocol, reset, closed, ...).
    fn errors(&self, kind: &str) -> u64 {
        self.json["app"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["count"].as_u64().unwrap())
            .sum()
    }

    /// Every response right, a nonzero count, and latency for each.
    fn assert_clean(&self, what: &str) {
        assert_eq!(self.u("errors"), 0, "{what}: {}\n{}", self.json["first_error"], self.stderr);
        assert!(self.ok() > 0 && self.u("ops") == self.ok(), "{what}: nothing answered:\n{}", self.stderr);
        assert_eq!(self.json["latency"]["count"].as_u64(), Some(self.ok()), "{what}");
    }
}

impl Setup {
    /// `xstack-bench run ARGS` in namespace B. On a loaded machine a
    /// window can pass with the server never scheduled: nothing done and
    /// nothing wrong. Such a starved window is measured again, at most
    /// twice (broken logic never completes anything and still fails).
    fn run(&self, args: &[&str]) -> Run {
        let mut attempt = 1;
        loop {
            let r = self.run_once(args);
            if r.u("ops") > 0 || r.u("errors") > 0 || attempt == 3 {
                return r;
            }
            attempt += 1;
        }
    }

    /// `xstack-bench run ARGS` in namespace B, bounded by `timeout`.
    fn run_once(&self, args: &[&str]) -> Run {
        let out = std::env::temp_dir().join(format!("xstack-loadgen-{}.json", self.name));
        let _ = std::fs::remove_file(&out);
        let started = Instant::now();
        let o = Command::new("timeout")
            .args(["-k", "5", "30", "ip", "netns", "exec", self.topo.get("NS_B")])
            .arg(bench())
            .arg("run")
            .args(args)
            .args(["--warmup", "0.2", "--duration", "1", "--quiet", "--out"])
            .arg(&out)
            // A server starved of its core on a loaded machine is slow,
            // not wrong: clean runs wait longer than the default 2 s.
            .args(if args.contains(&"--timeout") { &[][..] } else { &["--timeout", "5"][..] })
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_ne!(o.status.code(), Some(124), "{args:?} still running after 30 s:\n{stderr}");
        assert!(o.status.success(), "{args:?} failed ({}):\n{stderr}", o.status);
        let json = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let _ = std::fs::remove_file(&out);
        eprintln!("{args:?}:\n{stderr}");
        Run { json, stderr, took }
    }

    fn spawn(&self, args: &[&str], port: u16) -> Server {
        let s = Server(self.topo.spawn("NS_A", args));
        self.topo.wait_listening("NS_A", &self.server, port);
        s
    }

    /// nginx (one process) serving a 1 KiB and a 1 MiB file on port 8080.
    fn nginx(&self) -> Nginx {
        let tmp = TempDir::new(&format!("xstack-loadgen-nginx-{}", self.name));
        let dir = &tmp.0;
        let html = dir.join("html");
        std::fs::create_dir_all(&html).unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(html.join("1k.html"), "x".repeat(1024)).unwrap();
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(html.join("1m.bin"), &big).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; server {{ listen {a}:8080; root {d}/html; }} }}\n",
                d = dir.display(),
                a = self.server
            ),
        )
        .unwrap();
        let server = self.spawn(&["nginx", "-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()], 8080);
        Nginx { _server: server, _dir: tmp }
    }

    fn redis(&self) -> Server {
        self.spawn(
            &[
                "redis-server",
                "--bind",
                &self.server,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            6379,
        )
    }

    fn memcached(&self) -> Server {
        self.spawn(&["memcached", "-u", "root", "-l", &self.server, "-p", "11211", "-t", "1", "-U", "0"], 11211)
    }
}

#[test]
fn nginx_files_fetched_and_every_response_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("lgn");
    let _nginx = s.nginx();
    let url = |f: &str| format!("http://{}:8080/{f}", s.server);
    let (u1k, u1m) = (url("1k.html"), url("1m.bin"));
    let runs: [(&str, Vec<&str>); 4] = [
        ("1 MiB", vec!["--stack", "kernel-default", "--connections", "2", "--expect-size", "1048576"]),
        ("1 KiB, blocking", vec!["--stack", "kernel-default", "--connections", "2", "--expect-size", "1024"]),
        ("1 KiB, spinning, pipelined", vec!["--stack", "kernel-spin", "--pipeline", "4", "--expect-size", "1024"]),
        ("1 KiB, a connection per request", vec!["--stack", "kernel-spin", "--new-connection"]),
    ];
    for (what, extra) in runs {
        let u = if what == "1 MiB" { &u1m } else { &u1k };
        let mut args = vec!["http", "--url", u];
        args.extend(extra);
        let r = s.run(&args);
        r.assert_clean(what);
        let statuses = r.json["app"]["statuses"].as_array().unwrap();
        assert!(statuses.len() == 1 && statuses[0]["code"] == 200, "{what}: {statuses:?}");
    }
    // A path that is not there: every response counted as a status error.
    let r = s.run(&["http", "--url", &url("missing"), "--stack", "kernel-spin"]);
    assert_eq!(r.u("ops"), 0);
    assert!(r.errors("status") > 0 && r.errors("status") == r.u("errors"), "{}", r.stderr);
    assert!(r.stderr.contains("404 Not Found"), "the first example is printed:\n{}", r.stderr);
}

#[test]
fn redis_commands_and_every_reply_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("lgr");
    let _redis = s.redis();
    let common = ["redis", "--target", &s.server, "--keyspace", "1000", "--value-size", "64"];
    let mut closed = common.to_vec();
    closed.extend([
        "--stack",
        "kernel-default",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--mix",
        "get=8,set=1,incr=1",
    ]);
    s.run(&closed).assert_clean("closed loop, pipelined");
    // Open loop: the offered rate is what was done.
    let mut open = common.to_vec();
    open.extend(["--stack", "kernel-spin", "--connections", "2", "--rate", "2000", "--key-pattern", "sequential"]);
    let r = s.run(&open);
    r.assert_clean("open loop");
    assert!(r.json["uncorrected"]["count"].as_u64().is_some(), "the uncorrected latency is kept");
    let due = r.u("ops") + r.u("unsent") + r.u("incomplete");
    assert!((1600..=2400).contains(&due), "about 2000 requests due in 1 s, {due}");
}

#[test]
fn memcached_sets_and_gets_every_reply_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("lgm");
    let _mc = s.memcached();
    for (stack, extra) in [("kernel-default", ["--connections", "2"]), ("kernel-spin", ["--pipeline", "4"])] {
        let args = ["memcached", "--target", &s.server, "--stack", stack, "--keyspace", "500", "--value-size", "200"];
        let mut args = args.to_vec();
        args.extend(extra);
        s.run(&args).assert_clean(stack);
    }
}

#[test]
fn wrong_protocols_and_resets_are_counted_errors_not_hangs() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("lgw");
    let _redis = s.redis();
    let script = repo_root().join("control/tests/support/misbehaving_server.py");
    let script = script.to_str().unwrap();
    let _garbage = s.spawn(&["python3", script, "garbage", &s.server, "7001"], 7001);
    let _reset = s.spawn(&["python3", script, "reset", &s.server, "7002"], 7002);
    let _deaf = s.spawn(&["python3", script, "deaf", &s.server, "7003"], 7003);
    let cases: [(&[&str], &str); 5] = [
        // A real server of another protocol: redis takes memcached's
        // commands for inline commands and answers in RESP (`$-1`, nil, to
        // a get; an error to a set), which is no memcached reply.
        (&["memcached", "--port", "6379", "--stack", "kernel-default"], "protocol"),
        (&["http", "--port", "7001", "--stack", "kernel-spin"], "protocol"),
        (&["redis", "--port", "7001", "--stack", "kernel-default"], "protocol"),
        (&["http", "--port", "7002", "--stack", "kernel-default", "--pipeline", "2"], "reset"),
        // A request larger than the socket buffers to a server that reads
        // nothing: the blocking send never finishes, the request times out.
        (
            &["http", "--port", "7003", "--stack", "kernel-default", "--method", "POST", "--body-size", "16777216"],
            "timeout",
        ),
    ];
    for (args, kind) in cases {
        let mut args = args.to_vec();
        args.extend(["--target", &s.server, "--timeout", "0.5"]);
        let r = s.run(&args);
        let what = format!("{args:?}");
        // 1.2 s of run; a blocking receive may wait up to a second more.
        assert!(r.took < Duration::from_secs(6), "{what} took {:?}", r.took);
        assert_eq!(r.ok(), 0, "{what}");
        // A reset that comes while the client sends can read as a close;
        // a server starved of its core can time a request out.
        let n = r.errors(kind)
            + if kind == "reset" { r.errors("closed") } else { 0 }
            + if kind == "timeout" { 0 } else { r.errors("timeout") };
        assert!(r.errors(kind) > 0 && n == r.u("errors"), "{what}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("{kind} errors:")), "{what}: no example printed:\n{}", r.stderr);
        // The requests lost with the failed connections are counted.
        let lost = r.json["app"]["abandoned"].as_u64().unwrap();
        assert!(lost > 0 && r.u("incomplete") >= lost, "{what}: {lost} abandoned\n{}", r.stderr);
    }
}

/// Our stack as the client (library mode on the stack side of the
/// topology, its own address) fetching from the kernel's nginx.
#[test]
fn the_xstack_transport_fetches_from_nginx() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("lgx");
    let _nginx = s.nginx();
    let me = format!("{}/{}", s.topo.get("IP_STACK"), s.topo.get("PREFIX"));
    let neighbour = format!("{}={}", s.server, s.topo.get("MAC_A"));
    let url = format!("http://{}:8080/1k.html", s.server);
    let r = s.run(&[
        "http",
        "--url",
        &url,
        "--expect-size",
        "1024",
        "--stack",
        "xstack",
        "--xstack-if",
        s.topo.get("IF_B"),
        "--xstack-addr",
        &me,
        "--xstack-neighbour",
        &neighbour,
    ]);
    r.assert_clean("xstack");
    assert_eq!(r.json["stack"], "xstack");
}
