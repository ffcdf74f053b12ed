/* The maps of the XDP program; all pinned by name under the load balancer's pin directory. */
#ifndef XDP_DR_MAPS_H
#define XDP_DR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdp_dr_limits.h"
#include "xdp_dr_kern_user.h"

/* (VIP, port, protocol, epoch) -> service id, hash mode and table; both epochs' services. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_SERVICES);
	__type(key, struct service_ekey);
	__type(value, struct service_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

/* (epoch << SERVICE_INDEX_BITS) | slot of a service key (service_index_slot in hash.h) -> that service, or
 * OVERFLOW: look in `services`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 << SERVICE_INDEX_BITS);
	__type(key, __u32);
	__type(value, struct service_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_index SEC(".maps");

/* Low 16 bits of a destination address -> one bit, set when some VIP ends in them: traffic that is not for
 * a VIP leaves after one inlined array lookup instead of two hash lookups. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VIP_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_filter SEC(".maps");

/* One service's Maglev table: slot / MAGLEV_CHUNK -> the backend ids of MAGLEV_CHUNK slots. */
struct maglev_ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAGLEV_CHUNKS);
	__type(key, __u32);
	__type(value, struct maglev_chunk);
};

/* service_info.table -> a Maglev table. Each service has two, installed with the service: the one its active
 * record names is never written; a change writes the other and names it in the other epoch's record. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2 * MAX_SERVICES);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_ring);
} rings SEC(".maps");

/* epoch * MAX_BACKENDS + backend id -> MACs and egress interface. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/* Egress interfaces for XDP_REDIRECT, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

/* enum xdp_dr_stat -> packets and bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_DR_STAT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* enum xdp_dr_event -> how often (bytes unused). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDP_DR_EV_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* Service id -> packets and bytes forwarded for it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_stats SEC(".maps");

/* Backend id -> packets and bytes forwarded to it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_stats SEC(".maps");

/* Bucket (conn_bucket1/2 in hash.h) -> CONN_WAYS records of TCP flows and the backends they were given. Mappable
 * arrays keep their elements page-aligned; the others start them after the map's header (312 bytes on 6.18), where
 * every 64-byte record would straddle two cache lines and a group of buckets two pages. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CONNS / CONN_WAYS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct conn_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conns SEC(".maps");

/* epoch * MAX_BACKENDS + backend id -> what the control plane knows about it (address, service, weight); never
 * read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_meta SEC(".maps");

/* One slot: which half of the epoch-dependent maps is live. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_epoch);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} epoch SEC(".maps");

/* One slot: the build and attachment of this load balancer; never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_info SEC(".maps");

#endif
