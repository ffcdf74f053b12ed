/* The far end of the live benchmark: counts and drops what the program under test forwarded, so that every
 * program (including the minimal one, which keeps no counters) is measured by the same counter. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Slot 0: frames that arrived. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&sink_count, &key);

	if (n)
		*n += 1;
	return XDP_DROP;
}
