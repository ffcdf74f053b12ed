/* Bounds-checked header parsers: each advances a cursor and fails (-1) rather than read past data_end. */
#ifndef XDP_DR_PARSING_H
#define XDP_DR_PARSING_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "xdp_dr_limits.h"
#include "xdp_dr_kern_user.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

struct hdr_cursor {
	void *pos;
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* What the program needs of a packet: the flow and where it stands. */
struct flow {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 is_fragment;  /* any IPv4/IPv6 fragment: hash on addresses only */
	__u8 has_ports;    /* false for non-first fragments */
	__u8 tcp_flags;    /* FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10 (TCP only) */
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

static __always_inline int vlan_proto(__be16 p)
{
	return p == bpf_htons(ETH_P_8021Q) || p == bpf_htons(ETH_P_8021AD);
}

/* Returns the ethertype after up to VLAN_MAX_DEPTH tags (network order), or -1 when truncated. */
static __always_inline int parse_eth(struct hdr_cursor *c, void *end, struct ethhdr **eth_out)
{
	struct ethhdr *eth = c->pos;
	struct vlan_hdr *vh;
	__be16 proto;

	if ((void *)(eth + 1) > end)
		return -1;
	*eth_out = eth;
	c->pos = eth + 1;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!vlan_proto(proto))
			break;
		vh = c->pos;
		if ((void *)(vh + 1) > end)
			return -1;
		proto = vh->encap_proto;
		c->pos = vh + 1;
	}
	return proto;
}

/* Fills addresses, protocol and fragment state; -1 on any inconsistency (the packet is left alone). */
static __always_inline int parse_ipv4(struct hdr_cursor *c, void *end, struct flow *f)
{
	struct iphdr *iph = c->pos;
	__u32 ihl_len, tot_len;

	if ((void *)(iph + 1) > end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	ihl_len = iph->ihl * 4;
	tot_len = bpf_ntohs(iph->tot_len);
	/* A frame shorter than the IP packet claims is truncated; Ethernet padding beyond it is fine. */
	if (tot_len < ihl_len || (void *)iph + tot_len > end)
		return -1;

	f->family = XDP_DR_AF_INET;
	f->src[0] = iph->saddr;
	f->dst[0] = iph->daddr;
	f->proto = iph->protocol;
	f->is_fragment = (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
	f->has_ports = (iph->frag_off & bpf_htons(IP_OFFSET)) == 0;
	c->pos = (void *)iph + ihl_len;
	return 0;
}

struct ipv6_opt_hdr_min {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | M */
	__be32 id;
};

/* Walks hop-by-hop, routing, destination-options and fragment headers from next header nh; anything else ends the
 * chain and is the protocol. Adds the bytes walked to *len (callers that ignore it cost nothing: it is inlined). */
static __always_inline int parse_ipv6_ext(struct hdr_cursor *c, void *end, struct flow *f, __u8 nh, __u32 *len)
{
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX_CHAIN; i++) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr_min *oh = c->pos;
			__u32 n;

			if ((void *)(oh + 1) > end)
				return -1;
			nh = oh->nexthdr;
			n = (oh->hdrlen + 1) * 8;
			c->pos += n;
			*len += n;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr *fh = c->pos;

			if ((void *)(fh + 1) > end)
				return -1;
			nh = fh->nexthdr;
			f->is_fragment = 1;
			f->has_ports = (fh->frag_off & bpf_htons(0xfff8)) == 0;
			c->pos = fh + 1;
			*len += sizeof(*fh);
		} else {
			break;
		}
	}
	f->proto = nh;
	return 0;
}

static __always_inline int parse_ipv6(struct hdr_cursor *c, void *end, struct flow *f)
{
	struct ipv6hdr *ip6 = c->pos;
	__u32 ext = 0;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if (ip6->version != 6)
		return -1;
	if ((void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > end)
		return -1;

	f->family = XDP_DR_AF_INET6;
	__builtin_memcpy(f->src, &ip6->saddr, 16);
	__builtin_memcpy(f->dst, &ip6->daddr, 16);
	f->has_ports = 1;
	c->pos = ip6 + 1;
	return parse_ipv6_ext(c, end, f, ip6->nexthdr, &ext);
}

/* Reads source and destination port; TCP and UDP both start with them. */
static __always_inline int parse_ports(struct hdr_cursor *c, void *end, struct flow *f)
{
	if (f->proto == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;

		if ((void *)(th + 1) > end || th->doff < 5)
			return -1;
		f->sport = th->source;
		f->dport = th->dest;
		f->tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = c->pos;

		if ((void *)(uh + 1) > end)
			return -1;
		f->sport = uh->source;
		f->dport = uh->dest;
	}
	return 0;
}

/* ICMP messages that quote the packet they are about (RFC 792, RFC 4443): IPv4 destination unreachable (code 4:
 * fragmentation needed), time exceeded, parameter problem; ICMPv6 destination unreachable, packet too big, time
 * exceeded, parameter problem. */
static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == XDP_DR_AF_INET)
		return type == 3 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/* The ICMP and ICMPv6 header alike: what follows it in an error is the quote. */
struct icmp_min {
	__u8 type;
	__u8 code;
	__sum16 check;
	__be32 rest; /* unused, or the next-hop MTU, or the pointer of a parameter problem */
};

/* The IP packet at l3, read again for the ICMP path (so that the fast path keeps its flow in registers): its
 * family and destination into o, and in *room the bytes its L4 header may use: the rest of the IP packet, not
 * the Ethernet padding after it. IPv6 extension headers are walked again, adding scalars, so that no pointer
 * difference is taken. */
static __always_inline int parse_outer(void *l3, void *end, __u8 family, struct flow *o, __u32 *room)
{
	o->family = family;
	if (family == XDP_DR_AF_INET) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > end)
			return -1;
		o->dst[0] = iph->daddr;
		*room = bpf_ntohs(iph->tot_len) - iph->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = l3;
		struct hdr_cursor c = { .pos = ip6 + 1 };
		__u32 ext = 0;

		if ((void *)(ip6 + 1) > end || parse_ipv6_ext(&c, end, o, ip6->nexthdr, &ext) < 0)
			return -1;
		if (ext > bpf_ntohs(ip6->payload_len))
			return -1;
		__builtin_memcpy(o->dst, &ip6->daddr, 16);
		*room = bpf_ntohs(ip6->payload_len) - ext;
	}
	return 0;
}

/* The ports of a quoted TCP or UDP header: the first 4 of the 8 bytes every error quotes at least. */
static __always_inline int parse_quoted_ports(struct hdr_cursor *c, void *end, __u32 used, __u32 room, struct flow *q)
{
	__be16 *p = c->pos;

	if (!q->has_ports || (q->proto != IPPROTO_TCP && q->proto != IPPROTO_UDP))
		return 0;
	if ((void *)p + 8 > end || used + 8 > room)
		return -1;
	q->sport = p[0];
	q->dport = p[1];
	return 0;
}

/* The packet an ICMP error quotes, in the room bytes from c->pos: its whole IP header (options and IPv6 extension
 * headers included) and, when it is TCP or UDP and not a later fragment, the 8 bytes of L4 that hold the ports. Its
 * length fields describe the packet as it was sent, not the quote, and are not checked. -1 when cut short. */
static __always_inline int parse_quote(struct hdr_cursor *c, void *end, __u8 family, __u32 room, struct flow *q)
{
	__u32 used;

	if (family == XDP_DR_AF_INET) {
		struct iphdr *iph = c->pos;

		if ((void *)(iph + 1) > end || room < sizeof(*iph))
			return -1;
		if (iph->version != 4 || iph->ihl < 5)
			return -1;
		used = iph->ihl * 4;
		q->family = XDP_DR_AF_INET;
		q->src[0] = iph->saddr;
		q->dst[0] = iph->daddr;
		q->proto = iph->protocol;
		q->has_ports = (iph->frag_off & bpf_htons(IP_OFFSET)) == 0;
		c->pos = (void *)iph + used;
	} else {
		struct ipv6hdr *ip6 = c->pos;

		if ((void *)(ip6 + 1) > end || room < sizeof(*ip6))
			return -1;
		if (ip6->version != 6)
			return -1;
		used = sizeof(*ip6);
		q->family = XDP_DR_AF_INET6;
		__builtin_memcpy(q->src, &ip6->saddr, 16);
		__builtin_memcpy(q->dst, &ip6->daddr, 16);
		q->has_ports = 1;
		c->pos = ip6 + 1;
		if (parse_ipv6_ext(c, end, q, ip6->nexthdr, &used) < 0)
			return -1;
	}
	return parse_quoted_ports(c, end, used, room, q);
}

#endif
