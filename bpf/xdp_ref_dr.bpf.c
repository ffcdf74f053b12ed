/* A second reference for benchmarks: a straightforward direct-routing program as the benchmark issue describes one
 * (hash-map service lookup, a flat Maglev ring, a backend array, two per-CPU counters), for IPv4 TCP/UDP only and
 * without anything else xdp-dr does (VLANs, IPv6, fragments, ICMP, connection table, atomic changes). bench micro
 * measures it in the same run, so that the ratios can be read against the scale. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define REF_M 65537

struct ref_service_key {
	__u32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct ref_backend {
	__u8 dst_mac[6];
	__u8 src_mac[6];
};

struct ref_counter {
	__u64 packets;
	__u64 bytes;
};

/* (VIP, port, protocol) -> service id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct ref_service_key);
	__type(value, __u32);
} ref_services SEC(".maps");

/* service id * REF_M + slot -> backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * REF_M);
	__type(key, __u32);
	__type(value, __u32);
} ref_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct ref_backend);
} ref_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct ref_counter);
} ref_service_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct ref_counter);
} ref_backend_stats SEC(".maps");

static __always_inline __u32 rol32(__u32 w, int s)
{
	return (w << s) | (w >> (32 - s));
}

/* Bob Jenkins' final mix of three words, as such programs usually hash the tuple. */
static __always_inline __u32 mix3(__u32 a, __u32 b, __u32 c)
{
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

static __always_inline void add(struct ref_counter *c, __u64 bytes)
{
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

SEC("xdp")
int xdp_ref_dr(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct ref_service_key key = {};
	struct ref_backend *be;
	__u32 *svc, *bid, slot, h;
	__be16 *ports;

	if ((void *)(iph + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || iph->ihl != 5)
		return XDP_PASS;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	ports = (void *)(iph + 1);
	if ((void *)(ports + 2) > end)
		return XDP_PASS;
	key.vip = iph->daddr;
	key.port = ports[1];
	key.proto = iph->protocol;
	svc = bpf_map_lookup_elem(&ref_services, &key);
	if (!svc)
		return XDP_PASS;
	h = mix3(iph->saddr, iph->daddr, (__u32)ports[0] << 16 | ports[1]);
	slot = *svc * REF_M + h % REF_M;
	bid = bpf_map_lookup_elem(&ref_ring, &slot);
	if (!bid)
		return XDP_PASS;
	be = bpf_map_lookup_elem(&ref_backends, bid);
	if (!be)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, be->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, be->src_mac, ETH_ALEN);
	add(bpf_map_lookup_elem(&ref_service_stats, svc), end - data);
	add(bpf_map_lookup_elem(&ref_backend_stats, bid), end - data);
	return XDP_TX;
}
