// koffi bindings to libbpf.so.1 (the Debian 12 libbpf 1.1 ABI) and the few libc calls the loader needs.
// Only declarations live here; the typed wrappers beside this file give them errors and lifetimes.
import koffi from 'koffi';

function loadLibbpf(): koffi.IKoffiLib {
  try {
    return koffi.load('libbpf.so.1');
  } catch (e) {
    throw new Error(
      `cannot load libbpf.so.1 (${(e as Error).message}): install it with 'apt-get install libbpf1 libbpf-dev' ` +
        `(the README's set-up does this)`,
    );
  }
}

export const lib = loadLibbpf();
export const libc = koffi.load('libc.so.6');

koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');
koffi.opaque('btf');

// libbpf option structs: their first member is their own size, which is how libbpf tells versions apart.
export const OpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  _stub: 'uint32_t',
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'void *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

export const TestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

export const BatchOpts = koffi.struct('bpf_map_batch_opts', {
  sz: 'size_t',
  elem_flags: 'uint64_t',
  flags: 'uint64_t',
});

// Only the leading members we set; the rest of libbpf's 64-byte struct stays zero through padding.
export const LinkCreateOpts = koffi.struct('bpf_link_create_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  _rest: koffi.array('uint8_t', 52),
});

export const LinkUpdateOpts = koffi.struct('bpf_link_update_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  old_prog_fd: 'uint32_t',
});

export const XdpQueryOpts = koffi.struct('bpf_xdp_query_opts', {
  sz: 'size_t',
  prog_id: 'uint32_t',
  drv_prog_id: 'uint32_t',
  hw_prog_id: 'uint32_t',
  skb_prog_id: 'uint32_t',
  attach_mode: 'uint8_t',
});

export const MapCreateOpts = koffi.struct('bpf_map_create_opts', {
  sz: 'size_t',
  btf_fd: 'uint32_t',
  btf_key_type_id: 'uint32_t',
  btf_value_type_id: 'uint32_t',
  btf_vmlinux_value_type_id: 'uint32_t',
  inner_map_fd: 'uint32_t',
  map_flags: 'uint32_t',
  map_extra: 'uint64_t',
  numa_node: 'uint32_t',
  map_ifindex: 'uint32_t',
});

export const BtfType = koffi.struct('btf_type', { name_off: 'uint32_t', info: 'uint32_t', size_or_type: 'uint32_t' });
export const BtfMember = koffi.struct('btf_member', { name_off: 'uint32_t', type: 'uint32_t', offset: 'uint32_t' });
export const BtfEnum = koffi.struct('btf_enum', { name_off: 'uint32_t', val: 'int32_t' });
export const BtfArray = koffi.struct('btf_array', { type: 'uint32_t', index_type: 'uint32_t', nelems: 'uint32_t' });
export const BtfVarSecinfo = koffi.struct('btf_var_secinfo', { type: 'uint32_t', offset: 'uint32_t', size: 'uint32_t' });

export const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *args)');

export const fn = {
  libbpf_set_print: lib.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
  libbpf_num_possible_cpus: lib.func('int libbpf_num_possible_cpus(void)'),
  libbpf_major_version: lib.func('uint32_t libbpf_major_version(void)'),
  libbpf_minor_version: lib.func('uint32_t libbpf_minor_version(void)'),

  bpf_object__open_file: lib.func('bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  bpf_object__load: lib.func('int bpf_object__load(bpf_object *obj)'),
  bpf_object__close: lib.func('void bpf_object__close(bpf_object *obj)'),
  bpf_object__find_program_by_name: lib.func('bpf_program *bpf_object__find_program_by_name(bpf_object *obj, const char *name)'),
  bpf_object__find_map_by_name: lib.func('bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)'),
  bpf_object__next_map: lib.func('bpf_map *bpf_object__next_map(bpf_object *obj, bpf_map *map)'),
  bpf_object__next_program: lib.func('bpf_program *bpf_object__next_program(bpf_object *obj, bpf_program *prog)'),
  bpf_object__btf: lib.func('btf *bpf_object__btf(bpf_object *obj)'),

  bpf_program__fd: lib.func('int bpf_program__fd(bpf_program *prog)'),
  bpf_program__name: lib.func('const char *bpf_program__name(bpf_program *prog)'),

  bpf_map__fd: lib.func('int bpf_map__fd(bpf_map *map)'),
  bpf_map__name: lib.func('const char *bpf_map__name(bpf_map *map)'),
  bpf_map__type: lib.func('int bpf_map__type(bpf_map *map)'),
  bpf_map__key_size: lib.func('uint32_t bpf_map__key_size(bpf_map *map)'),
  bpf_map__value_size: lib.func('uint32_t bpf_map__value_size(bpf_map *map)'),
  bpf_map__max_entries: lib.func('uint32_t bpf_map__max_entries(bpf_map *map)'),
  bpf_map__inner_map: lib.func('bpf_map *bpf_map__inner_map(bpf_map *map)'),
  bpf_map__set_pin_path: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  bpf_map__reuse_fd: lib.func('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
  bpf_map__pin_path: lib.func('const char *bpf_map__pin_path(bpf_map *map)'),
  bpf_map__is_pinned: lib.func('bool bpf_map__is_pinned(bpf_map *map)'),
  bpf_map__unpin: lib.func('int bpf_map__unpin(bpf_map *map, const char *path)'),
  bpf_map__initial_value: lib.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *psize)'),
  bpf_map__set_initial_value: lib.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)'),

  bpf_map_create: lib.func('int bpf_map_create(int type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const bpf_map_create_opts *opts)'),
  bpf_map_lookup_elem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  bpf_map_update_elem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  bpf_map_delete_elem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  bpf_map_get_next_key: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
  bpf_map_lookup_batch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)'),
  bpf_map_update_batch: lib.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)'),
  bpf_map_delete_batch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)'),

  bpf_obj_pin: lib.func('int bpf_obj_pin(int fd, const char *pathname)'),
  bpf_obj_get: lib.func('int bpf_obj_get(const char *pathname)'),
  bpf_obj_get_info_by_fd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *info_len)'),
  bpf_map_get_fd_by_id: lib.func('int bpf_map_get_fd_by_id(uint32_t id)'),
  bpf_prog_get_fd_by_id: lib.func('int bpf_prog_get_fd_by_id(uint32_t id)'),

  bpf_link_create: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const bpf_link_create_opts *opts)'),
  bpf_link_detach: lib.func('int bpf_link_detach(int link_fd)'),
  bpf_link_update: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, const bpf_link_update_opts *opts)'),
  bpf_xdp_query: lib.func('int bpf_xdp_query(int ifindex, int flags, _Inout_ bpf_xdp_query_opts *opts)'),

  bpf_prog_test_run_opts: lib.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)'),

  btf__parse: lib.func('btf *btf__parse(const char *path, void *ext)'),
  btf__load_from_kernel_by_id: lib.func('btf *btf__load_from_kernel_by_id(uint32_t id)'),
  btf__free: lib.func('void btf__free(btf *btf)'),
  btf__type_cnt: lib.func('uint32_t btf__type_cnt(const btf *btf)'),
  btf__type_by_id: lib.func('const void *btf__type_by_id(const btf *btf, uint32_t id)'),
  btf__name_by_offset: lib.func('const char *btf__name_by_offset(const btf *btf, uint32_t offset)'),
  btf__find_by_name_kind: lib.func('int btf__find_by_name_kind(const btf *btf, const char *name, uint32_t kind)'),
  btf__resolve_size: lib.func('int64_t btf__resolve_size(const btf *btf, uint32_t id)'),

  close: libc.func('int close(int fd)'),
  // membarrier(2) through syscall(2) with a fixed prototype: koffi runs only fixed prototypes on a worker thread
  // (.async), and a grace-period wait should not stop the event loop.
  membarrier: libc.func('long syscall(long number, int cmd, unsigned int flags, int cpu_id)'),
  flock: libc.func('int flock(int fd, int operation)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *arg)'),
  if_nametoindex: libc.func('uint32_t if_nametoindex(const char *name)'),
  if_indextoname: libc.func('char *if_indextoname(uint32_t ifindex, _Out_ uint8_t *buf)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *ap)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const uint8_t *addr, uint32_t len)'),
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, size_t len, int flags)'),
  recv: libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)'),
  sched_setaffinity: libc.func('int sched_setaffinity(int pid, size_t cpusetsize, const uint8_t *mask)'),
  prctl: libc.func('int prctl(int option, ...)'),
};

// Kernel ABI numbers (include/uapi/linux/bpf.h, if_link.h).
export const BPF_XDP = 37;
export const BPF_F_TEST_XDP_LIVE_FRAMES = 2;
export const CLONE_NEWNET = 0x40000000;
export const PR_SET_PDEATHSIG = 1;
export const SIGKILL = 9;
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const XDP_FLAGS = { UPDATE_IF_NOEXIST: 1, SKB_MODE: 2, DRV_MODE: 4, HW_MODE: 8, REPLACE: 16 } as const;
export const XDP_ATTACHED = { NONE: 0, DRV: 1, SKB: 2, HW: 3, MULTI: 4 } as const;
export const MAP_TYPE = {
  HASH: 1, ARRAY: 2, PERCPU_HASH: 5, PERCPU_ARRAY: 6, ARRAY_OF_MAPS: 12, HASH_OF_MAPS: 13, DEVMAP: 14,
  DEVMAP_HASH: 25, LRU_HASH: 9, LRU_PERCPU_HASH: 10,
} as const;
export const XDP_ACTION = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
export const XDP_ACTION_NAME = ['XDP_ABORTED', 'XDP_DROP', 'XDP_PASS', 'XDP_TX', 'XDP_REDIRECT'];

export { koffi };
