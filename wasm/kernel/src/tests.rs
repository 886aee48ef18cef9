//! Native tests: the kernel against a bit-by-bit reference, and the arena allocator.

use crate::arena::{Arena, Grow, HEADER};
use crate::search::{radius, topk};
use std::vec::Vec;

const ALL_BITS: [u32; 5] = [16, 32, 64, 128, 256];

/// splitmix64: deterministic test data without dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Distance straight from the documented bit order: bit i is bit (7 - i % 8) of byte i / 8.
fn ref_dist(a: &[u8], b: &[u8], bits: usize) -> u16 {
    (0..bits).filter(|&i| (a[i / 8] >> (7 - i % 8)) & 1 != (b[i / 8] >> (7 - i % 8)) & 1).count() as u16
}

/// All rows sorted by (dist, row), optionally filtered by radius.
fn ref_sorted(table: &[u8], bits: u32, q: &[u8], max_dist: u32) -> (Vec<u32>, Vec<u16>) {
    let b = bits as usize / 8;
    let mut all: Vec<(u16, u32)> = table
        .chunks(b)
        .enumerate()
        .map(|(i, row)| (ref_dist(row, q, bits as usize), i as u32))
        .filter(|&(d, _)| d as u32 <= max_dist)
        .collect();
    all.sort();
    (all.iter().map(|x| x.1).collect(), all.iter().map(|x| x.0).collect())
}

/// A table whose rows come from a pool of `distinct` codes: many exact ties.
fn tie_table(rng: &mut Rng, bits: u32, n: usize, distinct: usize) -> Vec<u8> {
    let b = bits as usize / 8;
    let pool: Vec<Vec<u8>> = (0..distinct).map(|_| rng.bytes(b)).collect();
    (0..n).flat_map(|_| pool[rng.below(distinct)].clone()).collect()
}

#[test]
fn topk_matches_reference_with_ties_all_bits() {
    let mut rng = Rng(1);
    for &bits in &ALL_BITS {
        let b = bits as usize / 8;
        for &(n, distinct) in &[(0usize, 1usize), (1, 1), (7, 3), (8, 2), (9, 4), (100, 5), (1000, 3), (3001, 40), (2000, 2000)] {
            let table = tie_table(&mut rng, bits, n, distinct);
            for _ in 0..4 {
                // Queries both from the pool (distance 0 ties) and fresh.
                let q = if n > 0 && rng.below(2) == 0 { table[..b].to_vec() } else { rng.bytes(b) };
                let (rrows, rdists) = ref_sorted(&table, bits, &q, u32::MAX);
                for &k in &[1usize, 2, 10, 100, n, n + 5] {
                    let (rows, dists) = topk(&table, bits, &q, k);
                    let m = k.min(n);
                    assert_eq!(rows, &rrows[..m], "bits={} n={} k={}", bits, n, k);
                    assert_eq!(dists, &rdists[..m], "bits={} n={} k={}", bits, n, k);
                }
            }
        }
    }
}

#[test]
fn topk_k_zero_is_empty() {
    let mut rng = Rng(2);
    let table = rng.bytes(8 * 50);
    let q = rng.bytes(8);
    let (rows, dists) = topk(&table, 64, &q, 0);
    assert!(rows.is_empty() && dists.is_empty());
}

#[test]
fn topk_k_above_n_returns_all_rows_sorted() {
    let mut rng = Rng(3);
    let table = tie_table(&mut rng, 32, 37, 4);
    let q = rng.bytes(4);
    let (rows, dists) = topk(&table, 32, &q, 1000);
    assert_eq!(rows.len(), 37);
    assert_eq!((rows, dists), ref_sorted(&table, 32, &q, u32::MAX));
}

#[test]
fn extreme_distances() {
    // All-zero table vs all-ones query: every distance equals `bits`.
    for &bits in &ALL_BITS {
        let b = bits as usize / 8;
        let table = vec![0u8; b * 20];
        let q = vec![0xFFu8; b];
        let (rows, dists) = topk(&table, bits, &q, 5);
        assert_eq!(rows, vec![0, 1, 2, 3, 4]);
        assert!(dists.iter().all(|&d| d as u32 == bits));
        let (rows, _, t) = radius(&table, bits, &q, bits, 100);
        assert_eq!((rows.len(), t), (20, false));
        let (rows, _, _) = radius(&table, bits, &q, bits - 1, 100);
        assert!(rows.is_empty());
    }
}

#[test]
fn bit_order_is_big_endian_within_bytes() {
    // Bit 0 of the code is the top bit of byte 0; a code differing only there is at distance 1.
    let mut row = vec![0u8; 8];
    row[0] = 0x80;
    let (_, dists) = topk(&row, 64, &[0u8; 8], 1);
    assert_eq!(dists, vec![1]);
}

#[test]
fn radius_matches_reference_and_truncates() {
    let mut rng = Rng(4);
    for &bits in &ALL_BITS {
        let b = bits as usize / 8;
        for &(n, distinct) in &[(0usize, 1usize), (5, 2), (64, 3), (500, 10), (1500, 1500)] {
            let table = tie_table(&mut rng, bits, n, distinct);
            let q = if n > 0 { table[..b].to_vec() } else { rng.bytes(b) };
            for &r in &[0u32, 1, bits / 4, bits / 2, bits, bits + 10] {
                let (rrows, rdists) = ref_sorted(&table, bits, &q, r);
                for &limit in &[0usize, 1, 3, 50, n, n + 1, usize::MAX / 2] {
                    let (rows, dists, truncated) = radius(&table, bits, &q, r, limit);
                    let m = limit.min(rrows.len());
                    assert_eq!(rows, &rrows[..m], "bits={} n={} r={} limit={}", bits, n, r, limit);
                    assert_eq!(dists, &rdists[..m]);
                    assert_eq!(truncated, rrows.len() > limit, "bits={} n={} r={} limit={}", bits, n, r, limit);
                }
            }
        }
    }
}

/// Arena backed by a fixed Vec; grows in 1 KiB steps up to its capacity.
struct VecGrow {
    cap_end: usize,
}
impl Grow for VecGrow {
    fn grow(&mut self, end: usize, bytes: usize) -> Option<usize> {
        let new_end = end + (bytes + 1023) / 1024 * 1024;
        if new_end <= self.cap_end {
            Some(new_end)
        } else {
            None
        }
    }
}

fn with_arena(f: impl FnOnce(&mut Arena<VecGrow>, usize)) {
    let buf = vec![0u64; 1 << 16]; // 512 KiB, zeroed like fresh wasm memory
    let start = buf.as_ptr() as usize;
    let mut a = Arena::new(start, start, VecGrow { cap_end: start + buf.len() * 8 });
    f(&mut a, start);
    drop(buf);
}

#[test]
fn arena_alloc_free_reuse() {
    with_arena(|a, start| unsafe {
        let p1 = a.alloc(100).unwrap();
        let p2 = a.alloc(1000).unwrap();
        let p3 = a.alloc(10).unwrap();
        assert!(p1 % 8 == 0 && p2 % 8 == 0 && p3 % 8 == 0);
        assert!(p1 + 100 <= p2 && p2 + 1000 <= p3);
        // Write all payload bytes: headers must survive.
        std::ptr::write_bytes(p1 as *mut u8, 0xAB, 100);
        std::ptr::write_bytes(p2 as *mut u8, 0xCD, 1000);
        std::ptr::write_bytes(p3 as *mut u8, 0xEF, 10);
        a.free(p2);
        // Fits into the freed hole: same address.
        assert_eq!(a.alloc(900).unwrap(), p2);
        a.free(p1);
        a.free(p2);
        a.free(p3);
        assert_eq!(a.used_bytes(), 0);
        // Everything coalesced: one big block from the start again.
        assert_eq!(a.alloc(1200).unwrap(), start + HEADER);
    });
}

#[test]
fn arena_churn_releases_everything_and_refuses_when_full() {
    with_arena(|a, _| unsafe {
        let mut rng = Rng(5);
        let mut live: Vec<usize> = Vec::new();
        for _ in 0..20_000 {
            if live.len() < 8 && rng.below(2) == 0 {
                live.push(a.alloc(rng.below(4000) + 1).unwrap());
            } else if !live.is_empty() {
                let i = rng.below(live.len());
                a.free(live.swap_remove(i));
            }
        }
        for p in live.drain(..) {
            a.free(p);
        }
        assert_eq!(a.used_bytes(), 0);
        assert!(a.alloc(1 << 20).is_none(), "beyond the backing buffer");
        a.free(12345); // unknown pointer: ignored
        assert!(a.alloc(1000).is_some());
    });
}
