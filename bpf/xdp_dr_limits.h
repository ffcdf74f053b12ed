/* Build-time limits and constants of the data path; each limit can be overridden with -D at build time. */
#ifndef XDP_DR_LIMITS_H
#define XDP_DR_LIMITS_H

/* Services (VIP, port, protocol) the program can hold; also the size of the ring and counter arrays. */
#ifndef MAX_SERVICES
#define MAX_SERVICES 1024
#endif

/* The service index has 2^SERVICE_INDEX_BITS slots; 4x MAX_SERVICES keeps most services out of the overflow. */
#ifndef SERVICE_INDEX_BITS
#define SERVICE_INDEX_BITS 12
#endif

/* Backend ids run 1..MAX_BACKENDS-1; id 0 means "unset" in a Maglev table slot. Tables hold 16-bit ids. */
#ifndef MAX_BACKENDS
#define MAX_BACKENDS 4096
#endif
#if MAX_BACKENDS > 65536
#error "MAX_BACKENDS must be at most 65536: Maglev table slots hold 16-bit backend ids"
#endif

/* Maglev table size per service; must be prime (the loader checks it). */
#ifndef MAGLEV_M
#define MAGLEV_M 65537
#endif

/* Records in a bucket of the connection table: one 64-byte record per cache line, four lines a bucket. */
#define CONN_WAYS 4

/* TCP flows the connection table holds (a multiple of CONN_WAYS); when both buckets of a new flow are full, the
 * record seen longest ago of the two makes room. */
#ifndef MAX_CONNS
#define MAX_CONNS 262144
#endif
#if MAX_CONNS % CONN_WAYS || MAX_CONNS < 2 * CONN_WAYS
#error "MAX_CONNS must be a multiple of 4 and at least 8: the connection table is made of buckets of 4 records"
#endif

/* Seconds a tracked TCP flow may be idle before its record no longer binds it (LVS's established timeout). */
#ifndef CONN_IDLE_TIMEOUT_S
#define CONN_IDLE_TIMEOUT_S 900
#endif

/* Seconds a flow keeps its backend after a FIN or RST, for the retransmissions and last ACKs of the close. */
#ifndef CONN_CLOSING_TIMEOUT_S
#define CONN_CLOSING_TIMEOUT_S 10
#endif

/* Egress interfaces other than the ingress one that backends may sit behind. */
#ifndef MAX_TX_PORTS
#define MAX_TX_PORTS 64
#endif

/* One bit per value of the low 16 bits of a destination address, in 64-bit words. */
#define VIP_FILTER_WORDS (65536 / 64)

/* 802.1Q / 802.1ad tags walked before the IP header. */
#define VLAN_MAX_DEPTH 2

/* IPv6 extension headers (hop-by-hop, routing, destination options, fragment) walked before L4. */
#define IPV6_EXT_MAX_CHAIN 4

#endif
