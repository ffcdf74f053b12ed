/* The live benchmark's traffic: a program that is never attached, only run by BPF_PROG_RUN in live-frames mode
 * on a template frame. Live frames are recycled pages that keep what the last run wrote, so every run writes the
 * whole varying part of the tuple afresh, then sends the frame out of the ingress interface (XDP_TX). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Distinct flows to cycle through: flow i has source address base + i / PORTS_PER_ADDR and source port
 * port_base + i % PORTS_PER_ADDR, so a million flows fit in 16,384 addresses. */
#define PORTS_PER_ADDR 64
const volatile __u32 flows = 1;
const volatile __u32 src_base = 0; /* host order, IPv4; the low 32 bits of the address for IPv6 */
const volatile __u16 port_base = 10000;

/* Next flow index on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} next_flow SEC(".maps");

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be32 *saddr;
	struct udphdr *l4; /* TCP and UDP both start with the ports */
	__u32 key = 0, i, *seq;

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > end)
			return XDP_ABORTED;
		saddr = &iph->saddr;
		l4 = (void *)(iph + 1); /* the template has no IP options */
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return XDP_ABORTED;
		saddr = &ip6->saddr.in6_u.u6_addr32[3];
		l4 = (void *)(ip6 + 1);
	}
	if ((void *)(l4 + 1) > end)
		return XDP_ABORTED;
	seq = bpf_map_lookup_elem(&next_flow, &key);
	if (!seq)
		return XDP_ABORTED;
	i = *seq;
	*seq = i + 1 >= flows ? 0 : i + 1;
	*saddr = bpf_htonl(src_base + i / PORTS_PER_ADDR);
	l4->source = bpf_htons(port_base + i % PORTS_PER_ADDR);
	return XDP_TX;
}
