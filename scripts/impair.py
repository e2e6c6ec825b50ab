#!/usr/bin/env python3
"""impair.py: a user-space impairing IPv4 forwarder (a subset of tc netem).

For kernels without sch_netem. Run it inside a router namespace whose kernel
does not forward (net.ipv4.ip_forward=0) but keeps its addresses (so it still
answers ARP and ping for them):

    impair.py [options] IF_A IF_B

It reads frames from both interfaces with AF_PACKET sockets and forwards the
unicast IPv4 frames addressed to the interface's MAC and not to one of the
router's own addresses out of the other interface, as a router does: new
Ethernet source (the egress interface) and destination (the next hop, which
must be on the egress interface's subnet), TTL decremented and the IPv4 header
checksum updated; the rest of the packet is left alone. ARP and other frames
are left to the kernel; ARP is only watched to learn neighbours.

Impairments (--netem SPEC, applied independently to each direction, as netem
on the egress of both router interfaces would be):

    loss [random] P% [CORR%]      drop P% of the packets
    duplicate P% [CORR%]          send P% of the packets twice
    delay T [JITTER [CORR%]] [distribution uniform|normal]
    reorder P% [CORR%] [gap N]    with a delay: P% of the packets skip the
                                  delay queue (netem); without one: they are
                                  held back and sent after the next packet
    rate R                        serialisation delay at rate R (e.g. 10mbit)
    limit N                       queue limit per direction (default 1000)
    seed N                        RNG seed (same as --seed)

Times: NUMBER[s|ms|us|ns] (bare: microseconds, as tc). Rates: bit, kbit,
mbit, gbit, bps (bytes/s), kbps, mbps, ... (bare: bytes/s, as tc). Random
choices come from a seeded RNG per direction, so runs with the same traffic
are reproducible.

Signals: SIGTERM/SIGINT print the counters on stderr and exit 0; SIGUSR1
prints them and writes them to --stats-file (JSON) without stopping.
Python 3 standard library only.
"""

import argparse
import errno
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

PROG = "impair.py"

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 1 << 3
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

ETH_IP = b"\x08\x00"
ETH_ARP = b"\x08\x06"
BROADCAST = b"\xff" * 6

DEFAULT_LIMIT = 1000
RECV_BATCH = 256


def log(msg):
    sys.stderr.write(f"{PROG}: {msg}\n")
    sys.stderr.flush()


class SpecError(ValueError):
    pass


# ------------------------------------------------------------------ spec


def parse_percent(s, what):
    t = s[:-1] if s.endswith("%") else s
    try:
        v = float(t)
    except ValueError:
        raise SpecError(f"{what}: '{s}' is not a percentage") from None
    if not 0.0 <= v <= 100.0:
        raise SpecError(f"{what}: '{s}' is not in 0..100%")
    return v / 100.0


def is_percent(s):
    try:
        parse_percent(s, "")
        return True
    except SpecError:
        return False


TIME_UNITS = [
    ("usecs", 1e-6), ("usec", 1e-6), ("us", 1e-6),
    ("msecs", 1e-3), ("msec", 1e-3), ("ms", 1e-3),
    ("nsecs", 1e-9), ("nsec", 1e-9), ("ns", 1e-9),
    ("secs", 1.0), ("sec", 1.0), ("s", 1.0),
]


def parse_time(s, what):
    """A tc time in seconds; a bare number is in microseconds, as in tc."""
    low = s.lower()
    for unit, mult in TIME_UNITS:
        if low.endswith(unit):
            num, scale = low[: -len(unit)], mult
            break
    else:
        num, scale = low, 1e-6
    try:
        v = float(num)
    except ValueError:
        raise SpecError(f"{what}: '{s}' is not a time (e.g. 10ms)") from None
    if v < 0 or v * scale > 3600:
        raise SpecError(f"{what}: '{s}' is out of range")
    return v * scale


def is_time(s):
    try:
        parse_time(s, "")
        return True
    except SpecError:
        return False


RATE_UNITS = {
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "kibit": 1024, "mibit": 1024**2, "gibit": 1024**3, "tibit": 1024**4,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
    "kibps": 8 * 1024, "mibps": 8 * 1024**2, "gibps": 8 * 1024**3, "tibps": 8 * 1024**4,
}


def parse_rate(s, what):
    """A tc rate in bits per second; a bare number is in bytes/s, as in tc."""
    low = s.lower()
    num, mult = low, 8
    for unit in sorted(RATE_UNITS, key=len, reverse=True):
        if low.endswith(unit):
            num, mult = low[: -len(unit)], RATE_UNITS[unit]
            break
    try:
        v = float(num) * mult
    except ValueError:
        raise SpecError(f"{what}: '{s}' is not a rate (e.g. 10mbit)") from None
    if v <= 0:
        raise SpecError(f"{what}: '{s}' must be positive")
    return v


class Spec:
    """The parsed netem subset. Probabilities are fractions, times seconds."""

    def __init__(self):
        self.loss = 0.0
        self.loss_corr = 0.0
        self.duplicate = 0.0
        self.duplicate_corr = 0.0
        self.latency = 0.0
        self.jitter = 0.0
        self.delay_corr = 0.0
        self.distribution = "uniform"
        self.reorder = 0.0
        self.reorder_corr = 0.0
        self.gap = 0
        self.rate = 0.0  # bits/s, 0 = unlimited
        self.limit = DEFAULT_LIMIT
        self.seed = None

    @property
    def active(self):
        return bool(self.loss or self.duplicate or self.latency or self.jitter
                    or self.gap or self.rate)

    @property
    def has_delay(self):
        return bool(self.latency or self.jitter)

    def describe(self):
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.duplicate:
            parts.append(f"duplicate {self.duplicate * 100:g}%")
        if self.has_delay:
            d = f"delay {self.latency * 1e3:g}ms"
            if self.jitter:
                d += f" {self.jitter * 1e3:g}ms ({self.distribution})"
            parts.append(d)
        if self.gap:
            parts.append(f"reorder {self.reorder * 100:g}% gap {self.gap}"
                         + ("" if self.has_delay else " (hold mode)"))
        if self.rate:
            parts.append(f"rate {self.rate / 1e6:g}mbit")
        parts.append(f"limit {self.limit}")
        return " ".join(parts) if self.active else f"none (plain forwarding, limit {self.limit})"


def parse_spec(text):
    spec = Spec()
    w = text.split()
    i = 0
    seen = set()

    def nxt(what):
        nonlocal i
        i += 1
        if i >= len(w):
            raise SpecError(f"'{what}' needs a value")
        return w[i]

    def opt(pred):
        nonlocal i
        if i + 1 < len(w) and pred(w[i + 1]):
            i += 1
            return w[i]
        return None

    while i < len(w):
        k = w[i].lower()
        if k in seen and k != "distribution":
            raise SpecError(f"'{k}' given twice")
        seen.add(k)
        if k == "loss":
            v = nxt("loss")
            if v.lower() == "random":
                v = nxt("loss random")
            elif v.lower() in ("state", "gemodel"):
                raise SpecError(f"'loss {v}' (Markov loss models) is not supported; use 'loss P%'")
            spec.loss = parse_percent(v, "loss")
            c = opt(is_percent)
            if c is not None:
                spec.loss_corr = parse_percent(c, "loss correlation")
        elif k in ("duplicate", "dup"):
            spec.duplicate = parse_percent(nxt(k), "duplicate")
            c = opt(is_percent)
            if c is not None:
                spec.duplicate_corr = parse_percent(c, "duplicate correlation")
        elif k in ("delay", "latency"):
            spec.latency = parse_time(nxt(k), "delay")
            j = opt(is_time)
            if j is not None:
                spec.jitter = parse_time(j, "jitter")
                c = opt(is_percent)
                if c is not None:
                    spec.delay_corr = parse_percent(c, "delay correlation")
        elif k == "distribution":
            d = nxt(k).lower()
            if d not in ("uniform", "normal"):
                raise SpecError(f"distribution '{d}' is not supported (uniform or normal)")
            spec.distribution = d
        elif k == "reorder":
            spec.reorder = parse_percent(nxt(k), "reorder")
            c = opt(is_percent)
            if c is not None:
                spec.reorder_corr = parse_percent(c, "reorder correlation")
        elif k == "gap":
            v = nxt(k)
            if not v.isdigit() or int(v) < 1:
                raise SpecError(f"gap: '{v}' is not a positive integer")
            spec.gap = int(v)
        elif k == "rate":
            spec.rate = parse_rate(nxt(k), "rate")
            if i + 1 < len(w) and (w[i + 1].lstrip("-").isdigit()):
                raise SpecError("rate: packet overhead, cell size and cell overhead are not supported")
        elif k == "limit":
            v = nxt(k)
            if not v.isdigit() or int(v) < 1:
                raise SpecError(f"limit: '{v}' is not a positive integer")
            spec.limit = int(v)
        elif k == "seed":
            v = nxt(k)
            if not v.isdigit():
                raise SpecError(f"seed: '{v}' is not a non-negative integer")
            spec.seed = int(v)
        else:
            raise SpecError(f"'{w[i]}' is not supported (supported: loss, duplicate, delay,"
                            " distribution, reorder, gap, rate, limit, seed)")
        i += 1
    # As iproute2: reorder implies gap 1; gap alone means "every Nth packet".
    if spec.reorder and not spec.gap:
        spec.gap = 1
    elif spec.gap and "reorder" not in seen:
        spec.reorder = 1.0
    if spec.gap and not spec.reorder:
        spec.gap = 0
    return spec


# ------------------------------------------------------------------ helpers


def csum_fold(data):
    """Internet checksum (complemented one's-complement sum) of data."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        s = 0xFFFF
    return ~s & 0xFFFF


def complete_l4_csum(frame):
    """Finish a CHECKSUM_PARTIAL TCP/UDP checksum (the field then holds the
    pseudo-header sum only) as a NIC would."""
    ihl = (frame[14] & 15) * 4
    proto = frame[23]
    total = (frame[16] << 8) | frame[17]
    l4 = 14 + ihl
    end = min(14 + total, len(frame))
    if proto == 6:
        off = l4 + 16
    elif proto == 17:
        off = l4 + 6
    else:
        return False
    if off + 2 > end:
        return False
    c = csum_fold(frame[l4:end])
    if proto == 17 and c == 0:
        c = 0xFFFF
    frame[off] = c >> 8
    frame[off + 1] = c & 0xFF
    return True


def mac_bytes(s):
    b = bytes(int(x, 16) for x in s.split(":"))
    if len(b) != 6:
        raise ValueError(s)
    return b


def mac_str(b):
    return ":".join(f"{x:02x}" for x in b)


def ip_cmd(*args):
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5, check=True)
    return json.loads(out.stdout or "[]")


class Port:
    """One router interface: its socket and addresses."""

    def __init__(self, ifname, fix_csum):
        self.ifname = ifname
        base = f"/sys/class/net/{ifname}"
        if not os.path.isdir(base):
            raise SystemExit(f"{PROG}: error: no interface '{ifname}' in this namespace")
        with open(f"{base}/address") as f:
            self.mac = mac_bytes(f.read().strip())
        with open(f"{base}/mtu") as f:
            self.mtu = int(f.read())
        addrs = [a for link in ip_cmd("-4", "addr", "show", "dev", ifname)
                 for a in link.get("addr_info", []) if a.get("family") == "inet"]
        if not addrs:
            raise SystemExit(f"{PROG}: error: {ifname} has no IPv4 address")
        self.ip = socket.inet_aton(addrs[0]["local"])
        net = ipaddress.ip_network(f"{addrs[0]['local']}/{addrs[0]['prefixlen']}", strict=False)
        self.net = int(net.network_address)
        self.mask = int(net.netmask)
        self.network = str(net)

        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        for opt, size in ((SO_RCVBUFFORCE, 8 << 20), (SO_SNDBUFFORCE, 4 << 20)):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, size)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF if opt == SO_RCVBUFFORCE
                             else socket.SO_SNDBUF, size)
        # Frames the kernel (or we) send out of this interface are not ours
        # to forward: don't even queue them (Linux >= 4.20).
        try:
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.ignore_outgoing = True
        except OSError:
            self.ignore_outgoing = False
        if fix_csum or not self.ignore_outgoing:
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
        self.sock = s
        self.fd = s.fileno()
        self.kernel_drops = 0
        # Discard what was queued before bind (frames of any interface).
        while True:
            try:
                s.recv(65536)
            except (BlockingIOError, InterruptedError):
                break

    def in_subnet(self, ip4):
        return (int.from_bytes(ip4, "big") & self.mask) == self.net

    def poll_kernel_drops(self):
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            _packets, drops = struct.unpack("II", raw)
            self.kernel_drops += drops
        except OSError:
            pass


COUNTERS = ("received", "forwarded", "delayed", "duplicated", "reordered",
            "dropped_loss", "dropped_limit", "dropped_ttl", "dropped_no_route",
            "dropped_no_neigh", "dropped_too_big", "dropped_malformed", "tx_errors",
            "checksums_completed")


class Direction:
    def __init__(self, name, src, dst, spec, seed, index):
        self.name = name
        self.src = src
        self.dst = dst
        self.spec = spec
        self.active = spec.active
        self.rng = random.Random(seed * 2 + index)
        self.last = {"loss": 0.0, "duplicate": 0.0, "reorder": 0.0, "delay": 0.0}
        self.counter = 0  # netem's gap counter
        self.last_tts = 0.0  # latest time_to_send queued (for rate)
        self.queued = 0  # frames waiting (delay queue + held)
        self.held = None  # [frame, deadline] in hold-mode reordering
        self.c = dict.fromkeys(COUNTERS, 0)

    def crandom(self, kind, corr):
        u = self.rng.random()
        if corr:
            u = (1.0 - corr) * u + corr * self.last[kind]
            self.last[kind] = u
        return u

    def dropped(self):
        return sum(v for k, v in self.c.items() if k.startswith("dropped_"))


# ------------------------------------------------------------------ forwarder


class Forwarder:
    def __init__(self, args, spec):
        self.spec = spec
        self.fix_csum = args.fix_checksums
        self.reorder_hold = args.reorder_hold / 1000.0
        seed = spec.seed if spec.seed is not None else args.seed
        self.seed = seed
        self.ports = [Port(args.if_a, self.fix_csum), Port(args.if_b, self.fix_csum)]
        a, b = self.ports
        if a.ifname == b.ifname:
            raise SystemExit(f"{PROG}: error: IF_A and IF_B must differ")
        self.dirs = [Direction("a2b", a, b, spec, seed, 0), Direction("b2a", b, a, spec, seed, 1)]
        self.by_fd = {a.fd: (a, self.dirs[0]), b.fd: (b, self.dirs[1])}
        self.use_recvmsg = self.fix_csum or not (a.ignore_outgoing and b.ignore_outgoing)
        self.local = set()
        for link in ip_cmd("-4", "addr", "show"):
            for ai in link.get("addr_info", []):
                if ai.get("family") == "inet":
                    self.local.add(socket.inet_aton(ai["local"]))
        self.neigh = {}
        for item in args.neigh:
            ip, _, mac = item.partition("=")
            try:
                self.neigh[socket.inet_aton(ip)] = mac_bytes(mac)
            except (OSError, ValueError):
                raise SystemExit(f"{PROG}: error: bad --neigh '{item}' (want IP=MAC)") from None
        self.pending = {}  # ip -> [deadline, [(dir, frame), ...]]
        self.last_resolve = {}  # ip -> time of the last ARP request
        self.last_table_read = -10.0
        self.heap = []  # (time_to_send, seq, dir index, frame)
        self.seq = 0
        self.started = time.monotonic()
        self.stats_file = args.stats_file

    # ---------------------------------------------------------- neighbours

    def read_kernel_neigh(self):
        try:
            for n in ip_cmd("-4", "neigh", "show"):
                mac, dst = n.get("lladdr"), n.get("dst")
                states = n.get("state", [])
                if mac and dst and "FAILED" not in states and "INCOMPLETE" not in states:
                    ip4 = socket.inet_aton(dst)
                    self.neigh.setdefault(ip4, mac_bytes(mac))
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            log(f"warning: reading the neighbour table failed: {e}")

    def resolve(self, ip4, port, now):
        """Called on a miss: kernel table first, then an ARP request of ours."""
        last = self.last_resolve.get(ip4, -10.0)
        if now - last < 1.0:
            return None
        self.last_resolve[ip4] = now
        if now - self.last_table_read >= 1.0:
            self.last_table_read = now
            self.read_kernel_neigh()
        mac = self.neigh.get(ip4)
        if mac is not None:
            return mac
        arp = (BROADCAST + port.mac + ETH_ARP
               + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
               + port.mac + port.ip + b"\0" * 6 + ip4)
        try:
            port.sock.send(arp)
        except OSError as e:
            log(f"warning: ARP request for {socket.inet_ntoa(ip4)} on {port.ifname}: {e}")
        return None

    def learn_arp(self, port, frame, n):
        if n < 42 or frame[14:20] != b"\x00\x01\x08\x00\x06\x04":
            return
        sha = bytes(frame[22:28])
        spa = bytes(frame[28:32])
        if spa == b"\0\0\0\0" or sha == port.mac or not port.in_subnet(spa):
            return
        if self.neigh.get(spa) != sha:
            self.neigh[spa] = sha
        waiting = self.pending.pop(spa, None)
        if waiting:
            now = time.monotonic()
            for d, f in waiting[1]:
                f[0:6] = sha
                self.impair(d, f, now)

    # ---------------------------------------------------------- data path

    def send(self, d, frame):
        try:
            d.dst.sock.send(frame)
            d.c["forwarded"] += 1
        except (BlockingIOError, InterruptedError, OSError):
            d.c["tx_errors"] += 1

    def receive(self, port, d):
        """Drain up to RECV_BATCH frames from port."""
        buf = self.buf
        sock = port.sock
        mac = port.mac
        use_recvmsg = self.use_recvmsg
        for _ in range(RECV_BATCH):
            csum_partial = False
            try:
                if use_recvmsg:
                    n, anc, _flags, addr = sock.recvmsg_into([buf], 64)
                    if addr[2] == socket.PACKET_OUTGOING:
                        continue
                    for lvl, typ, data in anc:
                        if lvl == SOL_PACKET and typ == PACKET_AUXDATA and len(data) >= 4:
                            status = struct.unpack_from("I", data)[0]
                            csum_partial = bool(status & TP_STATUS_CSUMNOTREADY)
                else:
                    n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            et = buf[12:14]
            if et == ETH_IP:
                if buf.startswith(mac):
                    self.forward(port, d, buf[:n], n, csum_partial)
            elif et == ETH_ARP:
                self.learn_arp(port, buf, n)

    def forward(self, port, d, frame, n, csum_partial):
        c = d.c
        dst = bytes(frame[30:34])
        if dst in self.local:
            return  # the kernel's own traffic
        c["received"] += 1
        if n < 34 or (frame[14] >> 4) != 4 or (frame[14] & 15) < 5:
            c["dropped_malformed"] += 1
            return
        out = d.dst
        if not out.in_subnet(dst):
            c["dropped_no_route"] += 1
            return
        ttl = frame[22]
        if ttl <= 1:
            c["dropped_ttl"] += 1
            return
        if n - 14 > out.mtu:
            c["dropped_too_big"] += 1
            return
        if csum_partial:
            if not complete_l4_csum(frame):
                c["dropped_malformed"] += 1
                return
            c["checksums_completed"] += 1
        frame[22] = ttl - 1
        check = ((frame[24] << 8) | frame[25]) + 0x0100
        check = (check + (check >= 0xFFFF)) & 0xFFFF
        frame[24] = check >> 8
        frame[25] = check & 0xFF
        frame[6:12] = out.mac
        nh = self.neigh.get(dst)
        now = None
        if nh is None:
            now = time.monotonic()
            nh = self.resolve(dst, out, now)
            if nh is None:
                p = self.pending.get(dst)
                if p is None:
                    self.pending[dst] = [now + 1.0, [(d, frame)]]
                elif len(p[1]) < 16:
                    p[1].append((d, frame))
                else:
                    c["dropped_no_neigh"] += 1
                return
        frame[0:6] = nh
        if not d.active:
            try:
                out.sock.send(frame)
                c["forwarded"] += 1
            except (BlockingIOError, InterruptedError, OSError):
                c["tx_errors"] += 1
            return
        self.impair(d, frame, now or time.monotonic())

    def impair(self, d, frame, now, allow_dup=True):
        """netem_enqueue(): duplicate, loss, limit, then delay or reorder."""
        spec = d.spec
        c = d.c
        count = 1
        if allow_dup and spec.duplicate and d.crandom("duplicate", spec.duplicate_corr) < spec.duplicate:
            count += 1
        if spec.loss and d.crandom("loss", spec.loss_corr) < spec.loss:
            count -= 1
        if count == 0:
            c["dropped_loss"] += 1
            return
        if count > 1:
            c["duplicated"] += 1
            # As netem: the copy goes through the emulator again, without
            # duplication (so it may be lost or delayed differently).
            self.impair(d, bytearray(frame), now, allow_dup=False)
        if d.queued >= spec.limit:
            c["dropped_limit"] += 1
            return
        if (spec.gap == 0 or d.counter < spec.gap - 1
                or spec.reorder < d.crandom("reorder", spec.reorder_corr)):
            delay = 0.0
            if spec.has_delay:
                delay = self.delay_of(d)
            base = now
            if spec.rate:
                if d.last_tts > now and d.queued:
                    delay = max(0.0, delay - (d.last_tts - now))
                    base = d.last_tts
                delay += len(frame) * 8.0 / spec.rate
            tts = base + delay
            d.counter += 1
            if delay > 0:
                c["delayed"] += 1
                self.push(d, tts, frame)
                if tts > d.last_tts:
                    d.last_tts = tts
            else:
                self.send(d, frame)
            if d.held is not None:
                # Hold-mode reordering: the held packet goes right after this one.
                held = d.held[0]
                d.held = None
                d.queued -= 1
                c["reordered"] += 1
                if delay > 0:
                    self.push(d, tts, held)
                else:
                    self.send(d, held)
            return
        # Chosen to be reordered.
        d.counter = 0
        if spec.has_delay:
            # netem: to the head of the queue, out at once, ahead of the
            # packets still in the delay queue.
            if d.queued:
                c["reordered"] += 1
            self.send(d, frame)
        elif d.held is None:
            d.held = [frame, now + self.reorder_hold]
            d.queued += 1
        else:
            # One is held already: this one is its "next packet".
            held = d.held[0]
            d.held = None
            d.queued -= 1
            self.send(d, frame)
            c["reordered"] += 1
            self.send(d, held)

    def delay_of(self, d):
        spec = d.spec
        if not spec.jitter:
            return spec.latency
        u = d.crandom("delay", spec.delay_corr)
        if spec.distribution == "normal":
            z = statistics.NormalDist().inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
            delay = spec.latency + spec.jitter * z
        else:
            delay = spec.latency + (2.0 * u - 1.0) * spec.jitter
        return delay if delay > 0 else 0.0

    def push(self, d, tts, frame):
        self.seq += 1
        d.queued += 1
        heapq.heappush(self.heap, (tts, self.seq, d.name == "b2a", frame))

    def run_timers(self, now):
        heap = self.heap
        while heap and heap[0][0] <= now:
            _tts, _seq, idx, frame = heapq.heappop(heap)
            d = self.dirs[idx]
            d.queued -= 1
            self.send(d, frame)
        for d in self.dirs:
            if d.held is not None and d.held[1] <= now:
                frame = d.held[0]
                d.held = None
                d.queued -= 1
                self.send(d, frame)
        if self.pending:
            for ip4 in [ip for ip, p in self.pending.items() if p[0] <= now]:
                for d, _f in self.pending.pop(ip4)[1]:
                    d.c["dropped_no_neigh"] += 1

    def next_deadline(self):
        t = self.heap[0][0] if self.heap else None
        for d in self.dirs:
            if d.held is not None and (t is None or d.held[1] < t):
                t = d.held[1]
        if self.pending:
            p = min(v[0] for v in self.pending.values())
            if t is None or p < t:
                t = p
        return t

    # ---------------------------------------------------------- reporting

    def snapshot(self):
        for p in self.ports:
            p.poll_kernel_drops()
        out = {"seed": self.seed, "spec": self.spec.describe(),
               "uptime_s": round(time.monotonic() - self.started, 3)}
        for d in self.dirs:
            e = dict(d.c)
            e["dropped"] = d.dropped()
            e["queued"] = d.queued
            e["socket_drops"] = d.src.kernel_drops
            e["in"] = d.src.ifname
            e["out"] = d.dst.ifname
            out[d.name] = e
        return out

    def report(self, why):
        snap = self.snapshot()
        for d in self.dirs:
            e = snap[d.name]
            drops = " ".join(f"{k[8:]}={e[k]}" for k in COUNTERS if k.startswith("dropped_") and e[k])
            log(f"{why}: {d.name} ({e['in']} -> {e['out']}): received={e['received']}"
                f" forwarded={e['forwarded']} dropped={e['dropped']}" + (f" ({drops})" if drops else "")
                + f" duplicated={e['duplicated']} reordered={e['reordered']} delayed={e['delayed']}"
                f" queued={e['queued']} tx_errors={e['tx_errors']} socket_drops={e['socket_drops']}")
        if self.stats_file:
            tmp = f"{self.stats_file}.tmp{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    json.dump(snap, f, indent=1, sort_keys=True)
                    f.write("\n")
                os.replace(tmp, self.stats_file)
            except OSError as e:
                log(f"warning: writing {self.stats_file}: {e}")

    # ---------------------------------------------------------- main loop

    def run(self, ready_file):
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        flags = {"stop": None, "usr1": False}

        def on_stop(signum, _frame):
            flags["stop"] = signal.Signals(signum).name

        def on_usr1(_signum, _frame):
            flags["usr1"] = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, on_usr1)

        # select(), not poll(): its timeout has microsecond resolution, which
        # sub-millisecond delays (rate) need; three descriptors cost nothing.
        fds = [p.fd for p in self.ports] + [rfd]
        self.buf = bytearray(65536 + 64)

        log(f"forwarding {self.ports[0].ifname} ({self.ports[0].network}) <-> "
            f"{self.ports[1].ifname} ({self.ports[1].network}); impairment per direction: "
            f"{self.spec.describe()}; seed {self.seed}")
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        log("ready")

        by_fd = self.by_fd
        monotonic = time.monotonic
        sel = select.select
        while flags["stop"] is None:
            deadline = self.next_deadline()
            if deadline is None:
                readable = sel(fds, (), (), None)[0]
            else:
                readable = sel(fds, (), (), max(0.0, deadline - monotonic()))[0]
            for fd in readable:
                entry = by_fd.get(fd)
                if entry is not None:
                    self.receive(*entry)
                else:
                    try:
                        while os.read(rfd, 512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
            if self.heap or self.pending or self.dirs[0].held or self.dirs[1].held:
                self.run_timers(monotonic())
            if flags["usr1"]:
                flags["usr1"] = False
                self.report("counters")
        # Whatever is still queued is dropped, as when a qdisc is deleted.
        self.report(f"{flags['stop']}, exiting")


def main():
    ap = argparse.ArgumentParser(
        prog=PROG, description="User-space impairing IPv4 forwarder (tc netem subset).",
        epilog="See the top of this file for the SPEC syntax.")
    ap.add_argument("if_a", metavar="IF_A", nargs="?")
    ap.add_argument("if_b", metavar="IF_B", nargs="?")
    ap.add_argument("--netem", default="", metavar="SPEC", help="impairments (netem syntax subset)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--neigh", action="append", default=[], metavar="IP=MAC",
                    help="static next hop (repeatable); others come from ARP and 'ip neigh'")
    ap.add_argument("--reorder-hold", type=float, default=10.0, metavar="MS",
                    help="reorder without delay: longest hold of a packet waiting for a"
                    " successor (default 10 ms)")
    ap.add_argument("--fix-checksums", action="store_true",
                    help="complete partial (offloaded) TCP/UDP checksums of received frames")
    ap.add_argument("--pid-file", metavar="FILE")
    ap.add_argument("--ready-file", metavar="FILE", help="created (with our PID) once forwarding")
    ap.add_argument("--stats-file", metavar="FILE", help="JSON counters, written on SIGUSR1 and exit")
    ap.add_argument("--check-spec", action="store_true", help="only parse SPEC, print it and exit")
    args = ap.parse_args()
    try:
        spec = parse_spec(args.netem)
    except SpecError as e:
        log(f"error: --netem '{args.netem}': {e}")
        return 2
    if args.check_spec:
        print(spec.describe())
        return 0
    if not args.if_a or not args.if_b:
        ap.error("IF_A and IF_B are required")
    if args.reorder_hold <= 0:
        ap.error("--reorder-hold must be positive")
    # A long-running daemon must not keep its launcher's descriptors (lock
    # files, pipes of a caller waiting for EOF) open.
    os.closerange(3, 65536)
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        fwd = Forwarder(args, spec)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"error: {e}")
        return 1
    fwd.run(args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
