#!/usr/bin/env python3
"""Probes a dedicated stack address whose queue has no AF_XDP socket: every
TCP segment must be answered with a reset built as Linux builds it
(tcp_v4_send_reset), nothing else must be answered.

Sends a kernel connect() and crafted segments (a raw IPPROTO_TCP socket, the
kernel adds the IPv4 header), captures both directions of IFNAME with an
AF_PACKET socket, checks every reset's headers and checksums and prints one
line per probe:

  NAME replies=N [flags=0xFF seq=... ack=...] [key=value ...] problems=none|...

and finally `resets_seen=N`. Exits non-zero if any probe went wrong.
Standard library only.

usage: rst_probe.py IFNAME OUR_IP STACK_IP STACK_MAC
"""
import random
import socket
import struct
import sys

# The Internet checksum, shared with the frame sender next to this file.
from send_frames import csum
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp_segment(src, dst, sport, dport, seq, ack, flags, payload=b""):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


class Probe:
    def __init__(self, ifname, our_ip, stack_ip, stack_mac):
        self.our_ip, self.stack_ip = our_ip, stack_ip
        self.stack_mac = bytes.fromhex(stack_mac.replace(":", ""))
        self.cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.cap.bind((ifname, 0))
        self.our_mac = self.cap.getsockname()[4]
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.failed = False
        self.resets_seen = 0

    def frames(self, wait):
        """Frames captured until `wait` seconds pass without one:
        (outgoing, frame bytes)."""
        out = []
        self.cap.settimeout(wait)
        while True:
            try:
                data, addr = self.cap.recvfrom(65535)
            except socket.timeout:
                return out
            out.append((addr[2] == PACKET_OUTGOING, data))

    def drain(self):
        self.frames(0.05)

    def tcp_from_stack(self, frames):
        """Incoming TCP frames from the stack address, with parsed fields."""
        got = []
        for outgoing, f in frames:
            if outgoing or len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
                continue
            if socket.inet_ntoa(f[26:30]) != self.stack_ip:
                continue
            got.append(f)
        return got

    def check_reset(self, f, sport, dport):
        """Every header field of a reset as Linux sends it; returns problems."""
        p = []
        if len(f) != 54:
            p.append(f"frame_len={len(f)}")
        if f[0:6] != self.our_mac or f[6:12] != self.stack_mac:
            p.append(f"eth={f[0:6].hex()}<-{f[6:12].hex()}")
        ip, tcp = f[14:34], f[34:54]
        ver_ihl, _tos, tot_len, ident, frag, ttl, proto = struct.unpack("!BBHHHBB", ip[:10])
        if (ver_ihl, tot_len, ident, frag, ttl, proto) != (0x45, 40, 0, 0x4000, 64, 6):
            p.append(f"ip={ver_ihl:#x},{tot_len},{ident},{frag:#x},{ttl},{proto}")
        if csum(ip) != 0:
            p.append("ip_checksum")
        if socket.inet_ntoa(ip[12:16]) != self.stack_ip or socket.inet_ntoa(ip[16:20]) != self.our_ip:
            p.append("ip_addresses")
        sp, dp, _seq, _ack, off, _flags, win, _c, urg = struct.unpack("!HHIIBBHHH", tcp)
        if (sp, dp) != (dport, sport):
            p.append(f"ports={sp}->{dp}")
        if (off, win, urg) != (5 << 4, 0, 0):
            p.append(f"off={off:#x} win={win} urg={urg}")
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, 20)
        if csum(pseudo + tcp) != 0:
            p.append("tcp_checksum")
        return p

    def report(self, name, replies, sport, dport, extra=None):
        """One line for a probe; replies are frames from the stack address."""
        fields = [f"{name} replies={len(replies)}"]
        problems = []
        for f in replies:
            seq, ack, flags = struct.unpack("!IIxB", f[38:48])
            fields.append(f"flags={flags:#04x} seq={seq} ack={ack}")
            if flags & RST:
                self.resets_seen += 1
            problems += self.check_reset(f, sport, dport)
        for k, v in (extra or {}).items():
            fields.append(f"{k}={v}")
        fields.append("problems=" + (",".join(problems) or "none"))
        if problems:
            self.failed = True
        print(" ".join(fields), flush=True)

    def connect(self, port):
        """A kernel connect(): refused, how fast, and the reset's ack
        against the SYN's ISN."""
        self.drain()
        s = socket.socket()
        s.settimeout(3)
        t0 = time.monotonic()
        try:
            s.connect((self.stack_ip, port))
            outcome = "connected"
        except ConnectionRefusedError:
            outcome = "refused"
        except OSError as e:
            outcome = type(e).__name__
        ms = (time.monotonic() - t0) * 1000
        sport = s.getsockname()[1]
        s.close()
        frames = self.frames(0.3)
        isn = None
        for outgoing, f in frames:
            if outgoing and len(f) >= 54 and f[12:14] == b"\x08\x00" and f[23] == 6:
                ihl = (f[14] & 15) * 4
                sp, dp, seq, _a, _o, flags = struct.unpack("!HHIIBB", f[14 + ihl:14 + ihl + 14])
                if (sp, dp) == (sport, port) and flags & SYN:
                    isn = seq
        replies = self.tcp_from_stack(frames)
        extra = {"outcome": outcome, "ms": f"{ms:.1f}"}
        if isn is not None and replies:
            _seq, ack = struct.unpack("!II", replies[0][38:46])
            extra["ack_minus_isn"] = (ack - isn) % 2**32
        self.report("connect", replies, sport, port, extra)

    def send(self, name, flags, payload=b"", ip_options=None):
        """A crafted segment with random ports and numbers; the reply's seq
        and ack are printed relative to ours."""
        self.drain()
        sport, dport = random.randrange(1024, 65536), random.randrange(1, 65536)
        seq, ack = random.randrange(2**32), random.randrange(2**32)
        raw = self.raw
        if ip_options is not None:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options)
        raw.sendto(tcp_segment(self.our_ip, self.stack_ip, sport, dport, seq, ack, flags, payload),
                   (self.stack_ip, 0))
        frames = self.frames(0.3)
        sent_ihl = None
        for outgoing, f in frames:
            if outgoing and f[12:14] == b"\x08\x00" and f[23] == 6 and socket.inet_ntoa(f[30:34]) == self.stack_ip:
                sent_ihl = f[14] & 15
        replies = self.tcp_from_stack(frames)
        extra = {"sent_ihl": sent_ihl}
        if replies:
            rseq, rack = struct.unpack("!II", replies[0][38:46])
            extra["seq_is_our_ack"] = int(rseq == ack)
            extra["ack_minus_our_seq"] = (rack - seq) % 2**32
        self.report(name, replies, sport, dport, extra)

    def send_frame(self, name, ip_payload, proto, src=None, dst_mac=None, ports=(0, 0)):
        """A frame built whole (for lengths the kernel would not send, a
        source address that is not ours, another destination MAC)."""
        self.drain()
        src = src or self.our_ip
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(ip_payload), 0, 0x4000, 64, proto, 0,
                          socket.inet_aton(src), socket.inet_aton(self.stack_ip))
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        self.cap.send((dst_mac or self.stack_mac) + self.our_mac + b"\x08\x00" + hdr + ip_payload)
        self.report(name, self.tcp_from_stack(self.frames(0.3)), *ports)

    def syn_from(self, name, src, dst_mac=None):
        """A SYN from `src` (spoofed), to `dst_mac` (default: the stack's)."""
        sport = random.randrange(1024, 65536)
        seg = tcp_segment(src, self.stack_ip, sport, 80, 1, 0, SYN)
        self.send_frame(name, seg, 6, src=src, dst_mac=dst_mac, ports=(sport, 80))


def main():
    ifname, our_ip, stack_ip, stack_mac = sys.argv[1:5]
    p = Probe(ifname, our_ip, stack_ip, stack_mac)
    p.connect(random.randrange(1, 65536))
    # ACK set: <SEQ=SEG.ACK><CTL=RST>. With data, and again with IP options
    # (IHL 6) on the way in.
    p.send("ack_data", ACK | PSH, b"hello")
    p.send("ack_ip_options", ACK, b"x", ip_options=b"\x01\x01\x01\x00")
    # No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, FIN counting one.
    p.send("fin_data", FIN | PSH, b"1234567")
    # A reset is never answered.
    p.send("rst", RST)
    p.send("rst_ack", RST | ACK)
    # Not TCP: passed as before (the kernel drops it, nothing comes back).
    p.send_frame("udp", struct.pack("!HHHH", 4000, 4001, 9, 0) + b"u", 17)
    # Data offset beyond the datagram: malformed, passed, never answered.
    bad = tcp_segment(our_ip, stack_ip, 4000, 4001, 1, 0, SYN)
    p.send_frame("tcp_bad_offset", bad[:12] + bytes([15 << 4]) + bad[13:], 6)
    # Built whole, a SYN from us is answered; the same for another
    # station's MAC (promiscuous mode) or from a martian source (one of the
    # stack's addresses, its subnet's broadcast, loopback) is not.
    p.syn_from("syn_frame", our_ip)
    p.syn_from("other_mac", our_ip, dst_mac=bytes.fromhex("020000abcdef"))
    p.syn_from("src_own", stack_ip)
    p.syn_from("src_broadcast", ".".join(stack_ip.split(".")[:3] + ["255"]))
    p.syn_from("src_loopback", "127.0.0.1")
    print(f"resets_seen={p.resets_seen}", flush=True)
    sys.exit(1 if p.failed else 0)


if __name__ == "__main__":
    main()
