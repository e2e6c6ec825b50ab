//! Who owns the XDP program on an interface: a record per interface
//! (network namespace and interface index) in /run/xstack/owners, written
//! by the daemon that attached the program and removed when it stops.
//!
//! At start, a program already on the interface is
//! - a running daemon's (its record names a live xstackd): refused, with
//!   that daemon's instance, pid and control socket, even with `replace`;
//! - a dead daemon's (the record names a process that is gone, a `kill -9`
//!   or a crash): replaced, with a line in the log, so a supervisor's
//!   restart brings the stack back by itself;
//! - anything else's: refused unless `replace` is set.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

const DIR: &str = "/run/xstack/owners";

/// The daemon that attached an interface's program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pid: u32,
    pub prog_id: u32,
    pub instance: String,
    pub control_socket: String,
}

/// The record's file for interface `ifindex` of this process's network
/// namespace (interface names and indices are per namespace).
fn path(ifindex: i32) -> PathBuf {
    let netns = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    PathBuf::from(format!("{DIR}/{netns}-{ifindex}"))
}

pub fn read(ifindex: i32) -> Option<Record> {
    let text = std::fs::read_to_string(path(ifindex)).ok()?;
    let mut f = text.lines();
    Some(Record {
        pid: f.next()?.parse().ok()?,
        prog_id: f.next()?.parse().ok()?,
        instance: f.next()?.to_owned(),
        control_socket: f.next()?.to_owned(),
    })
}

pub fn write(ifindex: i32, r: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(DIR)?;
    let tmp = path(ifindex).with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n{}\n{}\n{}\n", r.pid, r.prog_id, r.instance, r.control_socket))?;
    std::fs::rename(tmp, path(ifindex))
}

/// Removes the record if it is this process's.
pub fn remove_mine(ifindex: i32) {
    if read(ifindex).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(path(ifindex));
    }
}

/// True when `pid` is a running xstackd (not a process that got the
/// number since).
pub fn alive(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let trimmed = comm.trim();
    // The daemon's threads rename themselves; the process keeps the
    // executable's name.
    !trimmed.is_empty() && trimmed.starts_with("xstackd") && pid != std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_is_not_a_daemon_and_a_gone_pid_is_dead() {
        assert!(!alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
