#!/usr/bin/env python3
"""Differential TCP probes (in the manner of gVisor's packetimpact): a
scripted peer sends crafted segments to one target and records what comes
back, so that the same script run against this machine's Linux kernel and
against the stack can be compared answer by answer.

The peer speaks from an address no interface owns (SPOOF_IP), through an
AF_PACKET socket on IFNAME: the kernel of the peer's namespace ignores the
answers (not its address, no forwarding), so it never resets the crafted
connections. The target must know SPOOF_IP's MAC (a static neighbour).
The target runs a discard server on OPEN_PORT (reads, never writes, closes
on end of file); CLOSED_PORT has no listener; SOURCE_PORT's server sends 5
bytes at once and closes (so its side ends in TIME_WAIT); ECHO_PORT's
server sends back what it reads.

Prints one JSON object per probe:
  {"probe": NAME, "answers": [ANSWER, ...]}
where an ANSWER is the normalized segment: flags, seq and ack relative to
the two initial sequence numbers, the window, payload length, the options
present (with MSS and window scale values, and whether TSecr echoes our
TSval), and a timing class: "now" (under 30 ms after the probe's last
segment), "soon" (under 300 ms: a delayed ACK) or "late".

Standard library only.

usage: tcp_diff.py IFNAME SPOOF_IP TARGET_IP TARGET_MAC OPEN_PORT CLOSED_PORT SOURCE_PORT ECHO_PORT [PROBE...]
"""
import json
import os
import random
import socket
import struct
import sys
import time

from send_frames import csum

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
FLAG_NAMES = [(FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (ECE, "E"), (CWR, "W")]
# The IP header's ECN field (RFC 3168 section 5).
ECT0, CE = 2, 3


def flag_str(f):
    return "".join(n for bit, n in FLAG_NAMES if f & bit) or "none"


def options(mss=None, sack_ok=False, ts=None, ws=None, sack=()):
    """TCP options laid out as Linux lays out its own."""
    o = b""
    if mss is not None:
        o += struct.pack("!BBH", 2, 4, mss)
    if sack_ok and ts is not None:
        o += struct.pack("!BBBBII", 4, 2, 8, 10, ts[0], ts[1])
    elif ts is not None:
        o += struct.pack("!BBBBII", 1, 1, 8, 10, ts[0], ts[1])
    elif sack_ok:
        o += struct.pack("!BBBB", 1, 1, 4, 2)
    if ws is not None:
        o += struct.pack("!BBBB", 1, 3, 3, ws)
    if sack:
        o += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(sack))
        for left, right in sack:
            o += struct.pack("!II", left, right)
    while len(o) % 4:
        o += b"\x01"
    return o


def parse_options(raw):
    out = {}
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(raw):
            break
        length = raw[i + 1]
        if length < 2 or i + length > len(raw):
            break
        body = raw[i + 2:i + length]
        if kind == 2 and len(body) == 2:
            out["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3 and len(body) == 1:
            out["ws"] = body[0]
        elif kind == 4:
            out["sack_ok"] = True
        elif kind == 5:
            out["sack"] = [struct.unpack("!II", body[k:k + 8]) for k in range(0, len(body) - 7, 8)]
        elif kind == 8 and len(body) == 8:
            out["ts"] = struct.unpack("!II", body)
        i += length
    return out


class Target:
    def __init__(self, ifname, spoof, ip, mac, open_port, closed_port, source_port, echo_port, keepalive_port,
                 full_queue_port, small_buffer_port):
        self.spoof, self.ip = spoof, ip
        self.keepalive_port, self.full_queue_port = keepalive_port, full_queue_port
        self.small_buffer_port = small_buffer_port
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.open_port, self.closed_port, self.source_port = open_port, closed_port, source_port
        self.echo_port = echo_port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.our_mac = self.sock.getsockname()[4]
        self.rng = random.Random(7)
        self.probe = None
        self.ports = iter(range(41000 + self.rng.randrange(1000), 65000))

    def send(self, sport, dport, seq, ack, flags, payload=b"", opts=b"", window=64240, urgent=0, tos=0):
        off = (20 + len(opts)) // 4
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags,
                          window, 0, urgent) + opts
        pseudo = socket.inet_aton(self.spoof) + socket.inet_aton(self.ip) + struct.pack(
            "!BBH", 0, 6, len(hdr) + len(payload))
        c = csum(pseudo + hdr + payload)
        seg = hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(seg), self.rng.randrange(65536), 0x4000, 64, 6, 0,
                         socket.inet_aton(self.spoof), socket.inet_aton(self.ip))
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        self.sock.send(self.mac + self.our_mac + b"\x08\x00" + ip + seg)
        self.sent_at = time.monotonic()

    def send_frag_needed(self, sport, dport, seq, mtu):
        """ICMP "fragmentation needed" (RFC 1191) from a router on the way
        back, quoting the target's segment to (spoof, sport) from `dport`
        starting at `seq`: its IP header as the target sent it (DF set,
        a full-size datagram) and the first 8 bytes of its TCP header."""
        quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1500, 0, 0x4000, 64, 6, 0,
                                socket.inet_aton(self.ip), socket.inet_aton(self.spoof))
        quoted_ip = quoted_ip[:10] + struct.pack("!H", csum(quoted_ip)) + quoted_ip[12:]
        quoted = quoted_ip + struct.pack("!HHI", dport, sport, seq & 0xFFFFFFFF)
        icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted
        icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xc0, 20 + len(icmp), self.rng.randrange(65536), 0, 64, 1, 0,
                         socket.inet_aton(self.spoof), socket.inet_aton(self.ip))
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        self.sock.send(self.mac + self.our_mac + b"\x08\x00" + ip + icmp)
        self.sent_at = time.monotonic()

    def log_raw(self, got):
        """With XS_DIFF_RAW=FILE, every collection is appended to FILE
        (one JSON line: target, probe, each segment with its time in ms):
        for working on a probe by hand."""
        path = os.environ.get("XS_DIFF_RAW")
        if not path:
            return
        segs = [dict(s, ms=round(dt * 1000, 2), opts={k: v for k, v in s["opts"].items()}) for dt, s in got]
        with open(path, "a") as f:
            f.write(json.dumps({"target": self.ip, "probe": self.probe, "segments": segs}, default=str) + "\n")

    def drain(self):
        self.sock.setblocking(False)
        dropped = 0
        try:
            while True:
                self.sock.recv(65535)
                dropped += 1
        except BlockingIOError:
            pass
        self.sock.setblocking(True)
        if dropped and os.environ.get("XS_DIFF_RAW"):
            with open(os.environ["XS_DIFF_RAW"], "a") as f:
                f.write(json.dumps({"target": self.ip, "probe": self.probe, "drained frames": dropped}) + "\n")

    def collect(self, sport, wait=0.5, until=None):
        """Segments from the target to (spoof, sport) within `wait` seconds
        of the last send: (time since it, parsed segment); sooner once
        `until(segments)` holds."""
        got = []
        deadline = self.sent_at + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (until and until([s for _, s in got])):
                self.log_raw(got)
                return got
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                self.log_raw(got)
                return got
            if addr[2] == PACKET_OUTGOING or len(data) < 54 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            ihl = (ip[0] & 15) * 4
            if ip[9] != 6 or socket.inet_ntoa(ip[12:16]) != self.ip or socket.inet_ntoa(ip[16:20]) != self.spoof:
                continue
            total = struct.unpack("!H", ip[2:4])[0]
            tcp = ip[ihl:total]
            s = struct.unpack("!HHIIBBHHH", tcp[:20])
            if s[1] != sport:
                continue
            doff = (s[4] >> 4) * 4
            got.append((time.monotonic() - self.sent_at, {
                "sport": s[0], "seq": s[2], "ack": s[3], "flags": s[5], "window": s[6],
                "opts": parse_options(tcp[20:doff]), "len": len(tcp) - doff, "ecn": ip[1] & 3,
                "ipid": struct.unpack("!H", ip[4:6])[0], "df": bool(ip[6] & 0x40),
            }))


class Conn:
    """One crafted connection: our side's numbers and what we learned."""

    def __init__(self, t, port, sack=True, ts=True, ws=7):
        self.t, self.port = t, port
        self.sport = next(t.ports)
        self.iss = t.rng.randrange(1 << 32)
        self.snd_nxt = self.iss
        self.irs = None
        self.rcv_nxt = None
        self.tsval = t.rng.randrange(1 << 30)
        self.ts_recent = 0
        self.use = dict(sack=sack, ts=ts, ws=ws)

    def ts(self):
        self.tsval += 1
        return (self.tsval, self.ts_recent) if self.use["ts"] else None

    def norm(self, answers):
        out = []
        for dt, s in answers:
            if self.irs is None and s["flags"] & SYN:
                # The target's ISN, from its first SYN|ACK.
                self.irs = s["seq"]
            o = s["opts"]
            a = {
                "flags": flag_str(s["flags"]),
                "seq": (s["seq"] - self.irs) & 0xFFFFFFFF if self.irs is not None else s["seq"],
                "ack": (s["ack"] - self.iss) & 0xFFFFFFFF if s["flags"] & ACK else 0,
                "window": s["window"],
                "len": s["len"],
                "options": sorted(k for k in o),
                "when": "now" if dt < 0.03 else "soon" if dt < 0.3 else "late",
            }
            if s["ecn"]:
                # Only where set: no other probe's answers change.
                a["ecn"] = s["ecn"]
            if "mss" in o:
                a["mss"] = o["mss"]
            if "ws" in o:
                a["ws"] = o["ws"]
            if "ts" in o:
                a["tsecr_echoes"] = o["ts"][1] == self.tsval
                self.ts_recent = o["ts"][0]
            if "sack" in o:
                # SACK blocks name our bytes: relative to our ISN.
                a["sack"] = [[(l - self.iss) & 0xFFFFFFFF, (r - self.iss) & 0xFFFFFFFF] for l, r in o["sack"]]
            out.append(a)
        return out

    def send(self, flags, payload=b"", seq=None, ack=None, opts=None, window=64240, wait=0.5, tos=0):
        t = self.t
        t.drain()
        if opts is None:
            ts = self.ts()
            opts = options(ts=ts) if ts else b""
        seq = self.snd_nxt if seq is None else seq
        ack = (self.rcv_nxt or 0) if ack is None else ack
        t.send(self.sport, self.port, seq, ack, flags, payload, opts, window, tos=tos)
        return self.norm(t.collect(self.sport, wait))

    def syn(self, wait=0.5):
        ts = self.ts()
        opts = options(mss=1460, sack_ok=self.use["sack"], ts=ts, ws=self.use["ws"])
        ans = self.send(SYN, opts=opts, ack=0, wait=wait)
        self.snd_nxt = self.iss + 1
        return ans

    def handshake(self, quick=False, ecn=False):
        """SYN, SYN|ACK, ACK; the target's answers to the SYN. `quick`:
        the ACK at once rather than after half a second of listening (the
        target's first RTT sample is then the link's)."""
        t = self.t
        t.drain()
        ts = self.ts()
        t.send(self.sport, self.port, self.iss, 0, SYN | (ECE | CWR if ecn else 0),
               opts=options(mss=1460, sack_ok=self.use["sack"], ts=ts, ws=self.use["ws"]))
        synack = (lambda segs: any(s["flags"] & (SYN | ACK) == SYN | ACK for s in segs)) if quick else None
        raw = t.collect(self.sport, 0.5, until=synack)
        synacks = [s for _, s in raw if s["flags"] & (SYN | ACK) == SYN | ACK]
        if not synacks:
            raise RuntimeError(f"no SYN|ACK from {t.ip}:{self.port}")
        sa = synacks[0]
        self.irs = sa["seq"]
        self.rcv_nxt = (sa["seq"] + 1) & 0xFFFFFFFF
        self.snd_nxt = (self.iss + 1) & 0xFFFFFFFF
        if "ts" in sa["opts"]:
            self.ts_recent = sa["opts"]["ts"][0]
        else:
            self.use["ts"] = False
        self.send(ACK, wait=0.05)
        return self.norm(raw)

    def burst(self, count, size, fill, skip=0):
        """`count` segments of `size` bytes sent back to back, the first
        `skip` segments' worth past SND.NXT (a hole before them); SND.NXT
        is left as it was."""
        for k in range(skip, skip + count):
            ts = self.ts()
            self.t.send(self.sport, self.port, self.snd_nxt + k * size, self.rcv_nxt, PSH | ACK, fill * size,
                        options(ts=ts) if ts else b"")

    def data(self, payload, flags=PSH | ACK, wait=0.5, **kw):
        ans = self.send(flags, payload, wait=wait, **kw)
        return ans


def until_segments(n, mss):
    """A `collect` condition: `n` MSS-sized data segments seen (GSO
    batches counted by their size)."""
    return lambda segs: sum(-(-s["len"] // mss) for s in segs) >= n


def data_segments(ans, mss):
    """The data segments of `ans` by sequence number, length, FIN and
    timing class: whether ACKs ride on data, how a server's reads cut its
    writes (PSH) and how far the kernel's GSO batches segments on the veth
    (split here into the MSS-sized segments a wire carries) are the
    server's and the host's business."""
    out = []
    for a in ans:
        for off in range(0, a["len"], mss):
            # GSO gives CWR to the first segment of a batch only.
            flags = a["flags"].replace("P", "") if off == 0 else a["flags"].replace("P", "").replace("W", "")
            seg = {"flags": flags, "seq": a["seq"] + off, "len": min(mss, a["len"] - off), "when": a["when"]}
            if "ecn" in a:
                seg["ecn"] = a["ecn"]
            out.append(seg)
    return out


def server_fin(ans):
    """Whether the ACK of our FIN rides on the server's own FIN depends on
    how soon the server process calls close() (Linux delays the ACK in
    pingpong mode for it): application scheduling, not TCP. An ACK followed
    by a FIN|ACK with the same numbers counts as the FIN|ACK alone. The two
    can also arrive the other way round (the ACK built first, in softirq
    on one core, the FIN by close() on the other, both at once), which
    the same numbers give away: the ACK was made before the FIN."""
    if (len(ans) == 2 and sorted(a["flags"] for a in ans) == [".", "F."]
            and ans[0]["ack"] == ans[1]["ack"] and ans[0]["seq"] == ans[1]["seq"]):
        return [a for a in ans if a["flags"] == "F."]
    return ans


def reply_carries_ack(ans):
    """Whether a reply carries the ACK of the request it answers, or the
    ACK goes alone just before it, depends on how soon the server process
    writes (Linux ACKs a first request at once, in softirq, before the
    echo process runs): application scheduling, not TCP. A pure ACK
    followed by data with the same numbers counts as the data alone."""
    out = []
    for k, a in enumerate(ans):
        nxt = ans[k + 1] if k + 1 < len(ans) else None
        if (a["flags"] == "." and a["len"] == 0 and nxt is not None and nxt["len"] > 0
                and nxt["seq"] == a["seq"] and nxt["ack"] == a["ack"]):
            continue
        out.append(a)
    return out


def probes(t):
    """Each probe: a name and a function returning the answers to compare."""

    def syn_to_open_port():
        return Conn(t, t.open_port).handshake()

    def syn_without_options():
        return Conn(t, t.open_port, sack=False, ts=False, ws=None).handshake()

    def syn_to_closed_port():
        c = Conn(t, t.closed_port)
        return c.syn()

    def ack_to_closed_port():
        c = Conn(t, t.closed_port)
        return c.send(ACK, ack=12345, opts=b"")

    # Bad input (the contract's section 8): flag combinations no stack
    # sends. Linux, tcp_rcv_state_process in LISTEN: an ACK gets a reset,
    # an RST is dropped, a SYN with FIN is dropped, anything else without
    # SYN is dropped; tcp_v4_send_reset for no socket: every segment but
    # an RST gets one, its numbers from the segment's.
    def odd_flags(port, flags, data=b""):
        c = Conn(t, port)
        ts = c.ts()
        opts = options(mss=1460, sack_ok=True, ts=ts, ws=7) if flags & SYN else b""
        return c.send(flags, data, ack=0 if not flags & ACK else 12345, opts=opts, wait=0.3)

    def syn_fin_to_a_listener():
        return odd_flags(t.open_port, SYN | FIN)

    def syn_rst_to_a_listener():
        return odd_flags(t.open_port, SYN | RST)

    def no_flags_to_a_listener():
        return odd_flags(t.open_port, 0, b"data")

    def fin_alone_to_a_listener():
        return odd_flags(t.open_port, FIN)

    def every_flag_to_a_listener():
        return odd_flags(t.open_port, FIN | SYN | RST | PSH | ACK | URG)

    def no_flags_to_a_closed_port():
        return odd_flags(t.closed_port, 0, b"data")

    def syn_fin_to_a_closed_port():
        return odd_flags(t.closed_port, SYN | FIN)

    def first_data_is_acked_at_once():
        c = Conn(t, t.open_port)
        c.handshake()
        ans = c.data(b"x" * 100)
        c.snd_nxt += 100
        return ans

    def second_small_segment_ack_timing():
        c = Conn(t, t.open_port)
        c.handshake()
        for _ in range(20):
            c.data(b"y" * 100, wait=0.05)
            c.snd_nxt += 100
        ans = c.data(b"z" * 100)
        c.snd_nxt += 100
        return ans

    # Tail loss probes (RFC 8985 section 7, Linux's default): the echo
    # server sends back four full segments and none is acknowledged. Two
    # round trips later the last goes out again as a probe; one RTO after
    # the probe, the first (the timeout). Measured here: Linux 6.18 probes
    # after 5 ms and times out 208 ms later, then after 432 and 832 ms.
    # Only data segments are compared (`data_segments`).
    def echoed_burst(count, mss, fill):
        """A connection to the echo server that sent it `count` full
        segments back to back (its echo on the way)."""
        c = Conn(t, t.echo_port)
        c.handshake(quick=True)
        t.drain()
        c.burst(count, mss, fill)
        c.snd_nxt += count * mss
        return c

    # Zero-window probing (RFC 9293 section 3.8.6.1, Linux's tcp_probe_timer
    # and tcp_write_wakeup): the echo server has 100 bytes to send back
    # and our window is closed. It probes one RTO later, then with the
    # interval doubled each time; Linux's probe is a bare ACK carrying
    # SND.UNA - 1 (tcp_xmit_probe_skb), which the receiver must answer
    # with its window.
    def a_closed_window_is_probed():
        c = Conn(t, t.echo_port)
        c.handshake(quick=True)
        ans = c.data(b"w" * 100, window=0, wait=1.6)
        c.snd_nxt += 100
        return ans

    # Nagle (RFC 896, RFC 9293 section 3.7.4, tcp_nagle_test): a small
    # segment waits while an earlier one is unacknowledged. The echo of
    # the first 10 bytes goes at once; the echo of the next 10 waits for
    # an ACK that never comes, until the loss probe, which Linux sends
    # with Nagle off (tcp_send_loss_probe), or the timeout.
    def a_small_write_waits_for_the_ack_of_the_last():
        c = Conn(t, t.echo_port)
        c.handshake(quick=True)
        first = reply_carries_ack(c.data(b"a" * 10, wait=0.05))
        c.snd_nxt += 10
        second = c.data(b"b" * 10, wait=0.6)
        c.snd_nxt += 10
        return first + second

    # Keep-alive (RFC 9293 section 3.8.4, Linux's tcp_keepalive_timer):
    # the server behind `keepalive_port` sets SO_KEEPALIVE with
    # TCP_KEEPIDLE 1, TCP_KEEPINTVL 1 and TCP_KEEPCNT 2 on each connection
    # it accepts (on the stack: the same program through the preload
    # library). Unanswered: a probe after a second of silence (a bare ACK
    # of SND.UNA - 1, tcp_write_wakeup), another a second later, and a
    # second after that the connection is reset (tcp_send_active_reset).
    def an_idle_connection_is_probed_then_reset():
        c = Conn(t, t.keepalive_port)
        c.handshake(quick=True)
        return c.norm(t.collect(c.sport, 3.7))

    def unacknowledged_tail_is_probed_then_timed_out():
        mss = 1448
        c = echoed_burst(4, mss, b"e")
        return data_segments(c.norm(t.collect(c.sport, 0.45)), mss)

    # RACK (RFC 8985 section 6): four segments echoed and probed; a SACK
    # of the third alone says the two sent before it are lost once the
    # reordering window (a quarter of the minimum RTT) has passed: the
    # first goes out again at once, where three duplicate ACKs' worth of
    # SACKs (or the retransmission timer) were needed before. (What
    # follows it depends on whether the two were sent together, in one GSO
    # batch on Linux, and on the timers' races: not compared.)
    def one_sacked_segment_marks_the_earlier_ones_lost():
        mss = 1448
        c = echoed_burst(4, mss, b"r")
        echoed = data_segments(c.norm(t.collect(c.sport, 0.1)), mss)
        base = c.rcv_nxt
        ts = c.ts()
        sack = [((base + 2 * mss) & 0xFFFFFFFF, (base + 3 * mss) & 0xFFFFFFFF)]
        t.send(c.sport, c.port, c.snd_nxt, base, ACK, b"", options(ts=ts, sack=sack))
        again = data_segments(c.norm(t.collect(c.sport, 0.15)), mss)
        return echoed + [{"after the SACK": True}] + again[:1]

    # F-RTO (RFC 5682, Linux's default tcp_frto=2): the echo server has
    # more to send than its initial window, and our ACKs are held back
    # until its retransmission timer resends the head (after the loss
    # probe, if one went). The ACK of the first segment then lets new data
    # out rather than the second and third segments again (step 2b): as
    # many new segments as the collapsed window holds; the ACK of the
    # fifth, which was sent once, shows the timeout was spurious (step
    # 3b): the window is undone and only new data follows, up to the
    # window from before the timeout.
    def a_spurious_timeout_is_undone():
        mss = 1448
        c = echoed_burst(20, mss, b"f")
        first = data_segments(c.norm(t.collect(c.sport, 0.4)), mss)
        base = c.rcv_nxt

        def ack(n):
            ts = c.ts()
            t.drain()
            t.send(c.sport, c.port, c.snd_nxt, (base + n * mss) & 0xFFFFFFFF, ACK, b"", options(ts=ts) if ts else b"")
            return data_segments(c.norm(t.collect(c.sport, 0.05)), mss)

        after_head = ack(1)
        after_fifth = ack(5)
        # Whether Linux's first loss probe (new data) went before the
        # timeout varies from run to run (see the ECN probe), so the
        # answers are compared as windows: what each ACK let out, new or
        # resent, and how much was in flight after the second.
        sent_before = max(a["seq"] + a["len"] for a in first)
        seen = set()
        resent_first = []
        for a in first:
            if a["seq"] in seen:
                resent_first.append(a["seq"])
            seen.add(a["seq"])
        reached = max(a["seq"] + a["len"] for a in first + after_head + after_fifth)
        return [
            {"resent by the timeout": resent_first},
            {"after the ACK of the first": [{"new": a["seq"] >= sent_before, "when": a["when"]} for a in after_head]},
            {"resent after the ACK of the fifth": [a["seq"] for a in after_fifth if a["seq"] < sent_before]},
            {"segments in flight after the ACK of the fifth": (reached - (5 * mss + 1)) // mss},
        ]

    # Eifel detection (RFC 3522, Linux's tcp_packet_delayed with
    # timestamps): one segment echoed and never acknowledged, so a
    # timeout resends it (after a loss probe, which does not count as a
    # retransmission); then the ACK comes, echoing the TSval of the
    # original. The original had arrived: the timeout is undone by that
    # ACK (TCPLossUndo), which F-RTO could not tell (nothing was left
    # that was sent once). Ten segments to echo then go out at once in
    # the window from before the timeout, not two in slow start.
    def a_timeout_whose_original_arrived_is_undone_by_its_echo():
        mss = 1448
        c = Conn(t, t.echo_port)
        c.handshake(quick=True)
        t.drain()
        ts = c.ts()
        t.send(c.sport, c.port, c.snd_nxt, c.rcv_nxt, PSH | ACK, b"t" * 100, options(ts=ts) if ts else b"")
        c.snd_nxt += 100
        raw = t.collect(c.sport, 1.5, until=lambda segs: sum(1 for s in segs if s["len"]) >= 3)
        data = [s for _, s in raw if s["len"]]
        if not data or "ts" not in data[0]["opts"]:
            raise RuntimeError("no timestamped echo")
        original = data[0]["opts"]["ts"][0]
        resent = sorted({s["seq"] for s in data[1:]} & {data[0]["seq"]})
        c.norm(raw)
        c.rcv_nxt = (data[0]["seq"] + data[0]["len"]) & 0xFFFFFFFF
        c.tsval += 1
        t.drain()
        t.send(c.sport, c.port, c.snd_nxt, c.rcv_nxt, ACK, b"", options(ts=(c.tsval, original)))
        t.collect(c.sport, 0.02)
        t.drain()
        c.burst(10, mss, b"u")
        c.snd_nxt += 10 * mss
        echoed = data_segments(c.norm(t.collect(c.sport, 0.1, until=until_segments(10, mss))), mss)
        return [
            {"the echo went out again before the ACK": len(resent) == 1},
            {"echoed at once after the ACK": len([a for a in echoed if a["when"] == "now"])},
        ]

    # Restart after idle (RFC 5681 section 4.1 as Linux's
    # tcp_cwnd_restart): forty segments echoed with every window
    # acknowledged grow the window to forty; after 0.3 s of silence (one
    # to two RTOs) the next forty to echo go out in half that window (one
    # halving), not in the initial window of ten.
    def the_window_after_idle_is_halved_per_rto():
        mss = 1448
        # (Forty: more than the target's first receive window, 64240
        # bytes, would be dropped as it arrives.)
        c = echoed_burst(40, mss, b"i")
        base = c.rcv_nxt
        got = 0

        def collect_to(n, wait):
            nonlocal got
            segs = data_segments(c.norm(t.collect(c.sport, wait, until=until_segments(n - got, mss))), mss)
            got = max([got] + [(a["seq"] + a["len"] - 1) // mss for a in segs])

        def ack_got():
            ts = c.ts()
            t.drain()
            t.send(c.sport, c.port, c.snd_nxt, (base + got * mss) & 0xFFFFFFFF, ACK, b"", options(ts=ts) if ts else b"")

        # Each window acknowledged once it is all there (the echo server's
        # reads and writes may split it; what has arrived is what is
        # acknowledged).
        collect_to(10, 0.2)
        ack_got()
        collect_to(30, 0.3)
        ack_got()
        collect_to(40, 0.3)
        # Idle 0.3 s from the last data sent: 1.4 to 1.5 RTOs (about 200
        # to 210 ms here on both), one halving.
        ack_got()
        time.sleep(0.3)
        t.drain()
        c.burst(40, mss, b"j")
        c.snd_nxt += 40 * mss
        after = data_segments(c.norm(t.collect(c.sport, 0.05)), mss)
        return [{"echoed before the pause": got}, {"segments at once after idle": len(after)}]

    # ECN (RFC 3168) with Linux's default tcp_ecn=2: a SYN asking for it
    # (ECE and CWR) gets ECE in the SYN|ACK.
    def syn_asking_for_ecn_is_answered_with_ece():
        c = Conn(t, t.open_port)
        ts = c.ts()
        return c.send(SYN | ECE | CWR, ack=0, opts=options(mss=1460, sack_ok=True, ts=ts, ws=7))

    # Data arriving CE-marked is echoed: ECE on every ACK until data with
    # CWR arrives (tcp_ecn_check_ce, tcp_ecn_accept_cwr).
    def ce_marked_data_is_echoed_until_cwr():
        c = Conn(t, t.open_port)
        c.handshake(quick=True, ecn=True)
        out = []
        for ecn, flags in [(ECT0, PSH | ACK), (CE, PSH | ACK), (ECT0, PSH | ACK), (ECT0, PSH | ACK | CWR),
                           (ECT0, PSH | ACK)]:
            out += c.data(b"e" * 100, flags=flags, tos=ecn, wait=0.25)
            c.snd_nxt += 100
        return out

    # An ECN connection's new data is ECT(0) (the echo of ours), and an ACK
    # with ECE reduces the window without resending anything: the next new
    # segment carries CWR (tcp_enter_cwr, tcp_ecn_send). How many new
    # segments the reduction lets out is PRR's count; the reduction also
    # ends the loss probe episode, so a new probe follows
    # (tcp_init_cwnd_reduction).
    def an_ecn_echo_reduces_the_window_without_resending():
        mss = 1448
        c = Conn(t, t.echo_port)
        c.handshake(quick=True, ecn=True)
        t.drain()
        c.burst(20, mss, b"c")
        c.snd_nxt += 20 * mss
        # The initial window and the loss probe (which Linux sends anywhere
        # from a few to some tens of ms later) before the echo.
        first = data_segments(c.norm(t.collect(c.sport, 0.15, until=until_segments(11, mss))), mss)
        base = c.rcv_nxt
        ts = c.ts()
        t.drain()
        t.send(c.sport, c.port, c.snd_nxt, (base + mss) & 0xFFFFFFFF, ACK | ECE, b"", options(ts=ts) if ts else b"")
        after = data_segments(c.norm(t.collect(c.sport, 0.1, until=lambda segs: any(s["len"] for s in segs))), mss)
        # Compared: every echo ECT(0); what PRR sends first, new data with
        # CWR; nothing resent. (Whether Linux's first loss probe came
        # before the echo varies from run to run, and so does how soon
        # Linux's answer to the echo leaves: 0.1 to 15 ms measured, while
        # the xstackd worker busy-polls one of the two cores: neither is
        # compared.)
        sent_before = max(a["seq"] + a["len"] for a in first)
        return [
            {"echoes ECT(0)": all(a.get("ecn") == 2 for a in first + after)},
            {"first after the echo": [{"flags": a["flags"], "new": a["seq"] >= sent_before} for a in after[:1]]},
            {"resent": [a["seq"] for a in after if a["seq"] < sent_before]},
        ]

    # D-SACK undo (RFC 2883 section 4.2, Linux's tcp_try_undo_recovery):
    # twenty segments to echo; four SACKed above the first two make them
    # lost and they are resent at once; the ACK of everything sent then
    # carries a D-SACK of both (the originals had only been late, the
    # resends came second): recovery is undone, and the rest goes out in
    # the window from before recovery, not in ssthresh.
    def a_recovery_whose_resend_is_d_sacked_is_undone():
        mss = 1448
        c = echoed_burst(20, mss, b"u")
        # The initial window and the loss probe first (see above), then
        # only what each ACK sends at once.
        first = data_segments(c.norm(t.collect(c.sport, 0.15, until=until_segments(11, mss))), mss)
        base = c.rcv_nxt

        sent_before = max(a["seq"] + a["len"] for a in first)

        def rel_end(s):
            return ((s["seq"] - c.irs) & 0xFFFFFFFF) + s["len"]

        def ack(n, blocks, until):
            ts = c.ts()
            t.drain()
            sack = [((base + a * mss) & 0xFFFFFFFF, (base + b * mss) & 0xFFFFFFFF) for a, b in blocks]
            t.send(c.sport, c.port, c.snd_nxt, (base + n * mss) & 0xFFFFFFFF, ACK, b"", options(ts=ts, sack=sack))
            return data_segments(c.norm(t.collect(c.sport, 0.1, until=until)), mss)

        # What each ACK lets out, until it is all there (Linux's answers
        # leave 0.1 to 15 ms after the ACK here, see the ECN probe).
        # (Nothing acknowledged cumulatively: Linux's RACK takes its RTT
        # from the last segment it processes, and a cumulative ACK of the
        # first would make it wait a moment for the second, by how far
        # apart the two were sent.)
        resent = ack(0, [(2, 6)], lambda segs: sum(1 for s in segs if s["len"] and rel_end(s) <= sent_before) >= 2)
        after = ack(11, [(0, 2)], lambda segs: any(rel_end(s) >= 20 * mss + 1 for s in segs))
        # Whether Linux's first loss probe went before the SACKs or one more
        # new segment goes with the resends varies from run to run; what
        # is compared is what was resent and how far the data reached
        # once the D-SACK undid recovery (with the reduction kept it stops
        # short).
        return [
            {"resent after the SACKs": sorted({a["seq"] for a in resent if a["seq"] < sent_before})},
            {"data reached after the D-SACK": max(a["seq"] + a["len"] for a in first + resent + after)},
        ]

    # Congestion window validation (RFC 7661 as Linux's tcp_cwnd_validate):
    # twenty small request/responses, each echo acknowledged at once, never
    # fill the window, so it does not grow; twenty full segments echoed
    # after them go out in the initial window (ten), then the loss probe.
    def an_unused_window_does_not_grow():
        # Without SACK: no loss probe follows the burst (both send one
        # only on SACK connections), so the answer is the window itself.
        c = Conn(t, t.echo_port, sack=False)
        c.handshake(quick=True)
        mss = 1448
        for _ in range(20):
            t.drain()
            ts = c.ts()
            t.send(c.sport, c.port, c.snd_nxt, c.rcv_nxt, PSH | ACK, b"q" * 100, options(ts=ts) if ts else b"")
            c.snd_nxt += 100
            got = c.norm(t.collect(c.sport, 0.5, until=lambda segs: sum(x["len"] for x in segs) >= 100))
            c.rcv_nxt = (c.rcv_nxt + sum(a["len"] for a in got)) & 0xFFFFFFFF
            ts = c.ts()
            t.send(c.sport, c.port, c.snd_nxt, c.rcv_nxt, ACK, b"", options(ts=ts) if ts else b"")
        time.sleep(0.01)
        t.drain()
        c.burst(20, mss, b"b")
        c.snd_nxt += 20 * mss
        # How many go out is the window, at most: the kernel's echo server
        # sometimes writes too late for a few of them (8 or 9 seen), so
        # what is compared is whether more than the initial window went.
        sent = data_segments(c.norm(t.collect(c.sport, 0.15)), mss)
        return [{"segments": "none" if not sent else "initial window at most" if len(sent) <= 10 else "more"}]

    # Each out-of-order segment gets its own duplicate ACK, with the SACK
    # blocks as they stand after it (tcp_data_queue sends one per
    # segment), also when they come back to back.
    def each_out_of_order_segment_gets_its_own_ack():
        c = Conn(t, t.open_port)
        c.handshake()
        t.drain()
        c.burst(3, 100, b"o", skip=1)
        return c.norm(t.collect(c.sport, 0.3))

    def rst_in_window_gets_a_challenge_ack():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.send(RST, seq=c.snd_nxt + 100, ack=0, opts=b"")

    def rst_exact_closes():
        c = Conn(t, t.open_port)
        c.handshake()
        a = c.send(RST, ack=0, opts=b"", wait=0.2)
        b = c.data(b"after", wait=0.3)
        return a + b

    # RFC 5961 section 7 as Linux 6.x limits it: per connection, one
    # challenge ACK per tcp_invalid_ratelimit (500 ms; the host-wide
    # tcp_challenge_ack_limit is off by default since Linux 6.0): of three
    # in-window resets in a row only the first is answered, and a SYN
    # 0.6 s later is.
    def challenge_acks_are_limited_per_connection():
        c = Conn(t, t.open_port)
        c.handshake()
        out = [{"reset": k, "answers": c.send(RST, seq=c.snd_nxt + 100 + k, ack=0, opts=b"", wait=0.1)} for k in range(3)]
        time.sleep(0.5)
        out.append({"syn 0.6 s later": c.send(SYN, seq=c.snd_nxt + 5, ack=0,
                                               opts=options(mss=1460, sack_ok=True, ts=c.ts(), ws=7), wait=0.1)})
        return out

    # A SYN outside the window is challenged too (tcp_validate_incoming's
    # syn_challenge), under the same per-connection limit: of three in a
    # row only the first is answered (tcp_oow_rate_limited lets through
    # only data without SYN), where data outside the window is answered
    # every time.
    def out_of_window_syns_are_challenged_once_data_every_time():
        c = Conn(t, t.open_port)
        c.handshake()
        syn_opts = options(mss=1460, sack_ok=True, ts=c.ts(), ws=7)
        out = [{"syn": k, "answers": c.send(SYN, seq=c.snd_nxt + 50_000_000 + k, ack=0, opts=syn_opts, wait=0.1)}
               for k in range(3)]
        out += [{"data": k, "answers": c.data(b"far", seq=c.snd_nxt + 10_000_000 + k, wait=0.1)} for k in range(3)]
        return out

    def syn_on_established_gets_a_challenge_ack():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.send(SYN, seq=c.snd_nxt + 5, ack=0,
                      opts=options(mss=1460, sack_ok=True, ts=c.ts(), ws=7))

    def data_beyond_the_window_is_acked_and_dropped():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.data(b"far", seq=c.snd_nxt + 10_000_000)

    def ack_of_unsent_data():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.send(ACK, ack=c.rcv_nxt + 1000)

    def duplicate_data_is_acked_at_once():
        c = Conn(t, t.open_port)
        c.handshake()
        c.data(b"d" * 50, wait=0.3)
        c.snd_nxt += 50
        return c.data(b"d" * 50, seq=c.snd_nxt - 50)

    def out_of_order_data_gets_a_sack():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.data(b"o" * 100, seq=c.snd_nxt + 100)

    def fin_is_acked_and_answered_with_fin():
        c = Conn(t, t.open_port)
        c.handshake()
        ans = c.send(FIN | ACK, wait=0.5)
        c.snd_nxt += 1
        return server_fin(ans)

    def ten_bytes_taken():
        """A connection to the discard server that took 10 bytes: their
        TSval is TS.Recent."""
        c = Conn(t, t.open_port)
        c.handshake()
        c.data(b"p" * 10, wait=0.3)
        c.snd_nxt += 10
        return c

    # A SYN with FIN on an established connection is a SYN there
    # (tcp_validate_incoming: a challenge ACK, RFC 5961 section 4).
    def syn_fin_on_an_established_connection():
        c = ten_bytes_taken()
        return c.send(SYN | FIN | ACK)

    # An exact RST that carries data resets the connection all the same
    # (the data is not taken); the next segment finds no connection.
    def an_exact_rst_with_data_resets():
        c = ten_bytes_taken()
        first = c.send(RST | ACK, b"zz")
        return first + c.data(b"after", wait=0.3)

    # Simultaneous close (RFC 9293 figure 13): the source server sends
    # five bytes and its FIN; our FIN crosses it, acknowledging the bytes
    # but not the FIN. The server, in FIN-WAIT-1, moves to CLOSING and
    # acknowledges our FIN; our ACK of its FIN then takes it to TIME-WAIT,
    # silently.
    def simultaneous_close():
        c = Conn(t, t.source_port)
        c.handshake(quick=True)
        got = t.collect(c.sport, 0.5, until=lambda segs: any(s["flags"] & FIN for s in segs))
        fins = [s for _, s in got if s["flags"] & FIN]
        if not fins:
            raise RuntimeError("no FIN from the source server")
        data_end = fins[0]["seq"] + fins[0]["len"]
        c.rcv_nxt = data_end & 0xFFFFFFFF
        crossing = c.send(FIN | ACK, wait=0.1)
        c.snd_nxt += 1
        c.rcv_nxt = (data_end + 1) & 0xFFFFFFFF
        return crossing + c.send(ACK, wait=0.1)

    # The accept queue (the contract's section 2): a listener with a
    # backlog of 1 that never accepts holds two connections (Linux's
    # sk_acceptq_is_full is "more than the backlog"); a third SYN is
    # dropped unanswered (tcp_conn_request, LISTENOVERFLOWS), cookies or
    # not. The second connection is established: its data is ACKed.
    def a_full_accept_queue_drops_a_new_syn():
        out = []
        for k in range(2):
            c = Conn(t, t.full_queue_port)
            out.append({"connection": k, "syn": c.handshake(quick=True)})
        out.append({"connection": 1, "data": c.data(b"q" * 10, wait=0.1)})
        c.snd_nxt += 10
        third = Conn(t, t.full_queue_port)
        out.append({"connection": 2, "syn": third.syn(wait=0.5)})
        return out

    # SO_RCVBUF set before listen() clamps the window the connections may
    # announce, so the SYN|ACK's window scale need only reach it
    # (tcp_openreq_init_rwin, tcp_select_initial_window): window 7240,
    # scale 0, where 7 without it.
    def a_small_receive_buffer_gets_a_small_window_scale():
        return Conn(t, t.small_buffer_port).handshake(quick=True)

    def old_timestamp_is_dropped_by_paws():
        c = ten_bytes_taken()
        return c.data(b"q" * 10, opts=options(ts=(c.tsval - 100_000, c.ts_recent)))

    # The IPv4 identification as Linux chooses it (ip_select_ident_segs,
    # ip_build_and_send_pkt): DF on everything; a listener's SYN|ACK has
    # identification 0; a connection numbers its datagrams from its own
    # unpredictable start (inet_id), one apart (also across a GSO batch).
    def ip_identification_is_per_connection():
        c = Conn(t, t.echo_port)
        t.drain()
        ts = c.ts()
        t.send(c.sport, c.port, c.iss, 0, SYN, opts=options(mss=1460, sack_ok=True, ts=ts, ws=7))
        raw = t.collect(c.sport, 0.5, until=lambda segs: any(s["flags"] & SYN for s in segs))
        synack = [s for _, s in raw if s["flags"] & SYN][0]
        c.irs = synack["seq"]
        c.rcv_nxt = (synack["seq"] + 1) & 0xFFFFFFFF
        c.snd_nxt = (c.iss + 1) & 0xFFFFFFFF
        c.ts_recent = synack["opts"]["ts"][0]
        c.send(ACK, wait=0.05)
        t.drain()
        c.burst(4, 1448, b"n")
        c.snd_nxt += 4 * 1448
        got = t.collect(c.sport, 0.2, until=lambda segs: sum(-(-s["len"] // 1448) for s in segs) >= 4)
        ids = []
        for _, s in got:
            ids.extend(s["ipid"] + k for k in range(max(1, -(-s["len"] // 1448))))
        return [
            {"SYN|ACK": {"ipid": synack["ipid"], "df": synack["df"]}},
            {"DF on all": all(s["df"] for _, s in got)},
            {"numbered one apart": all((b - a) & 0xFFFF == 1 for a, b in zip(ids, ids[1:]))},
            {"from a start other than 0 or the SYN|ACK's": bool(ids) and ids[0] not in (0, 1)},
        ]

    # PAWS as Linux's tcp_paws_check (TCP_PAWS_WINDOW): a TSval one below
    # TS.Recent still passes, and the data is taken.
    def a_timestamp_one_below_ts_recent_passes_paws():
        c = ten_bytes_taken()
        return c.data(b"q" * 10, opts=options(ts=(c.tsval - 1, c.ts_recent)))

    # tcp_disordered_ack_check: a pure duplicate ACK at RCV.NXT that moves
    # no window and whose TSval is older than TS.Recent by less than the
    # replay window (about the RTO) was only reordered: it passes PAWS,
    # and nothing is sent for it. (A pure ACK first puts SND.WL1 at
    # RCV.NXT, so that the old one would not move the window.) Older than
    # the replay window it gets a duplicate ACK.
    def a_disordered_pure_ack_passes_paws():
        out = []
        for older in (5, 100_000):
            c = ten_bytes_taken()
            c.send(ACK, wait=0.05)
            out.append({"older by": older, "answers": c.send(ACK, opts=options(ts=(c.tsval - older, c.ts_recent)))})
        return out

    # A pure ACK from before RCV.NXT with an old TSval fails PAWS: dropped
    # (with or without a duplicate ACK in answer, as Linux decides).
    def an_old_pure_ack_fails_paws():
        c = ten_bytes_taken()
        return c.send(ACK, seq=(c.snd_nxt - 5) & 0xFFFFFFFF, opts=options(ts=(c.tsval - 100_000, c.ts_recent)))

    # The SYN|ACK's own timer fires 1 s after it; these probes end well
    # before (0.4 s, then at most 0.55 s more) so only the answers to what
    # they sent are compared, and a retransmission the probe's duplicate
    # SYN should have postponed shows up.
    def syn_again_in_syn_received_resends_the_syn_ack():
        c = Conn(t, t.open_port)
        first = c.syn(wait=0.4)
        c.snd_nxt = c.iss
        return first + c.syn(wait=0.55)

    def bad_ack_in_syn_received_is_reset():
        c = Conn(t, t.open_port)
        c.syn(wait=0.2)
        # An ACK of something the SYN|ACK did not send: the RST takes its
        # sequence number from it (relative to the target's ISN here).
        return c.send(ACK, ack=(c.irs or 0) + 12346, opts=b"", wait=0.3)

    def rst_out_of_window_is_ignored():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.send(RST, seq=c.snd_nxt + 50_000_000, ack=0, opts=b"")

    def blind_old_ack_gets_a_challenge_ack():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.send(ACK, ack=c.rcv_nxt - 2_000_000)

    def data_with_fin_is_acked_once():
        c = Conn(t, t.open_port)
        c.handshake()
        ans = c.data(b"bye", flags=FIN | PSH | ACK)
        c.snd_nxt += 4
        return server_fin(ans)

    def segment_without_ack_is_dropped():
        c = Conn(t, t.open_port)
        c.handshake()
        return c.data(b"noack", flags=PSH)

    def data_after_our_fin_and_its_ack():
        c = Conn(t, t.open_port)
        c.handshake()
        c.send(FIN | ACK, wait=0.3)
        c.snd_nxt += 1
        c.rcv_nxt = (c.rcv_nxt + 1) & 0xFFFFFFFF
        return c.send(ACK, wait=0.3) + c.data(b"late", wait=0.3)

    def syn_with_data_is_answered_without_its_data():
        # No TCP Fast Open cookie: the data in a SYN is not taken, the
        # SYN|ACK acknowledges the SYN alone, and the data comes again.
        c = Conn(t, t.open_port)
        ts = c.ts()
        a = c.send(SYN, payload=b"early", ack=0, opts=options(mss=1460, sack_ok=True, ts=ts, ws=7))
        return a

    def urgent_data_is_acknowledged_as_data():
        c = Conn(t, t.open_port)
        c.handshake()
        t.drain()
        ts = c.ts()
        # URG with an urgent pointer at the last byte (RFC 9293 3.8.5).
        t.send(c.sport, t.open_port, c.snd_nxt, c.rcv_nxt, URG | ACK | PSH, b"oob!",
               options(ts=ts) if ts else b"", urgent=4)
        ans = c.norm(t.collect(c.sport, 0.5))
        c.snd_nxt += 4
        return ans

    def data_with_a_malformed_option_is_taken():
        # Linux tcp_parse_options stops at an option whose length is
        # below 2 or past the header, and takes the segment.
        c = Conn(t, t.open_port)
        c.handshake()
        ans = c.data(b"m" * 10, opts=b"\x01\x01\x08\x00")
        c.snd_nxt += 10
        more = c.data(b"n" * 10, opts=b"\x01\x01\x02\x08")
        c.snd_nxt += 10
        return ans + more

    def rst_at_our_fin_resets_last_ack():
        # Linux tcp_reset_check: in CLOSE-WAIT, LAST-ACK and CLOSING a
        # reset at RCV.NXT - 1 (the sequence number of the FIN it already
        # has) is taken, as some peers send it so.
        c = Conn(t, t.open_port)
        c.handshake()
        ans = server_fin(c.send(FIN | ACK, wait=0.5))
        c.snd_nxt += 1
        # The discard server's FIN is not acknowledged: it sits in LAST-ACK.
        a = c.send(RST, seq=c.snd_nxt - 1, ack=0, opts=b"", wait=0.3)
        # Gone: an ACK of its FIN meets no connection (a reset), where a
        # live LAST-ACK would take it silently.
        c.rcv_nxt = (c.rcv_nxt + 1) & 0xFFFFFFFF
        b = c.send(ACK, opts=b"", wait=0.3)
        return ans + a + b

    # TIME_WAIT (Linux tcp_timewait_state_process): the source server
    # sends 5 bytes and its FIN; our FIN|ACK acknowledges both, and its
    # ACK of our FIN leaves the target in TIME_WAIT. The numbers then:
    # the target's next sequence number is ISN + 7, ours ISS + 2.
    def in_time_wait():
        c = Conn(t, t.source_port)
        c.handshake()
        time.sleep(0.2)
        c.rcv_nxt = (c.irs + 7) & 0xFFFFFFFF
        ans = c.send(FIN | ACK, wait=0.3)
        c.snd_nxt += 1
        return c, ans

    def time_wait_is_entered_with_the_ack_of_our_fin():
        # (Whether the 5 bytes and the FIN share a segment is the server
        # application's timing: only the ACK of our FIN is compared.)
        return in_time_wait()[1]

    def time_wait_acks_a_retransmitted_fin():
        c, _ = in_time_wait()
        return c.send(FIN | ACK, seq=c.snd_nxt - 1)

    def time_wait_acks_data():
        c, _ = in_time_wait()
        return c.data(b"late")

    def time_wait_takes_a_bare_ack_silently():
        c, _ = in_time_wait()
        return c.send(ACK)

    def time_wait_ignores_a_reset_out_of_place_and_dies_of_an_exact_one():
        c, _ = in_time_wait()
        a = c.send(RST, seq=c.snd_nxt + 100, ack=0, opts=b"", wait=0.2)
        b = c.send(FIN | ACK, seq=c.snd_nxt - 1, wait=0.2)
        d = c.send(RST, ack=0, opts=b"", wait=0.2)
        # Gone: the listener answers the next ACK with a reset.
        e = c.send(ACK, wait=0.3)
        return a + b + d + e

    def time_wait_answers_an_old_syn_with_its_ack():
        c, _ = in_time_wait()
        # No timestamp, below RCV.NXT: maybe an old duplicate.
        return c.send(SYN, seq=c.iss, ack=0, opts=options(mss=1460))

    def time_wait_reopens_for_a_newer_syn():
        c, _ = in_time_wait()
        ts = c.ts()
        ans = c.send(SYN, seq=c.snd_nxt + 100_000, ack=0, opts=options(mss=1460, sack_ok=True, ts=ts, ws=7))
        # The new ISN lies 65537 above the old SND.NXT: relative to the old
        # ISN, seq says so.
        for a in ans:
            if a["flags"] == "S.":
                a["ack"] = (a["ack"] - 100_000) & 0xFFFFFFFF
        return ans

    def time_wait_rejects_an_old_timestamp_by_paws():
        c, _ = in_time_wait()
        return c.send(ACK, opts=options(ts=(c.tsval - 100_000, c.ts_recent)))

    # FIN_WAIT_2 of an orphan: the source server's data and FIN are
    # acknowledged but our side stays open, so the closed server waits
    # for our FIN (Linux keeps it as a timewait record in the FIN_WAIT_2
    # substate).
    def in_fin_wait_2():
        c = Conn(t, t.source_port)
        c.handshake()
        time.sleep(0.2)
        c.rcv_nxt = (c.irs + 7) & 0xFFFFFFFF
        ans = c.send(ACK, wait=0.3)
        return c, ans

    def fin_wait_2_takes_the_ack_of_its_fin_silently():
        return in_fin_wait_2()[1]

    def fin_wait_2_resets_new_data():
        c, _ = in_fin_wait_2()
        return c.data(b"late")

    def fin_wait_2_acks_the_peers_fin():
        c, _ = in_fin_wait_2()
        return c.send(FIN | ACK)

    def fin_wait_2_acks_data_out_of_the_window():
        c, _ = in_fin_wait_2()
        return c.data(b"far", seq=c.snd_nxt + 10_000_000)

    def fin_wait_2_resets_a_syn():
        c, _ = in_fin_wait_2()
        # The reset of a segment without ACK has SEQ 0 (RFC 9293 section
        # 3.10.7.1): compared as sent, not relative to the old ISN.
        c.irs = None
        return c.send(SYN, ack=0, opts=options(mss=1460))

    # Path MTU discovery (RFC 1191, Linux's tcp_v4_mtu_reduced): four
    # full segments echoed, then a router on the way answers the first
    # with "fragmentation needed, next hop MTU 1000". The flight goes out
    # again at once in segments of at most 948 bytes (1000 less 40 of
    # headers and 12 of timestamps). How the resent bytes are cut is the
    # sender's own business (Linux splits each old segment in two, keeping
    # its edges; the stack cuts the flight anew), so the probe compares
    # what is covered, the largest piece and when. A connection opened
    # after it announces the path's MSS in its SYN|ACK: the destination's
    # route keeps the MTU for ten minutes on both. (Last in the list for
    # that reason: the probes after it would see the narrower path.)
    def fragmentation_needed_lowers_the_mss_and_resends_at_once():
        mss = 1448
        c = echoed_burst(4, mss, b"m")
        echoed = data_segments(c.norm(t.collect(c.sport, 0.1)), mss)
        t.drain()
        t.send_frag_needed(c.sport, c.port, c.rcv_nxt, 1000)
        again = data_segments(c.norm(t.collect(c.sport, 0.15)), 948)
        resent = {
            "from": min((a["seq"] for a in again), default=None),
            "to": max((a["seq"] + a["len"] for a in again), default=None),
            "largest": max((a["len"] for a in again), default=None),
            "when": again[0]["when"] if again else None,
        }
        c2 = Conn(t, t.echo_port)
        synack = [a for a in c2.syn(wait=0.1) if "S" in a["flags"]]
        return echoed + [{"after the ICMP": resent}] + synack[:1]

    return [
        ("data_with_a_malformed_option_is_taken", data_with_a_malformed_option_is_taken),
        ("rst_at_our_fin_resets_last_ack", rst_at_our_fin_resets_last_ack),
        ("syn_with_data_is_answered_without_its_data", syn_with_data_is_answered_without_its_data),
        ("urgent_data_is_acknowledged_as_data", urgent_data_is_acknowledged_as_data),
        ("fin_wait_2_takes_the_ack_of_its_fin_silently", fin_wait_2_takes_the_ack_of_its_fin_silently),
        ("fin_wait_2_resets_new_data", fin_wait_2_resets_new_data),
        ("fin_wait_2_acks_the_peers_fin", fin_wait_2_acks_the_peers_fin),
        ("fin_wait_2_acks_data_out_of_the_window", fin_wait_2_acks_data_out_of_the_window),
        ("fin_wait_2_resets_a_syn", fin_wait_2_resets_a_syn),
        ("time_wait_is_entered_with_the_ack_of_our_fin", time_wait_is_entered_with_the_ack_of_our_fin),
        ("time_wait_acks_a_retransmitted_fin", time_wait_acks_a_retransmitted_fin),
        ("time_wait_acks_data", time_wait_acks_data),
        ("time_wait_takes_a_bare_ack_silently", time_wait_takes_a_bare_ack_silently),
        ("time_wait_ignores_a_reset_out_of_place_and_dies_of_an_exact_one",
         time_wait_ignores_a_reset_out_of_place_and_dies_of_an_exact_one),
        ("time_wait_answers_an_old_syn_with_its_ack", time_wait_answers_an_old_syn_with_its_ack),
        ("time_wait_reopens_for_a_newer_syn", time_wait_reopens_for_a_newer_syn),
        ("time_wait_rejects_an_old_timestamp_by_paws", time_wait_rejects_an_old_timestamp_by_paws),
        ("syn_again_in_syn_received_resends_the_syn_ack", syn_again_in_syn_received_resends_the_syn_ack),
        ("bad_ack_in_syn_received_is_reset", bad_ack_in_syn_received_is_reset),
        ("rst_out_of_window_is_ignored", rst_out_of_window_is_ignored),
        ("blind_old_ack_gets_a_challenge_ack", blind_old_ack_gets_a_challenge_ack),
        ("data_with_fin_is_acked_once", data_with_fin_is_acked_once),
        ("segment_without_ack_is_dropped", segment_without_ack_is_dropped),
        ("data_after_our_fin_and_its_ack", data_after_our_fin_and_its_ack),
        ("syn_to_open_port", syn_to_open_port),
        ("syn_without_options", syn_without_options),
        ("syn_to_closed_port", syn_to_closed_port),
        ("ack_to_closed_port", ack_to_closed_port),
        ("first_data_is_acked_at_once", first_data_is_acked_at_once),
        ("syn_fin_to_a_listener", syn_fin_to_a_listener),
        ("syn_rst_to_a_listener", syn_rst_to_a_listener),
        ("no_flags_to_a_listener", no_flags_to_a_listener),
        ("fin_alone_to_a_listener", fin_alone_to_a_listener),
        ("every_flag_to_a_listener", every_flag_to_a_listener),
        ("no_flags_to_a_closed_port", no_flags_to_a_closed_port),
        ("syn_fin_to_a_closed_port", syn_fin_to_a_closed_port),
        ("syn_fin_on_an_established_connection", syn_fin_on_an_established_connection),
        ("an_exact_rst_with_data_resets", an_exact_rst_with_data_resets),
        ("simultaneous_close", simultaneous_close),
        ("a_full_accept_queue_drops_a_new_syn", a_full_accept_queue_drops_a_new_syn),
        ("a_small_receive_buffer_gets_a_small_window_scale", a_small_receive_buffer_gets_a_small_window_scale),
        ("a_closed_window_is_probed", a_closed_window_is_probed),
        ("an_idle_connection_is_probed_then_reset", an_idle_connection_is_probed_then_reset),
        ("a_small_write_waits_for_the_ack_of_the_last", a_small_write_waits_for_the_ack_of_the_last),
        ("unacknowledged_tail_is_probed_then_timed_out", unacknowledged_tail_is_probed_then_timed_out),
        ("one_sacked_segment_marks_the_earlier_ones_lost", one_sacked_segment_marks_the_earlier_ones_lost),
        ("an_unused_window_does_not_grow", an_unused_window_does_not_grow),
        ("a_spurious_timeout_is_undone", a_spurious_timeout_is_undone),
        ("the_window_after_idle_is_halved_per_rto", the_window_after_idle_is_halved_per_rto),
        ("a_timeout_whose_original_arrived_is_undone_by_its_echo",
         a_timeout_whose_original_arrived_is_undone_by_its_echo),
        ("a_recovery_whose_resend_is_d_sacked_is_undone", a_recovery_whose_resend_is_d_sacked_is_undone),
        ("syn_asking_for_ecn_is_answered_with_ece", syn_asking_for_ecn_is_answered_with_ece),
        ("ce_marked_data_is_echoed_until_cwr", ce_marked_data_is_echoed_until_cwr),
        ("an_ecn_echo_reduces_the_window_without_resending", an_ecn_echo_reduces_the_window_without_resending),
        ("each_out_of_order_segment_gets_its_own_ack", each_out_of_order_segment_gets_its_own_ack),
        ("second_small_segment_ack_timing", second_small_segment_ack_timing),
        ("rst_in_window_gets_a_challenge_ack", rst_in_window_gets_a_challenge_ack),
        ("out_of_window_syns_are_challenged_once_data_every_time", out_of_window_syns_are_challenged_once_data_every_time),
        ("rst_exact_closes", rst_exact_closes),
        ("syn_on_established_gets_a_challenge_ack", syn_on_established_gets_a_challenge_ack),
        ("challenge_acks_are_limited_per_connection", challenge_acks_are_limited_per_connection),
        ("data_beyond_the_window_is_acked_and_dropped", data_beyond_the_window_is_acked_and_dropped),
        ("ack_of_unsent_data", ack_of_unsent_data),
        ("duplicate_data_is_acked_at_once", duplicate_data_is_acked_at_once),
        ("out_of_order_data_gets_a_sack", out_of_order_data_gets_a_sack),
        ("fin_is_acked_and_answered_with_fin", fin_is_acked_and_answered_with_fin),
        ("old_timestamp_is_dropped_by_paws", old_timestamp_is_dropped_by_paws),
        ("a_timestamp_one_below_ts_recent_passes_paws", a_timestamp_one_below_ts_recent_passes_paws),
        ("ip_identification_is_per_connection", ip_identification_is_per_connection),
        ("a_disordered_pure_ack_passes_paws", a_disordered_pure_ack_passes_paws),
        ("an_old_pure_ack_fails_paws", an_old_pure_ack_fails_paws),
        # Last: it leaves the path to the spoofed peer narrower.
        ("fragmentation_needed_lowers_the_mss_and_resends_at_once",
         fragmentation_needed_lowers_the_mss_and_resends_at_once),
    ]


def main():
    (ifname, spoof, ip, mac, open_port, closed_port, source_port, echo_port, keepalive_port, full_queue_port,
     small_buffer_port) = sys.argv[1:12]
    t = Target(ifname, spoof, ip, mac, int(open_port), int(closed_port), int(source_port), int(echo_port),
               int(keepalive_port), int(full_queue_port), int(small_buffer_port))
    only = set(sys.argv[12:])
    for name, run in probes(t):
        if only and name not in only:
            continue
        t.probe = name
        try:
            answers = run()
        except Exception as e:  # a probe that cannot run is reported, not hidden
            answers = {"error": str(e)}
        print(json.dumps({"probe": name, "answers": answers}), flush=True)


if __name__ == "__main__":
    main()
