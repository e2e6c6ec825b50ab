//! Registration: a process connects to the daemon's gateway socket (a
//! unix stream socket beside the control socket), says hello, and gets its
//! offer: the arena's geometry, the stack's addresses, and by SCM_RIGHTS
//! the arena's memfd, the eventfd the process sleeps on and each worker's
//! wake-up eventfd. The connection then stays open for the process's life:
//! its hangup is how the daemon learns the process died (SIGKILL
//! included).

use super::arena::Geometry;
use crate::iface::IfAddr;
use crate::shm::pass;
use crate::wire::Ipv4Addr;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

const HELLO: &[u8; 8] = b"XSHELLO1";
const JOIN: &[u8; 8] = b"XSJOIN01";
const JOINED: &[u8; 8] = b"XSJOINED";
const OFFER: &[u8; 8] = b"XSOFFER1";
const REFUSE: &[u8; 8] = b"XSREFUSE";
/// Addresses an offer carries at most.
const MAX_ADDRS: usize = 64;

/// What the daemon gives a registered process.
#[derive(Debug)]
pub struct Offer {
    pub geometry: Geometry,
    pub addrs: Vec<IfAddr>,
    pub gateway: Option<Ipv4Addr>,
    pub memfd: OwnedFd,
    pub bell: OwnedFd,
    pub wakes: Vec<OwnedFd>,
}

/// The process's hello: who it says it is (the daemon trusts only the
/// credentials the kernel recorded).
pub fn send_hello(s: &mut UnixStream) -> io::Result<()> {
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(HELLO);
    m.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    s.write_all(&m)
}

/// What a process says first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// A new process: it wants an arena.
    Register { pid: u64 },
    /// A forked child of a registered process joining its parent's arena
    /// as member `member` (claimed by the parent before fork); `id` and
    /// `token` from the arena's header prove it has the arena mapped.
    Join { pid: u64, id: u64, token: u64, member: u32 },
}

/// A forked child joins its parent's arena; the daemon's answer follows
/// (`read_joined`).
pub fn send_join(s: &mut UnixStream, id: u64, token: u64, member: u32) -> io::Result<()> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(JOIN);
    m.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&token.to_le_bytes());
    m.extend_from_slice(&u64::from(member).to_le_bytes());
    s.write_all(&m)
}

/// The daemon reads a hello.
pub fn read_hello(s: &mut UnixStream) -> io::Result<Hello> {
    let mut m = [0u8; 16];
    s.read_exact(&mut m)?;
    let pid = u64::from_le_bytes(m[8..].try_into().expect("8 bytes"));
    if &m[..8] == HELLO {
        return Ok(Hello::Register { pid });
    }
    if &m[..8] != JOIN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an xstack gateway hello"));
    }
    let mut rest = [0u8; 24];
    s.read_exact(&mut rest)?;
    let w = |i: usize| u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let member = u32::try_from(w(2)).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok(Hello::Join { pid, id: w(0), token: w(1), member })
}

/// The daemon accepts a join.
pub fn send_joined(s: &mut UnixStream) -> io::Result<()> {
    s.write_all(JOINED)
}

/// The child reads the daemon's answer to its join.
pub fn read_joined(s: &mut UnixStream) -> io::Result<()> {
    let mut m = [0u8; 8];
    s.read_exact(&mut m)?;
    if &m == JOINED {
        return Ok(());
    }
    Err(io::Error::new(io::ErrorKind::PermissionDenied, "the daemon refused the join"))
}

/// The daemon's refusal, with why.
pub fn send_refusal(s: &mut UnixStream, why: &str) -> io::Result<()> {
    let mut m = Vec::new();
    m.extend_from_slice(REFUSE);
    let why = &why.as_bytes()[..why.len().min(1024)];
    m.extend_from_slice(&(why.len() as u64).to_le_bytes());
    m.extend_from_slice(why);
    s.write_all(&m)
}

/// The daemon sends an offer; the descriptors go with its first byte.
pub fn send_offer(
    s: &UnixStream,
    geometry: Geometry,
    addrs: &[IfAddr],
    gateway: Option<Ipv4Addr>,
    memfd: BorrowedFd<'_>,
    bell: BorrowedFd<'_>,
    wakes: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut m = Vec::new();
    m.extend_from_slice(OFFER);
    for w in geometry.to_words() {
        m.extend_from_slice(&w.to_le_bytes());
    }
    let addrs = &addrs[..addrs.len().min(MAX_ADDRS)];
    m.extend_from_slice(&(addrs.len() as u64).to_le_bytes());
    for a in addrs {
        m.extend_from_slice(&(u64::from(a.addr.to_u32()) << 8 | u64::from(a.prefix_len)).to_le_bytes());
    }
    m.extend_from_slice(&gateway.map_or(0, |g| 1 << 32 | u64::from(g.to_u32())).to_le_bytes());
    m.extend_from_slice(&(wakes.len() as u64).to_le_bytes());
    let mut fds = vec![memfd, bell];
    fds.extend_from_slice(wakes);
    let sent = pass::send(s, &m, &fds)?;
    let mut s = s;
    s.write_all(&m[sent..])
}

fn word(b: &[u8], i: usize) -> io::Result<u64> {
    b.get(i * 8..i * 8 + 8)
        .map(|x| u64::from_le_bytes(x.try_into().expect("8 bytes")))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short gateway offer"))
}

/// The process reads the daemon's answer.
pub fn read_offer(s: &mut UnixStream) -> io::Result<Offer> {
    // The descriptors arrive with the first bytes; read those by recvmsg.
    let mut head = [0u8; 8 + 6 * 8 + 8];
    let (n, fds) = pass::recv(s, &mut head)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the gateway connection"));
    }
    if n < 16 {
        s.read_exact(&mut head[n..16])?;
    }
    let n = n.max(16);
    if &head[..8] == REFUSE {
        let len = (word(&head[8..16], 0)? as usize).min(1024);
        let mut why = vec![0u8; len];
        let have = (n - 16).min(len);
        why[..have].copy_from_slice(&head[16..16 + have]);
        s.read_exact(&mut why[have..])?;
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, String::from_utf8_lossy(&why).into_owned()));
    }
    s.read_exact(&mut head[n..])?;
    if &head[..8] != OFFER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an xstack gateway offer"));
    }
    let body = &head[8..];
    let g = [word(body, 0)?, word(body, 1)?, word(body, 2)?, word(body, 3)?, word(body, 4)?, word(body, 5)?];
    let geometry = Geometry::from_words(g)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the daemon offered an arena of no known shape"))?;
    let count = word(body, 6)? as usize;
    if count > MAX_ADDRS {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many addresses in the offer"));
    }
    let mut rest = vec![0u8; count * 8 + 16];
    s.read_exact(&mut rest)?;
    let addrs = (0..count)
        .map(|i| {
            let v = word(&rest, i)?;
            Ok(IfAddr { addr: Ipv4Addr::from_u32((v >> 8) as u32), prefix_len: (v as u8).min(32) })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let gw = word(&rest, count)?;
    let gateway = (gw >> 32 != 0).then(|| Ipv4Addr::from_u32(gw as u32));
    let workers = word(&rest, count + 1)? as usize;
    if workers != geometry.workers as usize || fds.len() != 2 + workers {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the offer's descriptors do not match its workers"));
    }
    let mut fds = fds.into_iter();
    let memfd = fds.next().expect("counted");
    let bell = fds.next().expect("counted");
    Ok(Offer { geometry, addrs, gateway, memfd, bell, wakes: fds.collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn an_offer_carries_its_descriptors_and_addresses() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send_hello(&mut b).unwrap();
        assert_eq!(read_hello(&mut a).unwrap(), Hello::Register { pid: u64::from(std::process::id()) });
        send_join(&mut b, 7, 99, 3).unwrap();
        assert_eq!(
            read_hello(&mut a).unwrap(),
            Hello::Join { pid: u64::from(std::process::id()), id: 7, token: 99, member: 3 }
        );
        send_joined(&mut a).unwrap();
        read_joined(&mut b).unwrap();
        let g = Geometry { workers: 2, ..Geometry::default() };
        let e: Vec<OwnedFd> = (0..4).map(|_| nix::sys::eventfd::EventFd::new().unwrap().into()).collect();
        let addrs = [IfAddr { addr: Ipv4Addr::new(198, 18, 0, 3), prefix_len: 24 }];
        let raw: Vec<BorrowedFd<'_>> = e.iter().map(|f| f.as_fd()).collect();
        send_offer(&a, g, &addrs, Some(Ipv4Addr::new(198, 18, 0, 1)), raw[0], raw[1], &raw[2..]).unwrap();
        let o = read_offer(&mut b).unwrap();
        assert_eq!(o.geometry, g);
        assert_eq!(o.addrs, addrs);
        assert_eq!(o.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(o.wakes.len(), 2);
        // New descriptors for the same eventfds.
        nix::unistd::write(&o.wakes[1], &5u64.to_ne_bytes()).unwrap();
        let mut v = [0u8; 8];
        nix::unistd::read(e[3].as_fd(), &mut v).unwrap();
        assert_eq!(u64::from_ne_bytes(v), 5);
    }

    #[test]
    fn a_refusal_says_why() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send_refusal(&mut a, "not in the control group").unwrap();
        let e = read_offer(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("control group"), "{e}");
    }
}
