//! First-fit free-list allocator over one growable region (wasm linear memory in the
//! module, a plain buffer in native tests).
//!
//! The workload is a handful of long-lived code tables plus one reusable scratch block,
//! so a linear walk over blocks is cheap and keeps the code small. Freed neighbours are
//! merged, so a table of the same size can be loaded again after it is freed without
//! growing memory.
//!
//! Block layout: an 8-byte header `[size: u32 (whole block, header included), used: u32]`
//! followed by the payload. Sizes are multiples of 8 so every payload is 8-aligned.

pub const HEADER: usize = 8;
const ALIGN: usize = 8;

/// Where the region's end can be pushed further (`memory.grow` in wasm).
pub trait Grow {
    /// Extends the region by at least `bytes`; returns the new end, or None if refused.
    fn grow(&mut self, end: usize, bytes: usize) -> Option<usize>;
}

pub struct Arena<G: Grow> {
    start: usize,
    end: usize,
    grower: G,
}

impl<G: Grow> Arena<G> {
    /// `start..end` is memory the arena owns; `start` is rounded up to 8.
    pub const fn new(start: usize, end: usize, grower: G) -> Self {
        let start = (start + ALIGN - 1) & !(ALIGN - 1);
        Arena { start, end, grower }
    }

    /// Returns an 8-aligned payload pointer for `bytes` bytes, or None when memory can't grow.
    ///
    /// # Safety
    /// The region `start..end` must be valid, writable, and touched by nobody else.
    pub unsafe fn alloc(&mut self, bytes: usize) -> Option<usize> {
        let need = bytes.checked_add(HEADER + ALIGN - 1)? & !(ALIGN - 1);
        if need > u32::MAX as usize {
            return None;
        }
        let mut p = self.start;
        let mut last_free: Option<usize> = None;
        while p + HEADER <= self.end && size(p) != 0 {
            let s = size(p);
            if !used(p) {
                if s >= need {
                    self.take(p, need);
                    return Some(p + HEADER);
                }
                last_free = Some(p);
            } else {
                last_free = None;
            }
            p += s;
        }
        // No fit: grow, extending a trailing free block if there is one.
        let base = last_free.unwrap_or(p);
        // `+ HEADER`: room for the end marker after the new block.
        if base + need + HEADER > self.end {
            self.end = self.grower.grow(self.end, base + need + HEADER - self.end)?;
        }
        set(base, need, true);
        set(base + need, 0, false); // end marker: size 0
        Some(base + HEADER)
    }

    /// Releases a payload pointer returned by `alloc`; 0 and unknown pointers are ignored.
    ///
    /// # Safety
    /// As [`Arena::alloc`].
    pub unsafe fn free(&mut self, payload: usize) {
        // Walk instead of trusting the pointer: a stray free must not corrupt the heap.
        let mut p = self.start;
        while p + HEADER <= self.end && size(p) != 0 {
            if p + HEADER == payload && used(p) {
                set(p, size(p), false);
                break;
            }
            p += size(p);
        }
        self.coalesce();
    }

    /// Bytes currently handed out (payload + headers).
    ///
    /// # Safety
    /// As [`Arena::alloc`].
    #[cfg(test)]
    pub unsafe fn used_bytes(&self) -> usize {
        let mut total = 0;
        let mut p = self.start;
        while p + HEADER <= self.end && size(p) != 0 {
            if used(p) {
                total += size(p);
            }
            p += size(p);
        }
        total
    }

    unsafe fn take(&mut self, p: usize, need: usize) {
        let s = size(p);
        if s - need >= HEADER + ALIGN {
            set(p, need, true);
            set(p + need, s - need, false);
        } else {
            set(p, s, true);
        }
    }

    unsafe fn coalesce(&mut self) {
        let mut p = self.start;
        while p + HEADER <= self.end && size(p) != 0 {
            let mut s = size(p);
            if !used(p) {
                loop {
                    let q = p + s;
                    if size(q) == 0 || used(q) {
                        break;
                    }
                    s += size(q);
                }
                set(p, s, false);
            }
            p += s;
        }
    }
}

unsafe fn size(p: usize) -> usize {
    *(p as *const u32) as usize
}

unsafe fn used(p: usize) -> bool {
    *((p + 4) as *const u32) != 0
}

unsafe fn set(p: usize, size: usize, used: bool) {
    *(p as *mut u32) = size as u32;
    *((p + 4) as *mut u32) = used as u32;
}
