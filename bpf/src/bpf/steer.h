/* Shared between the XDP program and its Rust loader (keep in sync with
 * bpf/src/lib.rs: `Verdict` and the map value layouts). */
#ifndef XSTACK_STEER_H
#define XSTACK_STEER_H

/* Counter indexes of the per-CPU `counters` array, one per verdict reason. */
enum xs_verdict {
	XS_REDIRECT_ARP = 0,     /* ARP for a stack address, to the stack */
	XS_REDIRECT_TCP,         /* TCP to a stack address (and steered port) */
	XS_REDIRECT_UDP,         /* UDP to a stack address (and steered port) */
	XS_REDIRECT_ICMP,        /* ICMP to a dedicated stack address */
	XS_REDIRECT_OTHER,       /* other IP protocols, fragments, malformed L4 */
	XS_PASS_NOT_OURS,        /* IPv4/ARP for an address the stack does not own */
	XS_PASS_NON_IP,          /* neither IPv4 nor ARP (IPv6, LLDP, VLAN, ...) */
	XS_PASS_PORT,            /* shared address, port not steered: the kernel's */
	XS_PASS_SHARED,          /* ARP/ICMP/other for a shared address: the kernel's */
	XS_PASS_MALFORMED,       /* headers too short or inconsistent to steer */
	XS_PASS_NO_SOCKET,       /* steered, but no AF_XDP socket on this queue */
	XS_TX_RST,               /* TCP to a dedicated address, no socket: RST sent */
	XS_VERDICT_MAX,
};

/* Value of `stack_addrs`, keyed by the IPv4 address in network order. */
struct xs_addr {
	__u8 ports_only; /* 1: only TCP/UDP to `stack_ports` are the stack's */
	__u8 pad[3];
};

/* The one value of `iface`: the interface's MAC address, so a frame that
 * reached the program only through promiscuous mode (a bridge, a capture)
 * is never answered. */
struct xs_iface {
	__u8 mac[6];
	__u8 mac_set; /* 0 until the loader wrote `mac` */
	__u8 pad;
};

/* Key of `stack_ports`. */
struct xs_port {
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
	__u16 port;  /* network order */
};

#endif
