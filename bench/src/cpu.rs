//! CPU time, from /proc: per process (utime + stime of all its threads,
//! `/proc/PID/stat`) and per core (`/proc/stat`: user, nice, system, irq
//! and softirq time, which includes the softirq work the kernel does for a
//! socket on that core but charges to no process). Resolution: one clock tick (10 ms with Linux's USER_HZ of 100).

use std::io;

/// Linux reports these times in USER_HZ, 100 on every architecture.
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds (user + system) used so far by process `pid` (all threads,
/// including exited ones).
pub fn process_cpu_s(pid: u32) -> io::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

fn parse_proc_stat(s: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: fields resume after ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_S)
}

/// Busy (user, nice, system, irq, softirq) seconds of each core so far, indexed by
/// core number.
pub fn core_busy_s() -> io::Result<Vec<f64>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    Ok(parse_core_busy(&s))
}

fn parse_core_busy(s: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(idx) = name.strip_prefix("cpu").and_then(|n| n.parse::<usize>().ok()) else { continue };
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest is in
        // user). Count the work fields rather than "total minus idle": on
        // a tickless VM the idle figure of a sleeping core lags.
        let busy: u64 = [0usize, 1, 2, 5, 6].iter().map(|&i| v.get(i).copied().unwrap_or(0)).sum();
        if out.len() <= idx {
            out.resize(idx + 1, 0.0);
        }
        out[idx] = busy as f64 / TICKS_PER_S;
    }
    out
}

/// Sum over `cores` of the busy-time difference between two samples.
pub fn busy_delta(before: &[f64], after: &[f64], cores: &[usize]) -> f64 {
    cores.iter().map(|&c| after.get(c).copied().unwrap_or(0.0) - before.get(c).copied().unwrap_or(0.0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (xstack bench) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_proc_stat(stat), Some(3.0));
        let cores =
            "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 100 0 50 1000 7 0 50 0 0 0\ncpu1 1 0 1 10 0 0 0 0 0 0\nintr 1 2\n";
        assert_eq!(parse_core_busy(cores), vec![2.0, 0.02]);
        assert!((busy_delta(&[1.0, 2.0], &[1.5, 4.0], &[0, 1]) - 2.5).abs() < 1e-9);
        assert!(process_cpu_s(std::process::id()).is_ok());
        assert!(!core_busy_s().unwrap().is_empty());
    }
}
