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

		if (!a->ports_only)
			return to_stack(ctx, idx);
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
