//! Commands (a process's threads to a worker) and events (a worker to the
//! process) as the fixed-size records of `shm::queue`. A record the
//! reader cannot decode is dropped and counted, like a malformed frame.

use crate::shm::queue::{Record, RECORD};
use crate::tcp::{Algorithm, Shutdown, SocketOption};
use crate::wire::Ipv4Addr;
use std::time::Duration;

/// What a process asks a worker to do with one of its slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Create the stack socket for a slot of the process's range.
    Open {
        slot: u32,
    },
    SetOption {
        slot: u32,
        option: SocketOption,
    },
    /// bind(): the slot's state says BOUND (`local` names the port) or
    /// ERROR.
    Bind {
        slot: u32,
        addr: Ipv4Addr,
        port: u16,
    },
    /// listen() (with bind() first unless a `Bind` did it): the slot's
    /// state says LISTENING or ERROR.
    Listen {
        slot: u32,
        addr: Ipv4Addr,
        port: u16,
        backlog: u32,
    },
    /// connect(), from `bind` when one was given.
    Connect {
        slot: u32,
        remote: (Ipv4Addr, u16),
        bind: Option<(Ipv4Addr, u16)>,
    },
    Shutdown {
        slot: u32,
        how: Shutdown,
    },
    /// The process closed the socket: FIN after the send ring drains, or
    /// RST when data was left unread (Linux tcp_close).
    Close {
        slot: u32,
    },
    /// The process wrote to a send ring, or read from a receive ring, that
    /// the worker stopped looking at (`arena::wants`).
    Kick {
        slot: u32,
    },
}

/// What a worker tells a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A listener established a connection, now in `child` (a slot of the
    /// worker's range) with its rings placed.
    Accepted { listener: u32, child: u32 },
}

const OPEN: u8 = 1;
const SET_OPTION: u8 = 2;
const LISTEN: u8 = 3;
const CONNECT: u8 = 4;
const SHUTDOWN: u8 = 5;
const CLOSE: u8 = 6;
const KICK: u8 = 7;
const BIND: u8 = 8;

const ACCEPTED: u8 = 1;

fn put32(r: &mut Record, at: usize, v: u32) {
    r[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(r: &mut Record, at: usize, v: u64) {
    r[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(r: &Record, at: usize) -> u32 {
    u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"))
}
fn get64(r: &Record, at: usize) -> u64 {
    u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"))
}

fn encode_option(o: SocketOption) -> (u8, u64) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match o {
        SocketOption::ReuseAddr(b) => (1, b.into()),
        SocketOption::NoDelay(b) => (2, b.into()),
        SocketOption::KeepAlive(b) => (3, b.into()),
        SocketOption::KeepIdle(d) => (4, ms(d)),
        SocketOption::KeepIntvl(d) => (5, ms(d)),
        SocketOption::KeepCnt(n) => (6, n.into()),
        // Off is u64::MAX; on, the timeout in milliseconds.
        SocketOption::Linger(l) => (7, l.map_or(u64::MAX, ms)),
        SocketOption::SendBuffer(n) => (8, n as u64),
        SocketOption::RecvBuffer(n) => (9, n as u64),
        SocketOption::Congestion(a) => (
            10,
            match a {
                Algorithm::NewReno => 0,
                Algorithm::Cubic => 1,
            },
        ),
        SocketOption::UserTimeout(d) => (11, ms(d)),
    }
}

fn decode_option(kind: u8, v: u64) -> Option<SocketOption> {
    let ms = Duration::from_millis;
    Some(match kind {
        1 => SocketOption::ReuseAddr(v != 0),
        2 => SocketOption::NoDelay(v != 0),
        3 => SocketOption::KeepAlive(v != 0),
        4 => SocketOption::KeepIdle(ms(v)),
        5 => SocketOption::KeepIntvl(ms(v)),
        6 => SocketOption::KeepCnt(u32::try_from(v).ok()?),
        7 => SocketOption::Linger((v != u64::MAX).then(|| ms(v))),
        8 => SocketOption::SendBuffer(usize::try_from(v).ok()?),
        9 => SocketOption::RecvBuffer(usize::try_from(v).ok()?),
        10 => SocketOption::Congestion(match v {
            0 => Algorithm::NewReno,
            1 => Algorithm::Cubic,
            _ => return None,
        }),
        11 => SocketOption::UserTimeout(ms(v)),
        _ => return None,
    })
}

fn addr(a: (Ipv4Addr, u16)) -> u64 {
    1 << 48 | u64::from(a.0.to_u32()) << 16 | u64::from(a.1)
}

fn unaddr(v: u64) -> Option<(Ipv4Addr, u16)> {
    (v >> 48 != 0).then(|| (Ipv4Addr::from_u32((v >> 16) as u32), v as u16))
}

/// An address as slots keep it (`Slot::local`, `Slot::peer`): 0 for none.
pub fn pack_addr(a: (Ipv4Addr, u16)) -> u64 {
    addr(a)
}

pub fn unpack_addr(v: u64) -> Option<(Ipv4Addr, u16)> {
    unaddr(v)
}

impl Command {
    pub fn encode(&self) -> Record {
        let mut r = [0u8; RECORD];
        let (kind, slot) = match *self {
            Command::Open { slot } => (OPEN, slot),
            Command::SetOption { slot, option } => {
                let (k, v) = encode_option(option);
                r[8] = k;
                put64(&mut r, 16, v);
                (SET_OPTION, slot)
            }
            Command::Bind { slot, addr: a, port } => {
                put64(&mut r, 8, addr((a, port)));
                (BIND, slot)
            }
            Command::Listen { slot, addr: a, port, backlog } => {
                put64(&mut r, 8, addr((a, port)));
                put32(&mut r, 16, backlog);
                (LISTEN, slot)
            }
            Command::Connect { slot, remote, bind } => {
                put64(&mut r, 8, addr(remote));
                put64(&mut r, 16, bind.map_or(0, addr));
                (CONNECT, slot)
            }
            Command::Shutdown { slot, how } => {
                r[8] = match how {
                    Shutdown::Read => 0,
                    Shutdown::Write => 1,
                    Shutdown::Both => 2,
                };
                (SHUTDOWN, slot)
            }
            Command::Close { slot } => (CLOSE, slot),
            Command::Kick { slot } => (KICK, slot),
        };
        r[0] = kind;
        put32(&mut r, 4, slot);
        r
    }

    pub fn decode(r: &Record) -> Option<Command> {
        let slot = get32(r, 4);
        Some(match r[0] {
            OPEN => Command::Open { slot },
            SET_OPTION => Command::SetOption { slot, option: decode_option(r[8], get64(r, 16))? },
            BIND => {
                let (addr, port) = unaddr(get64(r, 8))?;
                Command::Bind { slot, addr, port }
            }
            LISTEN => {
                let (addr, port) = unaddr(get64(r, 8))?;
                Command::Listen { slot, addr, port, backlog: get32(r, 16) }
            }
            CONNECT => Command::Connect { slot, remote: unaddr(get64(r, 8))?, bind: unaddr(get64(r, 16)) },
            SHUTDOWN => Command::Shutdown {
                slot,
                how: match r[8] {
                    0 => Shutdown::Read,
                    1 => Shutdown::Write,
                    2 => Shutdown::Both,
                    _ => return None,
                },
            },
            CLOSE => Command::Close { slot },
            KICK => Command::Kick { slot },
            _ => return None,
        })
    }
}

impl Event {
    pub fn encode(&self) -> Record {
        let mut r = [0u8; RECORD];
        match *self {
            Event::Accepted { listener, child } => {
                r[0] = ACCEPTED;
                put32(&mut r, 4, listener);
                put32(&mut r, 8, child);
            }
        }
        r
    }

    pub fn decode(r: &Record) -> Option<Event> {
        match r[0] {
            ACCEPTED => Some(Event::Accepted { listener: get32(r, 4), child: get32(r, 8) }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let a = Ipv4Addr::new(198, 18, 0, 3);
        let all = [
            Command::Open { slot: 1 },
            Command::SetOption { slot: 2, option: SocketOption::KeepIdle(Duration::from_secs(7)) },
            Command::SetOption { slot: 2, option: SocketOption::Linger(None) },
            Command::SetOption { slot: 2, option: SocketOption::Linger(Some(Duration::ZERO)) },
            Command::SetOption { slot: 2, option: SocketOption::RecvBuffer(1 << 20) },
            Command::SetOption { slot: 2, option: SocketOption::UserTimeout(Duration::from_millis(2500)) },
            Command::Bind { slot: 3, addr: a, port: 0 },
            Command::Bind { slot: 3, addr: Ipv4Addr::new(0, 0, 0, 0), port: 6379 },
            Command::Listen { slot: 3, addr: Ipv4Addr::new(0, 0, 0, 0), port: 0, backlog: 511 },
            Command::Connect { slot: 4, remote: (a, 80), bind: None },
            Command::Connect { slot: 4, remote: (a, 80), bind: Some((a, 0)) },
            Command::Shutdown { slot: 5, how: Shutdown::Write },
            Command::Close { slot: u32::MAX },
            Command::Kick { slot: 9 },
        ];
        for c in all {
            assert_eq!(Command::decode(&c.encode()), Some(c));
        }
        let e = Event::Accepted { listener: 3, child: 4097 };
        assert_eq!(Event::decode(&e.encode()), Some(e));
    }

    #[test]
    fn garbage_records_decode_to_nothing_or_something_harmless() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            let mut r = [0u8; RECORD];
            for b in r.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            r[0] %= 10;
            let _ = Command::decode(&r);
            let _ = Event::decode(&r);
        }
        assert_eq!(Command::decode(&[0; RECORD]), None);
    }
}
