//! A capture in progress: the workers' taps are on, and the control
//! client's thread drains their records onto the client's socket (the
//! client writes the pcap file, so it is the client's file, with the
//! client's permissions, as with tcpdump -w).
//!
//! The workers copy matching frames into buffers allocated when the
//! capture starts and never wait: when the client cannot keep up the
//! buffers run out and frames are counted as dropped, as tcpdump reports
//! "dropped by kernel". A capture ends at its packet count, its duration,
//! when the client half-closes (Ctrl-C in `xstackctl`) or goes away, and
//! the taps are always turned off again (also on error, by `Drop`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use xstack_dataplane::capture::{Filter, Tap};
use xstack_dataplane::wire::Ipv4Addr;

use crate::protocol::{CaptureSpec, CaptureTotals, END};

/// Buffers per worker for one capture (at the default snaplen, ~8 MiB).
pub const BUFFERS: usize = 4096;
/// The largest snaplen (a jumbo frame).
const MAX_SNAPLEN: u32 = 9216;

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
        let filter = Filter { host: spec.host.map(|h| Ipv4Addr(h.octets())), port: spec.port };
        let mut started: Vec<Arc<Tap>> = Vec::with_capacity(taps.len());
        for t in taps {
            if t.start(filter, spec.snaplen as usize, BUFFERS).is_err() {
                for s in &started {
                    s.stop();
                }
                bail!("a capture is already running");
            }
            started.push(t.clone());
        }
        tracing::info!(
            "capture started: host {:?} port {:?} count {:?} duration {:?} ms",
            spec.host,
            spec.port,
            spec.count,
            spec.duration_ms
        );
        Ok(Stream {
            taps: started,
            count: spec.count,
            deadline: spec.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
            stopped: false,
        })
    }

    /// Streams records to `out` until the capture ends, then the end
    /// marker and the totals.
    pub fn pump(mut self, out: &mut UnixStream) -> Result<()> {
        let mut probe = out.try_clone()?;
        probe.set_nonblocking(true)?;
        let mut sent = 0u64;
        let mut last_probe = Instant::now();
        let mut header = [0u8; crate::protocol::RECORD_HEADER];
        'outer: loop {
            let mut any = false;
            for t in &self.taps {
                while let Some(r) = t.next() {
                    any = true;
                    let data = r.data();
                    header[0..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
                    header[4..8].copy_from_slice(&r.orig_len.to_le_bytes());
                    header[8..16].copy_from_slice(&r.nanos.to_le_bytes());
                    let w = out.write_all(&header).and_then(|_| out.write_all(data));
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
            if !any || last_probe.elapsed() > Duration::from_millis(100) {
                last_probe = Instant::now();
                // The client half-closed (Ctrl-C) or went away.
                let mut b = [0u8; 1];
                match probe.read(&mut b) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
                if !any {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let mut totals = self.finish();
        // Records past the count were matched but are not in the file.
        totals.captured = sent;
        header = [0u8; crate::protocol::RECORD_HEADER];
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
        }
        t
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish();
    }
}
