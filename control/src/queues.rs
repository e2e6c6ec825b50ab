//! Which of the NIC's receive queues get the stack's traffic.
//!
//! RSS spreads flows over every receive queue of the NIC. The stack has a
//! worker (an AF_XDP socket) on queues 0..N; a segment that lands on a
//! queue without one is refused (the XDP program's RST for a dedicated
//! address, the kernel's for a shared one) and ARP there goes unanswered.
//! So the daemon runs one worker per receive queue by default, and when
//! configured with fewer, confines RSS to its queues: `ethtool -X IF equal
//! N` (the indirection table spread over queues 0..N), put back to the
//! NIC's default spread on exit. When that cannot be done (no RSS table, as
//! on veth, whose receive queue is the sender's transmit queue; or a table
//! the operator set that sends traffic elsewhere) the daemon refuses to
//! start with what to do instead, rather than serve a fraction of its
//! peers. A daemon killed with SIGKILL leaves the table confined: all the
//! NIC's traffic then arrives on queues 0..N, which is harmless, and the
//! next daemon on the interface finds it so.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The RSS indirection table from `ethtool -x` output (entry i: the queue
/// for hashes with `hash % len == i`), whatever the hash function.
pub fn parse_table(text: &str) -> Vec<u32> {
    let mut table = Vec::new();
    for line in text.lines() {
        if let Some((idx, rest)) = line.trim().split_once(':') {
            if !idx.is_empty() && idx.chars().all(|c| c.is_ascii_digit()) {
                table.extend(rest.split_whitespace().filter_map(|q| q.parse::<u32>().ok()));
            }
        }
    }
    table
}

/// What to do so that only queues `0..workers` of `queues` get traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A worker on every queue, or a table that already uses only the
    /// workers' queues.
    Nothing,
    /// The table is the NIC's default spread: spread it over the workers'
    /// queues, and back over all of them on exit.
    Confine,
    /// Neither: the reason, for the operator.
    Refuse(String),
}

/// Linux ethtool_rxfh_indir_default: entry i goes to queue i % n.
fn is_default_spread(table: &[u32], queues: u32) -> bool {
    table.iter().enumerate().all(|(i, &q)| q as usize == i % queues as usize)
}

/// Decides from the table `ethtool -x` printed (`Err`: why it could not
/// be read).
pub fn plan(ifname: &str, table: Result<&[u32], &str>, workers: u32, queues: u32) -> Plan {
    if workers >= queues {
        return Plan::Nothing;
    }
    let advice = format!(
        "run one worker per receive queue (leave queues unset, or --queues {queues}), or give {ifname} only \
         {workers} receive queue(s) before starting (ethtool -L {ifname} combined {workers}; a veth pair: \
         ethtool -L rx {workers} tx {workers} on both ends)"
    );
    let table = match table {
        Ok(t) if !t.is_empty() => t,
        Ok(_) | Err(_) => {
            let why = match table {
                Err(e) => e.trim().to_owned(),
                Ok(_) => "no indirection table".to_owned(),
            };
            return Plan::Refuse(format!(
                "{ifname} has {queues} receive queues and {workers} worker(s) were configured, but RSS cannot be \
                 confined to queues 0..{workers} ({why}): connections hashed to the other queues would be \
                 refused; {advice}"
            ));
        }
    };
    if table.iter().all(|&q| q < workers) {
        return Plan::Nothing;
    }
    if is_default_spread(table, queues) {
        return Plan::Confine;
    }
    let mut others: Vec<u32> = table.iter().copied().filter(|&q| q >= workers).collect();
    others.sort_unstable();
    others.dedup();
    Plan::Refuse(format!(
        "{ifname}'s RSS indirection table was set by hand and sends flows to queue(s) {others:?}, which have no \
         worker; it is left alone: spread it over the workers' queues yourself (ethtool -X {ifname} equal \
         {workers}), or {advice}"
    ))
}

fn ethtool(args: &[&str]) -> Result<String, String> {
    match Command::new("ethtool").args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(format!("running ethtool: {e}")),
    }
}

/// The interface's RSS confined to the workers' queues while it lives;
/// dropping it spreads the table over every queue again.
#[derive(Debug)]
pub struct Confinement {
    ifname: String,
    restore: bool,
}

impl Confinement {
    /// Makes sure only queues `0..workers` of the interface's `queues`
    /// receive traffic, or says why it cannot.
    pub fn apply(ifname: &str, workers: u32, queues: u32) -> Result<Confinement> {
        let none = Confinement { ifname: ifname.to_owned(), restore: false };
        if workers >= queues {
            return Ok(none);
        }
        let read = ethtool(&["-x", ifname]).map(|t| parse_table(&t));
        match plan(ifname, read.as_deref().map_err(String::as_str), workers, queues) {
            Plan::Nothing => {
                tracing::info!("{ifname}'s RSS already sends every flow to queues 0..{workers}");
                Ok(none)
            }
            Plan::Refuse(why) => bail!("{why}"),
            Plan::Confine => {
                let n = workers.to_string();
                ethtool(&["-X", ifname, "equal", &n])
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("confining {ifname}'s RSS to queues 0..{workers} (ethtool -X)"))?;
                let guard = Confinement { ifname: ifname.to_owned(), restore: true };
                let now = ethtool(&["-x", ifname]).map(|t| parse_table(&t)).unwrap_or_default();
                if now.is_empty() || now.iter().any(|&q| q >= workers) {
                    bail!("{ifname}'s RSS table still sends flows beyond queue {} after ethtool -X", workers - 1);
                }
                tracing::info!(
                    "{ifname}: RSS confined to queues 0..{workers} of {queues} (ethtool -X equal {workers}); \
                     spread over all of them again on exit"
                );
                Ok(guard)
            }
        }
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        if !self.restore {
            return;
        }
        match ethtool(&["-X", &self.ifname, "default"]) {
            Ok(_) => tracing::info!("{}: RSS spread over every queue again", self.ifname),
            Err(e) => tracing::warn!(
                "{}: putting RSS back to the default spread failed ({e}); run `ethtool -X {} default`",
                self.ifname,
                self.ifname
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table_whatever_the_hash_function() {
        let text = "RX flow hash indirection table for eth0 with 4 RX ring(s):\n    0:      0     1     2     3\n    4:      0     1     2     3\nRSS hash key:\n6d:5a\nRSS hash function:\n    toeplitz: off\n    xor: on\n";
        assert_eq!(parse_table(text), vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert!(parse_table("Cannot get RX flow hash indirection table: Operation not supported").is_empty());
    }

    #[test]
    fn confines_only_a_default_spread_and_refuses_otherwise() {
        let default4: Vec<u32> = (0..128).map(|i| i % 4).collect();
        assert_eq!(plan("eth0", Ok(&default4), 4, 4), Plan::Nothing, "a worker per queue");
        assert_eq!(plan("eth0", Ok(&default4), 2, 4), Plan::Confine);
        let confined: Vec<u32> = (0..128).map(|i| i % 2).collect();
        assert_eq!(plan("eth0", Ok(&confined), 2, 4), Plan::Nothing, "already confined (e.g. after a crash)");
        let mut custom = confined.clone();
        custom[5] = 3;
        match plan("eth0", Ok(&custom), 2, 4) {
            Plan::Refuse(why) => assert!(why.contains("[3]") && why.contains("ethtool -X eth0 equal 2"), "{why}"),
            p => panic!("{p:?}"),
        }
        match plan("veth1", Err("Operation not supported"), 1, 4) {
            Plan::Refuse(why) => {
                assert!(why.contains("veth1 has 4 receive queues"), "{why}");
                assert!(why.contains("Operation not supported"), "{why}");
                assert!(why.contains("--queues 4") && why.contains("ethtool -L veth1 combined 1"), "{why}");
                assert!(why.contains("rx 1 tx 1 on both ends"), "{why}");
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(plan("x", Ok(&[]), 1, 2), Plan::Refuse(_)));
    }
}
