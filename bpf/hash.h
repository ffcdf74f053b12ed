/* Seeded flow hash, same result on every node: 64-bit words of the tuple, each XORed with the seed and multiplied
 * by its own odd constant, summed; the hash is the top half of the sum. Bit i of a product depends on input bits
 * 0..i, so the top half sees every input bit, and the table slot (hash * M >> 32) is taken from the top of that.
 * One multiply for IPv4: the fast path is measured in nanoseconds, and a final mix cost a quarter of its time.
 * Within a service the destination address and protocol are fixed, so the 5-tuple hash takes the source address
 * and both ports; the L3 hash takes both addresses. */
#ifndef XDP_DR_HASH_H
#define XDP_DR_HASH_H

#include <linux/types.h>
#include "xdp_dr_kern_user.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* One constant per word position, so that swapping two words changes the hash. */
#define FLOW_HASH_K0 0x9e3779b97f4a7c15ULL
#define FLOW_HASH_K1 0xc2b2ae3d27d4eb4fULL
#define FLOW_HASH_K2 0x165667b19e3779f9ULL
#define FLOW_HASH_K3 0x27d4eb2f165667c5ULL
#define FLOW_HASH_K4 0xff51afd7ed558ccdULL

static __always_inline __u64 hash_word(__u64 w, __u64 seed, __u64 k)
{
	return (w ^ seed) * k;
}

/* IPv4: the source address in the low half, so that its bits and the ports' reach the top through the carries;
 * other is the ports word (both ports as they sit in the header) or, for the L3 hash, the destination address. */
static __always_inline __u32 flow_hash_v4(__u32 src, __u32 other, __u64 seed)
{
	return hash_word(src | (__u64)other << 32, seed, FLOW_HASH_K0) >> 32;
}

/* IPv6: the same with the address in two words, and the destination in two more for the L3 hash. */
static __always_inline __u32 flow_hash_v6(const __u32 src[4], const __u32 dst[4], __u32 ports, int l3_only, __u64 seed)
{
	__u64 h = hash_word(src[0] | (__u64)src[1] << 32, seed, FLOW_HASH_K0) +
		  hash_word(src[2] | (__u64)src[3] << 32, seed, FLOW_HASH_K1);

	if (l3_only)
		h += hash_word(dst[0] | (__u64)dst[1] << 32, seed, FLOW_HASH_K2) +
		     hash_word(dst[2] | (__u64)dst[3] << 32, seed, FLOW_HASH_K3);
	else
		h += hash_word(ports, seed, FLOW_HASH_K4);
	return h >> 32;
}

/* The two buckets of a flow's connection record, out of n: the first from its 5-tuple hash, the second from that
 * hash mixed again, so that flows that share a first bucket mostly have different second ones. Multiply-shift
 * scales a hash to n buckets, so n need not be a power of 2. The second bucket is another of the 16 buckets (4 KB:
 * CONN_GROUP_BUCKETS in xdp_dr_kern_user.h) that the first one's index shares all but its low 4 bits with: a
 * flow's two buckets lie in one page, so a lookup that reads both costs one TLB miss, which dominates a hit once
 * the table outgrows the TLB. (The last group of a table whose size is not a multiple of 16 wraps around.) The
 * loader computes the same (connBuckets). */

static __always_inline __u32 conn_bucket1(__u32 h, __u32 n)
{
	return ((__u64)h * n) >> 32;
}

static __always_inline __u32 conn_bucket2(__u32 h, __u64 seed, __u32 n)
{
	__u32 d = 1 + (((hash_word(h, seed, FLOW_HASH_K3) >> 32) * (CONN_GROUP_BUCKETS - 1)) >> 32);

	return (conn_bucket1(h, n) ^ d) % n;
}

/* The check word of a connection record: the record's 5-tuple hash h with the fields a packet is routed by. A record
 * whose key and value come from different writes fails it (but for a chance of 2^-32). */
static __always_inline __u32 conn_check(__u32 h, __u32 backend, __u32 gen, __u32 service, __u64 seed)
{
	return (hash_word(backend | (__u64)gen << 32, seed, FLOW_HASH_K1) +
		hash_word(service | (__u64)h << 32, seed, FLOW_HASH_K2)) >> 32;
}

/* Service index slot of a key, from its words as they sit in memory (little-endian loads, the port in network
 * order): folded, then Fibonacci hashing keeps the top bits. The loader computes the same (serviceIndexSlot). */
static __always_inline __u32 service_index_slot(const __u32 addr[4], __u16 port, __u8 proto, __u8 family, int bits)
{
	__u32 h = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ ((__u32)port << 16) ^ ((__u32)proto << 8) ^ family;

	return (h * 0x9e3779b1) >> (32 - bits);
}

#endif
