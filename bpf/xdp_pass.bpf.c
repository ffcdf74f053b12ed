/* Passes every frame. A veth hands frames that an XDP program sends out (XDP_TX, XDP_REDIRECT) only to a peer
 * that runs an XDP program itself, so the namespace lab puts this on the veth facing the load balancer; a real
 * NIC needs nothing of the kind. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
