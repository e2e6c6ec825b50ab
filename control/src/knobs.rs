//! The TCP knobs of the behaviour contract, by name: what `config` lists
//! and what `set` may change while the stack runs.
//!
//! Names are those of the `[tcp]` table of the configuration file (the
//! Linux sysctl without its `tcp_` prefix, durations with their unit), so
//! an operator uses one vocabulary for the file and the control socket.
//! A knob is changeable at run time when the engine reads it at each use
//! (the next retransmission, SYN, listen() or connect()), exactly as a
//! sysctl change takes effect on Linux. The others are fixed when the
//! workers start: the MTU sizes the frames; buffer sizes, keep-alive
//! timing and the congestion algorithm are copied into each socket's
//! options when it is created, and accepted connections inherit their
//! listener's (created at start), so a change would not reach them; the
//! options announced in SYNs (timestamps, SACK, window scaling) must not
//! change under a SYN cookie in flight.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use xstack_dataplane::tcp::{Algorithm, Config};

/// One knob: its name, the sysctl it mirrors, and how to read and set it.
#[derive(Debug)]
pub struct Knob {
    pub name: &'static str,
    pub sysctl: &'static str,
    /// Can be changed without a restart.
    pub runtime: bool,
    get: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<()>,
}

impl Knob {
    pub fn value(&self, c: &Config) -> String {
        (self.get)(c)
    }

    /// Sets the knob in `c` from its text form, with the knob's own
    /// checks (the configuration file and `set` validate alike).
    pub fn apply(&self, c: &mut Config, v: &str) -> Result<()> {
        (self.set)(c, v)
    }
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    v.trim().parse::<T>().with_context(|| format!("{v:?} is not a valid number"))
}

/// A number within the sysctl's own bounds (measured on Linux 6.18: the
/// kernel refuses values outside them with EINVAL).
fn within<T>(v: &str, lo: T, hi: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let n: T = num(v)?;
    if n < lo || n > hi {
        bail!("{n} is outside {lo}..={hi}, the bounds Linux accepts");
    }
    Ok(n)
}

fn flag(v: &str) -> Result<bool> {
    match v.trim() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => bail!("{v:?} is not a boolean (0/1, true/false, on/off)"),
    }
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

macro_rules! knob {
    ($name:literal, $sysctl:literal, $runtime:expr, |$c:ident| $get:expr, |$m:ident, $v:ident| $set:expr) => {
        Knob { name: $name, sysctl: $sysctl, runtime: $runtime, get: |$c| $get, set: |$m, $v| $set }
    };
}

/// Every knob, in the order `config` lists them.
pub static KNOBS: &[Knob] = &[
    knob!("syn_retries", "net.ipv4.tcp_syn_retries", true, |c| c.syn_retries.to_string(), |c, v| {
        // MAX_TCP_SYNCNT.
        c.syn_retries = within(v, 1, 127)?;
        Ok(())
    }),
    knob!(
        "syn_linear_timeouts",
        "net.ipv4.tcp_syn_linear_timeouts",
        true,
        |c| c.syn_linear_timeouts.to_string(),
        |c, v| {
            c.syn_linear_timeouts = within(v, 0, 127)?;
            Ok(())
        }
    ),
    knob!("synack_retries", "net.ipv4.tcp_synack_retries", true, |c| c.synack_retries.to_string(), |c, v| {
        // A u8 sysctl (proc_dou8vec_minmax).
        c.synack_retries = within(v, 0, 255)?;
        Ok(())
    }),
    knob!("retries2", "net.ipv4.tcp_retries2", true, |c| c.retries2.to_string(), |c, v| {
        c.retries2 = within(v, 0, 255)?;
        Ok(())
    }),
    knob!("max_syn_backlog", "net.ipv4.tcp_max_syn_backlog", true, |c| c.max_syn_backlog.to_string(), |c, v| {
        c.max_syn_backlog = num(v)?;
        Ok(())
    }),
    knob!("somaxconn", "net.core.somaxconn", true, |c| c.somaxconn.to_string(), |c, v| {
        c.somaxconn = num(v)?;
        Ok(())
    }),
    knob!("syncookies", "net.ipv4.tcp_syncookies", true, |c| c.syncookies.to_string(), |c, v| {
        let n: u8 = num(v)?;
        if n > 2 {
            bail!("syncookies must be 0, 1 or 2");
        }
        c.syncookies = n;
        Ok(())
    }),
    knob!(
        "abort_on_overflow",
        "net.ipv4.tcp_abort_on_overflow",
        true,
        |c| u8::from(c.abort_on_overflow).to_string(),
        |c, v| {
            c.abort_on_overflow = flag(v)?;
            Ok(())
        }
    ),
    knob!("time_wait_secs", "TCP_TIMEWAIT_LEN (2 MSL)", true, |c| secs(c.time_wait), |c, v| {
        c.time_wait = Duration::from_secs(num(v)?);
        Ok(())
    }),
    knob!("fin_timeout_secs", "net.ipv4.tcp_fin_timeout", true, |c| secs(c.fin_timeout), |c, v| {
        c.fin_timeout = Duration::from_secs(num(v)?);
        Ok(())
    }),
    knob!("keepalive_time_secs", "net.ipv4.tcp_keepalive_time", false, |c| secs(c.keepalive_time), |c, v| {
        c.keepalive_time = Duration::from_secs(at_least_one(num(v)?)?);
        Ok(())
    }),
    knob!("keepalive_intvl_secs", "net.ipv4.tcp_keepalive_intvl", false, |c| secs(c.keepalive_intvl), |c, v| {
        c.keepalive_intvl = Duration::from_secs(at_least_one(num(v)?)?);
        Ok(())
    }),
    knob!("keepalive_probes", "net.ipv4.tcp_keepalive_probes", false, |c| c.keepalive_probes.to_string(), |c, v| {
        c.keepalive_probes = at_least_one(within(v, 0, 255)?)?;
        Ok(())
    }),
    knob!(
        "local_port_range",
        "net.ipv4.ip_local_port_range",
        true,
        |c| format!("{} {}", c.ephemeral_ports.0, c.ephemeral_ports.1),
        |c, v| {
            let mut it = v.split(|ch: char| ch.is_whitespace() || ch == '-' || ch == ',').filter(|s| !s.is_empty());
            let (Some(lo), Some(hi), None) = (it.next(), it.next(), it.next()) else {
                bail!("local_port_range takes two ports, e.g. \"32768 60999\"");
            };
            let (lo, hi): (u16, u16) = (num(lo)?, num(hi)?);
            if lo == 0 || lo > hi {
                bail!("local_port_range {lo} {hi}: the first port must be 1 or more and not above the second");
            }
            c.ephemeral_ports = (lo, hi);
            Ok(())
        }
    ),
    knob!("timestamps", "net.ipv4.tcp_timestamps", false, |c| u8::from(c.timestamps).to_string(), |c, v| {
        c.timestamps = flag(v)?;
        Ok(())
    }),
    knob!("sack", "net.ipv4.tcp_sack", false, |c| u8::from(c.sack).to_string(), |c, v| {
        c.sack = flag(v)?;
        Ok(())
    }),
    // Linux's 3 and 4 schedule tail loss probes (tcp_schedule_loss_probe);
    // 0 to 2 do not. Read at each probe: changeable while running.
    knob!(
        "early_retrans",
        "net.ipv4.tcp_early_retrans",
        true,
        |c| if c.loss_probes { "3" } else { "0" }.to_string(),
        |c, v| {
            c.loss_probes = within(v, 0u8, 4u8)? >= 3;
            Ok(())
        }
    ),
    // Any non-zero value turns F-RTO on (Linux's tcp_frto; 2 by
    // default). Read at each timeout: changeable while running.
    // Read at each handshake: changeable while running. (Linux's values
    // past 2 are Accurate ECN's, which the stack does not speak.)
    knob!("ecn", "net.ipv4.tcp_ecn", true, |c| c.ecn.to_string(), |c, v| {
        c.ecn = within(v, 0u8, 2u8)?;
        Ok(())
    }),
    knob!("frto", "net.ipv4.tcp_frto", true, |c| if c.frto { "2" } else { "0" }.to_string(), |c, v| {
        c.frto = within(v, 0u8, 2u8)? > 0;
        Ok(())
    }),
    knob!(
        "window_scaling",
        "net.ipv4.tcp_window_scaling",
        false,
        |c| u8::from(c.window_scaling).to_string(),
        |c, v| {
            c.window_scaling = flag(v)?;
            Ok(())
        }
    ),
    knob!(
        "congestion_control",
        "net.ipv4.tcp_congestion_control",
        false,
        |c| algorithm_name(c.congestion).into(),
        |c, v| {
            c.congestion = match v.trim() {
                "cubic" => Algorithm::Cubic,
                "reno" | "newreno" => Algorithm::NewReno,
                other => bail!("congestion_control {other:?}: cubic or reno"),
            };
            Ok(())
        }
    ),
    knob!(
        "challenge_ack_limit",
        "net.ipv4.tcp_challenge_ack_limit",
        true,
        |c| c.challenge_ack_limit.to_string(),
        |c, v| {
            c.challenge_ack_limit = num(v)?;
            Ok(())
        }
    ),
    knob!("invalid_ratelimit_ms", "net.ipv4.tcp_invalid_ratelimit", true, |c| millis(c.invalid_ratelimit), |c, v| {
        c.invalid_ratelimit = Duration::from_millis(num(v)?);
        Ok(())
    }),
    knob!("rmem_default", "net.ipv4.tcp_rmem[1]", false, |c| c.recv_buffer.to_string(), |c, v| {
        c.recv_buffer = buffer(v)?;
        Ok(())
    }),
    knob!("wmem_default", "net.ipv4.tcp_wmem[1]", false, |c| c.send_buffer.to_string(), |c, v| {
        c.send_buffer = buffer(v)?;
        Ok(())
    }),
    knob!("rto_initial_ms", "TCP_TIMEOUT_INIT", false, |c| millis(c.initial_rto), |c, v| {
        c.initial_rto = Duration::from_millis(num(v)?);
        Ok(())
    }),
    knob!("rto_min_ms", "TCP_RTO_MIN", false, |c| millis(c.min_rto), |c, v| {
        c.min_rto = Duration::from_millis(num(v)?);
        Ok(())
    }),
    knob!("delayed_ack_ms", "TCP_DELACK_MIN", false, |c| millis(c.delayed_ack), |c, v| {
        c.delayed_ack = Duration::from_millis(num(v)?);
        Ok(())
    }),
    knob!("rmem_max", "net.ipv4.tcp_rmem[2]", false, |c| c.recv_buffer_max.to_string(), |c, v| {
        c.recv_buffer_max = buffer(v)?;
        Ok(())
    }),
    knob!("wmem_max", "net.ipv4.tcp_wmem[2]", true, |c| c.send_buffer_max.to_string(), |c, v| {
        c.send_buffer_max = buffer(v)?;
        Ok(())
    }),
    knob!("core_rmem_max", "net.core.rmem_max", true, |c| c.core_rmem_max.to_string(), |c, v| {
        c.core_rmem_max = buffer(v)?;
        Ok(())
    }),
    knob!("core_wmem_max", "net.core.wmem_max", true, |c| c.core_wmem_max.to_string(), |c, v| {
        c.core_wmem_max = buffer(v)?;
        Ok(())
    }),
    knob!(
        "mem",
        "net.ipv4.tcp_mem",
        false,
        |c| {
            let page = page_size();
            format!("{} {} {}", c.mem.low / page, c.mem.pressure / page, c.mem.high / page)
        },
        |c, v| {
            c.mem = mem_pages(v)?;
            Ok(())
        }
    ),
    knob!("max_tw_buckets", "net.ipv4.tcp_max_tw_buckets", false, |c| c.max_tw_buckets.to_string(), |c, v| {
        c.max_tw_buckets = within(v, 0, 1 << 30)?;
        Ok(())
    }),
    knob!("max_orphans", "net.ipv4.tcp_max_orphans", false, |c| c.max_orphans.to_string(), |c, v| {
        c.max_orphans = within(v, 0, 1 << 30)?;
        Ok(())
    }),
    knob!("mtu", "the interface's MTU", false, |c| c.mtu.to_string(), |c, v| {
        c.mtu = num(v)?;
        Ok(())
    }),
];

/// As setsockopt(TCP_KEEPIDLE/KEEPINTVL/KEEPCNT): zero is invalid.
fn at_least_one<T: PartialEq + From<u8>>(n: T) -> Result<T> {
    if n == T::from(0u8) {
        bail!("must be at least 1");
    }
    Ok(n)
}

/// The kernel's page size, the unit of tcp_mem (4096 unless the kernel
/// says otherwise).
pub fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

/// tcp_mem: three page counts, low <= pressure <= high, as Linux takes
/// them (the whole host's; each worker gets its share).
fn mem_pages(v: &str) -> Result<xstack_dataplane::tcp::memory::MemLimits> {
    let n: Vec<usize> = v.split_whitespace().map(num::<usize>).collect::<Result<_>>()?;
    let [low, pressure, high] = n[..] else {
        bail!("tcp_mem takes three page counts (low pressure high), got {v:?}");
    };
    if !(low <= pressure && pressure <= high && high > 0) || high > (1 << 40) / page_size() {
        bail!("tcp_mem {v:?}: need 0 < high, low <= pressure <= high, and at most 1 TiB");
    }
    Ok(xstack_dataplane::tcp::memory::MemLimits::from_pages([low, pressure, high], page_size(), 1))
}

fn buffer(v: &str) -> Result<usize> {
    let n: usize = num(v)?;
    // Linux clamps SO_RCVBUF/SO_SNDBUF to at least a few KiB; far larger
    // than a UMEM is surely a typo.
    if !(4096..=(1 << 30)).contains(&n) {
        bail!("buffer size {n} out of range 4096..=1073741824");
    }
    Ok(n)
}

pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Cubic => "cubic",
        Algorithm::NewReno => "reno",
    }
}

pub fn find(name: &str) -> Result<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<&str> = KNOBS.iter().map(|k| k.name).collect();
        format!("no knob named {name:?}; knobs: {}", names.join(", "))
    })
}

/// `config` with `name` set to `value`, if the knob exists, may change at
/// run time and the value is valid.
pub fn set(config: &Config, name: &str, value: &str) -> Result<Config> {
    let k = find(name)?;
    if !k.runtime {
        bail!("{name} is fixed while the stack runs: set it in the configuration file and restart");
    }
    let mut c = config.clone();
    (k.set)(&mut c, value).with_context(|| format!("setting {name}"))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_reads_back_what_was_set() {
        let base = Config::default();
        for k in KNOBS {
            let v = k.value(&base);
            let mut c = base.clone();
            (k.set)(&mut c, &v).unwrap_or_else(|e| panic!("{}: {e:#}", k.name));
            assert_eq!(k.value(&c), v, "{}", k.name);
        }
        let names: std::collections::HashSet<_> = KNOBS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KNOBS.len(), "knob names are unique");
    }

    #[test]
    fn set_validates_and_refuses_fixed_knobs() {
        let base = Config::default();
        let c = set(&base, "syn_retries", "3").unwrap();
        assert_eq!(c.syn_retries, 3);
        let c = set(&c, "local_port_range", "40000 40100").unwrap();
        assert_eq!(c.ephemeral_ports, (40000, 40100));
        assert!(set(&c, "congestion_control", "reno").is_err(), "copied into sockets: restart");
        assert!(set(&base, "syn_retries", "many").is_err());
        assert!(set(&base, "syncookies", "3").is_err());
        assert!(set(&base, "local_port_range", "500 100").is_err());
        let mut c = base.clone();
        assert!((find("keepalive_probes").unwrap().set)(&mut c, "0").is_err(), "as setsockopt: at least 1");
        // Linux's bounds (sysctl -w on this machine's 6.18 refuses what is
        // outside them).
        for (k, bad, good) in [
            ("syn_retries", ["0", "128", "9999"], "127"),
            ("syn_linear_timeouts", ["128", "200", "-1"], "127"),
            ("synack_retries", ["256", "9999", "-1"], "255"),
            ("retries2", ["256", "9999", "-1"], "255"),
            ("keepalive_probes", ["256", "9999", "-1"], "255"),
        ] {
            for v in bad {
                let e = (find(k).unwrap().set)(&mut c, v).expect_err(&format!("{k} = {v} accepted"));
                assert!(e.to_string().contains("bounds Linux accepts") || e.to_string().contains("not a valid"), "{e}");
            }
            (find(k).unwrap().set)(&mut c, good).unwrap_or_else(|e| panic!("{k} = {good}: {e}"));
        }
        let e = set(&base, "mtu", "9000").unwrap_err().to_string();
        assert!(e.contains("restart"), "{e}");
        let e = set(&base, "nope", "1").unwrap_err().to_string();
        assert!(e.contains("syn_retries"), "lists the knobs: {e}");
    }
}
