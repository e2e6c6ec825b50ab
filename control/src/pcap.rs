//! Writing captured frames as a classic pcap file (what tcpdump, tshark and
//! Wireshark read): nanosecond timestamps, link type Ethernet.
//!
//! The encoding is the `pcap-file` crate's. Its `PcapWriter` owns the output
//! and offers no way to flush it, and a capture streamed to a client must be
//! flushed for the client to see packets while they happen. So the sink owns
//! the output itself, writes the file header with `PcapHeader::write_to`, and
//! has each packet record encoded by a `PcapWriter` over a reused scratch
//! vector (whose leading copy of the file header is skipped). That also makes
//! each record one `write_all`, which suits an unbuffered socket.
//!
//! Records cut by the snaplen (orig_len larger than the snaplen) are valid
//! pcap and libpcap reads them, but pcap-file 2.0's own checked reader
//! refuses them (courvoif/pcap-file#36): in Rust, read such files back with
//! `PcapReader::next_raw_packet`.

use std::io::{self, Write};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

/// Length of the pcap file header.
const FILE_HEADER_LEN: usize = 24;

/// A pcap stream being written to `W`. Pass a buffered writer (a
/// `BufWriter`) and call [`PcapSink::flush`] when the reader should catch up:
/// each record is one `write_all` of 16 bytes plus the data.
#[derive(Debug)]
pub struct PcapSink<W: Write> {
    out: W,
    header: PcapHeader,
    /// Where records are encoded; kept to avoid an allocation per packet.
    scratch: Vec<u8>,
}

impl<W: Write> PcapSink<W> {
    /// Writes the file header (nanosecond timestamps, Ethernet, `snaplen`,
    /// this machine's byte order) to `out`. `snaplen` must not be 0: every
    /// record would exceed it.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        if snaplen == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "pcap snaplen must be positive"));
        }
        let header = PcapHeader {
            snaplen,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        header.write_to(&mut out).map_err(into_io)?;
        Ok(PcapSink { out, header, scratch: Vec::new() })
    }

    /// The snaplen written in the file header.
    pub fn snaplen(&self) -> u32 {
        self.header.snaplen
    }

    /// Appends one packet: captured at `nanos` ns since the Unix epoch,
    /// `orig_len` bytes long on the wire, of which `data` was kept. Data
    /// beyond the snaplen is cut here (readers reject longer records);
    /// `orig_len` shorter than what is written is an `InvalidInput` error.
    pub fn write(&mut self, nanos: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let data = &data[..data.len().min(self.header.snaplen as usize)];
        let packet = PcapPacket::new(Duration::from_nanos(nanos), orig_len, data);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // This writes a file header into the scratch first; skipped below.
        let mut enc = PcapWriter::with_header(scratch, self.header).map_err(into_io)?;
        enc.write_packet(&packet).map_err(into_io)?;
        let scratch = enc.into_writer();
        let res = self.out.write_all(&scratch[FILE_HEADER_LEN..]);
        self.scratch = scratch;
        res
    }

    /// Flushes the output, so the reader sees every packet written so far.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The output, after flushing it.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// I/O errors stay what they were; pcap-file's validation errors (a record
/// longer than its `orig_len`, a time past 2106) become `InvalidInput`.
fn into_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;
    use std::process::Command;
    use xstack_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
    use xstack_dataplane::wire::{ipv4, udp, Ipv4Addr};

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// An Ethernet/IPv4/UDP frame from SRC:`sport` to DST:9999.
    fn udp_frame(sport: u16, payload: &[u8]) -> Vec<u8> {
        let u = udp::Repr { src_port: sport, dst_port: 9999, payload };
        let ip = ipv4::Repr {
            src_addr: SRC,
            dst_addr: DST,
            protocol: ipv4::protocol::UDP,
            payload_len: u.buffer_len(),
            ttl: 64,
            tos: 0,
            ident: sport,
            dont_frag: true,
        };
        let mut buf = vec![0u8; ethernet::HEADER_LEN + ip.buffer_len()];
        let mut eth = ethernet::Frame::new_unchecked(&mut buf[..]);
        ethernet::Repr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut eth);
        let mut p = ipv4::Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut p);
        u.emit(&mut udp::Packet::new_unchecked(p.payload_mut()), SRC, DST);
        buf
    }

    /// (nanos, orig_len, data) of three packets: whole, cut by the
    /// capture's snaplen (orig_len larger than the data), and one the sink
    /// cuts itself.
    fn packets() -> Vec<(u64, u32, Vec<u8>)> {
        let whole = udp_frame(1001, b"first");
        let long = udp_frame(1002, &[7; 300]);
        let longer = udp_frame(1003, &[8; 400]);
        vec![
            (1_700_000_000_123_456_789, whole.len() as u32, whole),
            (1_700_000_000_123_457_000, long.len() as u32, long[..128].to_vec()),
            (1_700_000_001_000_000_001, longer.len() as u32, longer),
        ]
    }

    const SNAPLEN: u32 = 256;

    fn write_all(out: Vec<u8>) -> Vec<u8> {
        let mut sink = PcapSink::new(out, SNAPLEN).unwrap();
        for (nanos, orig_len, data) in packets() {
            sink.write(nanos, orig_len, &data).unwrap();
        }
        sink.flush().unwrap();
        sink.into_inner().unwrap()
    }

    #[test]
    fn frames_read_back() {
        let file = write_all(Vec::new());
        let mut r = PcapReader::new(&file[..]).unwrap();
        let h = r.header();
        assert_eq!(h.ts_resolution, TsResolution::NanoSecond);
        assert_eq!(h.datalink, DataLink::ETHERNET);
        assert_eq!(h.snaplen, SNAPLEN);
        assert_eq!((h.version_major, h.version_minor), (2, 4));
        // Raw records: pcap-file 2.0's checked reader refuses a record whose
        // orig_len exceeds the snaplen (courvoif/pcap-file#36, fixed after
        // 2.0), though that is what every truncated capture holds and libpcap
        // reads it (see the tcpdump test).
        for (nanos, orig_len, data) in packets() {
            let p = r.next_raw_packet().unwrap().unwrap();
            assert_eq!(Duration::new(p.ts_sec.into(), p.ts_frac), Duration::from_nanos(nanos));
            assert_eq!(p.orig_len, orig_len);
            let kept = &data[..data.len().min(SNAPLEN as usize)];
            assert_eq!(p.incl_len as usize, kept.len());
            assert_eq!(&p.data[..], kept);
        }
        assert!(r.next_raw_packet().is_none());
    }

    #[test]
    fn inconsistent_input_is_refused() {
        assert_eq!(PcapSink::new(Vec::new(), 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let mut sink = PcapSink::new(Vec::new(), 64).unwrap();
        let e = sink.write(0, 10, &[0; 20]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Nothing of the refused record was written, and the sink still works.
        sink.write(5, 60, &[1; 60]).unwrap();
        let file = sink.into_inner().unwrap();
        let mut r = PcapReader::new(&file[..]).unwrap();
        assert_eq!(r.next_packet().unwrap().unwrap().orig_len, 60);
        assert!(r.next_packet().is_none());
    }

    #[test]
    fn tcpdump_reads_the_file() {
        if Command::new("tcpdump").arg("--version").output().is_err() {
            println!("note: tcpdump is not on PATH; checked the file with pcap-file's reader only");
            return;
        }
        let path = std::env::temp_dir().join(format!("xstack-pcap-test-{}.pcap", std::process::id()));
        std::fs::write(&path, write_all(Vec::new())).unwrap();
        let out = Command::new("tcpdump").args(["-r"]).arg(&path).args(["-nn", "--nano", "-tt"]).output();
        let _ = std::fs::remove_file(&path);
        let out = out.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "tcpdump failed: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), packets().len(), "tcpdump output:\n{stdout}");
        for (line, (nanos, _, _)) in lines.iter().zip(packets()) {
            let ts = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
            assert!(line.starts_with(&ts), "{line:?} should start with {ts}");
            assert!(line.contains("IP 198.18.0.1.100"), "{line:?}");
            assert!(line.contains("> 198.18.0.2.9999: UDP"), "{line:?}");
        }
    }
}
