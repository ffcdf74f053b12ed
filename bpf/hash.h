/* Seeded flow hash, same result on every node. The tuple goes in as 64-bit words, each XORed with the seed and
 * multiplied by its own odd constant: the products do not depend on one another, so they run side by side instead
 * of as one chain through every word, and a final mix spreads every input bit over the result. */
#ifndef XDP_DR_HASH_H
#define XDP_DR_HASH_H

#include <linux/types.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* One constant per word position, so that swapping two words changes the hash. */
#define FLOW_HASH_K0 0x9e3779b97f4a7c15ULL
#define FLOW_HASH_K1 0xc2b2ae3d27d4eb4fULL
#define FLOW_HASH_K2 0x165667b19e3779f9ULL
#define FLOW_HASH_K3 0x27d4eb2f165667c5ULL
#define FLOW_HASH_K4 0xff51afd7ed558ccdULL
#define FLOW_HASH_MIX 0xd6e8feb86659fd93ULL

static __always_inline __u64 hash_word(__u64 w, __u64 seed, __u64 k)
{
	return (w ^ seed) * k;
}

/* A product's high bits see all of its input but its low bits only the input's low bits: folding the halves
 * before each multiply lets every bit reach the whole result. */
static __always_inline __u32 hash_finish(__u64 h)
{
	h ^= h >> 32;
	h *= FLOW_HASH_MIX;
	h ^= h >> 32;
	h *= FLOW_HASH_MIX;
	return h ^ (h >> 32);
}

/* Service index slot of a key, from its words as they sit in memory (little-endian loads, the port in network
 * order): folded, then Fibonacci hashing keeps the top bits. The loader computes the same (serviceIndexSlot). */
static __always_inline __u32 service_index_slot(const __u32 addr[4], __u16 port, __u8 proto, __u8 family, int bits)
{
	__u32 h = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ ((__u32)port << 16) ^ ((__u32)proto << 8) ^ family;

	return (h * 0x9e3779b1) >> (32 - bits);
}

#endif
