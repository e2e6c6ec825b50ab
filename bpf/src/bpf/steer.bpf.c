// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * xstack steering program.
 *
 * Frames for the stack go to the AF_XDP socket of the queue they arrived on
 * (XSKMAP[rx_queue_index]); everything else is XDP_PASS so the kernel keeps
 * ssh, its own addresses and all other traffic on the NIC.
 *
 * A stack address is either dedicated (all IPv4 and ARP for it goes to the
 * stack) or shared with the kernel (`ports_only`: only TCP/UDP to a port in
 * `stack_ports` goes to the stack; the kernel answers ARP and ping for the
 * address, with the same MAC). For a shared address, ARP replies that answer
 * a request of the stack's own (the control plane lists the target in
 * `arp_pending`) go to the stack too.
 *
 * A queue can lose its socket (the control plane unregisters it when the
 * queue's worker dies). Its frames are then passed to the kernel, which for
 * a shared address answers TCP itself; for a dedicated address the kernel
 * does not have the address, so the program answers TCP with a reset
 * itself (send_reset) rather than let peers retry into silence.
 *
 * Every header is bounds-checked before it is read: the verifier demands
 * it, and it is what keeps truncated frames from being misread.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "steer.h"

#define MAX_QUEUES 64

struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 oper;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct xs_addr);
} stack_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct xs_port);
	__type(value, __u8);
} stack_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xs_iface);
} iface SEC(".maps");

/* The directed broadcast addresses of the stack's subnets (value unused):
 * martian as sources. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} local_bcast SEC(".maps");

/* Next hops the stack is resolving, for shared addresses (value unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} arp_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XS_VERDICT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(__u32 idx, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
	return action;
}

static __always_inline int has_socket(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;

	return bpf_map_lookup_elem(&xsks, &q) != 0;
}

static __always_inline int to_stack(struct xdp_md *ctx, __u32 idx)
{
	__u32 q = ctx->rx_queue_index;

	/* Look before redirecting so a queue with no socket is counted and the
	 * frame still reaches the kernel instead of vanishing. */
	if (!bpf_map_lookup_elem(&xsks, &q))
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	count(idx, 0);
	return bpf_redirect_map(&xsks, q, XDP_PASS);
}

/* One's complement sum of n 16-bit words at p, which the caller has
 * bounds-checked; n is a constant, so the loop unrolls. The sum is taken in
 * memory order, which gives the checksum in memory order too (RFC 1071 2(B)). */
static __always_inline __u32 csum_words(const __u16 *p, int n, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		sum += p[i];
	return sum;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < ETH_ALEN; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* Ethernet, IPv4 without options and TCP without options: the reset. */
#define RST_FRAME_LEN (ETH_HLEN + 20 + 20)

/*
 * A TCP segment for a dedicated address arrived on a queue with no socket.
 * Answer it as a closed port does (RFC 9293 3.10.7.1, as Linux's
 * tcp_v4_send_reset): never an RST for an RST; if the segment has ACK,
 * <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>,
 * SYN and FIN each counting one in SEG.LEN. The frame itself becomes the
 * reset and goes back out the interface it came in on (XDP_TX).
 *
 * Incoming IP options are handled, not refused: every field the reply needs
 * is read into locals first, then the reply is written at fixed offsets
 * (IPv4 at 14 with IHL 5, TCP at 34) over whatever was there. Like Linux we
 * do not echo the options.
 *
 * The segment's TCP checksum is not verified: XDP does not see the NIC's
 * receive checksum status, and frames from a local peer (veth) may carry
 * only a partial checksum, so checking would refuse to answer good
 * segments. A corrupted segment gets a reset carrying its corrupted
 * numbers, which the peer rejects unless they happen to be right (RFC 5961
 * 3.2); where the damage is elsewhere, the reset is the right one anyway.
 *
 * Whatever is not answered is passed and counted as XS_PASS_NO_SOCKET, as
 * before, so pass_no_socket + tx_rst counts every frame that found no socket.
 */
static __always_inline int send_reset(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct tcphdr *th;
	__u8 peer_mac[ETH_ALEN], our_mac[ETH_ALEN];
	__u32 ihl, doff, tot_len, seg_len, saddr, daddr, seq, ack_seq, sum, first, zero = 0;
	struct xs_iface *cfg;
	__u16 sport, dport;
	__u8 tos, ctl;
	int delta;

	if ((void *)(ip + 1) > end)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* Lengths must agree with each other and with the frame (which may be
	 * longer than the datagram: Ethernet padding). */
	ihl = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (ihl < sizeof(*ip) || tot_len < ihl + sizeof(*th) || (void *)ip + tot_len > end)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* A first fragment's SEG.LEN is not known until reassembly, which is
	 * the stack's job; non-first fragments never get here. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	th = (void *)ip + ihl;
	if ((void *)(th + 1) > end)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	doff = th->doff * 4;
	if (doff < sizeof(*th) || ihl + doff > tot_len)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* RFC 9293 3.10.7.1: "An incoming segment containing a RST is
	 * discarded." */
	if (th->rst)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* Only unicast to us from a unicast, non-martian source, as Linux
	 * (tcp_v4_rcv takes only PACKET_HOST; routing drops martian sources):
	 * never reset towards a broadcast or multicast address. */
	saddr = ip->saddr;
	daddr = ip->daddr;
	first = bpf_ntohl(saddr) >> 24;
	if ((eth->h_dest[0] & 1) || (eth->h_source[0] & 1) || first == 0 || first == 127 || first >= 224)
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* PACKET_HOST means addressed to our MAC: a frame for another station
	 * seen in promiscuous mode (a bridge port, a capture) is not ours to
	 * answer. */
	cfg = bpf_map_lookup_elem(&iface, &zero);
	if (cfg && cfg->mac_set && !same_mac(eth->h_dest, cfg->mac))
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	/* fib_validate_source: a source that is one of our own addresses or a
	 * broadcast address of our subnets is martian. */
	if (bpf_map_lookup_elem(&stack_addrs, &saddr) || bpf_map_lookup_elem(&local_bcast, &saddr))
		return count(XS_PASS_NO_SOCKET, XDP_PASS);

	seg_len = tot_len - ihl - doff;
	if (th->ack) {
		seq = th->ack_seq;
		ack_seq = 0;
		ctl = 0x04; /* RST */
	} else {
		seq = 0;
		ack_seq = bpf_htonl(bpf_ntohl(th->seq) + seg_len + th->syn + th->fin);
		ctl = 0x14; /* RST|ACK */
	}
	sport = th->source;
	dport = th->dest;
	/* Linux echoes the segment's DSCP and clears ECN in its resets. */
	tos = ip->tos & ~0x3;
	__builtin_memcpy(peer_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(our_mac, eth->h_dest, ETH_ALEN);

	/* Shrink to exactly the reset (never grows: the segment had at least
	 * 20 + 20 bytes of headers). Every packet pointer is stale from here. */
	delta = RST_FRAME_LEN - (int)(end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return count(XS_PASS_NO_SOCKET, XDP_PASS);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + RST_FRAME_LEN > end)
		return XDP_ABORTED; /* cannot happen; the verifier needs the check */
	eth = data;
	ip = data + sizeof(*eth);
	th = (void *)(ip + 1);

	__builtin_memcpy(eth->h_dest, peer_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, our_mac, ETH_ALEN);
	/* eth->h_proto stays ETH_P_IP. TTL 64 and DF with id 0, as Linux
	 * sends its resets (ip_default_ttl, IP_PMTUDISC_DO). */
	*(__u8 *)ip = 0x45; /* version 4, IHL 5 */
	ip->tos = tos;
	ip->tot_len = bpf_htons(20 + 20);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000);
	ip->ttl = 64;
	ip->protocol = IPPROTO_TCP;
	ip->check = 0;
	ip->saddr = daddr;
	ip->daddr = saddr;
	ip->check = csum_fold(csum_words((__u16 *)ip, 10, 0));

	th->source = dport;
	th->dest = sport;
	th->seq = seq;
	th->ack_seq = ack_seq;
	((__u8 *)th)[12] = 5 << 4; /* data offset 5: no options */
	((__u8 *)th)[13] = ctl;
	th->window = 0;
	th->check = 0;
	th->urg_ptr = 0;
	/* Pseudo-header (RFC 9293 3.1): addresses, zero + protocol, TCP length. */
	sum = csum_words((__u16 *)&ip->saddr, 4, 0) + bpf_htons(IPPROTO_TCP) + bpf_htons(20);
	th->check = csum_fold(csum_words((__u16 *)th, 10, sum));
	return count(XS_TX_RST, XDP_TX);
}

static __always_inline int handle_arp(struct xdp_md *ctx, void *l3, void *end)
{
	struct arp_eth_ipv4 *arp = l3;
	struct xs_addr *a;
	__u32 tpa, spa;

	if ((void *)(arp + 1) > end)
		return count(XS_PASS_MALFORMED, XDP_PASS);
	__builtin_memcpy(&tpa, arp->tpa, 4);
	a = bpf_map_lookup_elem(&stack_addrs, &tpa);
	if (!a)
		return count(XS_PASS_NOT_OURS, XDP_PASS);
	if (!a->ports_only)
		return to_stack(ctx, XS_REDIRECT_ARP);
	/* Shared address: only replies to the stack's own requests. */
	__builtin_memcpy(&spa, arp->spa, 4);
	if (arp->oper == bpf_htons(2) && bpf_map_lookup_elem(&arp_pending, &spa))
		return to_stack(ctx, XS_REDIRECT_ARP);
	return count(XS_PASS_SHARED, XDP_PASS);
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, void *l3, void *end)
{
	struct iphdr *ip = l3;
	struct xs_addr *a;
	struct xs_port key = {};
	__u32 ihl, daddr;
	void *l4;

	if ((void *)(ip + 1) > end)
		return count(XS_PASS_MALFORMED, XDP_PASS);
	daddr = ip->daddr;
	a = bpf_map_lookup_elem(&stack_addrs, &daddr);
	if (!a)
		return count(XS_PASS_NOT_OURS, XDP_PASS);

	ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip)) {
		/* A dedicated address's junk is the stack's to count and drop. */
		if (!a->ports_only)
			return to_stack(ctx, XS_REDIRECT_OTHER);
		return count(XS_PASS_MALFORMED, XDP_PASS);
	}
	/* Non-first fragments carry no ports: only a dedicated address takes them
	 * (the stack drops and counts fragments). */
	if (ip->frag_off & bpf_htons(0x1fff)) {
		if (!a->ports_only)
			return to_stack(ctx, XS_REDIRECT_OTHER);
		return count(XS_PASS_SHARED, XDP_PASS);
	}
	l4 = l3 + ihl;

	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		__u32 idx = ip->protocol == IPPROTO_TCP ? XS_REDIRECT_TCP : XS_REDIRECT_UDP;

		if (!a->ports_only) {
			/* The kernel does not have a dedicated address: it
			 * would drop this silently, so answer it here. */
			if (ip->protocol == IPPROTO_TCP && !has_socket(ctx))
				return send_reset(ctx);
			return to_stack(ctx, idx);
		}
		/* Both TCP and UDP carry the destination port at offset 2. */
		if (l4 + 4 > end)
			return count(XS_PASS_MALFORMED, XDP_PASS);
		key.proto = ip->protocol;
		key.port = *(__u16 *)(l4 + 2);
		if (bpf_map_lookup_elem(&stack_ports, &key))
			return to_stack(ctx, idx);
		return count(XS_PASS_PORT, XDP_PASS);
	}
	if (a->ports_only)
		return count(XS_PASS_SHARED, XDP_PASS);
	if (ip->protocol == IPPROTO_ICMP)
		return to_stack(ctx, XS_REDIRECT_ICMP);
	return to_stack(ctx, XS_REDIRECT_OTHER);
}

SEC("xdp")
int xstack_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return count(XS_PASS_MALFORMED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, eth + 1, end);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return handle_arp(ctx, eth + 1, end);
	return count(XS_PASS_NON_IP, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
