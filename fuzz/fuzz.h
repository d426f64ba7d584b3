/* fuzz — helpers shared by ferry's fuzz targets: an assertion that survives NDEBUG and names the
 * broken invariant, and split points derived from the input itself so that a crash found by one
 * engine (libFuzzer, AFL++) replays identically everywhere. Header-only: each target is one
 * plain LLVMFuzzerTestOneInput file. */
#ifndef FERRY_FUZZ_H
#define FERRY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where FZ_CHECK reports: a target that silences stderr (config) points FZ_ERR elsewhere. */
#ifndef FZ_ERR
#define FZ_ERR stderr
#endif

#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(FZ_ERR, "fuzz invariant broken at %s:%d: %s\n  ", __FILE__, __LINE__, #cond);  \
            fprintf(FZ_ERR, __VA_ARGS__);                                                          \
            fputc('\n', FZ_ERR);                                                                   \
            fflush(FZ_ERR);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* FNV-1a of the input, mixed with k: the k-th pseudo-random number of this input. */
static inline uint64_t fz_hash(const uint8_t *d, size_t n, uint64_t k)
{
    uint64_t h = 1469598103934665603ull ^ (k * 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= d[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    return h;
}

/* A split point in [0, n], the k-th one for this input. */
static inline size_t fz_split(const uint8_t *d, size_t n, uint64_t k)
{
    return n == 0 ? 0 : (size_t)(fz_hash(d, n, k) % (n + 1));
}

/* An exact-size heap copy, so that ASan sees any read past the end of the input. */
static inline char *fz_copy(const uint8_t *d, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    if (n)
        memcpy(p, d, n);
    return p;
}

#endif
