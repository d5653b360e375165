// feldspar::attend_f32(q fp32 [1, H, 1, D], keys fp32 [1, KV, n, D], values fp32 [1, KV, n, D],
// scale) -> fp32 [1, H, 1, D]: one query token's softmax attention over an fp32 cache, the query
// heads of a group sharing a KV head (H a multiple of KV, D a multiple of 8 and at most 256):
// scores q . k times ``scale`` (fp32 FMAs), ATen's fp32 softmax, then sum_t p_t v_t. What two
// batched matmuls compute, up to the order of the sums, reading each cached key and value once
// for all the query heads of its group (the matmuls' one-row-a-head shapes read the cache at a
// quarter of the memory's speed). Keys and values may be views with any strides between tokens
// and heads (the decode step's cache with room behind it) as long as each token's D numbers are
// contiguous. Threads split the KV heads. Compiled for AVX2 and FMA by function attributes only;
// the caller checks the CPU.
#include "attend_op.h"
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>

#define FELDSPAR_AVX2 __attribute__((target("avx2,fma")))

namespace {

constexpr int64_t kAhead = 16;  // tokens ahead to prefetch (the hardware prefetchers stop at pages)

// The four sums of a, b, c, d's lanes, in that order.
FELDSPAR_AVX2 inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0+a1+a2+a3 ... per 128-bit half
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

FELDSPAR_AVX2 inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) _mm_prefetch(reinterpret_cast<const char*>(row + d), _MM_HINT_T0);
}

// scores[r, t] = scale * q_r . k_t for the ``rep`` query rows of one KV head, four tokens at a time.
FELDSPAR_AVX2 void head_scores(const float* q, int64_t rep, const float* k, int64_t n, int64_t tstride, int64_t D,
                               float scale, float* scores) {
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) {
    const float* key = k + t * tstride;
    for (int64_t a = 0; a < 4; ++a) prefetch_row(key + (kAhead + a) * tstride, D);
    for (int64_t r = 0; r < rep; ++r) {
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t d = 0; d < D; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + r * D + d);
        s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(key + d), s0);
        s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(key + tstride + d), s1);
        s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(key + 2 * tstride + d), s2);
        s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(key + 3 * tstride + d), s3);
      }
      _mm_storeu_ps(scores + r * n + t, _mm_mul_ps(sum4(s0, s1, s2, s3), _mm_set1_ps(scale)));
    }
  }
  for (; t < n; ++t) {  // the last tokens, one at a time
    const float* key = k + t * tstride;
    for (int64_t r = 0; r < rep; ++r) {
      __m256 s = _mm256_setzero_ps();
      for (int64_t d = 0; d < D; d += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * D + d), _mm256_loadu_ps(key + d), s);
      const __m256 z = _mm256_setzero_ps();
      scores[r * n + t] = scale * _mm_cvtss_f32(sum4(s, z, z, z));
    }
  }
}

// out[r, :] = sum_t p[r, t] * v_t for the ``rep`` rows of one KV head.
FELDSPAR_AVX2 void head_values(const float* p, int64_t rep, const float* v, int64_t n, int64_t tstride, int64_t D,
                               float* out) {
  std::fill(out, out + rep * D, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    const float* value = v + t * tstride;
    prefetch_row(value + kAhead * tstride, D);
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 vv = _mm256_loadu_ps(value + d);
      for (int64_t r = 0; r < rep; ++r) {
        float* o = out + r * D + d;
        _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(p[r * n + t]), vv, _mm256_loadu_ps(o)));
      }
    }
  }
}

at::Tensor attend_f32(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale) {
  return attend_op<float>(q, keys, values, scale, AttendKind{"attend_f32", "fp32", at::kFloat, 8}, head_scores,
                          head_values);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(feldspar, m) {
  m.def("attend_f32(Tensor q, Tensor keys, Tensor values, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(feldspar, CPU, m) { m.impl("attend_f32", &attend_f32); }
