// Types of the DICOM codecs' package files (dicom-codecs.ts), which ship without them: the
// Emscripten glue's default export is a module factory (typed where it is used), and the .wasm,
// imported at build time in workerd (wrangler's CompiledWasm rule), a compiled module.
declare module '@cornerstonejs/codec-charls/decodewasmjs' {
  const factory: (overrides: Record<string, unknown>) => Promise<unknown>;
  export default factory;
}
declare module '@cornerstonejs/codec-openjpeg/decodewasmjs' {
  const factory: (overrides: Record<string, unknown>) => Promise<unknown>;
  export default factory;
}
declare module '@cornerstonejs/codec-charls/decodewasm' {
  const module: WebAssembly.Module;
  export default module;
}
declare module '@cornerstonejs/codec-openjpeg/decodewasm' {
  const module: WebAssembly.Module;
  export default module;
}
