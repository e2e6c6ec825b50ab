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
