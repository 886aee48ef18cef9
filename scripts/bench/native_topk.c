/*
 * Native reference for the Hamming search benchmark (scripts/bench/search.ts compiles it with
 * gcc -O3 -march=native). Same algorithm as the wasm kernel: fused scan + bounded max-heap,
 * blocks of 8 rows checked with one branch against a running threshold, ties by row.
 *
 * Usage: native_topk TABLE_FILE N BITS QUERY_FILE NQ K WARMUP
 * Reads N rows of BITS/8 bytes and NQ queries; runs WARMUP untimed queries, then all NQ.
 * Prints one line per query: "<nanoseconds> <d0> <d1> ... <dk-1>".
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK 8

typedef struct {
    uint64_t *keys; /* dist << 32 | row */
    size_t cap, len;
} heap_t;

static void sift_down(uint64_t *h, size_t n, size_t i) {
    uint64_t x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] > h[c]) c++;
        if (h[c] <= x) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void heapify(uint64_t *h, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(h, n, i);
}

/* Returns the new threshold: rows are accepted iff dist < thr (rows arrive in ascending order). */
static int64_t insert(heap_t *s, int64_t d, size_t row, int64_t thr) {
    uint64_t key = (uint64_t)d << 32 | row;
    if (s->len < s->cap) {
        s->keys[s->len++] = key;
        if (s->len < s->cap) return thr;
        heapify(s->keys, s->cap);
    } else {
        s->keys[0] = key;
        sift_down(s->keys, s->cap, 0);
    }
    return (int64_t)(s->keys[0] >> 32);
}

static inline __attribute__((always_inline)) int64_t dist(const uint8_t *p, const uint64_t *q, int bytes) {
    if (bytes == 2) { uint16_t x; memcpy(&x, p, 2); return __builtin_popcount(x ^ (uint16_t)q[0]); }
    if (bytes == 4) { uint32_t x; memcpy(&x, p, 4); return __builtin_popcount(x ^ (uint32_t)q[0]); }
    int64_t d = 0;
    for (int w = 0; w < bytes / 8; w++) {
        uint64_t x;
        memcpy(&x, p + 8 * w, 8);
        d += __builtin_popcountll(x ^ q[w]);
    }
    return d;
}

static __attribute__((noinline)) int64_t slow_block(heap_t *s, const uint8_t *p, const uint64_t *q, int bytes, size_t row, int64_t thr) {
    for (int j = 0; j < BLOCK; j++) {
        int64_t d = dist(p + (size_t)j * bytes, q, bytes);
        if (d < thr) thr = insert(s, d, row + j, thr);
    }
    return thr;
}

static inline __attribute__((always_inline)) size_t topk(const uint8_t *t, size_t n, const uint64_t *q, int bytes, heap_t *s) {
    int64_t thr = bytes * 8 + 1;
    size_t i = 0;
    s->len = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        const uint8_t *p = t + i * bytes;
        int64_t any = 0;
        for (int j = 0; j < BLOCK; j++) any |= dist(p + (size_t)j * bytes, q, bytes) - thr;
        if (any < 0) thr = slow_block(s, p, q, bytes, i, thr);
    }
    for (; i < n; i++) {
        int64_t d = dist(t + i * bytes, q, bytes);
        if (d < thr) thr = insert(s, d, i, thr);
    }
    /* heapsort ascending */
    if (s->len < s->cap) heapify(s->keys, s->len);
    for (size_t end = s->len; end > 1;) {
        end--;
        uint64_t top = s->keys[0];
        s->keys[0] = s->keys[end];
        s->keys[end] = top;
        sift_down(s->keys, end, 0);
    }
    return s->len;
}

/* One specialised copy per code length, like the per-length functions in the kernel. */
static size_t topk_bits(const uint8_t *t, size_t n, const uint64_t *q, int bits, heap_t *s) {
    switch (bits) {
    case 16: return topk(t, n, q, 2, s);
    case 32: return topk(t, n, q, 4, s);
    case 64: return topk(t, n, q, 8, s);
    case 128: return topk(t, n, q, 16, s);
    default: return topk(t, n, q, 32, s);
    }
}

static uint8_t *read_file(const char *path, size_t bytes) {
    uint8_t *buf = malloc(bytes ? bytes : 1);
    FILE *f = fopen(path, "rb");
    if (!buf || !f || fread(buf, 1, bytes, f) != bytes) {
        fprintf(stderr, "native_topk: cannot read %zu bytes from %s\n", bytes, path);
        exit(1);
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: native_topk TABLE N BITS QUERIES NQ K WARMUP\n");
        return 2;
    }
    size_t n = strtoull(argv[2], 0, 10);
    int bits = atoi(argv[3]);
    size_t nq = strtoull(argv[5], 0, 10), k = strtoull(argv[6], 0, 10), warm = strtoull(argv[7], 0, 10);
    if (bits != 16 && bits != 32 && bits != 64 && bits != 128 && bits != 256) return 2;
    int bytes = bits / 8;
    uint8_t *table = read_file(argv[1], n * bytes);
    uint8_t *queries = read_file(argv[4], nq * bytes);
    heap_t s = {malloc(sizeof(uint64_t) * (k < n ? k : n) + 8), k < n ? k : n, 0};
    uint64_t q[4];
    for (size_t r = 0; r < warm + nq; r++) {
        size_t qi = r < warm ? r % (nq ? nq : 1) : r - warm;
        memset(q, 0, sizeof q);
        memcpy(q, queries + qi * bytes, bytes);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        size_t c = s.cap ? topk_bits(table, n, q, bits, &s) : 0;
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (r < warm) continue;
        printf("%lld", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
        for (size_t i = 0; i < c; i++) printf(" %u", (unsigned)(s.keys[i] >> 32));
        putchar('\n');
    }
    return 0;
}
