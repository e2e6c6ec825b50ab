#!/usr/bin/env python3
"""epoll semantics, the same program on the kernel and on the stack.

Three roles:
  run   the orchestrator: starts `app` (in the application's namespace,
        preloaded or not) and `peer` (a kernel peer in the other namespace),
        relays the app's requests to the peer, and prints the app's
        observations, one per line. Run it twice (kernel address, stack
        address preloaded) and compare the outputs.
  app   the program under test: listens, accepts, connects, and reports
        what epoll_wait returns at each step.
  peer  the kernel peer doing what the app asks (connect, send, half-close,
        reset, drain).

Observations name event bits symbolically and never contain addresses,
ports or byte counts that legitimately differ between the two stacks.
"""
import argparse
import ctypes
import errno
import os
import select
import socket
import struct
import subprocess
import sys
import time

BITS = [
    (select.EPOLLIN, "IN"),
    (select.EPOLLOUT, "OUT"),
    (select.EPOLLRDHUP, "RDHUP"),
    (select.EPOLLERR, "ERR"),
    (select.EPOLLHUP, "HUP"),
]


def names(mask):
    return "|".join(n for b, n in BITS if mask & b) or "-"


# ------------------------------------------------------------------ app

class App:
    def __init__(self, addr, peer_addr):
        self.addr = addr
        self.peer_addr = peer_addr
        self.ep = select.epoll()
        self.tags = {}

    def peer(self, cmd):
        print("PEER " + cmd, flush=True)
        reply = sys.stdin.readline().strip()
        if not reply.startswith("OK"):
            raise SystemExit("peer failed: " + reply)
        return reply[3:]

    def say(self, what):
        print("OBS " + what, flush=True)

    def wait(self, label, timeout=1.0, settle=0.05):
        # Let in-flight segments land on both stacks alike first.
        time.sleep(settle)
        evs = self.ep.poll(timeout)
        out = sorted("%s:%s" % (self.tags.get(fd, "?"), names(m)) for fd, m in evs)
        self.say("%s %s" % (label, " ".join(out) or "nothing"))

    def reg(self, s, tag, mask):
        self.tags[s.fileno()] = tag
        self.ep.register(s.fileno(), mask)

    def accept_one(self, lst, tag):
        c, _ = lst.accept()
        c.setblocking(False)
        self.tags[c.fileno()] = tag
        return c

    def closed_numbers_are_reused(self, how):
        # close_range(2) (os.closerange), or fclose(3) of a stream
        # fdopen'd on it, closes a listening socket's number; the next
        # file opened may get that number, and must be the file, not the
        # socket that was there.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.addr, 0))
        s.listen(4)
        fd = s.detach()
        if how == "closerange":
            os.closerange(fd, fd + 1)
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fdopen.restype = ctypes.c_void_p
            libc.fclose.argtypes = [ctypes.c_void_p]
            fp = libc.fdopen(fd, b"r+")
            self.say("fclose: closed %s" % (fp is not None and libc.fclose(fp) == 0))
        path = "/tmp/epoll-semantics.%d" % os.getpid()
        extra, f = [], -1
        try:
            for _ in range(64):
                f = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                if f == fd:
                    break
                extra.append(f)
            self.say("%s: number reused %s" % (how, f == fd))
            try:
                wrote = os.write(f, b"file data")
            except OSError as e:
                wrote = errno.errorcode.get(e.errno, e.errno)
            self.say("%s: write to the file %s, read back %r" % (how, wrote, os.pread(f, 100, 0)))
        finally:
            for x in extra + [f]:
                if x >= 0:
                    os.close(x)
            os.unlink(path)

    def binding(self):
        # bind() holds the port at once, as Linux's inet_bind: a port 0
        # picked is named before listen(), a held port is EADDRINUSE at
        # bind(), a second bind() is EINVAL.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((self.addr, 0))
        port = s.getsockname()[1]
        self.say("bind port 0: named before listen %s" % (port != 0))
        for label, sock, where in (("a held port", socket.socket(), (self.addr, port)), ("again", s, (self.addr, 0))):
            try:
                sock.bind(where)
                self.say("bind %s: ok" % label)
            except OSError as e:
                self.say("bind %s: %s" % (label, errno.errorcode.get(e.errno, e.errno)))
            if sock is not s:
                sock.close()
        s.listen(4)
        self.say("listen keeps the bound port %s" % (s.getsockname()[1] == port))
        s.close()
        # A client bound first connects from the port it was given.
        pport = int(self.peer("listen"))
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.bind((self.addr, 0))
        mine = c.getsockname()[1]
        c.connect((self.peer_addr, pport))
        self.say("bound client: connected from the bound port %s, the peer saw it %s"
                 % (c.getsockname()[1] == mine, int(self.peer("accepted-port")) == mine))
        c.close()

    def inherited_options(self):
        # An accepted socket inherits the listener's options
        # (sk_clone_lock), except the listener's own (TCP_DEFER_ACCEPT,
        # TCP_FASTOPEN); its getsockopt says so and its timeouts apply.
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ints = [
            ("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            ("SO_RCVBUF", socket.SOL_SOCKET, socket.SO_RCVBUF, 100000),
            ("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            ("TCP_KEEPIDLE", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 33),
            ("TCP_KEEPCNT", socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5),
            ("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1234),
            ("IP_TOS", socket.IPPROTO_IP, socket.IP_TOS, 0x10),
        ]
        for _, level, name, v in ints:
            lst.setsockopt(level, name, v)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3))
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
        lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        lst.bind((self.addr, 0))
        lst.listen(4)
        lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        self.peer("connect o %s %d" % (self.addr, lst.getsockname()[1]))
        self.peer("send o 1")
        c, _ = lst.accept()
        got = ["%s=%d" % (label, c.getsockopt(level, name)) for label, level, name, _ in ints]
        got.append("TCP_DEFER_ACCEPT=%d" % c.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT))
        got.append("SO_LINGER=%r" % (struct.unpack("ii", c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)),))
        got.append("TCP_CONGESTION=%s" % c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode())
        self.say("accepted socket inherited " + " ".join(got))
        self.say("tcp_info state: accepted %d, listener %d" % (
            c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0],
            lst.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]))
        c.recv(10)
        t0 = time.monotonic()
        try:
            c.recv(10)
            self.say("inherited SO_RCVTIMEO: read something")
        except OSError as e:
            self.say("inherited SO_RCVTIMEO: %s after its time %s"
                     % (errno.errorcode.get(e.errno, e.errno), 0.15 <= time.monotonic() - t0 < 1.0))
        self.peer("reset o")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
        c.close()
        lst.close()

    def splicing(self):
        # splice(2) between a connected socket and a pipe, both ways.
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.bind((self.addr, 0))
        lst.listen(4)
        self.peer("connect p %s %d" % (self.addr, lst.getsockname()[1]))
        c, _ = lst.accept()
        r, w = os.pipe()
        c.setblocking(False)
        try:
            os.splice(c.fileno(), w, 100)
            self.say("splice from an idle non-blocking socket: moved something")
        except OSError as e:
            self.say("splice from an idle non-blocking socket: %s" % errno.errorcode.get(e.errno, e.errno))
        c.setblocking(True)
        self.peer("send p 5")
        n = os.splice(c.fileno(), w, 3)
        self.say("splice socket to pipe %d, pipe holds %r, socket still has %r"
                 % (n, os.read(r, 100), c.recv(100)))
        os.write(w, b"hello")
        n = os.splice(r, c.fileno(), 100)
        self.say("splice pipe to socket %d, peer got %s" % (n, self.peer("recv p")))
        try:
            os.splice(r, c.fileno(), 100, flags=os.SPLICE_F_NONBLOCK)
            self.say("splice from an empty pipe, non-blocking: moved something")
        except OSError as e:
            self.say("splice from an empty pipe, non-blocking: %s" % errno.errorcode.get(e.errno, e.errno))
        try:
            os.splice(c.fileno(), c.fileno(), 100)
            self.say("splice socket to socket: moved something")
        except OSError as e:
            self.say("splice socket to socket: %s" % errno.errorcode.get(e.errno, e.errno))
        os.close(w)
        self.say("splice from a pipe without writers %d" % os.splice(r, c.fileno(), 100))
        os.close(r)
        self.peer("reset p")
        c.close()
        lst.close()

    def run(self):
        self.binding()
        self.inherited_options()
        self.closed_numbers_are_reused("closerange")
        self.closed_numbers_are_reused("fclose")
        self.splicing()
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((self.addr, 0))
        lst.listen(16)
        lst.setblocking(False)
        port = lst.getsockname()[1]
        self.reg(lst, "listener", select.EPOLLIN)
        self.wait("idle listener", timeout=0.2)

        # A listener becoming readable (level-triggered: until accepted).
        self.peer("connect a %s %d" % (self.addr, port))
        self.wait("listener after connect")
        self.wait("listener again (level)")
        a = self.accept_one(lst, "a")
        self.wait("listener after accept", timeout=0.2)

        # Level versus edge.
        self.ep.register(a.fileno(), select.EPOLLIN)
        self.peer("send a 3")
        self.wait("level 1")
        self.wait("level 2 (not read)")
        self.ep.modify(a.fileno(), select.EPOLLIN | select.EPOLLET)
        self.wait("edge after modify")
        self.wait("edge again", timeout=0.2)
        self.peer("send a 3")
        self.wait("edge after more data")
        # recvmsg names no source on a TCP socket (msg_namelen 0).
        data, _, _, src = a.recvmsg(100)
        self.say("read a %d, source %r" % (len(data), src))
        self.wait("edge after read", timeout=0.2)

        # EPOLLRDHUP on half-close.
        self.ep.modify(a.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        self.peer("shutwr a")
        self.wait("half-closed")
        self.say("read a %r" % a.recv(100))
        # Gathered from iovecs, an empty one among them.
        a.sendmsg([b"still", b"", b" open"])
        self.say("peer got %s" % self.peer("recv a"))

        # EPOLLONESHOT and its re-arm.
        self.peer("connect b %s %d" % (self.addr, port))
        self.wait("listener for b")
        b = self.accept_one(lst, "b")
        self.ep.register(b.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        self.peer("send b 5")
        self.wait("oneshot 1")
        self.peer("send b 5")
        self.wait("oneshot disarmed", timeout=0.2)
        self.ep.modify(b.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        self.wait("oneshot re-armed")
        # recvfrom likewise (*addrlen 0: Python says None).
        data, src = b.recvfrom(100)
        self.say("read b %d, source %r" % (len(data), src))

        # EPOLLOUT once a full send buffer drains.
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        chunk = b"x" * 65536
        total = 0
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                total += b.send(chunk)
            except BlockingIOError:
                time.sleep(0.05)
                try:
                    total += b.send(chunk)
                except BlockingIOError:
                    break
        self.say("send buffer full %s" % (total > 0))
        self.ep.modify(b.fileno(), select.EPOLLOUT | select.EPOLLET)
        self.wait("full: no room", timeout=0.2)
        self.peer("drain b %d" % total)
        self.wait("after the peer drained")

        # EPOLLERR and EPOLLHUP after a reset.
        self.ep.modify(b.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        self.peer("reset b")
        self.wait("after reset")
        err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.say("SO_ERROR after reset %s" % errno.errorcode.get(err, err))
        try:
            self.say("read after reset %r" % b.recv(10))
        except OSError as e:
            self.say("read after reset %s" % errno.errorcode.get(e.errno, e.errno))

        # select(2) over a stack socket.
        self.peer("connect d %s %d" % (self.addr, port))
        self.wait("listener for d")
        d = self.accept_one(lst, "d")
        r, w, _ = select.select([d], [d], [], 0.2)
        self.say("select fresh: readable %d writable %d" % (len(r), len(w)))
        r, _, _ = select.select([d], [], [], 0.2)
        self.say("select nothing to read: %d" % len(r))
        self.peer("send d 4")
        time.sleep(0.05)
        r, _, _ = select.select([d], [], [], 1.0)
        self.say("select after data: %d, read %d" % (len(r), len(d.recv(100))))
        self.peer("shutwr d")
        time.sleep(0.05)
        r, _, _ = select.select([d], [], [], 1.0)
        self.say("select after FIN: %d, read %r" % (len(r), d.recv(100)))
        d.close()

        # shutdown(SHUT_RD) discards nothing: queued data is read first,
        # then end of file; data the peer sends after it is still taken
        # and readable (Linux's tcp_shutdown acts on the send side only).
        self.peer("connect r %s %d" % (self.addr, port))
        self.wait("listener for r")
        r = self.accept_one(lst, "r")
        self.peer("send r 4")
        time.sleep(0.1)
        r.shutdown(socket.SHUT_RD)
        r.setblocking(False)
        self.say("after SHUT_RD read %r then %r" % (r.recv(100), r.recv(100)))
        self.peer("send r 3")
        time.sleep(0.1)
        self.say("after SHUT_RD later data read %r" % r.recv(100))
        r.close()

        # A non-blocking connect completing, and one failing.
        pport = int(self.peer("listen"))
        for label, target in (("connect ok", pport), ("connect refused", int(self.peer("closed-port")))):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            rc = c.connect_ex((self.peer_addr, target))
            self.say("%s returns %s" % (label, errno.errorcode.get(rc, rc)))
            self.tags[c.fileno()] = "c"
            self.ep.register(c.fileno(), select.EPOLLOUT | select.EPOLLIN)
            self.wait(label)
            err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.say("%s SO_ERROR %s" % (label, errno.errorcode.get(err, err) if err else 0))
            self.ep.unregister(c.fileno())
            c.close()

        # SO_LINGER with a timeout: close() waits (blocking or not) while
        # data and the FIN are still unacknowledged, up to the timeout,
        # and the close goes on in the background; with nothing left to
        # send it returns at once.
        self.peer("connect h %s %d" % (self.addr, port))
        self.wait("listener for h")
        h = self.accept_one(lst, "h")
        h.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        total, deadline = 0, time.time() + 10
        while time.time() < deadline:
            try:
                total += h.send(b"l" * 65536)
            except BlockingIOError:
                time.sleep(0.05)
                try:
                    total += h.send(b"l" * 65536)
                except BlockingIOError:
                    break
        h.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        t0 = time.monotonic()
        h.close()
        took = time.monotonic() - t0
        self.say("linger close with data stuck waited its second %s" % (0.8 <= took < 2.5))
        self.say("peer got it all after %s" % self.peer("drain-count h %d" % total))
        self.peer("connect i %s %d" % (self.addr, port))
        self.wait("listener for i")
        i = self.accept_one(lst, "i")
        i.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
        t0 = time.monotonic()
        i.close()
        self.say("linger close with nothing to send returned at once %s" % (time.monotonic() - t0 < 1.0))

        # An edge-triggered listener: every new connection is an edge,
        # also one that arrives after the queue was emptied with no wait
        # in between (and may reuse the place the last one had).
        self.ep.modify(lst.fileno(), select.EPOLLIN | select.EPOLLET)
        for tag in ("e", "f", "g"):
            self.peer("connect %s %s %d" % (tag, self.addr, port))
            self.wait("edge listener for %s" % tag)
            c = self.accept_one(lst, tag)
            self.peer("reset %s" % tag)
            time.sleep(0.05)
            c.close()
        a.close()
        b.close()
        lst.close()
        print("DONE", flush=True)


# ------------------------------------------------------------------ peer

def drain(s, want):
    """Reads up to `want` bytes (5 s at most between reads); how many."""
    got = 0
    s.settimeout(5)
    while got < want:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
    return got


def peer_main(addr):
    conns = {}
    srv = None
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        cmd, reply = w[0], "OK"
        try:
            if cmd == "connect":
                s = socket.create_connection((w[2], int(w[3])), timeout=5)
                conns[w[1]] = s
            elif cmd == "send":
                conns[w[1]].sendall(b"y" * int(w[2]))
            elif cmd == "shutwr":
                conns[w[1]].shutdown(socket.SHUT_WR)
            elif cmd == "recv":
                reply = "OK %r" % conns[w[1]].recv(100)
            elif cmd == "drain":
                drain(conns[w[1]], int(w[2]))
            elif cmd == "reset":
                s = conns.pop(w[1])
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            elif cmd == "listen":
                srv = socket.socket()
                srv.bind((addr, 0))
                srv.listen(4)
                reply = "OK %d" % srv.getsockname()[1]
            elif cmd == "drain-count":
                want = int(w[2])
                got = drain(conns[w[1]], want)
                reply = "OK %s" % ("all" if got == want else "%d of %d" % (got, want))
            elif cmd == "accepted-port":
                srv.settimeout(5)
                conn, src = srv.accept()
                conn.close()
                reply = "OK %d" % src[1]
            elif cmd == "closed-port":
                t = socket.socket()
                t.bind((addr, 0))
                reply = "OK %d" % t.getsockname()[1]
                t.close()
            else:
                reply = "ERR unknown " + cmd
        except OSError as e:
            reply = "ERR %s" % e
        print(reply, flush=True)


# ------------------------------------------------------------------ run

def run_main(a):
    me = sys.argv[0]
    app_cmd = ["ip", "netns", "exec", a.app_ns]
    if a.preload:
        app_cmd += [a.preload]
    app_cmd += ["python3", "-u", me, "app", "--addr", a.app_addr, "--peer-addr", a.peer_addr]
    peer = subprocess.Popen(
        ["ip", "netns", "exec", a.peer_ns, "python3", "-u", me, "peer", "--addr", a.peer_addr],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    app = subprocess.Popen(app_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ok = False
    try:
        for line in app.stdout:
            line = line.rstrip("\n")
            if line.startswith("PEER "):
                peer.stdin.write(line[5:] + "\n")
                peer.stdin.flush()
                app.stdin.write(peer.stdout.readline())
                app.stdin.flush()
            elif line.startswith("OBS "):
                print(line[4:], flush=True)
            elif line == "DONE":
                ok = True
                break
            else:
                print("# " + line, file=sys.stderr)
    finally:
        for p in (app, peer):
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["run", "app", "peer"])
    p.add_argument("--addr")
    p.add_argument("--peer-addr")
    p.add_argument("--app-ns")
    p.add_argument("--peer-ns")
    p.add_argument("--app-addr")
    p.add_argument("--preload", help="wrapper to run the app under (xstack-run)")
    a = p.parse_args()
    if a.role == "app":
        App(a.addr, a.peer_addr).run()
    elif a.role == "peer":
        peer_main(a.addr)
    else:
        run_main(a)


if __name__ == "__main__":
    main()
