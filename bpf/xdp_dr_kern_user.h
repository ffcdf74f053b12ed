/* The one definition of every layout shared by the XDP program and the loader (checked against BTF by a test). */
#ifndef XDP_DR_KERN_USER_H
#define XDP_DR_KERN_USER_H

#include <linux/types.h>
#include "xdp_dr_limits.h"

/* service_key.family: the IP version. */
enum xdp_dr_family {
	XDP_DR_AF_INET = 4,
	XDP_DR_AF_INET6 = 6,
};

/* Service key: IPv4 addresses sit in addr[0..3] with the rest zero; port 0 matches every port of the VIP. */
struct service_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

enum service_flag {
	/* Hash only source and destination addresses (source-IP persistence) instead of the 5-tuple. */
	SERVICE_F_HASH_L3 = 1 << 0,
	/* Record each TCP flow's backend in the connection table, so that table changes move no open flow. */
	SERVICE_F_CONN_TABLE = 1 << 1,
};

struct service_info {
	__u32 id;    /* index into the service counters, 0..MAX_SERVICES-1 */
	__u32 flags; /* SERVICE_F_* */
	__u32 table; /* its Maglev table in `rings`: 2 * id or 2 * id + 1 (the other one is rewritten by a change) */
};

/* The load balancer's state lives twice: in two halves of `services`, `service_index`, `backends` and `backend_meta`,
 * one per epoch. Packets read the half of the active epoch; a change writes the whole other half and then makes it
 * active with one write. Whenever a change is cut short, the active half is untouched: old state or new, never a
 * mix. The services hash map holds both halves, told apart by this key. */
struct service_ekey {
	struct service_key key;
	__u32 epoch; /* 0 or 1 */
};

/* Slot 0 of `epoch`. */
struct lb_epoch {
	__u32 active;    /* the half packets read */
	__u32 quiescent; /* 1 once no packet can still be reading the other half (a grace period since the switch) */
};

/* The service index: a direct-mapped array in front of the `services` hash map, which stays the complete list.
 * A slot holds a copy of the one service whose key hashes there; OVERFLOW says that other services hash to the
 * same slot and are found in `services` only. One array lookup and a compare instead of a hash-map lookup. */
enum service_slot_flag {
	SERVICE_SLOT_F_OVERFLOW = 1 << 0,
};

struct service_slot {
	struct service_key key; /* family 0: empty */
	struct service_info info;
	__u32 flags; /* SERVICE_SLOT_F_* */
};

/* Where a backend's frames go: dst MAC is the real server's, src MAC the egress interface's. */
struct backend_info {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 ifindex; /* 0: out of the ingress interface (XDP_TX); else redirect through tx_ports */
	__u32 gen;     /* set when the id is given to a backend: a flow recorded for an earlier holder no longer matches */
};

/* A TCP flow as the client sends it (IPv4 addresses in src[0] and dst[0], the rest zero). */
struct conn_key {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 reserved;
};

enum conn_state {
	CONN_OPEN = 0,
	CONN_CLOSING = 1, /* a FIN or RST was seen: the record lasts CONN_CLOSING_TIMEOUT_S more */
};

struct conn_value {
	__u32 backend; /* backend id */
	__u32 gen;     /* that backend's gen when recorded */
	__u32 service; /* service id */
	__u32 seen;    /* last packet, in seconds of the kernel's jiffies clock */
	__u32 state;   /* enum conn_state */
};

/* The connection table is an array of buckets, each of CONN_WAYS (xdp_dr_limits.h) records. A flow's record sits in
 * one of two buckets that its hash names (conn_bucket1/2 in hash.h), so that a full bucket does not push out a live
 * flow while the other has room. CPUs write records without a lock, so a reader can see a record half rewritten,
 * and two CPUs writing one record at once can leave one flow's key with another's value: the check word, a hash
 * of the key's flow hash and the fields that route (conn_check in hash.h), tells such a record from a whole one. */
struct conn_entry {
	struct conn_key key; /* family 0: empty */
	struct conn_value value;
	__u32 check; /* conn_check of the key's 5-tuple hash, value.backend, value.gen and value.service */
};

struct conn_bucket {
	struct conn_entry way[CONN_WAYS];
};

/* Buckets per 4 KB page: a flow's second bucket is another of the group its first one is in (conn_bucket2). */
#define CONN_GROUP_BUCKETS 16
_Static_assert(CONN_GROUP_BUCKETS * sizeof(struct conn_bucket) == 4096, "a group of buckets fills one page");

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Global counters, one slot per outcome; the loader reads the names from BTF. */
enum xdp_dr_stat {
	XDP_DR_STAT_TX = 0,            /* forwarded out of the ingress interface */
	XDP_DR_STAT_REDIRECT,          /* forwarded through another interface */
	XDP_DR_STAT_PASS_NOT_IP,       /* ARP, LLDP and all other non-IP frames */
	XDP_DR_STAT_PASS_MALFORMED,    /* truncated or inconsistent headers, also an ICMP error's quote cut short or
					* not from the address the error was sent to: left to the kernel untouched */
	XDP_DR_STAT_PASS_OTHER_PROTO,  /* IP but neither TCP nor UDP, or an IPv6 header chain we do not walk */
	XDP_DR_STAT_PASS_NO_SERVICE,   /* no service for this VIP, port and protocol */
	XDP_DR_STAT_PASS_FRAGMENT,     /* non-first fragment of a VIP with no port-0 service to carry it */
	XDP_DR_STAT_PASS_NO_TABLE,     /* service known but its Maglev table is not installed */
	XDP_DR_STAT_PASS_NO_BACKEND,   /* table slot unset (id 0) or backend entry empty */
	XDP_DR_STAT_PASS_NO_TX_PORT,   /* backend's egress interface missing from tx_ports */
	XDP_DR_STAT_MAX,
};

/* Events counted besides the outcomes (a packet can have several, or none). */
enum xdp_dr_event {
	XDP_DR_EV_CONN_HIT = 0, /* a TCP packet followed its connection record */
	XDP_DR_EV_CONN_NEW,     /* a connection record was written (new flow, or its record no longer held) */
	XDP_DR_EV_ICMP_ROUTED,  /* an ICMP error about a flow was sent to that flow's backend */
	XDP_DR_EV_CONN_EVICTED, /* a new record took the place of a live one (both its buckets were full) */
	XDP_DR_EV_MAX,
};

/* Slots of a Maglev table per array element. The kernel rounds array values up to 8 bytes, so one 4-byte id
 * per element would cost 8 bytes a slot and one batch element per slot; 32 packed 16-bit ids cost 2 bytes a
 * slot, and a whole table is about two thousand elements to read or write. */
#define MAGLEV_CHUNK 32
#define MAGLEV_CHUNKS ((MAGLEV_M + MAGLEV_CHUNK - 1) / MAGLEV_CHUNK)
_Static_assert((MAGLEV_CHUNK & (MAGLEV_CHUNK - 1)) == 0, "the program masks slot indexes: MAGLEV_CHUNK is a power of 2");

struct maglev_chunk {
	__u16 backend[MAGLEV_CHUNK]; /* slot (element * MAGLEV_CHUNK + i) -> backend id, 0 = unset */
};

/* Build constants the loader reads from BTF (they are not visible in the maps). */
enum xdp_dr_build {
	XDP_DR_MAGLEV_M = MAGLEV_M,
	XDP_DR_MAGLEV_CHUNK = MAGLEV_CHUNK,
	XDP_DR_SERVICE_INDEX_BITS = SERVICE_INDEX_BITS,
	XDP_DR_CONN_WAYS = CONN_WAYS,
	XDP_DR_CONN_GROUP_BUCKETS = CONN_GROUP_BUCKETS,
	XDP_DR_CONN_IDLE_TIMEOUT_S = CONN_IDLE_TIMEOUT_S,
	XDP_DR_CONN_CLOSING_TIMEOUT_S = CONN_CLOSING_TIMEOUT_S,
};

/* Control-plane bookkeeping, never read by the program: what the CLI shows back and rebuilds tables from,
 * so that the pinned maps alone describe the running load balancer. One record per (service, real server). */
enum backend_flag {
	BACKEND_F_IN_USE = 1 << 0,
	BACKEND_F_MAC_RESOLVED = 1 << 1, /* MAC came from the neighbour table, not from the operator */
};

struct backend_meta {
	__u8 addr[16];    /* real server address, laid out like service_key.addr */
	__u32 service_id;
	__u32 weight;     /* 0: drained */
	__u8 family;      /* enum xdp_dr_family */
	__u8 flags;       /* BACKEND_F_* */
	__u16 reserved;
};

enum xdp_dr_mode {
	XDP_DR_MODE_NATIVE = 1,
	XDP_DR_MODE_GENERIC = 2,
	XDP_DR_MODE_OFFLOAD = 3,
};

/* Slot 0 of lb_info: which build runs here and how it was attached. */
struct lb_info {
	__u8 build_id[32]; /* SHA-256 of the object file */
	__u32 hash_seed;   /* copy of the program's read-only hash_seed */
	__u32 table_size;  /* MAGLEV_M of the build */
	__u32 ifindex;     /* interface the program is attached to */
	__u32 mode;        /* enum xdp_dr_mode */
};

/* Never used as data: a variable of this type puts the enums above (and maglev_chunk) into BTF, where the
 * loader reads them. */
struct xdp_dr_enums {
	enum xdp_dr_stat stat;
	enum xdp_dr_family family;
	enum service_flag flag;
	enum backend_flag backend_flag;
	enum xdp_dr_mode mode;
	enum xdp_dr_build build;
	enum conn_state conn_state;
	enum xdp_dr_event event;
	struct conn_key conn_key;
	struct conn_value conn_value;
	struct conn_bucket conn_bucket;
	enum service_slot_flag slot_flag;
	struct service_ekey ekey;
	struct lb_epoch epoch;
	struct maglev_chunk chunk; /* clang leaves a struct seen only through a map's inner value as a forward */
};

#endif
