//! The control socket: a Unix stream socket through which `xstackctl`
//! (or anything speaking [`crate::protocol`]) asks the running daemon for
//! statistics, connections, the neighbour table and the configuration,
//! changes knobs and steered ports, drains, and captures packets.
//!
//! Who may use it: root, and members of one configured group. The socket
//! file is created mode 0600 (root only) or 0660 owned by that group, so
//! the file system refuses everyone else at connect(); each accepted
//! connection is checked again with the peer's credentials (SO_PEERCRED,
//! SO_PEERGROUPS), so a socket file whose mode was
//! loosened by hand still refuses them, with a message saying why.
//!
//! Each client gets its own thread (the control plane is not a fast
//! path); requests go to the control loop, which owns the workers'
//! links, the steering maps and the ARP resolver, and is the only one to
//! talk to the workers, so answers are never mixed up.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::capture::Stream;
use crate::protocol::{Reply, Request, MAX_REQUEST};

/// A request for the control loop, with where to send what it decides.
#[derive(Debug)]
pub struct Job {
    pub request: Request,
    pub reply: mpsc::Sender<Outcome>,
    /// When the client stops waiting: the loop drops the job after it.
    pub deadline: Instant,
}

impl Job {
    pub fn new(request: Request, reply: mpsc::Sender<Outcome>) -> Job {
        // A little before the client gives up, so a job is either done and
        // answered or not done at all.
        Job { request, reply, deadline: Instant::now() + JOB_TIMEOUT - Duration::from_secs(1) }
    }
}

/// What the control loop answers.
#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// A capture was started: the client's thread streams it.
    Capture(Stream),
}

/// How long a client's thread waits for the control loop.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once at most; more are told to retry. Root gets as
/// many again, so other users cannot lock the operator out.
const MAX_CLIENTS: usize = 16;
/// The whole request line must arrive within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Each write of the reply (or of a capture's records) must be taken
/// within this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may use the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Members of this group (primary or supplementary) besides root.
    pub group: Option<u32>,
}

impl Access {
    /// Root (and the daemon's own user, when it runs with capabilities
    /// instead of as root) always; otherwise only a member of the
    /// configured group.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || uid == nix::unistd::geteuid().as_raw()
            || self.group.is_some_and(|g| gid == g || groups.contains(&g))
    }
}

/// A thread serving a bound unix socket (the control socket, the
/// gateway socket). On drop it is told to stop, joined, and its socket
/// file removed if the file is still the one it bound.
#[derive(Debug)]
pub struct SocketThread {
    path: PathBuf,
    /// (device, inode) of the socket file we bound: removed on stop only
    /// if it is still ours (not another daemon's that bound it since).
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketThread {
    /// Binds `path` as `bind_socket` does (`what` names it in errors),
    /// non-blocking so that the loop polls with a timeout and stopping
    /// never depends on waking a blocked accept(), and runs `serve` with
    /// the listener and the stop flag on a thread called `name`.
    pub fn start(
        path: &Path,
        access: Access,
        what: &str,
        name: &str,
        serve: impl FnOnce(UnixListener, Arc<AtomicBool>) + Send + 'static,
    ) -> Result<SocketThread> {
        let (listener, identity) = bind_socket(path, access, what)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(listener, flag))
            .with_context(|| format!("spawning the {what} thread"))?;
        Ok(SocketThread { path: path.to_owned(), identity, stop, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if file_identity(&self.path).is_ok_and(|id| id == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The running server; stops and removes its socket file on drop.
#[derive(Debug)]
pub struct Server(SocketThread);

impl Server {
    /// Binds `path` (replacing a stale socket file, refusing to replace a
    /// live one or anything that is not a socket) and serves it.
    pub fn start(path: &Path, access: Access, jobs: mpsc::Sender<Job>) -> Result<Server> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let served = SocketThread::start(path, access, "control socket", "xs-control-sock", move |listener, stop| {
            accept_loop(listener, access, jobs, stop)
        })?;
        Ok(Server(served))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Binds a unix socket at `path` (replacing a stale socket file, refusing
/// a live one) with the access `access` grants: mode 0600, or 0660 and the
/// group's. Returns the listener and the file's identity, so that only this
/// file is removed on stop.
pub(crate) fn bind_socket(path: &Path, access: Access, what: &str) -> Result<(UnixListener, (u64, u64))> {
    remove_stale(path)?;
    let listener = UnixListener::bind(path).with_context(|| format!("binding the {what} {}", path.display()))?;
    let mode = if access.group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = access.group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g)))
            .with_context(|| format!("giving {} to group {g}", path.display()))?;
    }
    Ok((listener, file_identity(path)?))
}

pub(crate) fn file_identity(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

pub(crate) fn remove_stale(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket; not replacing it", path.display());
    }
    if UnixStream::connect(path).is_ok() {
        bail!("{} is in use by a running daemon (another instance?)", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))
}

fn accept_loop(listener: UnixListener, access: Access, jobs: mpsc::Sender<Job>, stop: Arc<AtomicBool>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let clients = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&listener), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(100u8)), Ok(n) if n > 0) {
            continue;
        }
        let Ok((mut stream, _)) = listener.accept() else { continue };
        let _ = stream.set_nonblocking(false);
        let busy = clients.load(Ordering::Relaxed);
        let root = peer(&stream).is_ok_and(|(uid, _, _)| uid == 0);
        if busy >= MAX_CLIENTS && !(root && busy < 2 * MAX_CLIENTS) {
            let _ = send_reply(&mut stream, &Reply::error("too many control clients at once; try again"));
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let (jobs, clients2) = (jobs.clone(), clients.clone());
        let spawned = std::thread::Builder::new().name("xs-control-client".into()).spawn(move || {
            if let Err(e) = serve_client(stream, access, &jobs) {
                tracing::debug!("control client: {e:#}");
            }
            clients2.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The peer's uid, gid and supplementary groups, all as the kernel
/// recorded them when the peer connected (SO_PEERCRED, SO_PEERGROUPS):
/// they belong to the process that connected, whatever became of its PID
/// since (reading /proc/PID could answer for another process that got the
/// PID after the client passed its socket on and exited).
pub(crate) fn peer(stream: &UnixStream) -> Result<(u32, u32, Vec<u32>)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(stream, PeerCredentials).context("SO_PEERCRED")?;
    let groups = crate::peer::groups(std::os::fd::AsFd::as_fd(stream)).context("SO_PEERGROUPS")?;
    Ok((cred.uid(), cred.gid(), groups))
}

fn serve_client(mut stream: UnixStream, access: Access, jobs: &mpsc::Sender<Job>) -> Result<()> {
    // A client that never reads its reply (or a capture it stopped
    // reading) gives its slot back after this.
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let (uid, gid, groups) = peer(&stream)?;
    if !access.allows(uid, gid, &groups) {
        tracing::warn!("control socket: refused uid {uid} gid {gid}");
        let who = match access.group {
            Some(g) => format!("root or members of group {g}"),
            None => "root".to_string(),
        };
        send_reply(
            &mut stream,
            &Reply::error(format!("permission denied: uid {uid} may not use this socket (only {who})")),
        )?;
        return Ok(());
    }
    let line = match read_line(&mut stream) {
        Ok(l) => l,
        Err(e) => return send_reply(&mut stream, &Reply::error(format!("{e:#}"))),
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send_reply(&mut stream, &Reply::error(format!("bad request: {e}"))),
    };
    let (tx, rx) = mpsc::channel();
    if jobs.send(Job::new(request, tx)).is_err() {
        return send_reply(&mut stream, &Reply::error("the daemon is stopping"));
    }
    match rx.recv_timeout(JOB_TIMEOUT) {
        Ok(Outcome::Reply(r)) => send_reply(&mut stream, &r),
        Ok(Outcome::Capture(c)) => {
            send_reply(&mut stream, &Reply::ok(serde_json::json!({ "capturing": true })))?;
            c.pump(&mut stream)
        }
        Err(_) => send_reply(&mut stream, &Reply::error("the control loop did not answer in time")),
    }
}

/// The request line, which must arrive whole within `REQUEST_TIMEOUT`
/// (a client trickling bytes cannot hold its slot longer).
fn read_line(stream: &mut UnixStream) -> Result<String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no complete request within {} s", REQUEST_TIMEOUT.as_secs());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => bail!("request not terminated by a newline"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).context("reading the request"),
        };
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end + 1);
            break;
        }
        if line.len() > MAX_REQUEST {
            bail!("request longer than {MAX_REQUEST} bytes");
        }
    }
    if line.len() > MAX_REQUEST {
        bail!("request longer than {MAX_REQUEST} bytes");
    }
    String::from_utf8(line).context("request is not UTF-8")
}

fn send_reply(stream: &mut UnixStream, r: &Reply) -> Result<()> {
    let mut s = serde_json::to_string(r)?;
    s.push('\n');
    stream.write_all(s.as_bytes())?;
    Ok(())
}

/// Client side: connects, sends `request`, reads the reply line. Returns
/// the stream too, for a capture's records that follow.
pub fn call(path: &Path, request: &Request) -> Result<(Reply, BufReader<UnixStream>)> {
    let instance = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // A socket file nobody listens on: its daemon died without
            // cleaning up (killed, crashed).
            let fate = match std::fs::remove_file(path) {
                Ok(()) => "stale socket removed".to_string(),
                Err(_) => format!("stale socket left at {}", path.display()),
            };
            bail!("no daemon is running for instance {instance} ({fate}; it was killed or crashed)");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no daemon is running for instance {instance} (no control socket {})", path.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "connecting to {}: permission denied: only root and members of the daemon's --control-group may",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to the control socket {}", path.display())),
    };
    let mut s = serde_json::to_string(request)?;
    s.push('\n');
    // A refused peer is answered before the request is read: a failed
    // write then still leaves the reason to read.
    let _ = stream.write_all(s.as_bytes());
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).context("reading the reply")?;
    if line.is_empty() {
        bail!("the daemon closed the connection without a reply");
    }
    let reply: Reply = serde_json::from_str(&line).with_context(|| format!("bad reply {line:?}"))?;
    Ok((reply, r))
}

/// The daemons' control sockets in `dir` (not their gateway sockets):
/// those a daemon answers on, and the stale ones.
pub fn find_daemons(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut socks: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    socks.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.ends_with(".sock") && !name.ends_with(".apps.sock")
    });
    socks.sort();
    socks.into_iter().partition(|p| UnixStream::connect(p).is_ok())
}

/// With neither a socket nor an instance named: the one running daemon's
/// control socket, or an error that says what is running.
pub fn pick_daemon(dir: &Path) -> Result<PathBuf> {
    let (mut live, stale) = find_daemons(dir);
    let names = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.file_stem().unwrap_or_default().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match live.len() {
        1 => Ok(live.remove(0)),
        0 if stale.is_empty() => bail!("no xstackd is running (no control socket in {})", dir.display()),
        0 => bail!("no xstackd is running (stale sockets of instances {} in {})", names(&stale), dir.display()),
        n => bail!("{n} daemons are running (instances {}): choose one with --instance NAME", names(&live)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_daemon_is_picked_and_otherwise_named() {
        let dir = std::env::temp_dir().join(format!("xs-pick-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = pick_daemon(&dir).unwrap_err().to_string();
        assert!(e.contains("no xstackd is running"), "{e}");
        // A live daemon, its gateway socket, and a stale one.
        let _a = std::os::unix::net::UnixListener::bind(dir.join("eth1.sock")).unwrap();
        let _g = std::os::unix::net::UnixListener::bind(dir.join("eth1.apps.sock")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.join("old.sock")).unwrap());
        assert_eq!(pick_daemon(&dir).unwrap(), dir.join("eth1.sock"));
        let _b = std::os::unix::net::UnixListener::bind(dir.join("eth2.sock")).unwrap();
        let e = pick_daemon(&dir).unwrap_err().to_string();
        assert!(e.contains("2 daemons are running (instances eth1, eth2)") && e.contains("--instance"), "{e}");
        let e = call(&dir.join("old.sock"), &Request::Status { sockets: false }).unwrap_err().to_string();
        assert!(e.contains("no daemon is running for instance old (stale socket removed"), "{e}");
        assert!(!dir.join("old.sock").exists());
        let e = call(&dir.join("gone.sock"), &Request::Status { sockets: false }).unwrap_err().to_string();
        assert!(e.contains("no daemon is running for instance gone"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn root_and_group_members_only() {
        let open = Access { group: None };
        assert!(open.allows(0, 0, &[]));
        assert!(!open.allows(1000, 1000, &[1000]));
        let g = Access { group: Some(4242) };
        assert!(g.allows(0, 5, &[]));
        assert!(g.allows(1000, 4242, &[]), "primary group");
        assert!(g.allows(1000, 1000, &[27, 4242]), "supplementary group");
        assert!(!g.allows(1000, 1000, &[27]));
        assert!(open.allows(nix::unistd::geteuid().as_raw(), 1, &[]), "the daemon's own user");
    }

    /// A server with a fake control loop: requests reach the loop, replies
    /// reach the client, bad input gets an error, a stale socket file is
    /// replaced and a live one is not.
    #[test]
    fn requests_and_replies_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("xs-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("t.sock");
        // A stale socket file from a crashed daemon.
        drop(UnixListener::bind(&path).unwrap());
        let (tx, rx) = mpsc::channel::<Job>();
        let server = Server::start(&path, Access { group: None }, tx).unwrap();
        assert!(Server::start(&path, Access { group: None }, mpsc::channel().0).is_err(), "live socket kept");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let fake_loop = std::thread::spawn(move || {
            let job = rx.recv().unwrap();
            assert_eq!(job.request, Request::Arp);
            assert!(job.deadline > Instant::now());
            job.reply.send(Outcome::Reply(Reply::ok(vec!["entry"]))).unwrap();
        });
        let (reply, _) = call(&path, &Request::Arp).unwrap();
        assert!(reply.ok);
        assert_eq!(reply.data, serde_json::json!(["entry"]));
        fake_loop.join().unwrap();

        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"cmd\":\"reboot\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(raw).read_line(&mut line).unwrap();
        let r: Reply = serde_json::from_str(&line).unwrap();
        assert!(!r.ok && r.error.unwrap().contains("bad request"));

        // An endless line is cut off with an error, not read forever.
        let mut raw = UnixStream::connect(&path).unwrap();
        let _ = raw.write_all(&vec![b'x'; MAX_REQUEST + 10]);
        let mut line = String::new();
        BufReader::new(raw).read_line(&mut line).unwrap();
        let r: Reply = serde_json::from_str(&line).unwrap();
        assert!(!r.ok && r.error.unwrap().contains("longer than"));

        // A request trickled byte by byte past the deadline is cut off.
        let mut slow = UnixStream::connect(&path).unwrap();
        let t = Instant::now();
        while t.elapsed() < REQUEST_TIMEOUT + Duration::from_millis(500) {
            if slow.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut line = String::new();
        let _ = BufReader::new(slow).read_line(&mut line);
        assert!(line.contains("no complete request"), "{line:?}");

        drop(server);
        assert!(!path.exists(), "socket file removed on stop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Clients that ask and never read a reply larger than the socket's
    /// buffer give their slots back after the reply timeout; before, 32
    /// of them (root's share) locked every later client out for good.
    #[test]
    fn clients_that_never_read_give_their_slots_back() {
        let dir = std::env::temp_dir().join(format!("xs-ctl-w-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("t.sock");
        let (tx, rx) = mpsc::channel::<Job>();
        let server = Server::start(&path, Access { group: None }, tx).unwrap();
        let stuck = 2 * MAX_CLIENTS;
        let fake_loop = std::thread::spawn(move || {
            let mut n = 0;
            while let Ok(job) = rx.recv() {
                n += 1;
                let big = if n <= stuck { vec!["x".repeat(4096); 1024] } else { vec!["small".to_string()] };
                let _ = job.reply.send(Outcome::Reply(Reply::ok(big)));
            }
        });
        let mut held = Vec::new();
        for _ in 0..stuck {
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(b"{\"cmd\":\"arp\"}\n").unwrap();
            held.push(c);
        }
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let reply = loop {
            let (r, _) = call(&path, &Request::Arp).unwrap();
            if r.ok || t.elapsed() > REPLY_TIMEOUT * 3 {
                break r;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(reply.ok, "{reply:?}");
        assert_eq!(reply.data, serde_json::json!(["small"]));
        drop(held);
        drop(server);
        fake_loop.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
