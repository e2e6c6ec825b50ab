//! Test support: topologies from scripts/topology.sh, the daemon run inside
//! them, and commands in namespaces. Every resource is removed on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Fails (does not skip) when the tests cannot do their job.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    assert_eq!(uid, "0", "the namespace tests need root (network namespaces, XDP): run scripts/test.sh as root");
}

/// A name unique to this test process and tag, valid for topology.sh.
pub fn unique_name(tag: &str) -> String {
    assert!(tag.len() <= 3 && tag.chars().all(|c| c.is_ascii_lowercase()));
    format!("{tag}{:05x}", std::process::id() & 0xfffff)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    out
}

#[derive(Debug)]
pub struct Topology {
    pub facts: HashMap<String, String>,
}

impl Topology {
    pub fn up(name: &str, opts: &[&str]) -> Topology {
        let out = run(Command::new(repo_root().join("scripts/topology.sh")).args(["up", name, "--force"]).args(opts));
        assert!(out.status.success(), "topology up failed: {}", String::from_utf8_lossy(&out.stderr));
        let facts = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Topology { facts }
    }

    pub fn get(&self, k: &str) -> &str {
        self.facts.get(k).unwrap_or_else(|| panic!("topology has no {k}: {:?}", self.facts))
    }

    /// Runs `args` in namespace `ns` (a fact name such as "NS_A").
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", self.get(ns)]).args(args))
    }

    /// Waits until a TCP listener on `addr:port` exists in namespace `ns`
    /// (a server just spawned; starting python3 takes from 30 ms to over
    /// a second on a loaded machine, so a fixed sleep is a flake).
    pub fn wait_listening(&self, ns: &str, addr: &str, port: u16) {
        let want = format!("{addr}:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let out = self.exec(ns, &["ss", "-Hltn", "src", &want]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "nothing listens on {want} in {ns} after 15 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `args` in namespace `ns` with its stdin and stdout piped (a
    /// client the test drives line by line).
    pub fn spawn_driven(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", self.get(ns)])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", self.get(ns)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/topology.sh")).args(["down", self.get("NAME")]).output();
    }
}

/// A private bpffs mount, so a test can check what the daemon pinned and
/// that it removed it.
#[derive(Debug)]
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn mount(name: &str) -> Bpffs {
        let path = std::env::temp_dir().join(format!("xstack-bpffs-{name}"));
        std::fs::create_dir_all(&path).unwrap();
        let out = run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path));
        assert!(out.status.success(), "mount bpffs: {}", String::from_utf8_lossy(&out.stderr));
        Bpffs { path }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The daemon running in the topology's stack namespace.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The control socket of the instance, removed if the daemon is killed.
    socket: Option<PathBuf>,
    pub ready_line: String,
    stdout_rx: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    pub fn start(topo: &Topology, bpffs: &Bpffs, extra: &[&str]) -> Daemon {
        let bin = env!("CARGO_BIN_EXE_xstackd");
        let addr = format!("{}/{}", topo.get("IP_STACK"), topo.get("PREFIX"));
        let mut args: Vec<String> = vec![
            bin.into(),
            "-i".into(),
            topo.get("IF_B").into(),
            "-a".into(),
            addr,
            "--bpffs".into(),
            bpffs.path.to_string_lossy().into_owned(),
        ];
        if !topo.get("GW_B").is_empty() {
            args.extend(["-g".into(), topo.get("GW_B").into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = topo.spawn("NS_B", &argv);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let socket = extra
            .iter()
            .position(|a| *a == "--instance")
            .and_then(|i| extra.get(i + 1))
            .map(|inst| PathBuf::from(format!("/run/xstack/{inst}.sock")));
        let mut d = Daemon { child: Some(child), socket, ready_line: String::new(), stdout_rx: rx, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match d.stdout_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("xstackd ready") => {
                    d.ready_line = line;
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("xstackd exited ({st}) before ready:\n{}", d.stderr());
                    }
                    assert!(Instant::now() < deadline, "xstackd not ready in 30 s:\n{}", d.stderr());
                }
            }
        }
        d
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The exit status, once the daemon exited by itself.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The daemon's process ID (`ip netns exec` executes it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether `needle` shows up in the daemon's log within `timeout`: a
    /// line the daemon has written may still be on its way through the
    /// pipe to the thread collecting it.
    pub fn log_shows(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `key=value` field of the ready line.
    pub fn ready(&self, key: &str) -> String {
        fields(&self.ready_line).remove(key).unwrap_or_else(|| panic!("no {key} in {:?}", self.ready_line))
    }

    /// SIGTERM, wait, and return the summary it printed.
    pub fn stop(self) -> Summary {
        let pid = self.child.as_ref().unwrap().id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        self.wait_exit(Duration::from_secs(15))
    }

    /// Waits for the daemon to exit by itself (a drain) within `timeout`,
    /// and returns the summary it printed.
    pub fn wait_exit(mut self, timeout: Duration) -> Summary {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("xstackd did not stop within {timeout:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        while let Ok(l) = self.stdout_rx.recv_timeout(Duration::from_millis(500)) {
            lines.push(l);
        }
        assert!(status.success(), "xstackd exited with {status}:\n{}", self.stderr());
        Summary { lines }
    }
}

impl Drop for Daemon {
    /// A failed test kills the daemon, which then cannot remove its
    /// control socket: the test does.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if let Some(p) = &self.socket {
                let _ = std::fs::remove_file(p);
                // And its gateway socket (NAME.apps.sock beside NAME.sock).
                if let (Some(dir), Some(stem)) = (p.parent(), p.file_stem()) {
                    let _ = std::fs::remove_file(dir.join(format!("{}.apps.sock", stem.to_string_lossy())));
                }
            }
        }
    }
}

fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

/// The daemon's `summary ...` lines.
#[derive(Debug)]
pub struct Summary {
    pub lines: Vec<String>,
}

impl Summary {
    /// The fields of the summary line starting with `prefix` (e.g.
    /// "summary xdp", "summary worker=0").
    pub fn group(&self, prefix: &str) -> HashMap<String, u64> {
        let line = self
            .lines
            .iter()
            .find(|l| l.starts_with(&format!("{prefix} ")))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:#?}", self.lines));
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v)))
            .collect()
    }

    pub fn text(&self, prefix: &str) -> &str {
        self.lines.iter().find(|l| l.starts_with(prefix)).map(String::as_str).unwrap_or("")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Parses "N packets transmitted, M received" from ping's summary.
pub fn ping_counts(o: &Output) -> (u64, u64) {
    let s = stdout(o);
    let line = s.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("ping said: {s}"));
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

/// The bench binary is a sibling package's: it is found beside this test's
/// own target directory (built by `cargo build -p xstack-bench`, or by
/// scripts/test.sh's `cargo build --workspace --all-targets`), or at
/// `$XSTACK_BENCH` (a relative path is taken from the workspace root).
/// The xstack-bench binary, refused if older than a source it was built
/// from (a stale binary would not know the workloads under test).
pub fn bench() -> PathBuf {
    let path = match std::env::var_os("XSTACK_BENCH") {
        Some(p) => repo_root().join(p),
        None => {
            // target/<profile>/deps/TEST-HASH -> target/<profile>/xstack-bench
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(|d| d.parent()).unwrap().join("xstack-bench")
        }
    };
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo build -p xstack-bench` first", path.display()));
    if let Some(stale) = newer_sources(&path, built) {
        panic!("{} is older than {stale}: run `cargo build -p xstack-bench` first", path.display());
    }
    path
}

/// A source of `binary` changed since it was built at `built`, by cargo's
/// dep-info file beside it (`xstack-bench.d`: every source file of the
/// binary and of the workspace crates it links). None if all are older,
/// or if there is no dep-info file (a binary given by $XSTACK_BENCH from
/// elsewhere is taken as it is).
pub fn newer_sources(binary: &std::path::Path, built: SystemTime) -> Option<String> {
    let info = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    dep_info_sources(&info).into_iter().find_map(|src| {
        let src = repo_root().join(src);
        match std::fs::metadata(&src).and_then(|m| m.modified()) {
            Ok(t) if t <= built => None,
            Ok(_) => Some(src.display().to_string()),
            // Gone: the binary was built from sources that no longer are.
            Err(e) => Some(format!("{} ({e})", src.display())),
        }
    })
}

/// The prerequisites of the first rule of a Makefile-style dep-info file
/// (`target: dep dep ...`, spaces in paths escaped as `\ `).
pub fn dep_info_sources(info: &str) -> Vec<String> {
    let Some((_, deps)) = info.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' => out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            _ => cur.push(ch),
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

/// `xstackctl --instance NAME stats --json`.
pub fn ctl_stats(instance: &str) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_xstackctl"))
        .args(["--instance", instance, "stats", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "xstackctl stats: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("xstackctl --json prints JSON")
}

/// Worker 0's figure `key` of `group` (`resources`, `tcp`, `ring`,
/// `counters`) in a `ctl_stats` answer; 0 if absent.
pub fn figure(st: &serde_json::Value, group: &str, key: &str) -> u64 {
    st["workers"][0][group][key].as_u64().unwrap_or(0)
}

/// Polls `ctl_stats` until `done` holds or `timeout` passes; the last
/// answer either way.
pub fn stats_until(instance: &str, timeout: Duration, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = ctl_stats(instance);
        if done(&st) || Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A positive number from the environment variable `name`, else `default`
/// (how the long versions of bounded tests are asked for).
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}
