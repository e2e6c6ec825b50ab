#!/usr/bin/env python3
"""soak.py: mixed traffic against the stack's echo and source services for a
bounded time, every byte checked.

    soak.py HOST --seconds S [--echo PORT] [--source PORT:BYTES] [--seed N]
            [--rr N] [--crr N] [--duplex N] [--down N]

Kinds of traffic, each in threads of its own (blocking kernel sockets):
  rr      long connections to echo: a request of a random size (1 B to
          16 KiB), its echo read and compared, again and again (TCP_RR);
  crr     a new connection per request: connect, request, echo compared,
          close (TCP_CRR);
  duplex  long connections to echo with a writer and a reader thread
          each: the writer sends a seeded pseudo-random stream in 64 KiB
          writes, the reader compares every byte with the same stream
          (STREAM both ways at once); at the end the writer shuts down its
          side and the reader must see exactly what was sent, then EOF;
  down    connect to source, read until EOF, compare the chargen pattern
          and its length (STREAM from the stack; the server closes first).

Prints one JSON object: per kind the operations and bytes checked, the
mismatches, and every error with what was being done. Exits 0 when there is
no mismatch and no error, 1 otherwise.
"""

import argparse
import json
import random
import socket
import sys
import threading
import time

TIMEOUT = 30.0
BLOCK = 64 * 1024


def chargen(length):
    """The RFC 864 pattern as the stack's source service sends it."""
    out = bytearray()
    line = 0
    while len(out) < length:
        out.extend(bytes(32 + (line + i) % 95 for i in range(72)))
        out.extend(b"\r\n")
        line += 1
    return bytes(out[:length])


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {}
        self.errors = []
        self.mismatches = 0

    def done(self, kind, ops, nbytes):
        with self.lock:
            k = self.kinds.setdefault(kind, {"ops": 0, "bytes": 0})
            k["ops"] += ops
            k["bytes"] += nbytes

    def error(self, kind, what, exc):
        with self.lock:
            self.errors.append(f"{kind}: {what}: {exc!r}")

    def mismatch(self, kind, what):
        with self.lock:
            self.mismatches += 1
            self.errors.append(f"{kind}: MISMATCH {what}")


def recv_exact(s, n):
    parts = []
    while n > 0:
        b = s.recv(min(n, BLOCK))
        if not b:
            raise ConnectionError(f"EOF with {n} bytes still expected")
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def connect(addr):
    s = socket.create_connection(addr, timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def rr(tally, addr, seed, deadline):
    rng = random.Random(seed)
    try:
        s = connect(addr)
    except OSError as e:
        tally.error("rr", "connect", e)
        return
    ops = nbytes = 0
    try:
        while time.monotonic() < deadline:
            req = rng.randbytes(rng.randint(1, 16384))
            s.sendall(req)
            if recv_exact(s, len(req)) != req:
                tally.mismatch("rr", f"echo of a {len(req)}-byte request")
                break
            ops += 1
            nbytes += 2 * len(req)
        s.close()
    except OSError as e:
        tally.error("rr", f"after {ops} requests", e)
    tally.done("rr", ops, nbytes)


def crr(tally, addr, seed, deadline):
    rng = random.Random(seed)
    ops = nbytes = 0
    while time.monotonic() < deadline:
        req = rng.randbytes(rng.randint(1, 2000))
        try:
            s = connect(addr)
            s.sendall(req)
            got = recv_exact(s, len(req))
            s.close()
        except OSError as e:
            tally.error("crr", f"connection {ops + 1}", e)
            break
        if got != req:
            tally.mismatch("crr", f"echo of a {len(req)}-byte request")
            break
        ops += 1
        nbytes += 2 * len(req)
    tally.done("crr", ops, nbytes)


def duplex(tally, addr, seed, deadline):
    try:
        s = connect(addr)
    except OSError as e:
        tally.error("duplex", "connect", e)
        return
    sent = [0]

    def writer():
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                block = rng.randbytes(BLOCK)
                s.sendall(block)
                sent[0] += len(block)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            tally.error("duplex", f"write after {sent[0]} bytes", e)

    w = threading.Thread(target=writer)
    w.start()
    rng = random.Random(seed)
    expected = b""
    got = 0
    try:
        while True:
            b = s.recv(BLOCK)
            if not b:
                break
            while len(expected) < len(b):
                expected += rng.randbytes(BLOCK)
            if b != expected[: len(b)]:
                tally.mismatch("duplex", f"echoed stream at byte {got}")
                break
            expected = expected[len(b):]
            got += len(b)
    except OSError as e:
        tally.error("duplex", f"read after {got} bytes", e)
    w.join()
    s.close()
    if got != sent[0]:
        tally.mismatch("duplex", f"{got} bytes echoed of {sent[0]} sent")
    tally.done("duplex", 1, got + sent[0])


def down(tally, addr, length, deadline):
    pattern = chargen(length)
    ops = nbytes = 0
    while time.monotonic() < deadline:
        try:
            s = connect(addr)
            parts = []
            while True:
                b = s.recv(BLOCK)
                if not b:
                    break
                parts.append(b)
            s.close()
        except OSError as e:
            tally.error("down", f"transfer {ops + 1}", e)
            break
        data = b"".join(parts)
        if data != pattern:
            tally.mismatch("down", f"{len(data)} bytes of {length}, pattern equal: {data == pattern[: len(data)]}")
            break
        ops += 1
        nbytes += len(data)
    tally.done("down", ops, nbytes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--echo", type=int, default=7)
    ap.add_argument("--source", default="19:200000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rr", type=int, default=4)
    ap.add_argument("--crr", type=int, default=2)
    ap.add_argument("--duplex", type=int, default=2)
    ap.add_argument("--down", type=int, default=1)
    a = ap.parse_args()
    src_port, src_bytes = (int(x) for x in a.source.split(":"))
    echo = (a.host, a.echo)
    source = (a.host, src_port)
    tally = Tally()
    deadline = time.monotonic() + a.seconds
    threads = []
    for i in range(a.rr):
        threads.append(threading.Thread(target=rr, args=(tally, echo, a.seed * 1000 + i, deadline)))
    for i in range(a.crr):
        threads.append(threading.Thread(target=crr, args=(tally, echo, a.seed * 1000 + 100 + i, deadline)))
    for i in range(a.duplex):
        threads.append(threading.Thread(target=duplex, args=(tally, echo, a.seed * 1000 + 200 + i, deadline)))
    for _ in range(a.down):
        threads.append(threading.Thread(target=down, args=(tally, source, src_bytes, deadline)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"kinds": tally.kinds, "mismatches": tally.mismatches, "errors": tally.errors}
    print(json.dumps(out), flush=True)
    return 0 if not tally.errors and tally.mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
