//! A capture in progress: the workers' taps are on, and the control
//! client's thread drains their records onto the client's socket (the
//! client writes the pcap file, so it is the client's file, with the
//! client's permissions, as with tcpdump -w).
//!
//! The workers copy matching frames into buffers allocated when the
//! capture starts and never wait: when the client cannot keep up the
//! buffers run out and frames are counted as dropped, as tcpdump reports
//! "dropped by kernel". A capture ends at its packet count, its duration,
//! when the client half-closes (Ctrl-C in `xstackctl`), goes away or stops
//! reading, or when the daemon stops; what was captured until then is
//! still sent, and the taps are always turned off again (also on error,
//! by `Drop`). One capture runs at a time.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use xstack_dataplane::capture::{Filter, Record, Tap};
use xstack_dataplane::wire::Ipv4Addr;

use crate::protocol::{CaptureSpec, CaptureTotals, END, RECORD_HEADER};

/// Buffers per worker for one capture, at most.
pub const BUFFERS: usize = 4096;
/// Buffer memory of one capture over all workers, at most.
const MAX_POOL_BYTES: usize = 256 << 20;
/// The largest snaplen (a jumbo frame).
const MAX_SNAPLEN: u32 = 9216;
/// Records taken from one tap before the others (and the limits) get a
/// turn, so one busy worker cannot starve the rest or the clock.
const BATCH: usize = 64;
/// A client that does not take a record for this long ends the capture.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One capture at a time in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
pub struct Stream {
    taps: Vec<Arc<Tap>>,
    count: Option<u64>,
    deadline: Option<Instant>,
    stopped: bool,
}

impl Stream {
    /// Turns every worker's tap on with the spec's filter.
    pub fn start(taps: &[Arc<Tap>], spec: &CaptureSpec) -> Result<Stream> {
        if !(64..=MAX_SNAPLEN).contains(&spec.snaplen) {
            bail!("snaplen {} out of range 64..={MAX_SNAPLEN}", spec.snaplen);
        }
        if spec.count == Some(0) {
            bail!("a packet count of 0 captures nothing");
        }
        if RUNNING.swap(true, Ordering::AcqRel) {
            bail!("a capture is already running");
        }
        let filter = Filter { host: spec.host.map(|h| Ipv4Addr(h.octets())), port: spec.port };
        let per_worker = (MAX_POOL_BYTES / (spec.snaplen as usize * taps.len().max(1))).clamp(64, BUFFERS);
        // From here on `Drop` turns the taps off and releases RUNNING.
        let mut stream = Stream {
            taps: Vec::with_capacity(taps.len()),
            count: spec.count,
            deadline: spec.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms.min(u64::from(u32::MAX)))),
            stopped: false,
        };
        for t in taps {
            if t.start(filter, spec.snaplen as usize, per_worker).is_err() {
                bail!("a capture is already running");
            }
            stream.taps.push(t.clone());
        }
        let or_any = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        tracing::info!(
            "capture started: host {}, port {}, count {}, duration {}, {per_worker} buffers per worker",
            or_any(spec.host.map(|h| h.to_string()), "any"),
            or_any(spec.port.map(|p| p.to_string()), "any"),
            or_any(spec.count.map(|c| c.to_string()), "unlimited"),
            or_any(spec.duration_ms.map(|d| format!("{d} ms")), "unlimited"),
        );
        Ok(stream)
    }

    /// Streams records to `out` until the capture ends, then what was
    /// captured before the end, the end marker and the totals.
    pub fn pump(mut self, out: &mut UnixStream) -> Result<()> {
        out.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut sent = 0u64;
        let mut last_probe = Instant::now();
        'outer: loop {
            let mut any = false;
            for t in &self.taps {
                for _ in 0..BATCH {
                    let Some(r) = t.next() else { break };
                    any = true;
                    let w = send(out, &r);
                    t.recycle(r);
                    w?;
                    sent += 1;
                    if self.count.is_some_and(|c| sent >= c) {
                        break 'outer;
                    }
                }
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // The daemon is stopping (it turned the taps off).
            if !self.taps.iter().any(|t| t.active()) {
                break;
            }
            if !any || last_probe.elapsed() >= Duration::from_millis(10) {
                last_probe = Instant::now();
                if client_gone(out) {
                    break;
                }
                if !any {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        // No more frames; send what the workers captured before that.
        for t in &self.taps {
            t.pause();
        }
        for t in &self.taps {
            while self.count.is_none_or(|c| sent < c) {
                let Some(r) = t.next() else { break };
                let w = send(out, &r);
                t.recycle(r);
                w?;
                sent += 1;
            }
        }
        let mut totals = self.finish();
        // Records past the count were captured but are not in the file.
        totals.captured = sent;
        let mut header = [0u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&END.to_le_bytes());
        out.write_all(&header)?;
        let mut line = serde_json::to_string(&totals)?;
        line.push('\n');
        out.write_all(line.as_bytes())?;
        tracing::info!("capture ended: {} packets sent, {} dropped", totals.captured, totals.dropped);
        Ok(())
    }

    fn finish(&mut self) -> CaptureTotals {
        let mut t = CaptureTotals::default();
        if !self.stopped {
            self.stopped = true;
            for tap in &self.taps {
                let s = tap.stop();
                t.captured += s.captured;
                t.dropped += s.dropped;
            }
            RUNNING.store(false, Ordering::Release);
        }
        t
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One record: caplen, orig_len, ns since the epoch (little-endian), data.
fn send(out: &mut UnixStream, r: &Record) -> std::io::Result<()> {
    let data = r.data();
    let mut header = [0u8; RECORD_HEADER];
    header[0..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&r.orig_len.to_le_bytes());
    header[8..16].copy_from_slice(&r.nanos.to_le_bytes());
    out.write_all(&header)?;
    out.write_all(data)
}

/// The client sends nothing after its request: anything readable (its
/// half-close on Ctrl-C, or a hang-up) ends the capture.
fn client_gone(out: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(out), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}
