#!/usr/bin/env python3
"""A TCP server that gets every protocol wrong, for the load generator's
error accounting: it accepts connections and, to whatever it reads,

  garbage  answers "garbage\\r\\n" (no protocol's reply);
  reset    closes with a reset (SO_LINGER 0), answering nothing;
  deaf     reads nothing at all (and holds the connection open).

Runs until killed. Standard library only.

usage: misbehaving_server.py garbage|reset|deaf ADDR PORT
"""
import socket
import struct
import sys
import threading


def serve(conn, mode):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            if mode == "garbage":
                conn.sendall(b"garbage\r\n")
            else:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
    except OSError:
        pass
    conn.close()


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode not in ("garbage", "reset", "deaf"):
        sys.exit("mode must be garbage, reset or deaf")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(128)
    deaf = []
    while True:
        conn, _ = listener.accept()
        if mode == "deaf":
            # Kept referenced, or the collector would close it.
            deaf.append(conn)
        else:
            threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
