//! Latency recording: per-thread HdrHistograms in nanoseconds, cut into
//! fixed-length intervals, merged across threads, written as HdrHistogram
//! V2 interval logs (`.hlog`) and percentile distributions (`.hgrm`).

use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept by every histogram (0.1% resolution).
pub const SIGFIG: u8 = 3;
/// Largest value recorded without saturating: 60 s in nanoseconds (larger
/// values are clamped and counted in [`Recorder::clamped`]).
pub const MAX_NS: u64 = 60_000_000_000;

/// A fresh nanosecond histogram: 1 ns to 60 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("static histogram bounds are valid")
}

/// One interval of a recording: what completed in `[start, start + len)`
/// after the start of the measurement window.
#[derive(Debug, Clone)]
pub struct Interval {
    pub index: usize,
    pub hist: Histogram<u64>,
}

/// The histograms of one measurement: the whole window and its intervals.
#[derive(Debug, Clone)]
pub struct Recording {
    pub total: Histogram<u64>,
    /// Sorted by index; indexes with no sample are absent.
    pub intervals: Vec<Interval>,
    pub interval_len: Duration,
    /// Values above [`MAX_NS`] that were clamped.
    pub clamped: u64,
}

impl Recording {
    pub fn empty(interval_len: Duration) -> Recording {
        Recording { total: new_hist(), intervals: Vec::new(), interval_len, clamped: 0 }
    }

    /// Adds `other` into `self`: totals are summed, intervals with the same
    /// index (same offset from the common start) are summed.
    pub fn merge(&mut self, other: &Recording) {
        assert_eq!(self.interval_len, other.interval_len, "merging recordings with different interval lengths");
        self.total.add(&other.total).expect("histograms of identical bounds always merge");
        self.clamped += other.clamped;
        for iv in &other.intervals {
            match self.intervals.binary_search_by_key(&iv.index, |x| x.index) {
                Ok(i) => self.intervals[i].hist.add(&iv.hist).expect("same bounds"),
                Err(i) => self.intervals.insert(i, iv.clone()),
            }
        }
    }

    /// Merges any number of recordings (e.g. one per thread).
    pub fn merge_all<'a>(interval_len: Duration, parts: impl IntoIterator<Item = &'a Recording>) -> Recording {
        let mut out = Recording::empty(interval_len);
        for p in parts {
            out.merge(p);
        }
        out
    }
}

/// Records latencies of one thread. Samples are attributed to the interval
/// in which they complete, counted from `start` (the start of the
/// measurement window, shared by all threads so intervals line up).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    rec: Recording,
    cur_index: usize,
    cur: Histogram<u64>,
}

impl Recorder {
    pub fn new(start: Instant, interval_len: Duration) -> Recorder {
        assert!(!interval_len.is_zero());
        Recorder { start, rec: Recording::empty(interval_len), cur_index: 0, cur: new_hist() }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records `latency` for an operation that completed at `now`.
    pub fn record(&mut self, now: Instant, latency: Duration) {
        let offset = now.saturating_duration_since(self.start);
        self.record_at(offset, latency.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Records `ns` for an operation completed `offset` after the start.
    pub fn record_at(&mut self, offset: Duration, ns: u64) {
        let index = (offset.as_nanos() / self.rec.interval_len.as_nanos()) as usize;
        if index != self.cur_index {
            self.close_interval();
            self.cur_index = index;
        }
        let v = if ns > MAX_NS {
            self.rec.clamped += 1;
            MAX_NS
        } else {
            ns.max(1)
        };
        self.cur.record(v).expect("value within bounds");
        self.rec.total.record(v).expect("value within bounds");
    }

    fn close_interval(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let hist = std::mem::replace(&mut self.cur, new_hist());
        let iv = Interval { index: self.cur_index, hist };
        match self.rec.intervals.binary_search_by_key(&iv.index, |x| x.index) {
            Ok(i) => self.rec.intervals[i].hist.add(&iv.hist).expect("same bounds"),
            Err(i) => self.rec.intervals.insert(i, iv),
        }
    }

    pub fn finish(mut self) -> Recording {
        self.close_interval();
        self.rec
    }
}

/// The percentiles every report shows, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub stdev_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            stdev_ns: h.stdev(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            p9999_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }
}

/// Writes `rec` as an HdrHistogram V2 interval log (compressed histograms,
/// values in nanoseconds; `max_value_divisor` 1000 makes the max column
/// microseconds, as the Java tools print). `tag` names the series.
pub fn write_interval_log<W: Write>(out: &mut W, rec: &Recording, tag: &str, start: SystemTime) -> io::Result<()> {
    let mut ser = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("xstack-bench latency log: values in nanoseconds, one histogram per interval")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0);
    let mut w = builder.begin_log_with(out, &mut ser).map_err(io::Error::other)?;
    let tag = hdrhistogram::serialization::interval_log::Tag::new(tag);
    for iv in &rec.intervals {
        let from = rec.interval_len * iv.index as u32;
        w.write_histogram(&iv.hist, from, rec.interval_len, tag).map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

/// Reads an interval log written by [`write_interval_log`] (or any V2 log)
/// back into a recording with intervals of `interval_len`.
pub fn read_interval_log(data: &[u8], interval_len: Duration) -> io::Result<Recording> {
    let mut rec = Recording::empty(interval_len);
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(data) {
        let entry = entry.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        if let LogEntry::Interval(ilh) = entry {
            let bytes = base64_decode(ilh.encoded_histogram())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad base64 in interval log"))?;
            let h: Histogram<u64> = de
                .deserialize(&mut &bytes[..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
            let index = (ilh.start_timestamp().as_secs_f64() / interval_len.as_secs_f64()).round() as usize;
            let mut part = Recording::empty(interval_len);
            let mut hh = new_hist();
            hh.add(&h).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
            part.total.add(&hh).expect("same bounds");
            part.intervals.push(Interval { index, hist: hh });
            rec.merge(&part);
        }
    }
    Ok(rec)
}

/// Standard base64 (with padding), as the interval log uses.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    }
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Writes the percentile distribution in the text format of HdrHistogram's
/// `outputPercentileDistribution` (the input of its online plotter), with
/// values scaled to microseconds.
pub fn write_percentile_distribution<W: Write>(out: &mut W, h: &Histogram<u64>) -> io::Result<()> {
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    if h.is_empty() {
        return Ok(());
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            writeln!(out, "{value:12.3} {q:2.12} {:10} {:14.2}", v.count_since_last_iteration(), 1.0 / (1.0 - q))?;
        } else {
            writeln!(out, "{value:12.3} {q:2.12} {:10}", v.count_since_last_iteration())?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.buckets(),
        h.distinct_values()
    )
}

/// Points of the percentile distribution curve: (quantile, value in ns),
/// quantile < 1, as HdrHistogram's plotter draws them.
pub fn distribution_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts: Vec<(f64, u64)> = h
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .collect();
    // The last step (max) sits at q = 1, which a 1/(1-q) axis cannot show:
    // put it at the histogram's own resolution limit.
    let last_q = 1.0 - 1.0 / (h.len() as f64).max(2.0);
    pts.push((last_q.max(pts.last().map_or(0.0, |p| p.0)), h.max()));
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec_of(values: &[(u64, u64)], interval: Duration) -> Recording {
        // (offset ms, latency ns)
        let start = Instant::now();
        let mut r = Recorder::new(start, interval);
        for &(ms, ns) in values {
            r.record_at(Duration::from_millis(ms), ns);
        }
        r.finish()
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let iv = Duration::from_millis(100);
        let a: Vec<(u64, u64)> = (0..1000).map(|i| (i % 500, 1_000 + i * 37)).collect();
        let b: Vec<(u64, u64)> = (0..700).map(|i| (250 + i % 400, 50_000 + i * 1013)).collect();
        let ra = rec_of(&a, iv);
        let rb = rec_of(&b, iv);
        let all: Vec<(u64, u64)> = a.iter().chain(b.iter()).copied().collect();
        let mut sorted = all.clone();
        sorted.sort_by_key(|x| x.0);
        let rall = rec_of(&sorted, iv);

        let m = Recording::merge_all(iv, [&ra, &rb]);
        assert_eq!(m.total, rall.total);
        assert_eq!(m.total.len(), 1700);
        assert_eq!(m.intervals.len(), rall.intervals.len());
        for (x, y) in m.intervals.iter().zip(&rall.intervals) {
            assert_eq!(x.index, y.index);
            assert_eq!(x.hist, y.hist);
        }
        // Intervals partition the total.
        let sum: u64 = m.intervals.iter().map(|i| i.hist.len()).sum();
        assert_eq!(sum, m.total.len());
        // Merging is commutative.
        let m2 = Recording::merge_all(iv, [&rb, &ra]);
        assert_eq!(m2.total, m.total);
    }

    #[test]
    fn merging_keeps_sparse_intervals_sorted() {
        let iv = Duration::from_secs(1);
        let a = rec_of(&[(5_500, 10), (500, 10)], iv); // out of order offsets
        let b = rec_of(&[(2_100, 20)], iv);
        let m = Recording::merge_all(iv, [&a, &b]);
        let idx: Vec<usize> = m.intervals.iter().map(|i| i.index).collect();
        assert_eq!(idx, vec![0, 2, 5]);
    }

    #[test]
    fn values_are_clamped_not_lost() {
        let r = rec_of(&[(0, 0), (0, MAX_NS * 2)], Duration::from_secs(1));
        assert_eq!(r.total.len(), 2);
        assert_eq!(r.clamped, 1);
        assert_eq!(r.total.min(), 1);
    }

    #[test]
    fn summary_percentiles() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        let close = |a: u64, b: u64| (a as f64 - b as f64).abs() / b as f64 <= 0.001;
        assert!(close(s.p50_ns, 5_000_000), "{}", s.p50_ns);
        assert!(close(s.p99_ns, 9_900_000), "{}", s.p99_ns);
        assert!(close(s.max_ns, 10_000_000));
        assert_eq!(Summary::of(&new_hist()), Summary::default());
    }

    #[test]
    fn interval_log_round_trip() {
        let iv = Duration::from_millis(250);
        let vals: Vec<(u64, u64)> = (0..5000).map(|i| (i / 5, 3_000 + (i * 7919) % 100_000)).collect();
        let r = rec_of(&vals, iv);
        let mut buf = Vec::new();
        write_interval_log(&mut buf, &r, "kernel-default", SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("#[StartTime: "));
        assert!(text.lines().filter(|l| l.starts_with("Tag=kernel-default,")).count() == r.intervals.len());
        let back = read_interval_log(&buf, iv).unwrap();
        assert_eq!(back.total, r.total);
        assert_eq!(back.intervals.len(), r.intervals.len());
        for (x, y) in back.intervals.iter().zip(&r.intervals) {
            assert_eq!((x.index, &x.hist), (y.index, &y.hist));
        }
    }

    #[test]
    fn percentile_distribution_text() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let mut out = Vec::new();
        write_percentile_distribution(&mut out, &h).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     =     1000.447") || text.contains("#[Max     =     1000."), "{text}");
        assert!(text.contains("Total count    =         1000"));
        let pts = distribution_points(&h);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(pts.iter().all(|p| p.0 < 1.0));
        assert_eq!(pts.last().unwrap().1, h.max());
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert!(base64_decode("a*b").is_none());
    }
}
