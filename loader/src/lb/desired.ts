// The running state written out as a config, so that a command like `backend add` is "the running config plus
// one backend", checked by exactly the rules a config file gets and applied by the same code.
import { DEFAULTS, type XdpMode } from '../config';
import { UsageError } from '../errors';
import { linkByIndex } from './netif';
import { LbState } from './state';

export interface RawBackend { address: string; mac?: string; weight: number; interface?: string }
export interface RawService { vip: string; port: number; protocol: string; hash: string; conn_table?: boolean; backends: RawBackend[] }
export interface RawConfig { hash_seed: number; interfaces: { name: string; mode: XdpMode }[]; services: RawService[] }

export function rawFromState(iface: string, state: LbState): { raw: RawConfig; resolved: Set<string> } {
  const resolved = new Set<string>();
  const services = state.services.map((s) => ({
    vip: s.vip,
    port: s.port,
    protocol: s.protocol,
    hash: s.hash,
    conn_table: s.connTable,
    backends: s.backends.map((b) => {
      if (b.macResolved) resolved.add(b.address);
      const out: RawBackend = { address: b.address, mac: b.mac, weight: b.weight };
      if (b.ifindex) {
        const link = linkByIndex(b.ifindex);
        if (!link)
          throw new UsageError(
            `backend ${b.address} of ${s.vip}:${s.port}/${s.protocol} leaves through ifindex ${b.ifindex}, which no longer ` +
              `exists: give it a new interface with 'xdp-dr backend edit ... --iface <name>' or remove it`,
          );
        out.interface = link.name;
      }
      return out;
    }),
  }));
  return {
    raw: { hash_seed: state.hashSeed, interfaces: [{ name: iface, mode: state.mode ?? DEFAULTS.mode }], services },
    resolved,
  };
}
