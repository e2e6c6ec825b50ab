#!/usr/bin/env python3
"""Opens N concurrent TCP connections to an echo server, sends each its own
random payload and checks that exactly the same bytes come back.

Prints one line: `echo_load conns=N connected=C verified=V failed=F
errors=... seconds=S` and exits 1 unless every connection was verified.
Bounded by --timeout seconds."""

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--bytes", type=int, default=65536)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

    sel = selectors.DefaultSelector()
    start = time.monotonic()
    deadline = start + a.timeout
    conns = {}
    errors = {}
    for i in range(a.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((a.host, a.port))
        if rc not in (0, errno.EINPROGRESS):
            errors[errno.errorcode.get(rc, str(rc))] = errors.get(errno.errorcode.get(rc, str(rc)), 0) + 1
            s.close()
            continue
        c = {"sock": s, "data": os.urandom(a.bytes), "sent": 0, "got": bytearray(), "connected": False}
        conns[s.fileno()] = c
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    connected = verified = failed = 0
    live = len(conns)
    while live and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            c = key.data
            s = c["sock"]
            try:
                if ev & selectors.EVENT_WRITE:
                    if not c["connected"]:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        c["connected"] = True
                        connected += 1
                    if c["sent"] < len(c["data"]):
                        c["sent"] += s.send(c["data"][c["sent"]:c["sent"] + 65536])
                    if c["sent"] == len(c["data"]):
                        # Half-close: the echo server ends the connection once
                        # it has echoed everything.
                        s.shutdown(socket.SHUT_WR)
                        sel.modify(s, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    chunk = s.recv(65536)
                    if chunk:
                        c["got"] += chunk
                        if len(c["got"]) > len(c["data"]):
                            raise OSError(0, "more bytes than sent")
                    else:
                        sel.unregister(s)
                        s.close()
                        live -= 1
                        if bytes(c["got"]) == c["data"]:
                            verified += 1
                        else:
                            failed += 1
                            errors["mismatch"] = errors.get("mismatch", 0) + 1
            except OSError as e:
                name = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
                errors[name] = errors.get(name, 0) + 1
                failed += 1
                live -= 1
                sel.unregister(s)
                s.close()
    if live:
        errors["timeout"] = live
        failed += live
    elapsed = time.monotonic() - start
    err = ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "none"
    print(f"echo_load conns={a.conns} connected={connected} verified={verified} failed={failed} "
          f"errors={err} seconds={elapsed:.2f}")
    sys.exit(0 if verified == a.conns else 1)


if __name__ == "__main__":
    main()
