//! Exact Hamming search over packed codes: fused distance scan + bounded selection.
//!
//! Rows are scanned in ascending order, so a newly seen row always has a larger index than
//! every kept row: it beats the worst kept (dist, row) pair iff its distance is strictly
//! smaller. That makes the selection threshold a single integer, and blocks of rows are
//! checked with one branch (OR of `dist - threshold` sign bits), so almost every row costs
//! load + xor + popcount + sub + or. The rare block with a candidate is redone out of line,
//! so the hot loop keeps nothing alive across rows (V8's register allocator spills badly
//! otherwise).

use core::ptr;

/// A packed code as loaded from the table. Byte order of the load is irrelevant to the
/// distance (popcount of XOR), so little-endian unaligned loads are used everywhere.
pub trait Code: Copy {
    const BYTES: usize;
    /// # Safety
    /// `p` must be valid for reading `BYTES` bytes.
    unsafe fn load(p: *const u8) -> Self;
    /// i64 so the block check runs on 64-bit values straight out of `i64.popcnt`.
    fn dist(self, q: Self) -> i64;
}

impl Code for u16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        ptr::read_unaligned(p as *const u16)
    }
    #[inline(always)]
    fn dist(self, q: Self) -> i64 {
        (self ^ q).count_ones() as i64
    }
}

impl Code for u32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        ptr::read_unaligned(p as *const u32)
    }
    #[inline(always)]
    fn dist(self, q: Self) -> i64 {
        (self ^ q).count_ones() as i64
    }
}

impl Code for u64 {
    const BYTES: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        ptr::read_unaligned(p as *const u64)
    }
    #[inline(always)]
    fn dist(self, q: Self) -> i64 {
        (self ^ q).count_ones() as i64
    }
}

impl<const W: usize> Code for [u64; W] {
    const BYTES: usize = 8 * W;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        ptr::read_unaligned(p as *const [u64; W])
    }
    #[inline(always)]
    fn dist(self, q: Self) -> i64 {
        let mut d = 0;
        for w in 0..W {
            d += (self[w] ^ q[w]).count_ones() as i64;
        }
        d
    }
}

/// Rows per block in the hot loop: one branch per block.
const BLOCK: usize = 8;

/// Bounded max-heap of keys `dist << 32 | row`; one u64 compare orders by (dist, row).
/// Indexing is unchecked so that no panic path (and no panic message with a file path)
/// ends up in the wasm. The acceptance threshold lives in the scan loop's registers:
/// rows are accepted iff `dist < thr`, and `insert` returns the new threshold.
struct Selector {
    keys: *mut u64,
    cap: usize,
    len: usize,
}

impl Selector {
    /// Offers the rows of one block in row order (the threshold may drop between them).
    #[inline(never)]
    unsafe fn block<C: Code>(&mut self, p: *const u8, q: C, row: usize, mut thr: i64) -> i64 {
        for j in 0..BLOCK {
            let d = C::load(p.add(j * C::BYTES)).dist(q);
            if d < thr {
                thr = self.insert(d, row + j, thr);
            }
        }
        thr
    }

    unsafe fn insert(&mut self, d: i64, row: usize, thr: i64) -> i64 {
        let key = (d as u64) << 32 | row as u64;
        if self.len < self.cap {
            // Filling phase: append, heapify once when full.
            *self.keys.add(self.len) = key;
            self.len += 1;
            if self.len < self.cap {
                return thr;
            }
            heapify(self.keys, self.cap);
        } else {
            *self.keys = key;
            sift_down(self.keys, self.cap, 0);
        }
        (*self.keys >> 32) as i64
    }

    /// Sorts the kept keys ascending (heapsort: in place, no allocation) and returns the count.
    unsafe fn finish(self) -> usize {
        if self.len < self.cap {
            heapify(self.keys, self.len);
        }
        let mut end = self.len;
        while end > 1 {
            end -= 1;
            let top = *self.keys;
            *self.keys = *self.keys.add(end);
            *self.keys.add(end) = top;
            sift_down(self.keys, end, 0);
        }
        self.len
    }
}

unsafe fn heapify(h: *mut u64, n: usize) {
    let mut i = n / 2;
    while i > 0 {
        i -= 1;
        sift_down(h, n, i);
    }
}

#[inline(always)]
unsafe fn sift_down(h: *mut u64, n: usize, mut i: usize) {
    let x = *h.add(i);
    loop {
        let mut c = 2 * i + 1;
        if c >= n {
            break;
        }
        if c + 1 < n && *h.add(c + 1) > *h.add(c) {
            c += 1;
        }
        if *h.add(c) <= x {
            break;
        }
        *h.add(i) = *h.add(c);
        i = c;
    }
    *h.add(i) = x;
}

/// Scans `n` rows of `table` and keeps, in `keys`, the `keys.len()` smallest (dist, row)
/// pairs among rows with `dist < thr0`. Returns how many were kept; `keys[..count]` is
/// sorted ascending on return.
///
/// # Safety
/// `table` must be valid for reading `n * C::BYTES` bytes.
#[inline(never)] // one compact function per code length: better register allocation in V8
unsafe fn select<C: Code>(table: *const u8, n: usize, q: C, thr0: u32, keys: &mut [u64]) -> usize {
    if keys.is_empty() {
        return 0;
    }
    let mut s = Selector { keys: keys.as_mut_ptr(), cap: keys.len(), len: 0 };
    let mut thr = thr0 as i64;
    let b = C::BYTES;
    let mut i = 0;
    while i + BLOCK <= n {
        let p = table.add(i * b);
        // d - thr < 0 iff d < thr: one sign test for the whole block.
        let mut any = 0;
        for j in 0..BLOCK {
            any |= C::load(p.add(j * b)).dist(q) - thr;
        }
        if any < 0 {
            thr = s.block(p, q, i, thr);
        }
        i += BLOCK;
    }
    while i < n {
        let d = C::load(table.add(i * b)).dist(q);
        if d < thr {
            thr = s.insert(d, i, thr);
        }
        i += 1;
    }
    s.finish()
}

/// Code lengths the kernel supports, in bits.
pub fn valid_bits(bits: u32) -> bool {
    matches!(bits, 16 | 32 | 64 | 128 | 256)
}

/// Dispatches on the code length. `query` must hold `bits / 8` bytes.
///
/// # Safety
/// `table` valid for `n * bits / 8` bytes, `query` for `bits / 8` bytes, `bits` valid.
unsafe fn select_bits(table: *const u8, n: usize, bits: u32, query: *const u8, thr0: u32, keys: &mut [u64]) -> usize {
    match bits {
        16 => select(table, n, u16::load(query), thr0, keys),
        32 => select(table, n, u32::load(query), thr0, keys),
        64 => select(table, n, u64::load(query), thr0, keys),
        128 => select(table, n, <[u64; 2]>::load(query), thr0, keys),
        _ => select(table, n, <[u64; 4]>::load(query), thr0, keys),
    }
}

/// Exact top-k: the `keys.len()` rows nearest to `query`, ties by row ascending.
/// Pass `keys.len() == min(k, n)`. Returns the count; `keys[..count]` holds sorted
/// `dist << 32 | row` keys.
///
/// # Safety
/// As [`select_bits`].
pub unsafe fn topk_raw(table: *const u8, n: usize, bits: u32, query: *const u8, keys: &mut [u64]) -> usize {
    select_bits(table, n, bits, query, bits + 1, keys)
}

/// Radius search: rows with dist <= r, nearest `keys.len() - 1` of them, sorted.
/// `keys.len()` is limit + 1 so that an overflow is detectable: returns
/// `(count, truncated)` with `count <= limit`.
///
/// # Safety
/// As [`select_bits`]; `keys` must not be empty.
pub unsafe fn radius_raw(table: *const u8, n: usize, bits: u32, query: *const u8, r: u32, keys: &mut [u64]) -> (usize, bool) {
    let limit = keys.len() - 1;
    let thr0 = if r >= bits { bits + 1 } else { r + 1 };
    let count = select_bits(table, n, bits, query, thr0, keys);
    if count > limit {
        (limit, true)
    } else {
        (count, false)
    }
}

/// Safe slice front end used by the native tests: `(rows, dists)` of the exact top-k.
#[cfg(test)]
pub fn topk(table: &[u8], bits: u32, query: &[u8], k: usize) -> (std::vec::Vec<u32>, std::vec::Vec<u16>) {
    let b = bits as usize / 8;
    assert!(valid_bits(bits) && query.len() == b && table.len() % b == 0);
    let n = table.len() / b;
    let mut keys = std::vec![0u64; k.min(n)];
    let c = unsafe { topk_raw(table.as_ptr(), n, bits, query.as_ptr(), &mut keys) };
    split(&keys[..c])
}

/// Safe slice front end used by the native tests: `(rows, dists, truncated)`.
#[cfg(test)]
pub fn radius(table: &[u8], bits: u32, query: &[u8], r: u32, limit: usize) -> (std::vec::Vec<u32>, std::vec::Vec<u16>, bool) {
    let b = bits as usize / 8;
    assert!(valid_bits(bits) && query.len() == b && table.len() % b == 0);
    let n = table.len() / b;
    let mut keys = std::vec![0u64; limit.min(n) + 1];
    let (c, t) = unsafe { radius_raw(table.as_ptr(), n, bits, query.as_ptr(), r, &mut keys) };
    let (rows, dists) = split(&keys[..c]);
    (rows, dists, t)
}

#[cfg(test)]
fn split(keys: &[u64]) -> (std::vec::Vec<u32>, std::vec::Vec<u16>) {
    (keys.iter().map(|k| *k as u32).collect(), keys.iter().map(|k| (k >> 32) as u16).collect())
}
