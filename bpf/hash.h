/* Seeded flow hash: a 32-bit multiply-rotate mix over the words of the tuple, same result on every node. */
#ifndef XDP_DR_HASH_H
#define XDP_DR_HASH_H

#include <linux/types.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 mix_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Final avalanche, so that nearby tuples land far apart in the table. */
static __always_inline __u32 finish(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Service index slot of a key, from its words as they sit in memory (little-endian loads, the port in network
 * order): folded, then Fibonacci hashing keeps the top bits. The loader computes the same (serviceIndexSlot). */
static __always_inline __u32 service_index_slot(const __u32 addr[4], __u16 port, __u8 proto, __u8 family, int bits)
{
	__u32 h = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ ((__u32)port << 16) ^ ((__u32)proto << 8) ^ family;

	return (h * 0x9e3779b1) >> (32 - bits);
}

#endif
