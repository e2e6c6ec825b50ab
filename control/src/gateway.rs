//! The gateway socket: where application processes (the preload library)
//! register to have their sockets served by the workers
//! (`xstack_dataplane::gateway`). One thread accepts registrations and
//! watches every registered process's connection: its hangup (exit,
//! crash, SIGKILL) detaches the process from every worker, which closes
//! its sockets as Linux closes a dead process's.

use crate::ctlsock::{peer, Access, SocketThread};
use anyhow::Result;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xstack_dataplane::gateway::arena::member;
use xstack_dataplane::gateway::arena::Geometry;
use xstack_dataplane::gateway::register::Hello;
use xstack_dataplane::gateway::{register, serve, Inbox, Link, Order};
use xstack_dataplane::iface::IfAddr;
use xstack_dataplane::wire::Ipv4Addr;

/// Processes registered at once.
const MAX_PROCESSES: usize = 256;

/// What the registrar needs of each worker.
pub struct WorkerDoor {
    pub inbox: Arc<Inbox>,
    /// The worker's wake-up eventfd (a duplicate), for the processes.
    pub wake_fd: OwnedFd,
    /// Ends the worker's sleep (after an order).
    pub wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WorkerDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerDoor").field("wake_fd", &self.wake_fd).finish()
    }
}

/// Counters the control plane reports.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub registered: AtomicU64,
    pub refused: AtomicU64,
    pub exited: AtomicU64,
    pub attached: AtomicU64,
}

/// The running registrar; stops and removes its socket file on drop.
#[derive(Debug)]
pub struct Registrar {
    /// Stopped, joined and its socket file removed on drop.
    served: SocketThread,
    pub stats: Arc<GatewayStats>,
}

/// The gateway socket of the instance whose control socket is `control`:
/// `NAME.apps.sock` beside `NAME.sock`.
pub fn socket_path(control: &Path) -> PathBuf {
    let stem = control.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "xstack".into());
    control.with_file_name(format!("{stem}.apps.sock"))
}

impl Registrar {
    pub fn start(
        path: &Path,
        access: Access,
        geometry: Geometry,
        iface: (Vec<IfAddr>, Option<Ipv4Addr>),
        doors: Vec<WorkerDoor>,
    ) -> Result<Registrar> {
        let stats = Arc::new(GatewayStats::default());
        let st = Arc::clone(&stats);
        let served = SocketThread::start(path, access, "gateway socket", "xs-gateway", move |listener, stop| {
            Loop { listener, access, geometry, iface, doors, procs: Vec::new(), next_id: 1, stats: st }.run(&stop)
        })?;
        Ok(Registrar { served, stats })
    }

    pub fn path(&self) -> &Path {
        self.served.path()
    }
}

/// One process of a registration: the registrant (member 0) or a forked
/// child that joined its arena.
struct Registered {
    id: u64,
    pid: u64,
    member: u32,
    conn: UnixStream,
    link: Option<Arc<Link>>,
}

struct Loop {
    listener: UnixListener,
    access: Access,
    geometry: Geometry,
    iface: (Vec<IfAddr>, Option<Ipv4Addr>),
    doors: Vec<WorkerDoor>,
    procs: Vec<Registered>,
    next_id: u64,
    stats: Arc<GatewayStats>,
}

impl Loop {
    fn run(mut self, stop: &AtomicBool) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        while !stop.load(Ordering::Relaxed) {
            let (ready, hung): (bool, Vec<usize>) = {
                let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
                fds.extend(self.procs.iter().map(|p| PollFd::new(p.conn.as_fd(), PollFlags::POLLIN)));
                if !matches!(poll(&mut fds, PollTimeout::from(100u8)), Ok(n) if n > 0) {
                    continue;
                }
                let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                let hung = fds[1..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect();
                (ready, hung)
            };
            // Anything readable on a registered connection is its end: a
            // process says nothing after its hello.
            for &i in hung.iter().rev() {
                let p = self.procs.remove(i);
                if self.procs.iter().any(|q| q.id == p.id) {
                    self.leave(&p);
                } else {
                    self.detach(&p);
                }
            }
            if ready {
                if let Ok((conn, _)) = self.listener.accept() {
                    self.register(conn);
                }
            }
        }
        // The daemon stops: the workers' gateways mark every arena gone as
        // they drop; the connections close with this thread.
    }

    /// Tells every worker; a full inbox is retried until the worker made
    /// room (a dead process must not stay attached for ever).
    fn order_all(&self, make: impl Fn() -> Order) {
        for (w, d) in self.doors.iter().enumerate() {
            let mut order = make();
            let mut delivered = false;
            for _ in 0..1000 {
                match d.inbox.send(order) {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(o) => {
                        order = o;
                        (d.wake)();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            if !delivered {
                tracing::warn!("worker {w} took no order from the gateway for 1 s (its inbox stayed full): an exited application's sockets may stay open on it");
            }
            (d.wake)();
        }
    }

    /// One process of a family sharing an arena exited while others live.
    fn leave(&self, p: &Registered) {
        if let Some(link) = &p.link {
            let m = p.member as usize;
            link.arena.member_pending(m).store(self.doors.len() as u32, Ordering::Release);
            link.arena.member(m).store(member::LEAVING, Ordering::Release);
            self.order_all(|| Order::Leave { id: p.id, member: p.member, link: Arc::clone(link) });
        }
        tracing::info!(
            "application process {} (registration {}, member {}) exited: the sockets it held last are closed",
            p.pid,
            p.id,
            p.member
        );
    }

    fn detach(&self, p: &Registered) {
        self.order_all(|| Order::Detach { id: p.id });
        self.stats.exited.fetch_add(1, Ordering::Relaxed);
        self.stats.attached.fetch_sub(1, Ordering::Relaxed);
        tracing::info!("application process {} (registration {}) exited: its sockets are closed", p.pid, p.id);
    }

    fn register(&mut self, mut conn: UnixStream) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let who = peer(&conn);
        // The process as the kernel recorded it at connect().
        let cred_pid = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.pid() as u32)
            .unwrap_or(0);
        let (pid, join) = match register::read_hello(&mut conn) {
            Ok(Hello::Register { pid }) => (pid, None),
            Ok(Hello::Join { pid, id, token, member }) => (pid, Some((id, token, member))),
            Err(e) => {
                tracing::debug!("gateway: a client that did not say hello: {e}");
                return;
            }
        };
        let refuse = |conn: &mut UnixStream, why: &str| {
            let _ = register::send_refusal(conn, why);
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("gateway: refused process {pid}: {why}");
        };
        match who {
            Ok((uid, gid, groups)) if self.access.allows(uid, gid, &groups) => {}
            Ok((uid, ..)) => {
                return refuse(&mut conn, &format!("uid {uid} is neither root nor in the daemon's control group"));
            }
            Err(e) => return refuse(&mut conn, &format!("no peer credentials: {e:#}")),
        }
        if self.procs.len() >= MAX_PROCESSES {
            return refuse(&mut conn, "too many application processes registered");
        }
        if let Some((id, token, m)) = join {
            // A forked child: it must show the arena's secret, under a
            // member number its parent claimed.
            let family = self.procs.iter().find(|q| q.id == id).and_then(|q| q.link.clone());
            let ok = family.as_ref().is_some_and(|l| {
                l.arena.identity() == (id, token)
                    && (m as usize) < xstack_dataplane::gateway::arena::MAX_MEMBERS
                    && l.arena.member(m as usize).load(Ordering::Acquire) == member::LIVE
                    && !self.procs.iter().any(|q| q.id == id && q.member == m)
            });
            if !ok {
                return refuse(&mut conn, "not a member of that registration");
            }
            if register::send_joined(&mut conn).is_err() {
                return;
            }
            let _ = conn.set_read_timeout(None);
            tracing::debug!("application process {pid} joined registration {id} as member {m}");
            let owner = xstack_dataplane::app::Owner { pid: cred_pid, name: comm(cred_pid) };
            self.order_all(|| Order::Join { id, member: m, owner: owner.clone() });
            self.procs.push(Registered { id, pid, member: m, conn, link: family });
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let inboxes: Vec<Arc<Inbox>> = self.doors.iter().map(|d| Arc::clone(&d.inbox)).collect();
        let wakes: Vec<_> = self.doors.iter().map(|d| d.wake_fd.as_fd()).collect();
        let owner = xstack_dataplane::app::Owner { pid: cred_pid, name: comm(cred_pid) };
        match serve::admit(&conn, id, owner, self.geometry, (&self.iface.0, self.iface.1), &inboxes, &wakes) {
            Ok(link) => {
                for d in &self.doors {
                    (d.wake)();
                }
                let _ = conn.set_read_timeout(None);
                self.stats.registered.fetch_add(1, Ordering::Relaxed);
                self.stats.attached.fetch_add(1, Ordering::Relaxed);
                tracing::info!("application process {pid} registered (registration {id})");
                self.procs.push(Registered { id, pid, member: 0, conn, link: Some(link) });
            }
            Err(e) => {
                tracing::warn!("gateway: admitting process {pid}: {e}");
                // Workers that took the order serve an arena nobody uses
                // until told otherwise.
                let p = Registered { id, pid, member: 0, conn, link: None };
                self.stats.attached.fetch_add(1, Ordering::Relaxed);
                self.detach(&p);
            }
        }
    }
}

/// A process's name as ss -p shows it (its comm), "?" when it is gone.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}
