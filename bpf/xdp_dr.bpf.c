/* xdp-dr: LVS direct routing in XDP. A packet for a service gets its MACs rewritten towards the backend that the
 * service's Maglev table picks and leaves again; IP headers stay untouched. Everything else goes to the kernel. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_dr_limits.h"
#include "xdp_dr_kern_user.h"
#include "xdp_dr_maps.h"
#include "parsing.h"
#include "hash.h"

char LICENSE[] SEC("license") = "GPL";

/* Load-time constants: the same seed on every node makes every node pick the same backend for a flow. */
const volatile __u32 hash_seed = 0;
/* 2^32 / HZ, from the loader: jiffies times this, shifted down 32 bits, is seconds. The verifier inlines
 * bpf_jiffies64 as one load, where bpf_ktime_get_coarse_ns is a call, and a tracked packet reads the clock. */
const volatile __u64 clock_mult = 0;
/* Not read by the program: it keeps the enums in BTF for the loader. */
const volatile struct xdp_dr_enums enums_in_btf;

/* `xdp-dr bench micro` builds the program cut short after each stage of the fast path (BENCH_STAGE=1..4: the VIP
 * filter, the service, the Maglev pick, the MAC rewrite) and times each build, so that what a stage costs is the
 * difference between two builds. Other builds have no such exit. */
#ifdef BENCH_STAGE
#define bench_stage_end(n)                 \
	do {                               \
		if (BENCH_STAGE == (n))    \
			return XDP_TX;     \
	} while (0)
#else
#define bench_stage_end(n) \
	do {               \
	} while (0)
#endif

static __always_inline void count(struct counter *c, __u64 bytes)
{
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The one exit for every outcome, so that counters always add up to what arrived. */
static __always_inline int record(enum xdp_dr_stat stat, __u64 bytes, int action)
{
	__u32 key = stat;

	count(bpf_map_lookup_elem(&stats, &key), bytes);
	return action;
}

static __always_inline __u64 seed64(void)
{
	return hash_seed | (__u64)hash_seed << 32;
}

/* Words as they sit in memory (little-endian loads of network-order bytes); loader/src/dataplane/flowhash.ts
 * computes the same. */
static __always_inline __u32 flow_hash(const struct flow *f, int l3_only)
{
	__u32 ports = f->sport | (__u32)f->dport << 16;

	if (f->family == XDP_DR_AF_INET)
		return flow_hash_v4(f->src[0], l3_only ? f->dst[0] : ports, seed64());
	return flow_hash_v6(f->src, f->dst, ports, l3_only, seed64());
}

/* Whether some VIP ends in these 16 bits (of a destination address, in host order). */
static __always_inline int vip_bit(__u32 low)
{
	__u32 word = (low & 0xffff) / 64;
	__u64 *bits = bpf_map_lookup_elem(&vip_filter, &word);

	return bits && ((*bits >> (low % 64)) & 1);
}

static __always_inline int maybe_vip(const struct flow *f)
{
	return vip_bit(bpf_ntohl(f->family == XDP_DR_AF_INET ? f->dst[0] : f->dst[3]));
}

/* The half of the epoch-dependent maps that packets read now (see struct lb_epoch). */
static __always_inline __u32 active_epoch(void)
{
	__u32 zero = 0;
	struct lb_epoch *e = bpf_map_lookup_elem(&epoch, &zero);

	return e ? e->active & 1 : 0;
}

/* The last word of a service key as it sits in memory. */
static __always_inline __u32 service_word(__be16 port, __u8 proto, __u8 family)
{
	return port | (__u32)proto << 16 | (__u32)family << 24;
}

_Static_assert(__builtin_offsetof(struct service_key, port) == 16 && __builtin_offsetof(struct service_key, proto) == 18 &&
		       __builtin_offsetof(struct service_key, family) == 19 && sizeof(struct service_key) == 20,
	       "service_word reads a key's port, protocol and family as its fifth word");

/* A service by its key's five words, in registers: the index slot first; the hash map only for keys that share
 * their slot with another service. For IPv4 three words are constant zeros and fold away. */
static __always_inline struct service_info *lookup_service(__u32 a0, __u32 a1, __u32 a2, __u32 a3, __u32 w4,
							   __u32 epoch)
{
	__u32 addr[4] = { a0, a1, a2, a3 };
	__u32 slot = service_index_slot(addr, w4 & 0xffff, w4 >> 16, w4 >> 24, SERVICE_INDEX_BITS) |
		     epoch << SERVICE_INDEX_BITS;
	struct service_slot *s = bpf_map_lookup_elem(&service_index, &slot);
	const __u32 *sk;

	if (!s)
		return NULL;
	sk = (const void *)&s->key;
	if (!((a0 ^ sk[0]) | (a1 ^ sk[1]) | (a2 ^ sk[2]) | (a3 ^ sk[3]) | (w4 ^ sk[4])))
		return &s->info;
	if (s->flags & SERVICE_SLOT_F_OVERFLOW) {
		struct service_ekey ek __attribute__((aligned(4)));
		__u32 *k = (void *)&ek.key;

		k[0] = a0;
		k[1] = a1;
		k[2] = a2;
		k[3] = a3;
		k[4] = w4;
		ek.epoch = epoch;
		return bpf_map_lookup_elem(&services, &ek);
	}
	return NULL;
}

/* The service of a destination: its own port first, then the VIP's port-0 service (all ports). */
static __always_inline struct service_info *find_service(const struct flow *f, __u32 epoch)
{
	struct service_info *svc;

	if (f->has_ports) {
		svc = lookup_service(f->dst[0], f->dst[1], f->dst[2], f->dst[3],
				     service_word(f->dport, f->proto, f->family), epoch);
		if (svc)
			return svc;
	}
	return lookup_service(f->dst[0], f->dst[1], f->dst[2], f->dst[3], service_word(0, f->proto, f->family), epoch);
}

static __always_inline struct backend_info *lookup_backend(__u32 id, __u32 epoch)
{
	__u32 idx = id + (epoch ? MAX_BACKENDS : 0);

	/* An id from a record of another build must not reach into the other half. */
	if (id >= MAX_BACKENDS)
		return NULL;

	return bpf_map_lookup_elem(&backends, &idx);
}

static __always_inline void event(enum xdp_dr_event ev)
{
	__u32 key = ev;

	count(bpf_map_lookup_elem(&events, &key), 0);
}

/* A flow's connection key as the five 64-bit words of struct conn_key, in registers. */
struct conn_words {
	__u64 w0, w1, w2, w3, w4;
};

_Static_assert(sizeof(struct conn_key) == 40 && __builtin_offsetof(struct conn_key, sport) == 32 &&
		       __builtin_offsetof(struct conn_key, family) == 37,
	       "conn_words lays out a key as five words: source, destination, then ports, protocol and family");
_Static_assert(sizeof(struct conn_entry) == 64, "a connection record fills one cache line");

#define CONN_BUCKETS (MAX_CONNS / CONN_WAYS)

/* Ports as they sit in the header (sport first), so the fast path can use its one load of them. */
static __always_inline __u64 conn_word4(__u32 ports, __u8 proto, __u8 family)
{
	return ports | (__u64)proto << 32 | (__u64)family << 40;
}

static __always_inline void conn_words_of(const struct flow *f, struct conn_words *k)
{
	k->w0 = f->src[0] | (__u64)f->src[1] << 32;
	k->w1 = f->src[2] | (__u64)f->src[3] << 32;
	k->w2 = f->dst[0] | (__u64)f->dst[1] << 32;
	k->w3 = f->dst[2] | (__u64)f->dst[3] << 32;
	k->w4 = conn_word4(f->sport | (__u32)f->dport << 16, f->proto, f->family);
}

static __always_inline struct conn_bucket *conn_bucket_at(__u32 i)
{
	return bpf_map_lookup_elem(&conns, &i);
}

static __always_inline struct conn_entry *conn_in(struct conn_bucket *b, const struct conn_words *k)
{
	if (!b)
		return NULL;
#pragma unroll
	for (int i = 0; i < CONN_WAYS; i++) {
		const __u64 *w = (const void *)&b->way[i].key;

		if (!((w[0] ^ k->w0) | (w[1] ^ k->w1) | (w[2] ^ k->w2) | (w[3] ^ k->w3) | (w[4] ^ k->w4)))
			return &b->way[i];
	}
	return NULL;
}

/* A flow's record, from its 5-tuple hash h: the first bucket, then the second. */
static __always_inline struct conn_entry *conn_lookup(__u32 h, const struct conn_words *k)
{
	struct conn_entry *e = conn_in(conn_bucket_at(conn_bucket1(h, CONN_BUCKETS)), k);

	return e ? e : conn_in(conn_bucket_at(conn_bucket2(h, seed64(), CONN_BUCKETS)), k);
}

/* The connection table's clock, in seconds. */
static __always_inline __u32 conn_now(void)
{
	return (bpf_jiffies64() * clock_mult) >> 32;
}

/* Seconds since a record was last seen. Signed: another CPU may have refreshed it a tick after this packet read the
 * clock, and a record seen "in the future" is as fresh as one seen now, not ~136 years old. */
static __always_inline __u32 conn_age(const struct conn_value *cv, __u32 now)
{
	__s32 age = now - cv->seen;

	return age < 0 ? 0 : age;
}

/* A record still binds by age: open and idle at most the idle timeout, or closing for at most the closing one. */
static __always_inline int conn_live(const struct conn_value *cv, __u32 now)
{
	return conn_age(cv, now) <= (cv->state == CONN_CLOSING ? CONN_CLOSING_TIMEOUT_S : CONN_IDLE_TIMEOUT_S);
}

/* A record binds its flow until it has been idle too long; a new SYN after a FIN or RST starts a new flow. */
static __always_inline int conn_holds(const struct conn_value *cv, __u8 tcp_flags, __u32 now)
{
	if (cv->state == CONN_CLOSING && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return 0;
	return conn_live(cv, now);
}

/* Where a new record goes in a bucket: an empty or lapsed record if there is one (*free: how many there are), else
 * the one seen longest ago (*age: how long ago). */
static __always_inline struct conn_entry *conn_room(struct conn_bucket *b, __u32 now, __u32 *free, __u32 *age)
{
	struct conn_entry *pick = NULL;

	*free = 0;
	*age = 0;
	if (!b)
		return NULL;
#pragma unroll
	for (int i = 0; i < CONN_WAYS; i++) {
		struct conn_entry *e = &b->way[i];
		__u32 a = conn_age(&e->value, now);

		if (!e->key.family || !conn_live(&e->value, now)) {
			if (!*free)
				pick = e;
			++*free;
		} else if (!*free && (!pick || a > *age)) {
			pick = e;
			*age = a;
		}
	}
	return pick;
}

/* Writes a flow's record: over its old one (rec), else into whichever of its two buckets has more room (the first
 * when they tie: it is looked in first), else over the record seen longest ago in the two. Choosing the emptier
 * bucket keeps buckets evenly filled, so that both are full for almost no flow. h is the flow's 5-tuple hash. */
static __always_inline void conn_write(struct conn_entry *rec, __u32 h, const struct conn_words *k,
				       const struct conn_value *v)
{
	struct conn_entry *e = rec;
	__u64 *w;

	if (!e) {
		__u32 free1, free2, age1, age2;
		struct conn_entry *e2;

		e = conn_room(conn_bucket_at(conn_bucket1(h, CONN_BUCKETS)), v->seen, &free1, &age1);
		if (free1 < CONN_WAYS) {
			e2 = conn_room(conn_bucket_at(conn_bucket2(h, seed64(), CONN_BUCKETS)), v->seen, &free2, &age2);
			if (e2 && (!e || free2 > free1 || (!free1 && !free2 && age2 > age1)))
				e = e2;
			/* A flow that still had a binding record loses it: a sign that MAX_CONNS is too small. */
			if (!free1 && !free2)
				event(XDP_DR_EV_CONN_EVICTED);
		}
		if (!e)
			return;
	}
	w = (__u64 *)&e->key;
	w[0] = k->w0;
	w[1] = k->w1;
	w[2] = k->w2;
	w[3] = k->w3;
	w[4] = k->w4;
	e->value = *v;
	e->check = conn_check(h, v->backend, v->gen, v->service, seed64());
}

/* A record's value, each field read once, and whether it is whole: written by one write for the flow whose
 * 5-tuple hash is h. Another CPU may be rewriting it, so the fields are read once into *cv (volatile loads: the
 * compiler may not read them again later) and checked there. */
static __always_inline int conn_read(const struct conn_entry *rec, __u32 h, struct conn_value *cv)
{
	const volatile struct conn_entry *e = rec;

	cv->backend = e->value.backend;
	cv->gen = e->value.gen;
	cv->service = e->value.service;
	cv->seen = e->value.seen;
	cv->state = e->value.state;
	return e->check == conn_check(h, cv->backend, cv->gen, cv->service, seed64());
}

/* Word loads rather than six byte loads: the MACs sit at the start of a 4-byte aligned map value. */
static __always_inline int mac_set(const struct backend_info *be)
{
	return *(const __u32 *)be->dst_mac | *(const __u16 *)&be->dst_mac[4];
}

_Static_assert(__builtin_offsetof(struct backend_info, src_mac) == ETH_ALEN,
	       "set_macs copies both MACs as one run, in the order of the Ethernet header");

/* Six 16-bit moves instead of twelve byte moves: a frame is only known to be 2-byte aligned (NET_IP_ALIGN). */
static __always_inline void set_macs(struct ethhdr *eth, const struct backend_info *be)
{
	__u16 *d = (void *)eth;
	const __u16 *s = (const void *)be->dst_mac;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
	d[4] = s[4];
	d[5] = s[5];
}

/* The backend a record names, if that backend still holds the id it was recorded with and has a MAC to send to. */
static __always_inline struct backend_info *conn_backend(const struct conn_value *cv, __u32 epoch)
{
	struct backend_info *be = lookup_backend(cv->backend, epoch);

	return be && be->gen == cv->gen && mac_set(be) ? be : NULL;
}

/* The backend a flow's record sends it to: while the record is whole, was written for this service, still holds
 * (conn_holds) and its backend still holds the id it was given; else NULL. *rec is the flow's record if it has one
 * (a new one goes there), and *cv what it said. h is the flow's 5-tuple hash. */
static __always_inline struct backend_info *conn_follow(__u32 h, const struct conn_words *k, __u32 svc_id,
							__u8 tcp_flags, __u32 now, __u32 epoch,
							struct conn_entry **rec, struct conn_value *cv)
{
	*rec = conn_lookup(h, k);
	if (!*rec || !conn_read(*rec, h, cv) || cv->service != svc_id || !conn_holds(cv, tcp_flags, now))
		return NULL;
	return conn_backend(cv, epoch);
}

/* The service's Maglev pick for a flow: 0 with *bid and *be set, else the PASS outcome (never 0: 0 is TX). */
static __always_inline int maglev_pick(const struct service_info *svc, __u32 hash, __u32 epoch, __u32 *bid,
				       struct backend_info **be)
{
	struct maglev_chunk *chunk;
	/* hash * M / 2^32 spreads the hash over [0, M) like a modulo, for a multiply instead of a division. */
	__u32 slot = ((__u64)hash * MAGLEV_M) >> 32, idx = slot / MAGLEV_CHUNK;
	__u32 table = svc->table;
	void *ring = bpf_map_lookup_elem(&rings, &table);

	if (!ring)
		return XDP_DR_STAT_PASS_NO_TABLE;
	chunk = bpf_map_lookup_elem(ring, &idx);
	/* With a small MAGLEV_M clang drops the mask (slot is known < M), but the verifier cannot see that bound
	 * through the multiply-shift; the barrier keeps the mask that proves the index. */
	barrier_var(slot);
	*bid = chunk ? chunk->backend[slot & (MAGLEV_CHUNK - 1)] : 0;
	if (!*bid)
		return XDP_DR_STAT_PASS_NO_BACKEND;
	*be = lookup_backend(*bid, epoch);
	if (!*be || !mac_set(*be))
		return XDP_DR_STAT_PASS_NO_BACKEND;
	return 0;
}

/* Sends the frame to the backend: MACs rewritten, IP untouched; counts it for the service and the backend. */
static __always_inline int forward(struct xdp_md *ctx, struct ethhdr *eth, const struct backend_info *be, __u32 svc_id,
				   __u32 bid, __u64 bytes)
{
	int act;

	if (be->ifindex && be->ifindex != ctx->ingress_ifindex) {
		/* Ask first, rewrite after: a missing egress port must leave the frame as it came. */
		act = bpf_redirect_map(&tx_ports, be->ifindex, XDP_PASS);
		if (act != XDP_REDIRECT)
			return record(XDP_DR_STAT_PASS_NO_TX_PORT, bytes, XDP_PASS);
	} else {
		act = XDP_TX;
	}

	set_macs(eth, be);
	bench_stage_end(4);
	count(bpf_map_lookup_elem(&service_stats, &svc_id), bytes);
	count(bpf_map_lookup_elem(&backend_stats, &bid), bytes);
	return record(act == XDP_TX ? XDP_DR_STAT_TX : XDP_DR_STAT_REDIRECT, bytes, act);
}

/* A packet of a TCP flow of a service that tracks connections: it goes where its record says, as long as the
 * record holds and its backend still holds the id it was given; else to the Maglev pick (from pick, the hash the
 * service picks by), which is then recorded. h is the flow's 5-tuple hash, which finds the record. A service that
 * stops tracking stops following records: only its own records count. */
static __always_inline int serve_tracked(struct xdp_md *ctx, struct ethhdr *eth, const struct service_info *svc,
					 const struct conn_words *k, __u32 h, __u32 pick, __u8 tcp_flags, __u32 epoch,
					 __u64 bytes)
{
	__u32 now = conn_now(), svc_id = svc->id, bid;
	struct conn_entry *rec;
	struct conn_value cv;
	struct backend_info *be = conn_follow(h, k, svc_id, tcp_flags, now, epoch, &rec, &cv);
	int stat;

	if (be) {
		if ((tcp_flags & (TCP_FIN | TCP_RST)) && cv.state != CONN_CLOSING)
			rec->value.state = CONN_CLOSING;
		if (cv.seen != now)
			rec->value.seen = now;
		event(XDP_DR_EV_CONN_HIT);
		return forward(ctx, eth, be, svc_id, cv.backend, bytes);
	}
	stat = maglev_pick(svc, pick, epoch, &bid, &be);
	if (stat)
		return record(stat, bytes, XDP_PASS);
	/* An RST opens nothing: recording it would only take room from a live flow. */
	if (!(tcp_flags & TCP_RST)) {
		struct conn_value nv = {
			.backend = bid,
			.gen = be->gen,
			.service = svc_id,
			.seen = now,
			.state = tcp_flags & TCP_FIN ? CONN_CLOSING : CONN_OPEN,
		};

		conn_write(rec, h, k, &nv);
		event(XDP_DR_EV_CONN_NEW);
	}
	return forward(ctx, eth, be, svc_id, bid, bytes);
}

/* An ICMP error about a flow of a service (fragmentation needed, packet too big, time exceeded, ...) goes to the
 * backend that flow's own packets go to, so that the real server hears of it: path-MTU discovery works behind the
 * load balancer. A router sends it to the VIP, quoting a reply (VIP -> client); the flow is that reply reversed.
 * The record of a flow is only read here: an error neither opens, refreshes nor closes it. Not inlined, so that
 * the TCP/UDP path stays as it was. */
static __noinline int icmp_error(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *l4, __u32 family)
{
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - (void *)(long)ctx->data;
	struct hdr_cursor cur = { .pos = l4 };
	struct icmp_min *icmp = l4;
	struct flow outer = {}, q = {}, f = {};
	struct service_info *svc;
	struct backend_info *be;
	struct conn_words ck;
	struct conn_entry *rec;
	struct conn_value cv;
	__u32 room, svc_id, bid, epoch;
	int stat;

	if ((void *)(icmp + 1) > end || !icmp_is_error(family, icmp->type))
		return record(XDP_DR_STAT_PASS_OTHER_PROTO, bytes, XDP_PASS);
	if (parse_outer(l3, end, family, &outer, &room) < 0 || room < sizeof(*icmp))
		return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);
	if (!maybe_vip(&outer))
		return record(XDP_DR_STAT_PASS_NO_SERVICE, bytes, XDP_PASS);
	cur.pos = icmp + 1;
	if (parse_quote(&cur, end, family, room - sizeof(*icmp), &q) < 0)
		return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);
	if (q.proto != IPPROTO_TCP && q.proto != IPPROTO_UDP)
		return record(XDP_DR_STAT_PASS_OTHER_PROTO, bytes, XDP_PASS);
	if (!q.has_ports)
		return record(XDP_DR_STAT_PASS_FRAGMENT, bytes, XDP_PASS);
	/* Routers send errors to the quoted source; anything else is not about a flow of this VIP. */
	if ((q.src[0] ^ outer.dst[0]) | (q.src[1] ^ outer.dst[1]) | (q.src[2] ^ outer.dst[2]) |
	    (q.src[3] ^ outer.dst[3]))
		return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);

	__builtin_memcpy(f.src, q.dst, 16);
	__builtin_memcpy(f.dst, q.src, 16);
	f.sport = q.dport;
	f.dport = q.sport;
	f.proto = q.proto;
	f.family = q.family;
	f.has_ports = 1;

	epoch = active_epoch();
	svc = find_service(&f, epoch);
	if (!svc)
		return record(XDP_DR_STAT_PASS_NO_SERVICE, bytes, XDP_PASS);
	svc_id = svc->id;
	if (f.proto == IPPROTO_TCP && (svc->flags & SERVICE_F_CONN_TABLE)) {
		conn_words_of(&f, &ck);
		/* No TCP flags: a closing record holds for its closing timeout, as for the close's last packets. */
		be = conn_follow(flow_hash(&f, 0), &ck, svc_id, 0, conn_now(), epoch, &rec, &cv);
		if (be) {
			bid = cv.backend;
			goto out;
		}
	}
	stat = maglev_pick(svc, flow_hash(&f, svc->flags & SERVICE_F_HASH_L3), epoch, &bid, &be);
	if (stat)
		return record(stat, bytes, XDP_PASS);
out:
	event(XDP_DR_EV_ICMP_ROUTED);
	return forward(ctx, eth, be, svc_id, bid, bytes);
}

/* Everything past the IP header. Inlined once per IP version, so that the IPv4 copy knows that three words of
 * each address are zero: its hash, service key and connection key shrink, and fewer values live on the stack. */
static __always_inline int serve(struct xdp_md *ctx, struct ethhdr *eth, void *l3, struct hdr_cursor c, void *end,
				 __u64 bytes, const struct flow *parsed)
{
	struct hdr_cursor cur = c;
	struct flow f = *parsed;
	struct service_info *svc;
	struct backend_info *be;
	__u32 bid, epoch, pick;
	int stat;

	if (f.proto != IPPROTO_TCP && f.proto != IPPROTO_UDP) {
		/* A fragment of an ICMP error is left to the kernel: its other fragments would not follow it. */
		if (f.proto == (f.family == XDP_DR_AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6) && !f.is_fragment)
			return icmp_error(ctx, eth, l3, cur.pos, f.family);
		return record(XDP_DR_STAT_PASS_OTHER_PROTO, bytes, XDP_PASS);
	}
	if (!maybe_vip(&f))
		return record(XDP_DR_STAT_PASS_NO_SERVICE, bytes, XDP_PASS);
	if (f.has_ports && parse_ports(&cur, end, &f) < 0)
		return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);

	epoch = active_epoch();
	svc = find_service(&f, epoch);
	if (!svc)
		return record(f.has_ports ? XDP_DR_STAT_PASS_NO_SERVICE : XDP_DR_STAT_PASS_FRAGMENT, bytes,
			      XDP_PASS);

	/* Fragments carry no ports past the first, so all fragments of a datagram hash on addresses alone. */
	pick = flow_hash(&f, f.is_fragment || (svc->flags & SERVICE_F_HASH_L3));
	if (f.proto == IPPROTO_TCP && f.has_ports && (svc->flags & SERVICE_F_CONN_TABLE)) {
		struct conn_words k;

		conn_words_of(&f, &k);
		return serve_tracked(ctx, eth, svc, &k, flow_hash(&f, 0), pick, f.tcp_flags, epoch, bytes);
	}
	stat = maglev_pick(svc, pick, epoch, &bid, &be);
	if (stat)
		return record(stat, bytes, XDP_PASS);
	return forward(ctx, eth, be, svc->id, bid, bytes);
}

/* The common case, kept short: an IPv4 TCP or UDP packet without IP options that is not a fragment. Each value
 * stays in a register and the packet is read once, where serve() fills a struct flow for every kind of packet.
 * Anything else returns -1 having changed nothing, counters included, and serve() takes it; what is decided here
 * is what serve() would decide. (The same for IPv6 measured no faster: its cost is in the 16-byte addresses.) */
static __always_inline int fast_ipv4(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *iph, void *end, __u64 bytes)
{
	void *l4 = iph + 1;
	struct service_info *svc;
	struct backend_info *be;
	__u32 daddr, saddr, ports, tot_len, epoch, bid, h, pick;
	__u8 proto;
	int stat;

	/* 8 bytes of L4 hold both ports, and the whole of a UDP header. */
	if (l4 + 8 > end || *(__u8 *)iph != 0x45 || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return -1;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < sizeof(*iph) || (void *)iph + tot_len > end)
		return -1;
	proto = iph->protocol;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || th->doff < 5)
			return -1;
	} else if (proto != IPPROTO_UDP) {
		return -1;
	}
	daddr = iph->daddr;
	if (!vip_bit(bpf_ntohl(daddr)))
		return record(XDP_DR_STAT_PASS_NO_SERVICE, bytes, XDP_PASS);
	bench_stage_end(1);

	ports = *(__u32 *)l4;
	epoch = active_epoch();
	svc = lookup_service(daddr, 0, 0, 0, service_word(ports >> 16, proto, XDP_DR_AF_INET), epoch);
	if (!svc)
		svc = lookup_service(daddr, 0, 0, 0, service_word(0, proto, XDP_DR_AF_INET), epoch);
	if (!svc)
		return record(XDP_DR_STAT_PASS_NO_SERVICE, bytes, XDP_PASS);
	bench_stage_end(2);
	saddr = iph->saddr;
	h = flow_hash_v4(saddr, ports, seed64());
	pick = svc->flags & SERVICE_F_HASH_L3 ? flow_hash_v4(saddr, daddr, seed64()) : h;
	if (proto == IPPROTO_TCP && (svc->flags & SERVICE_F_CONN_TABLE)) {
		struct conn_words k = {
			.w0 = saddr,
			.w2 = daddr,
			.w4 = conn_word4(ports, IPPROTO_TCP, XDP_DR_AF_INET),
		};

		return serve_tracked(ctx, eth, svc, &k, h, pick, ((__u8 *)l4)[13], epoch, bytes);
	}
	stat = maglev_pick(svc, pick, epoch, &bid, &be);
	if (stat)
		return record(stat, bytes, XDP_PASS);
	bench_stage_end(3);
	return forward(ctx, eth, be, svc->id, bid, bytes);
}

SEC("xdp")
int xdp_dr(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - data;
	struct hdr_cursor cur = { .pos = data };
	struct ethhdr *eth;
	void *l3;
	int proto, act;

	proto = parse_eth(&cur, end, &eth);
	if (proto < 0)
		return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);
	l3 = cur.pos;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct flow f = {};

		act = fast_ipv4(ctx, eth, l3, end, bytes);
		if (act >= 0)
			return act;
		if (parse_ipv4(&cur, end, &f) < 0)
			return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);
		return serve(ctx, eth, l3, cur, end, bytes, &f);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct flow f = {};

		if (parse_ipv6(&cur, end, &f) < 0)
			return record(XDP_DR_STAT_PASS_MALFORMED, bytes, XDP_PASS);
		return serve(ctx, eth, l3, cur, end, bytes, &f);
	}
	return record(XDP_DR_STAT_PASS_NOT_IP, bytes, XDP_PASS);
}
