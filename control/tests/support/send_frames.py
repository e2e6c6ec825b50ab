#!/usr/bin/env python3
"""Sends crafted frames out of an interface with an AF_PACKET socket.

Used by the namespace tests to flood the stack with malformed input whose
fate is known: each kind names the counter that must count it. Prints one
JSON object: {kind: frames sent}. Standard library only.

usage: send_frames.py IFNAME DST_MAC SRC_IP DST_IP COUNT_PER_KIND SEED
"""
import json
import random
import socket
import struct
import sys
import time


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, *, ihl=5, total=None, flags_off=0x4000, bad_csum=False):
    total = 20 + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0x1234, flags_off, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    c = csum(hdr)
    if bad_csum:
        c ^= 0x5A5A
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def icmp_echo(data=b"abcdefgh", bad_csum=False):
    msg = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + data
    c = csum(msg)
    if bad_csum:
        c ^= 0x00FF
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def main():
    ifname, dst_mac, src_ip, dst_ip, count, seed = sys.argv[1:7]
    count, rng = int(count), random.Random(int(seed))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src_mac = s.getsockname()[4]
    dst = bytes.fromhex(dst_mac.replace(":", ""))

    def eth(ethertype, payload):
        return dst + src_mac + struct.pack("!H", ethertype) + payload

    good_icmp = icmp_echo()
    arp_bad_htype = struct.pack("!HHBBH6s4s6s4s", 6, 0x0800, 6, 4, 1, src_mac, socket.inet_aton(src_ip),
                                b"\0" * 6, socket.inet_aton(dst_ip))
    kinds = {
        # Too short for an IPv4 header: the XDP program cannot steer it.
        "ipv4_truncated": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp)[:12]),
        "ipv4_bad_ihl": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp, ihl=4)),
        "ipv4_length_lies": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp, total=1400)),
        "ipv4_bad_checksum": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp, bad_csum=True)),
        "ipv4_fragment_first": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp, flags_off=0x2000)),
        "ipv4_fragment_later": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, good_icmp, flags_off=0x0010)),
        "icmp_bad_checksum": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, icmp_echo(bad_csum=True))),
        "icmp_truncated": lambda: eth(0x0800, ipv4(src_ip, dst_ip, 1, b"\x08\x00\x00")),
        "arp_bad_hardware": lambda: eth(0x0806, arp_bad_htype),
        "random_payload": lambda: eth(rng.choice([0x0800, 0x0806, rng.randrange(0x600, 0x10000)]),
                                      rng.randbytes(rng.randrange(0, 200))),
    }
    sent = {}
    for kind, make in kinds.items():
        for i in range(count):
            s.send(make())
            # A breath every 64 frames: a flood, but one a worker that
            # the scheduler holds off for a moment can still take in full
            # (its RX ring holds 2048 frames).
            if i % 64 == 63:
                time.sleep(0.001)
        sent[kind] = count
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
