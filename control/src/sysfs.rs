//! Facts about an interface and the machine, read from sysfs and procfs
//! (`ip netns exec` mounts the namespace's own /sys, so these see the
//! namespace's interfaces).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use xstack_dataplane::wire::ethernet::EthernetAddress;

fn read(ifname: &str, what: &str) -> Result<String> {
    let p = format!("/sys/class/net/{ifname}/{what}");
    Ok(std::fs::read_to_string(&p)
        .with_context(|| format!("reading {p} (does interface {ifname} exist?)"))?
        .trim()
        .to_owned())
}

pub fn mac(ifname: &str) -> Result<EthernetAddress> {
    let s = read(ifname, "address")?;
    s.parse().with_context(|| format!("{ifname} has MAC {s:?}"))
}

pub fn mtu(ifname: &str) -> Result<u16> {
    let s = read(ifname, "mtu")?;
    s.parse().with_context(|| format!("{ifname} has MTU {s:?}"))
}

/// Number of receive queues the interface exposes.
pub fn rx_queues(ifname: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n as u32)
}

/// Makes sure a bpffs is mounted at `dir`, mounting one if not.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let want = dir.to_string_lossy();
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        point == Some(&*want) && fstype == Some("bpf")
    }) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tracing::info!("mounting bpffs at {} (it was not mounted in this mount namespace)", dir.display());
    let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir).status().context("running mount")?;
    if !st.success() {
        bail!("mounting bpffs at {} failed ({st}); run as root or mount it yourself", dir.display());
    }
    Ok(())
}

/// The NIC's receive-side scaling configuration, as `ethtool -x` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    pub key: Vec<u8>,
    /// Indirection table: entry i is the queue for hashes with `hash % len == i`.
    pub table: Vec<u32>,
}

/// The interface's RSS key and table if it hashes with Toeplitz; `None`
/// when it has no RSS (veth), ethtool is missing, or another function is
/// in use: the stack then uses the default key and hands misplaced
/// segments to their owner.
pub fn rss(ifname: &str) -> Option<Rss> {
    let out = Command::new("ethtool").args(["-x", ifname]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_ethtool_rss(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ethtool_rss(text: &str) -> Option<Rss> {
    let mut table = Vec::new();
    let mut key = None;
    let mut toeplitz = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.starts_with("RSS hash key") {
            let hex = lines.next()?.trim();
            let bytes: Option<Vec<u8>> = hex.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect();
            key = bytes.filter(|b| b.len() >= 16);
        } else if t.starts_with("toeplitz:") {
            toeplitz = t.ends_with("on");
        } else if let Some((idx, rest)) = t.split_once(':') {
            if idx.chars().all(|c| c.is_ascii_digit()) && !idx.is_empty() {
                table.extend(rest.split_whitespace().filter_map(|q| q.parse::<u32>().ok()));
            }
        }
    }
    (toeplitz && !table.is_empty()).then_some(Rss { key: key?, table })
}

#[cfg(test)]
mod rss_tests {
    use super::*;

    #[test]
    fn parses_ethtool_output() {
        let text = "RX flow hash indirection table for eth0 with 2 RX ring(s):\n    0:      0     1     0     1\n    4:      1     0     1     0\nRSS hash key:\n6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb\nRSS hash function:\n    toeplitz: on\n    xor: off\n    crc32: off\n";
        let r = parse_ethtool_rss(text).unwrap();
        assert_eq!(r.table, vec![0, 1, 0, 1, 1, 0, 1, 0]);
        assert_eq!(r.key.len(), 20);
        assert_eq!(r.key[0], 0x6d);
        assert!(parse_ethtool_rss(&text.replace("toeplitz: on", "toeplitz: off")).is_none());
        assert!(parse_ethtool_rss("Cannot get RX flow hash indirection table: Operation not supported").is_none());
    }
}

/// Kernel TCP listeners in this network namespace that would lose their
/// traffic to the stack: listening on one of `ports` at one of `addrs`,
/// at 0.0.0.0, or at [::] (which takes IPv4 too). As "ADDR:PORT".
pub fn kernel_listeners(ports: &[u16], addrs: &[xstack_dataplane::wire::Ipv4Addr]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (addr, port) in listeners(&text, v6) {
            let hit = match addr {
                None => true,
                Some(a) => addrs.contains(&a),
            };
            if hit && ports.contains(&port) {
                found.push(match addr {
                    None if v6 => format!("[::]:{port}"),
                    None => format!("0.0.0.0:{port}"),
                    Some(a) => format!("{a}:{port}"),
                });
            }
        }
    }
    found
}

/// LISTEN sockets of a /proc/net/tcp or tcp6 table: (IPv4 address, or None
/// for any; port). IPv6 entries other than [::] and v4-mapped are left out.
fn listeners(text: &str, v6: bool) -> Vec<(Option<xstack_dataplane::wire::Ipv4Addr>, u16)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((a, p)) = f[1].split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(p, 16) else { continue };
        let addr = if v6 {
            // Four 32-bit words in host order: :: is all zeros, a
            // v4-mapped address ends in 0000FFFF then the IPv4 word.
            if a.len() != 32 {
                continue;
            }
            if a.bytes().all(|b| b == b'0') {
                None
            } else if &a[..16] == "0000000000000000" && &a[16..24] == "FFFF0000" {
                let Ok(w) = u32::from_str_radix(&a[24..], 16) else { continue };
                Some(xstack_dataplane::wire::Ipv4Addr::from_u32(u32::from_be(w.to_le())))
            } else {
                continue;
            }
        } else {
            let Ok(w) = u32::from_str_radix(a, 16) else { continue };
            if w == 0 {
                None
            } else {
                // The word is the address in network order read as a
                // little-endian number.
                Some(xstack_dataplane::wire::Ipv4Addr::from_u32(u32::from_be(w.to_le())))
            }
        };
        out.push((addr, port));
    }
    out
}

#[cfg(test)]
mod listener_tests {
    use super::*;
    use xstack_dataplane::wire::Ipv4Addr;

    #[test]
    fn listeners_are_read_from_procfs_tables() {
        let v4 = "  sl  local_address rem_address   st\n\
                  0: 00000000:07E8 00000000:0000 0A 0\n\
                  1: 020012C6:0050 00000000:0000 0A 0\n\
                  2: 020012C6:0051 010012C6:9C40 01 0\n";
        assert_eq!(listeners(v4, false), [(None, 2024), (Some(Ipv4Addr::new(198, 18, 0, 2)), 80)]);
        let v6 = "  sl  local_address remote_address st\n\
                  0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n\
                  1: 0000000000000000FFFF0000020012C6:0050 00000000000000000000000000000000:0000 0A 0\n\
                  2: 000080FE00000000FF00000000000001:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listeners(v6, true), [(None, 8080), (Some(Ipv4Addr::new(198, 18, 0, 2)), 80)]);
    }
}
