// The libbpf layer: koffi bindings plus typed wrappers with errors that say what to do.
import './print';
export * from './errors';
export * from './codec';
export * from './btf';
export * from './map';
export * from './object';
export * from './xdp';
export * from './testrun';
export { setLibbpfVerbose } from './print';
export { fn, koffi, BPF_ANY, BPF_NOEXIST, BPF_EXIST, MAP_TYPE, XDP_ACTION, XDP_ACTION_NAME } from './ffi';
