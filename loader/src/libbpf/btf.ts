// Reads the BTF of a compiled object through libbpf: struct layouts, enums and .rodata variables,
// so that the TypeScript side can be checked against the C definitions instead of trusting a copy.
import { fn, koffi, BtfType, BtfMember, BtfEnum, BtfVarSecinfo } from './ffi';
import { BpfError } from './errors';
import { recentLibbpfMessages } from './print';

const KIND = { INT: 1, PTR: 2, ARRAY: 3, STRUCT: 4, UNION: 5, ENUM: 6, TYPEDEF: 8, VOLATILE: 9, CONST: 10, VAR: 14, DATASEC: 15 };
const TYPE_SIZE = 12;

export interface BtfStructMember { name: string; offset: number; size: number }
export interface BtfStruct { name: string; size: number; members: BtfStructMember[] }
export interface BtfVar { name: string; offset: number; size: number }

export class Btf {
  private constructor(private handle: unknown, private readonly owned: boolean) {}

  /** The BTF libbpf holds for an opened object: its data-section offsets are fixed up, unlike the raw ELF's. */
  static borrow(handle: unknown): Btf {
    return new Btf(handle, false);
  }

  static fromFile(path: string): Btf {
    const h = fn.btf__parse(path, null);
    if (!h) {
      const errno = koffi.errno();
      throw new BpfError({
        op: 'btf__parse',
        errno,
        object: path,
        hint: 'the object must be built with clang -g so that it carries BTF',
        libbpfMessage: recentLibbpfMessages(),
      });
    }
    return new Btf(h, true);
  }

  /** BTF the kernel holds (a loaded program's or map's), by id. */
  static fromKernel(id: number): Btf {
    const h = fn.btf__load_from_kernel_by_id(id);
    if (!h)
      throw new BpfError({ op: 'btf__load_from_kernel_by_id', errno: koffi.errno(), object: `BTF id ${id}`, libbpfMessage: recentLibbpfMessages() });
    return new Btf(h, true);
  }

  close(): void {
    if (this.handle && this.owned) fn.btf__free(this.handle);
    this.handle = null;
  }

  private type(id: number): { ptr: unknown; name: string; kind: number; vlen: number; sizeOrType: number } {
    const ptr = fn.btf__type_by_id(this.handle, id);
    const t = koffi.decode(ptr, BtfType) as { name_off: number; info: number; size_or_type: number };
    return {
      ptr,
      name: fn.btf__name_by_offset(this.handle, t.name_off) ?? '',
      kind: (t.info >>> 24) & 0x1f,
      vlen: t.info & 0xffff,
      sizeOrType: t.size_or_type,
    };
  }

  private find(name: string, kind: number): number {
    const id = fn.btf__find_by_name_kind(this.handle, name, kind);
    if (id < 0) throw new Error(`BTF has no ${kindName(kind)} named '${name}'`);
    return id;
  }

  sizeOf(id: number): number {
    return Number(fn.btf__resolve_size(this.handle, id));
  }

  struct(name: string): BtfStruct {
    const t = this.type(this.find(name, KIND.STRUCT));
    const members = koffi.decode(t.ptr, TYPE_SIZE, BtfMember, t.vlen) as { name_off: number; type: number; offset: number }[];
    return {
      name,
      size: t.sizeOrType,
      members: members.map((m) => ({
        name: fn.btf__name_by_offset(this.handle, m.name_off) ?? '',
        // Without the kind_flag bit the offset is plain bits; our structs hold no bitfields.
        offset: m.offset / 8,
        size: this.sizeOf(m.type),
      })),
    };
  }

  enumValues(name: string): Map<string, number> {
    const t = this.type(this.find(name, KIND.ENUM));
    const values = koffi.decode(t.ptr, TYPE_SIZE, BtfEnum, t.vlen) as { name_off: number; val: number }[];
    return new Map(values.map((v) => [fn.btf__name_by_offset(this.handle, v.name_off) ?? '', v.val]));
  }

  // Variables of a data section such as '.rodata', with their offsets inside it.
  sectionVars(section: string): BtfVar[] {
    const t = this.type(this.find(section, KIND.DATASEC));
    const infos = koffi.decode(t.ptr, TYPE_SIZE, BtfVarSecinfo, t.vlen) as { type: number; offset: number; size: number }[];
    return infos.map((v) => ({ name: this.type(v.type).name, offset: v.offset, size: v.size }));
  }
}

function kindName(kind: number): string {
  return Object.entries(KIND).find(([, v]) => v === kind)?.[0].toLowerCase() ?? `kind ${kind}`;
}
