// Deno's WebGPU refuses a SharedArrayBuffer in GPUQueue.writeBuffer ("data must be an ArrayBuffer
// or ArrayBufferView"); browsers accept it. onnxruntime-web's WebGPU backend uploads straight from
// its wasm memory, which is shared (the threaded build), so under Deno every upload failed and
// loadWebEncoder fell back to wasm. This copies shared-memory uploads into a plain buffer first.

type WriteBuffer = (buffer: unknown, offset: number, data: ArrayBufferLike | ArrayBufferView, dataOffset?: number, size?: number) => void;

let patched = false;

export function acceptSharedMemoryUploads(): void {
  const queue = (globalThis as { GPUQueue?: { prototype: { writeBuffer: WriteBuffer } } }).GPUQueue;
  if (patched || !('Deno' in globalThis) || !queue || typeof SharedArrayBuffer === 'undefined') return;
  patched = true;
  const write = queue.prototype.writeBuffer;
  queue.prototype.writeBuffer = function (this: unknown, buffer, offset, data, dataOffset, size) {
    if (data instanceof SharedArrayBuffer) {
      // dataOffset and size count bytes for a bare buffer
      const start = dataOffset ?? 0;
      return write.call(this, buffer, offset, new Uint8Array(data).slice(start, start + (size ?? data.byteLength - start)));
    }
    if (ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer) {
      // a view's offsets count elements and stay valid on its copy
      const copy = (data as unknown as { slice(): ArrayBufferView }).slice();
      return write.call(this, buffer, offset, copy, dataOffset, size);
    }
    return write.call(this, buffer, offset, data, dataOffset, size);
  };
}
