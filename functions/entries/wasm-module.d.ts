// Build-time wasm imports (wrangler's CompiledWasm rule): the default export is a compiled module.
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}
