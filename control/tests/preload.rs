//! Unmodified Debian servers and clients on the stack through the preload
//! library (xstack-run): redis, nginx (two workers: fork, sendfile,
//! reload), memcached (threads), python's blocking http.server, preloaded
//! clients connecting out, the epoll semantics program compared with the
//! kernel's, a SIGKILLed server, and no daemon at all. Each test makes its
//! own topology and daemon; the daemon's address is the stack's alone.

mod common;

use common::{require_root, stdout, unique_name, Bpffs, Daemon, Topology};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Servers, load generators and a busy-polling worker on two cores: the
/// tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn xstack_run() -> &'static str {
    env!("CARGO_BIN_EXE_xstack-run")
}

struct Setup {
    topo: Topology,
    _bpffs: Bpffs,
    daemon: Option<Daemon>,
    name: String,
    stack: String,
    peer: String,
}

fn setup(tag: &str) -> Setup {
    require_root();
    let name = unique_name(tag);
    let topo = Topology::up(&name, &[]);
    let bpffs = Bpffs::mount(&name);
    let daemon = Daemon::start(&topo, &bpffs, &["--instance", &name]);
    let stack = topo.get("IP_STACK").to_owned();
    let peer = topo.get("IP_A").to_owned();
    Setup { topo, _bpffs: bpffs, daemon: Some(daemon), name, stack, peer }
}

impl Setup {
    /// A preloaded command in the stack's namespace, registered with this
    /// test's daemon.
    fn spawn_preloaded(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", self.topo.get("NS_B"), xstack_run(), "--instance", &self.name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e} (scripts/setup.sh installs the servers)"))
    }

    fn run_preloaded(&self, secs: u32, args: &[&str]) -> Output {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", &secs.to_string(), "ip", "netns", "exec", self.topo.get("NS_B"), xstack_run()])
            .args(["--instance", &self.name])
            .args(args);
        c.output().unwrap()
    }

    /// A kernel command in the peer namespace, killed after `secs`.
    fn peer_run(&self, secs: u32, args: &[&str]) -> Output {
        let out = Command::new("timeout")
            .args(["-k", "5", &secs.to_string(), "ip", "netns", "exec", self.topo.get("NS_A")])
            .args(args)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(124), "{args:?} still running after {secs} s:\n{}", text(&out));
        out
    }

    /// Waits until `port` on the stack's address answers a TCP connect
    /// from the peer namespace (the server under test just started).
    fn wait_serving(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.peer_run(5, &["nc", "-z", "-w", "1", &self.stack, &port.to_string()]);
            if o.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "nothing serves {}:{port} after 20 s", self.stack);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon and checks its frame accounting.
    fn finish(mut self) -> String {
        let d = self.daemon.take().unwrap();
        let log = d.stderr();
        let summary = d.stop();
        assert!(
            summary.text("summary frames worker=0").contains("balanced=yes"),
            "frame accounting:\n{:#?}",
            summary.lines
        );
        log
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// "SET: 69300.07 requests per second" -> 69300.07
fn rps(out: &str, what: &str) -> f64 {
    let line = out
        .split(['\n', '\r'])
        .rfind(|l| l.trim_start().starts_with(&format!("{what}: ")) && l.contains("requests per second"))
        .unwrap_or_else(|| panic!("no {what} figure in:\n{out}"));
    line.trim_start()[what.len() + 2..].split_whitespace().next().unwrap().parse().unwrap()
}

fn redis(s: &Setup, sock: &str) -> Child {
    let c = s.spawn_preloaded(&[
        "redis-server",
        "--bind",
        &s.stack,
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--unixsocket",
        sock,
    ]);
    s.wait_serving(6379);
    c
}

#[test]
fn redis_serves_the_peer_through_the_stack_and_its_unix_socket_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("prr");
    let sock = format!("/tmp/xstack-redis-{}.sock", s.name);
    let mut server = redis(&s, &sock);

    let bench = s.peer_run(120, &["redis-benchmark", "-h", &s.stack, "-t", "set,get", "-n", "20000", "-c", "50", "-q"]);
    let out = text(&bench);
    assert!(bench.status.success(), "{out}");
    assert!(rps(&out, "SET") > 0.0 && rps(&out, "GET") > 0.0, "{out}");

    // Keys written over TCP through the stack, read back over TCP and
    // over redis's unix socket (the kernel's, untouched by the library).
    for i in 0..20 {
        let o = s.peer_run(10, &["redis-cli", "-h", &s.stack, "set", &format!("key{i}"), &format!("value{i}")]);
        assert_eq!(stdout(&o).trim(), "OK", "{}", text(&o));
    }
    for i in 0..20 {
        let tcp = s.peer_run(10, &["redis-cli", "-h", &s.stack, "get", &format!("key{i}")]);
        assert_eq!(stdout(&tcp).trim(), format!("value{i}"));
        let unix = s.topo.exec("NS_B", &["redis-cli", "-s", &sock, "get", &format!("key{i}")]);
        assert_eq!(stdout(&unix).trim(), format!("value{i}"), "{}", text(&unix));
    }
    let info = s.topo.exec("NS_B", &["redis-cli", "-s", &sock, "info", "clients"]);
    assert!(stdout(&info).contains("connected_clients:1"), "{}", text(&info));

    // The operator sees redis's listener with its process, as ss -p.
    let ss = Command::new(env!("CARGO_BIN_EXE_xstackctl")).args(["--instance", &s.name, "ss", "-P"]).output().unwrap();
    let want = format!("users:((\"redis-server\",pid={}))", server.id());
    assert!(
        stdout(&ss).lines().any(|l| l.starts_with("LISTEN") && l.contains(":6379") && l.contains(&want)),
        "no {want} on the listener:\n{}",
        text(&ss)
    );

    kill(&mut server);
    let _ = std::fs::remove_file(&sock);
    let d = s.daemon.as_ref().unwrap();
    assert!(d.log_shows("exited: its sockets are closed", Duration::from_secs(5)), "{}", d.stderr());
    s.finish();
}

#[test]
fn a_killed_redis_resets_its_clients_and_a_new_one_serves_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("prk");
    let sock = format!("/tmp/xstack-redis-{}.sock", s.name);
    let mut server = redis(&s, &sock);
    let load = Command::new("timeout")
        .args(["-k", "5", "60", "ip", "netns", "exec", s.topo.get("NS_A")])
        .args(["redis-benchmark", "-h", &s.stack, "-t", "get", "-n", "10000000", "-c", "20", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL: no close() runs; the daemon learns it from the
    // registration's hangup.
    let _ = Command::new("kill").args(["-KILL", &server.id().to_string()]).status();
    let _ = server.wait();
    let out = load.wait_with_output().unwrap();
    let out = text(&out);
    assert!(
        out.contains("Connection reset") || out.contains("Error") || out.contains("Server closed"),
        "redis-benchmark saw no failure:\n{}",
        &out[out.len().saturating_sub(2000)..]
    );
    let d = s.daemon.as_ref().unwrap();
    assert!(d.log_shows("exited: its sockets are closed", Duration::from_secs(5)), "{}", d.stderr());

    let _ = std::fs::remove_file(&sock);
    let started = Instant::now();
    let mut again = redis(&s, &sock);
    let o = s.peer_run(10, &["redis-cli", "-h", &s.stack, "ping"]);
    assert_eq!(stdout(&o).trim(), "PONG", "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "the new redis took {:?}", started.elapsed());
    kill(&mut again);
    let _ = std::fs::remove_file(&sock);
    s.finish();
}

#[test]
fn nginx_with_two_workers_serves_static_files_and_survives_a_reload() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("png");
    let dir = std::env::temp_dir().join(format!("xstack-nginx-{}", s.name));
    let html = dir.join("html");
    std::fs::create_dir_all(&html).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(html.join("1k.html"), "x".repeat(1024)).unwrap();
    // 10 MiB that are not all alike, so a misplaced chunk shows.
    let big: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(html.join("big.bin"), &big).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; server {{ listen {a}:8080; root {d}/html; }} }}\n",
            d = dir.display(),
            a = s.stack
        ),
    )
    .unwrap();
    let mut nginx = s.spawn_preloaded(&["nginx", "-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()]);
    s.wait_serving(8080);
    let url = |p: &str| format!("http://{}:8080/{p}", s.stack);

    let o = s.peer_run(10, &["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", &url("1k.html")]);
    assert_eq!(stdout(&o), "200 1024", "{}", text(&o));
    let o = s.peer_run(30, &["sh", "-c", &format!("curl -sS {} | sha256sum", url("big.bin"))]);
    let want = Command::new("sha256sum").arg(html.join("big.bin")).output().unwrap();
    assert_eq!(
        stdout(&o).split_whitespace().next(),
        stdout(&want).split_whitespace().next(),
        "the 10 MiB file (sendfile) differs: {}",
        text(&o)
    );
    let w = s.peer_run(30, &["wrk", "-t1", "-c16", "-d2s", &url("1k.html")]);
    let wt = text(&w);
    assert!(w.status.success() && !wt.contains("Non-2xx") && !wt.contains("Socket errors"), "{wt}");

    // The operator sees the listener held by the master and both workers,
    // as ss -p lists every process with a descriptor of a socket.
    let master = std::fs::read_to_string(dir.join("nginx.pid")).unwrap().trim().to_owned();
    let kids = Command::new("pgrep").args(["-P", &master]).output().unwrap();
    let mut pids: Vec<String> = stdout(&kids).split_whitespace().map(str::to_owned).collect();
    assert_eq!(pids.len(), 2, "two workers: {}", text(&kids));
    pids.push(master);
    let ss = Command::new(env!("CARGO_BIN_EXE_xstackctl")).args(["--instance", &s.name, "ss", "-P"]).output().unwrap();
    let ss = stdout(&ss);
    let rows: Vec<&str> = ss.lines().filter(|l| l.starts_with("LISTEN") && l.contains(":8080")).collect();
    assert!(!rows.is_empty(), "no listener row:\n{ss}");
    for row in &rows {
        for p in &pids {
            assert!(row.contains(&format!("(\"nginx\",pid={p})")), "pid {p} not on the listener:\n{ss}");
        }
    }

    // nginx -s reload: new workers take over the inherited listener.
    let pid = std::fs::read_to_string(dir.join("nginx.pid")).unwrap();
    let _ = Command::new("kill").args(["-HUP", pid.trim()]).status();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let o = s.peer_run(10, &["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", &url("1k.html")]);
        assert_eq!(stdout(&o), "200", "after reload: {}", text(&o));
    }
    let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    let _ = nginx.wait();
    kill(&mut nginx);
    let _ = std::fs::remove_dir_all(&dir);
    s.finish();
}

#[test]
fn memcached_threads_store_and_return_many_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("pmc");
    let mut mc = s.spawn_preloaded(&["memcached", "-u", "root", "-l", &s.stack, "-p", "11211", "-t", "4", "-U", "0"]);
    s.wait_serving(11211);
    // Eight connections (spread over memcached's four threads) each set
    // and get 250 keys of their own.
    let script = format!(
        r#"
import socket, threading, sys
def worker(n, bad):
    s = socket.create_connection(("{a}", 11211), timeout=10)
    f = s.makefile("rwb")
    for i in range(250):
        v = ("v%d-%d" % (n, i)).encode() * 7
        f.write(b"set k%d-%d 0 0 %d\r\n%s\r\n" % (n, i, len(v), v)); f.flush()
        if f.readline() != b"STORED\r\n": bad.append("set %d %d" % (n, i))
    for i in range(250):
        v = ("v%d-%d" % (n, i)).encode() * 7
        f.write(b"get k%d-%d\r\n" % (n, i)); f.flush()
        head = f.readline(); body = f.readline(); end = f.readline()
        if body != v + b"\r\n" or end != b"END\r\n": bad.append("get %d %d %r" % (n, i, head))
bad = []
ts = [threading.Thread(target=worker, args=(n, bad)) for n in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print("bad", len(bad), bad[:3])
"#,
        a = s.stack
    );
    let o = s.peer_run(60, &["python3", "-c", &script]);
    assert_eq!(stdout(&o).trim(), "bad 0 []", "{}", text(&o));
    kill(&mut mc);
    s.finish();
}

#[test]
fn a_blocking_threaded_server_and_preloaded_clients_connecting_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("pbl");
    let dir = std::env::temp_dir().join(format!("xstack-www-{}", s.name));
    std::fs::create_dir_all(&dir).unwrap();
    let body: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    std::fs::write(dir.join("f.txt"), &body).unwrap();

    // python3 -m http.server (a thread per connection, blocking calls) on
    // the stack, fetched by the peer's kernel curl.
    let mut py = Command::new("ip")
        .args(["netns", "exec", s.topo.get("NS_B"), xstack_run(), "--instance", &s.name])
        .args(["python3", "-m", "http.server", "8000", "--bind", &s.stack, "--directory", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.wait_serving(8000);
    for _ in 0..3 {
        let o = s.peer_run(10, &["curl", "-sS", &format!("http://{}:8000/f.txt", s.stack)]);
        assert!(stdout(&o) == body, "{} bytes back", o.stdout.len());
    }
    kill(&mut py);

    // Preloaded clients connect out through the stack to kernel servers in
    // the peer namespace: curl to python's server, nc to a listening nc.
    let mut kpy = Command::new("ip")
        .args(["netns", "exec", s.topo.get("NS_A"), "python3", "-m", "http.server", "8001"])
        .args(["--bind", &s.peer, "--directory", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.topo.wait_listening("NS_A", &s.peer, 8001);
    let o = s.run_preloaded(20, &["curl", "-sS", &format!("http://{}:8001/f.txt", s.peer)]);
    assert!(stdout(&o) == body, "preloaded curl: {}", text(&o));
    kill(&mut kpy);

    let listen = Command::new("ip")
        .args(["netns", "exec", s.topo.get("NS_A"), "timeout", "20", "nc", "-l", "-N", &s.peer, "9009"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.topo.wait_listening("NS_A", &s.peer, 9009);
    let mut c = Command::new("ip")
        .args(["netns", "exec", s.topo.get("NS_B"), xstack_run(), "--instance", &s.name])
        .args(["nc", "-N", &s.peer, "9009"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"through the stack\n").unwrap();
    }
    let _ = c.wait();
    let got = listen.wait_with_output().unwrap();
    assert_eq!(stdout(&got), "through the stack\n", "{}", text(&got));

    // Non-blocking mode set with ioctl(FIONBIO) (Python's setblocking)
    // or fcntl(F_SETFL) before a connect to a kernel destination
    // (loopback): the socket the kernel takes over is non-blocking, so
    // connect says EINPROGRESS, as without the library.
    let mut kpy = s.topo.spawn(
        "NS_B",
        &[
            "timeout",
            "20",
            "python3",
            "-c",
            "import socket,time; l=socket.create_server(('127.0.0.1', 9011)); time.sleep(15)",
        ],
    );
    s.topo.wait_listening("NS_B", "127.0.0.1", 9011);
    let script = "import errno,fcntl,os,socket\n\
        a=socket.socket(); a.setblocking(False)\n\
        b=socket.socket(); fcntl.fcntl(b, fcntl.F_SETFL, os.O_NONBLOCK)\n\
        print(errno.errorcode.get(a.connect_ex(('127.0.0.1', 9011)), 0), errno.errorcode.get(b.connect_ex(('127.0.0.1', 9011)), 0))";
    let o = s.run_preloaded(20, &["python3", "-c", script]);
    assert_eq!(stdout(&o).trim(), "EINPROGRESS EINPROGRESS", "{}", text(&o));
    kill(&mut kpy);

    let log = s.finish();
    assert!(log.contains("registered"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn epoll_reports_the_same_events_as_on_the_kernel() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("pep");
    let script = common::repo_root().join("control/tests/support/epoll_semantics.py");
    let run = |addr: &str, preload: Option<String>| {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "120", "python3"]).arg(&script).args([
            "run",
            "--app-ns",
            s.topo.get("NS_B"),
            "--peer-ns",
            s.topo.get("NS_A"),
            "--app-addr",
            addr,
            "--peer-addr",
            &s.peer,
        ]);
        if let Some(p) = preload {
            c.args(["--preload", &p]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        stdout(&o)
    };
    // The kernel's own address in the stack's namespace (everything the
    // stack does not serve passes to the kernel), then the stack's.
    let kernel = run(s.topo.get("IP_B_KERNEL"), None);
    let wrapper = common::repo_root().join(format!("target/xstack-run-{}", s.name));
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} --instance {} \"$@\"\n", xstack_run(), s.name)).unwrap();
    let _ = Command::new("chmod").arg("755").arg(&wrapper).status();
    let stack = run(&s.stack, Some(wrapper.to_string_lossy().into_owned()));
    let _ = std::fs::remove_file(&wrapper);
    assert!(kernel.lines().count() > 25, "{kernel}");
    if kernel != stack {
        let diff: Vec<String> = kernel
            .lines()
            .zip(stack.lines())
            .filter(|(k, s)| k != s)
            .map(|(k, s)| format!("kernel: {k}\nstack:  {s}"))
            .collect();
        panic!("epoll differs from the kernel's:\n{}\n\nkernel:\n{kernel}\nstack:\n{stack}", diff.join("\n"));
    }
    s.finish();
}

#[test]
fn without_a_daemon_the_library_passes_everything_to_the_kernel() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    require_root();
    let name = unique_name("pnd");
    let topo = Topology::up(&name, &[]);
    let peer = topo.get("IP_A").to_owned();
    let mut kpy = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_A"), "python3", "-m", "http.server", "8002", "--bind", &peer])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    topo.wait_listening("NS_A", &peer, 8002);
    let o = Command::new("ip")
        .args(["netns", "exec", topo.get("NS_B"), "env", "XSTACK_GATEWAY=/nonexistent/apps.sock", xstack_run()])
        .args(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{peer}:8002/")])
        .output()
        .unwrap();
    kill(&mut kpy);
    assert_eq!(stdout(&o), "200", "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("every socket goes to the kernel").count(), 1, "said once: {err}");
}

#[test]
fn when_the_daemon_dies_a_blocked_application_gets_an_error_not_a_hang() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = setup("pdd");
    let server = format!(
        r#"
import socket
s = socket.socket()
s.bind(("{a}", 7777))
s.listen(4)
c, _ = s.accept()
print("accepted", flush=True)
try:
    print("recv", c.recv(10), flush=True)
except OSError as e:
    print("error", e.errno, flush=True)
try:
    socket.create_connection(("{p}", 7), timeout=5)
    print("connected", flush=True)
except OSError as e:
    print("connect error", e.errno, flush=True)
"#,
        a = s.stack,
        p = s.peer
    );
    let mut app = s.spawn_preloaded(&["python3", "-u", "-c", &server]);
    // The peer keeps trying until the server listens, then holds the
    // connection open.
    let hold = format!(
        "import socket, time\nfor _ in range(300):\n    try:\n        c = socket.create_connection((\"{}\", 7777))\n        break\n    except OSError:\n        time.sleep(0.05)\ntime.sleep(30)\n",
        s.stack
    );
    let mut peer = s.topo.spawn("NS_A", &["python3", "-c", &hold]);
    let mut out = app.stdout.take().unwrap();
    let mut first = [0u8; 9];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"accepted\n");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let _ = tx.send(rest);
    });
    // SIGKILL: the daemon says nothing; the application notices the end
    // of its registration.
    let d = s.daemon.take().unwrap();
    let _ = Command::new("kill").args(["-KILL", &d.pid().to_string()]).status();
    let rest = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r,
        Err(_) => {
            kill(&mut app);
            kill(&mut peer);
            panic!("the application still hangs 10 s after the daemon died");
        }
    };
    let _ = app.wait();
    assert_eq!(rest, format!("error {}\nconnect error {}\n", libc::ECONNRESET, libc::ECONNREFUSED));
    kill(&mut peer);
    drop(d);
}

#[test]
fn forked_children_hold_what_they_inherit_until_they_exit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("pfk");
    let server = format!(
        r#"
import os, signal, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{a}", 7000))
s.listen(8)
c1, _ = s.accept()
# A child that closes its copy of the listener and exits without touching
# the rest (redis's background save): the parent's sockets stay as they
# were, and closing c1 afterwards still closes it.
pid = os.fork()
if pid == 0:
    s.close()
    os._exit(0)
os.waitpid(pid, 0)
c1.close()
# Fork per connection: the parent closes its copy at once, the child
# serves it; killing the child closes what it held last.
c2, _ = s.accept()
pid = os.fork()
if pid == 0:
    c2.sendall(b"child:" + c2.recv(100))
    time.sleep(60)
    os._exit(0)
c2.close()
time.sleep(1.0)
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
time.sleep(60)
"#,
        a = s.stack
    );
    let mut app = s.spawn_preloaded(&["python3", "-u", "-c", &server]);
    let peer = format!(
        r#"
import socket, time
def connect():
    for _ in range(300):
        try:
            return socket.create_connection(("{a}", 7000), timeout=8)
        except OSError:
            time.sleep(0.05)
def closed(c):
    try:
        return "eof" if c.recv(100) == b"" else "data"
    except socket.timeout:
        return "still open"
    except OSError as e:
        return "error %d" % e.errno
c1 = connect()
print("c1", closed(c1))
c2 = connect()
c2.sendall(b"hi")
print(c2.recv(100).decode())
print("c2", closed(c2))
"#,
        a = s.stack
    );
    let o = s.peer_run(40, &["python3", "-c", &peer]);
    kill(&mut app);
    assert_eq!(stdout(&o), "c1 eof\nchild:hi\nc2 eof\n", "{}", text(&o));
    s.finish();
}
