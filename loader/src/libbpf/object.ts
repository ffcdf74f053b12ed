// A BPF object file through its life: open (with load-time constants), load, find programs and maps, close.
import fs from 'node:fs';
import { fn, koffi, OpenOpts } from './ffi';
import { BpfError, check } from './errors';
import { recentLibbpfMessages, clearLibbpfMessages } from './print';
import { Btf } from './btf';
import { RawMap } from './map';

export interface OpenOptions {
  /** Maps declared with pinning are pinned here by name on load, and reused when a compatible pin exists. */
  pinRoot?: string;
  /** Values for `const volatile` globals in .rodata, by variable name. */
  constants?: Record<string, number | bigint>;
  /** Size of the verifier log kept for a failed load. */
  logSize?: number;
}

export class BpfObject {
  private handle: unknown;
  private loaded = false;
  private logBuf: Buffer;
  readonly btf: Btf;

  private constructor(readonly path: string, handle: unknown, logBuf: Buffer) {
    this.handle = handle;
    this.logBuf = logBuf;
    const btf = fn.bpf_object__btf(handle);
    if (!btf) throw new Error(`${path} carries no BTF: build it with clang -g (make does)`);
    this.btf = Btf.borrow(btf);
  }

  static open(path: string, opts: OpenOptions = {}): BpfObject {
    if (!fs.existsSync(path)) throw new Error(`BPF object ${path} does not exist: build it with 'make'`);
    clearLibbpfMessages();
    const logBuf = Buffer.alloc(opts.logSize ?? 1 << 20);
    const h = fn.bpf_object__open_file(path, {
      sz: koffi.sizeof(OpenOpts),
      object_name: null,
      relaxed_maps: false,
      pin_root_path: opts.pinRoot ?? null,
      _stub: 0,
      kconfig: null,
      btf_custom_path: null,
      kernel_log_buf: logBuf,
      kernel_log_size: logBuf.length,
      kernel_log_level: 0,
    });
    if (!h) {
      throw new BpfError({
        op: 'bpf_object__open_file',
        errno: koffi.errno(),
        object: path,
        libbpfMessage: recentLibbpfMessages(),
        hint: 'rebuild the object with make; it must be an ELF file compiled with clang -target bpf -g',
      });
    }
    let obj: BpfObject;
    try {
      obj = new BpfObject(path, h, logBuf);
    } catch (e) {
      fn.bpf_object__close(h);
      throw e;
    }
    try {
      if (opts.constants) obj.setConstants(opts.constants);
    } catch (e) {
      obj.close();
      throw e;
    }
    return obj;
  }

  private rodataMap(): unknown {
    for (let m = fn.bpf_object__next_map(this.handle, null); m; m = fn.bpf_object__next_map(this.handle, m)) {
      if (String(fn.bpf_map__name(m)).endsWith('.rodata')) return m;
    }
    throw new Error(`${this.path} has no .rodata section: it declares no load-time constants`);
  }

  /** Writes `const volatile` globals before load, so the verifier sees them as constants. */
  setConstants(values: Record<string, number | bigint>): void {
    if (this.loaded) throw new Error('load-time constants must be set before load()');
    const map = this.rodataMap();
    const vars = new Map(this.btf.sectionVars('.rodata').map((v) => [v.name, v]));
    const size = [0];
    const ptr = fn.bpf_map__initial_value(map, size);
    const data = Buffer.from(koffi.decode(ptr, koffi.array('uint8_t', size[0])) as number[]);
    for (const [name, value] of Object.entries(values)) {
      const v = vars.get(name);
      if (!v) throw new Error(`${this.path} has no load-time constant '${name}' (has: ${[...vars.keys()].join(', ')})`);
      if (v.size === 8) data.writeBigUInt64LE(BigInt(value), v.offset);
      else if (v.size === 4) data.writeUInt32LE(Number(value) >>> 0, v.offset);
      else if (v.size === 2) data.writeUInt16LE(Number(value), v.offset);
      else if (v.size === 1) data.writeUInt8(Number(value), v.offset);
      else throw new Error(`load-time constant '${name}' has unsupported size ${v.size}`);
    }
    check(fn.bpf_map__set_initial_value(map, data, data.length), 'bpf_map__set_initial_value', `${this.path} .rodata`);
  }

  load(): void {
    clearLibbpfMessages();
    const ret = fn.bpf_object__load(this.handle);
    if (ret < 0) {
      const verifier = this.logBuf.toString('utf8').replace(/\0.*$/s, '').trim();
      const said = [recentLibbpfMessages(), verifier && `verifier log (tail):\n${verifier.split('\n').slice(-25).join('\n')}`]
        .filter(Boolean)
        .join('\n');
      const errno = -ret;
      throw new BpfError({
        op: 'bpf_object__load',
        errno,
        object: this.path,
        libbpfMessage: said || undefined,
        hint:
          errno === 1 || errno === 13
            ? 'loading BPF needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)'
            : /couldn't reuse pinned map|incompatible/i.test(said)
              ? 'maps pinned by another build are in the way: detach the running load balancer first (xdp-dr detach <iface>)'
              : !fs.existsSync('/sys/kernel/btf/vmlinux')
                ? 'this kernel has no BTF (/sys/kernel/btf/vmlinux); use a kernel built with CONFIG_DEBUG_INFO_BTF=y'
                : undefined,
      });
    }
    this.loaded = true;
  }

  programFd(name: string): number {
    const p = fn.bpf_object__find_program_by_name(this.handle, name);
    if (!p) throw new Error(`${this.path} has no program '${name}'`);
    const fd = fn.bpf_program__fd(p);
    if (fd < 0) throw new Error(`program '${name}' is not loaded yet: call load() first`);
    return fd;
  }

  /**
   * Makes the object use an existing map (before load) without libbpf's pinned-map comparison, for map types
   * whose flags the kernel changes at creation (device maps become read-only for programs), so that the
   * comparison fails for a map made by this very object. The caller checks sizes and entries.
   */
  reuseMap(name: string, map: RawMap): void {
    const def = this.mapDef(name);
    if (def.type !== map.info.type || def.keySize !== map.info.keySize || def.valueSize !== map.info.valueSize || def.maxEntries !== map.info.maxEntries)
      throw new BpfError({
        op: 'bpf_map__reuse_fd', errno: 22, object: `map '${name}'`,
        hint: 'maps pinned by another build are in the way: detach the running load balancer first (xdp-dr detach <iface>)',
        libbpfMessage: `couldn't reuse pinned map '${name}': parameter mismatch`,
      });
    check(fn.bpf_map__reuse_fd(this.mapHandle(name), map.fd), 'bpf_map__reuse_fd', `map '${name}'`);
  }

  private mapHandle(name: string): unknown {
    const m = fn.bpf_object__find_map_by_name(this.handle, name);
    if (!m) throw new Error(`${this.path} has no map '${name}'`);
    return m;
  }

  /** Declared limits of a map, available before load. */
  mapDef(name: string): { type: number; keySize: number; valueSize: number; maxEntries: number } {
    const m = this.mapHandle(name);
    return {
      type: fn.bpf_map__type(m),
      keySize: fn.bpf_map__key_size(m),
      valueSize: fn.bpf_map__value_size(m),
      maxEntries: fn.bpf_map__max_entries(m),
    };
  }

  /** Declared limits of the template of a map-in-map's inner maps. */
  innerMapDef(name: string): { type: number; keySize: number; valueSize: number; maxEntries: number } {
    const inner = fn.bpf_map__inner_map(this.mapHandle(name));
    if (!inner) throw new Error(`map '${name}' is not a map of maps`);
    return {
      type: fn.bpf_map__type(inner),
      keySize: fn.bpf_map__key_size(inner),
      valueSize: fn.bpf_map__value_size(inner),
      maxEntries: fn.bpf_map__max_entries(inner),
    };
  }

  mapNames(): string[] {
    const out: string[] = [];
    for (let m = fn.bpf_object__next_map(this.handle, null); m; m = fn.bpf_object__next_map(this.handle, m))
      out.push(String(fn.bpf_map__name(m)));
    return out;
  }

  /** The loaded map; the fd stays owned by the object (closed with it). */
  map(name: string): RawMap {
    const fd = fn.bpf_map__fd(this.mapHandle(name));
    if (fd < 0) throw new Error(`map '${name}' is not created yet: call load() first`);
    return new RawMap(fd, name, false);
  }

  pinPath(name: string): string | undefined {
    return fn.bpf_map__pin_path(this.mapHandle(name)) ?? undefined;
  }

  close(): void {
    if (this.handle) fn.bpf_object__close(this.handle);
    this.handle = null;
    this.btf.close();
  }
}
