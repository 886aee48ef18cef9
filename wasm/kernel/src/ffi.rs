//! The wasm ABI (documented in docs/KERNEL.md). All state lives in statics: the module is
//! single-threaded and one instance serves one JS wrapper.
//!
//! Per-query memory is one scratch block (heap keys + output rows + output dists) that
//! only ever grows to the largest k/limit seen, so a million queries leave memory flat.

use crate::arena::{Arena, Grow};
use crate::search;
use core::arch::wasm32;

const PAGE: usize = 65536;

struct WasmMemory;

impl Grow for WasmMemory {
    fn grow(&mut self, end: usize, bytes: usize) -> Option<usize> {
        let pages = (bytes + PAGE - 1) / PAGE;
        if wasm32::memory_grow(0, pages) == usize::MAX {
            return None;
        }
        // The arena ends where memory ends; another grower would be a bug, but stay exact.
        let new_end = wasm32::memory_size(0) * PAGE;
        if new_end >= end + bytes {
            Some(new_end)
        } else {
            None
        }
    }
}

extern "C" {
    // Linker-provided: first byte after the data segment and the shadow stack.
    static __heap_base: u8;
}

// `start` is set on first use (the linker symbol's address is not a constant expression).
static mut ARENA: Arena<WasmMemory> = Arena::new(0, 0, WasmMemory);
static mut ARENA_READY: bool = false;
/// The host writes each query here (up to 256 bits).
static mut QUERY: [u64; 4] = [0; 4];
/// Scratch block: `cap` u64 keys, then `cap` u32 rows, then `cap` u16 dists.
static mut SCRATCH: usize = 0;
static mut SCRATCH_CAP: usize = 0;
static mut TRUNCATED: u32 = 0;

unsafe fn arena() -> &'static mut Arena<WasmMemory> {
    if !ARENA_READY {
        let start = &__heap_base as *const u8 as usize;
        ARENA = Arena::new(start, wasm32::memory_size(0) * PAGE, WasmMemory);
        ARENA_READY = true;
    }
    &mut ARENA
}

/// Ensures the scratch block holds `cap` entries; false on out-of-memory.
unsafe fn reserve(cap: usize) -> bool {
    if cap <= SCRATCH_CAP {
        return true;
    }
    // Round up so a slowly rising k doesn't reallocate on every query.
    let cap = cap.checked_next_power_of_two().unwrap_or(cap).max(128);
    let bytes = match cap.checked_mul(14) {
        Some(b) => b,
        None => return false,
    };
    let a = arena();
    if SCRATCH != 0 {
        a.free(SCRATCH);
        SCRATCH = 0;
        SCRATCH_CAP = 0;
    }
    match a.alloc(bytes) {
        Some(p) => {
            SCRATCH = p;
            SCRATCH_CAP = cap;
            true
        }
        None => false,
    }
}

/// Converts the sorted keys into the row and dist output arrays.
unsafe fn emit(count: usize) {
    let keys = SCRATCH as *const u64;
    let rows = (SCRATCH + SCRATCH_CAP * 8) as *mut u32;
    let dists = (SCRATCH + SCRATCH_CAP * 12) as *mut u16;
    for i in 0..count {
        let k = *keys.add(i);
        *rows.add(i) = k as u32;
        *dists.add(i) = (k >> 32) as u16;
    }
}

/// Allocates `bytes` (8-aligned) in linear memory; 0 when memory can't grow.
#[no_mangle]
pub unsafe extern "C" fn mh_alloc(bytes: usize) -> usize {
    arena().alloc(bytes).unwrap_or(0)
}

/// Frees a block from `mh_alloc`; 0 and unknown pointers are ignored.
#[no_mangle]
pub unsafe extern "C" fn mh_free(ptr: usize) {
    arena().free(ptr)
}

/// Address of the 32-byte query buffer.
#[no_mangle]
pub unsafe extern "C" fn mh_query() -> usize {
    QUERY.as_ptr() as usize
}

/// Address of the u32 row output of the last search.
#[no_mangle]
pub unsafe extern "C" fn mh_out_rows() -> usize {
    SCRATCH + SCRATCH_CAP * 8
}

/// Address of the u16 distance output of the last search.
#[no_mangle]
pub unsafe extern "C" fn mh_out_dists() -> usize {
    SCRATCH + SCRATCH_CAP * 12
}

/// 1 if the last radius search had more than `limit` matches.
#[no_mangle]
pub unsafe extern "C" fn mh_truncated() -> u32 {
    TRUNCATED
}

/// Exact top-k of the query against `n` rows at `table`; returns the count
/// (min(k, n)), -1 for an unsupported bit length, -2 when out of memory.
#[no_mangle]
pub unsafe extern "C" fn mh_topk(table: usize, n: usize, bits: u32, k: usize) -> i32 {
    if !search::valid_bits(bits) {
        return -1;
    }
    let cap = k.min(n);
    if cap == 0 {
        return 0; // k = 0 or an empty table: empty result, no scratch needed
    }
    if !reserve(cap) {
        return -2;
    }
    let keys = core::slice::from_raw_parts_mut(SCRATCH as *mut u64, cap);
    let count = search::topk_raw(table as *const u8, n, bits, mh_query() as *const u8, keys);
    emit(count);
    count as i32
}

/// Every row within distance `r`, nearest first, at most `limit` of them; returns the
/// count (see `mh_truncated`), -1 for an unsupported bit length, -2 when out of memory.
#[no_mangle]
pub unsafe extern "C" fn mh_radius(table: usize, n: usize, bits: u32, r: u32, limit: usize) -> i32 {
    if !search::valid_bits(bits) {
        return -1;
    }
    let cap = limit.min(n) + 1;
    if !reserve(cap) {
        return -2;
    }
    let keys = core::slice::from_raw_parts_mut(SCRATCH as *mut u64, cap);
    let (count, truncated) = search::radius_raw(table as *const u8, n, bits, mh_query() as *const u8, r, keys);
    TRUNCATED = truncated as u32;
    emit(count);
    count as i32
}
