// A load balancer on one interface: its program and maps pinned under <pin base>/<iface>/ and its XDP link
// pinned there too, so it keeps forwarding with no xdp-dr process running and every CLI call finds it.
import fs from 'node:fs';
import path from 'node:path';
import {
  Dataplane, PIN_BASE, LINK_PIN, PROG_PIN, attachPinned, detachPinned, removePinDir, buildId, ensureBpffs,
} from '../dataplane/dataplane';
import { ensureObject } from '../dataplane/build';
import { queryXdp, XdpMode, replaceLinkProgram, check, fn, BpfError } from '../libbpf';
import { UsageError } from '../errors';
import { linkInfo, NetifError, LinkInfo } from './netif';
import { MODE_VALUE, readState } from './state';

/** Where load balancers are pinned; XDP_DR_PIN_BASE moves it (tests keep clear of a real deployment). */
export function pinBase(): string {
  return process.env.XDP_DR_PIN_BASE || PIN_BASE;
}

/** bpffs refuses names with a dot (reserved there), which VLAN interfaces have (eth0.100); no interface name can
 * have a colon, so dots become colons in the pin directory's name and back. */
export function pinDirOf(iface: string): string {
  return path.join(pinBase(), iface.replace(/\./g, ':'));
}

/** Interfaces that have a load balancer pinned, sorted by name. */
export function attachedInterfaces(): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(pinBase());
  } catch {
    return [];
  }
  return names.filter((n) => fs.existsSync(path.join(pinBase(), n, 'lb_info'))).map((n) => n.replace(/:/g, '.')).sort();
}

/** The interface a command acts on: the one given, else the only one attached. */
export function chooseInterface(given?: string): string {
  const all = attachedInterfaces();
  if (given !== undefined) {
    if (!all.includes(given))
      throw new UsageError(
        `xdp-dr is not attached to ${given}` +
          (all.length ? ` (it runs on ${all.join(', ')})` : '') + `: attach it first with 'xdp-dr attach ${given}'`,
      );
    return given;
  }
  if (all.length === 1) return all[0];
  if (all.length === 0) throw new UsageError("xdp-dr is not attached to any interface: start with 'xdp-dr attach <iface>'");
  throw new UsageError(`xdp-dr runs on ${all.join(', ')}: say which with -i <iface>`);
}

export function openLb(iface: string): Dataplane {
  return Dataplane.open(pinDirOf(iface));
}

/** The interface, or a usage error that says how to find the right name. */
export function requireLink(iface: string): LinkInfo {
  try {
    return linkInfo(iface);
  } catch (e) {
    if (e instanceof NetifError) throw new UsageError(e.message);
    throw e;
  }
}

export interface AttachResult {
  dp: Dataplane;
  /** False when the same build already ran there (nothing was done). */
  attached: boolean;
}

/**
 * Loads the program, pins it and its maps, and attaches it through a pinned link. Attaching the same build
 * again is a no-op (with sameBuild false, any running build with this seed and mode is taken as it is);
 * on any failure the interface and the pins are left as they were.
 */
export function attach(iface: string, mode: XdpMode, hashSeed: number, opts: { sameBuild?: boolean } = {}): AttachResult {
  const sameBuild = opts.sameBuild ?? true;
  const link = requireLink(iface);
  ensureBpffs();
  const pinDir = pinDirOf(iface);
  const objPath = ensureObject('xdp_dr');
  const build = buildId(objPath).toString('hex');

  if (fs.existsSync(path.join(pinDir, LINK_PIN))) {
    const dp = openLb(iface);
    try {
      const st = readState(dp);
      const xdp = queryXdp(link.ifindex, iface);
      if (st.ifindex !== link.ifindex || xdp.mode === 'none')
        throw new UsageError(
          `${pinDir} describes an attachment that is gone (was ${iface} deleted and created again?): ` +
            `run 'xdp-dr detach ${iface}' to clear it, then attach`,
        );
      if (sameBuild && st.buildId !== build)
        throw new UsageError(
          `${iface} runs another build of xdp-dr (${st.buildId.slice(0, 12)}, this one is ${build.slice(0, 12)}): ` +
            `to switch, 'xdp-dr detach ${iface}' then attach (flows are rebalanced)`,
        );
      if (st.hashSeed !== hashSeed)
        throw new UsageError(
          `${iface} runs with hash seed ${st.hashSeed}, not ${hashSeed}: the seed is built into the loaded program; ` +
            `'xdp-dr detach ${iface}' then attach with the new seed (flows are rebalanced)`,
        );
      if (st.mode !== mode)
        throw new UsageError(`${iface} runs in ${st.mode} mode, not ${mode}: 'xdp-dr detach ${iface}' then attach in ${mode} mode`);
      return { dp, attached: false };
    } catch (e) {
      dp.close();
      throw e;
    }
  }

  // Someone else's program: refuse before loading anything, so nothing needs undoing.
  const other = queryXdp(link.ifindex, iface);
  if (other.mode !== 'none')
    throw new UsageError(
      `${iface} already runs another XDP program (id ${other.progId}, ${other.mode} mode): ` +
        `remove it first (e.g. 'ip link set dev ${iface} xdp off') or pick another interface`,
    );

  const existed = fs.existsSync(pinDir);
  let dp: Dataplane | undefined;
  try {
    dp = Dataplane.load({ pinDir, hashSeed, objectPath: objPath });
    const info = dp.lbInfo.lookup(0)!;
    dp.lbInfo.update(0, { ...info, ifindex: link.ifindex, mode: MODE_VALUE[mode] });
    attachPinned(dp.progFd!, iface, mode, pinDir);
    return { dp, attached: true };
  } catch (e) {
    if (dp) {
      if (existed) dp.close();
      else dp.discard();
    } else if (!existed) removePinDir(pinDir);
    throw e;
  }
}

/** Detaches the program and removes every pin of that interface; false when nothing was there. */
export function detach(iface: string): boolean {
  const pinDir = pinDirOf(iface);
  if (!fs.existsSync(pinDir)) return false;
  try {
    detachPinned(pinDir, iface);
  } catch (e) {
    // A link whose interface is gone cannot be detached, but its pin must still go.
    if (fs.existsSync(path.join(pinDir, LINK_PIN)) && interfaceExists(iface)) throw e;
  }
  removePinDir(pinDir);
  return true;
}

export function interfaceExists(iface: string): boolean {
  try {
    linkInfo(iface);
    return true;
  } catch {
    return false;
  }
}

export interface UpgradeResult {
  from: string;
  to: string;
  /** False when the interface already ran this build. */
  upgraded: boolean;
}

/**
 * Replaces the program running on an interface with another build, keeping every map: the new program is loaded
 * onto the pinned maps (libbpf refuses maps whose layout the new build does not share) and swapped in on the
 * existing XDP link in one kernel operation, so no packet meets the interface without a program or a table.
 * On any failure the old program keeps running and the pins are as they were.
 */
export function upgrade(iface: string, objectPath: string): UpgradeResult {
  const pinDir = pinDirOf(iface);
  const linkPin = path.join(pinDir, LINK_PIN);
  if (!fs.existsSync(linkPin)) throw new UsageError(`xdp-dr is not attached to ${iface}: nothing to upgrade (xdp-dr attach ${iface})`);
  const old = openLb(iface);
  const st = readState(old);
  const info = old.lbInfo.lookup(0)!;
  const oldProgFd = old.progFd;
  const to = buildId(objectPath).toString('hex');
  try {
    if (st.buildId === to) return { from: st.buildId, to, upgraded: false };
    let next: Dataplane | undefined;
    const linkFd = check(fn.bpf_obj_get(linkPin), 'bpf_obj_get', `XDP link of ${iface} at ${linkPin}`);
    try {
      next = Dataplane.load({ pinDir, hashSeed: st.hashSeed, objectPath });
      replaceLinkProgram(linkFd, next.progFd!, `XDP link of ${iface}`);
      return { from: st.buildId, to, upgraded: true };
    } catch (e) {
      // The pinned program and lb_info must describe what runs: the old program, if the swap did not happen.
      if (next) {
        const progPin = path.join(pinDir, PROG_PIN);
        fs.rmSync(progPin, { force: true });
        if (oldProgFd !== undefined) fn.bpf_obj_pin(oldProgFd, progPin);
        old.lbInfo.update(0, info);
      }
      if (e instanceof BpfError && /couldn't reuse pinned map|incompatible/i.test(`${e.message} ${e.libbpfMessage ?? ''}`))
        throw new UsageError(
          `the new build's maps do not match the running ones (${e.message.split('\n')[0]}): it cannot take over live. ` +
            `Migrate with 'xdp-dr detach ${iface}', 'xdp-dr attach ${iface}' and 'xdp-dr apply -c <config>' (flows are rebalanced ` +
            'and the connection table starts empty); the running load balancer is untouched',
        );
      throw e;
    } finally {
      next?.close();
      fn.close(linkFd);
    }
  } finally {
    old.close();
  }
}
