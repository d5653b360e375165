// feldspar::attend_bf16(q bf16 [1, H, 1, D], keys bf16 [1, KV, n, D], values bf16 [1, KV, n, D],
// scale) -> bf16 [1, H, 1, D]: one query token's softmax attention over a bf16 cache, the query
// heads of a group sharing a KV head (H a multiple of KV), as fp32 maths on the bf16 numbers:
// scores q . k (AVX-512 BF16's vdpbf16ps: exact products, fp32 sums) times ``scale``, an fp32
// softmax (ATen's), then sum_t p_t v_t in fp32, rounded once to bf16. Keys and values may be
// views with any strides between tokens and heads (the decode step's cache with room behind
// it) as long as each token's D numbers are contiguous. Reads the cache once, in bf16, where
// converting it to fp32 first would write and read it twice more. Threads split the KV heads.
// Compiled for AVX-512 BF16 by function attributes only; the caller checks the CPU.
#include "attend_op.h"
#include <torch/library.h>
#include <immintrin.h>

#include <vector>

#define FELDSPAR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace {

constexpr int64_t kAhead = 32;  // tokens ahead to prefetch (the hardware prefetchers stop at pages)

inline __mmask32 words(int64_t left) { return left >= 32 ? ~0U : ((1U << left) - 1); }

// scores[r, t] = scale * q_r . k_t for the ``rep`` query rows of one KV head.
FELDSPAR_BF16 void head_scores(const uint16_t* q, int64_t rep, const uint16_t* k, int64_t n, int64_t tstride,
                               int64_t D, float scale, float* scores) {
  for (int64_t t = 0; t < n; ++t) {
    const uint16_t* key = k + t * tstride;
    _mm_prefetch(reinterpret_cast<const char*>(key + kAhead * tstride), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(key + kAhead * tstride) + 64, _MM_HINT_T0);
    for (int64_t r = 0; r < rep; ++r) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; d += 32) {
        const __mmask32 m = words(D - d);
        const __m512bh kv = (__m512bh)_mm512_maskz_loadu_epi16(m, key + d);
        const __m512bh qv = (__m512bh)_mm512_maskz_loadu_epi16(m, q + r * D + d);
        acc = _mm512_dpbf16_ps(acc, kv, qv);
      }
      scores[r * n + t] = scale * _mm512_reduce_add_ps(acc);
    }
  }
}

// out[r, :] = sum_t p[r, t] * v_t, rounded to bf16.
FELDSPAR_BF16 void head_values(const float* p, int64_t rep, const uint16_t* v, int64_t n, int64_t tstride,
                               int64_t D, uint16_t* out) {
  std::vector<float> acc(rep * D, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    const uint16_t* value = v + t * tstride;
    _mm_prefetch(reinterpret_cast<const char*>(value + kAhead * tstride), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(value + kAhead * tstride) + 64, _MM_HINT_T0);
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = static_cast<__mmask16>(words(D - d));
      const __m512 vf = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, value + d)), 16));
      for (int64_t r = 0; r < rep; ++r) {
        float* a = acc.data() + r * D + d;
        _mm512_mask_storeu_ps(a, m, _mm512_fmadd_ps(_mm512_set1_ps(p[r * n + t]), vf, _mm512_maskz_loadu_ps(m, a)));
      }
    }
  }
  for (int64_t i = 0; i < rep * D; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(words(rep * D - i));
    _mm256_mask_storeu_epi16(out + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, acc.data() + i)));
  }
}

at::Tensor attend_bf16(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale) {
  return attend_op<uint16_t>(q, keys, values, scale, AttendKind{"attend_bf16", "bf16", at::kBFloat16, 1},
                             head_scores, head_values);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(feldspar, m) {
  m.def("attend_bf16(Tensor q, Tensor keys, Tensor values, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(feldspar, CPU, m) { m.impl("attend_bf16", &attend_bf16); }
