//! medhash Hamming kernel: exact top-k and radius search over packed binary codes,
//! compiled to `wasm/hamming.wasm` (no_std, plain `extern "C"` exports, see docs/KERNEL.md)
//! and tested natively with `cargo test`.
#![cfg_attr(target_arch = "wasm32", no_std)]

pub mod arena;
pub mod search;

#[cfg(target_arch = "wasm32")]
mod ffi;

#[cfg(test)]
mod tests;

// Panics can only come from a kernel bug; trap instead of pulling in formatting code.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
