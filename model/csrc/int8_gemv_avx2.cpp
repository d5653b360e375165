// feldspar::int8_gemv(x int8 [1, K], w int8 [N, K]) -> int32 [1, N] on CPUs with AVX2 and no
// AVX-512 VNNI: the exact integer products x @ w^T that torch._int_mm gives (which runs at a few
// GOP/s there), for the one-row matmuls of a decode step. Built alone, with -mavx2, where the
// AVX-512 library (int8_gemv.cpp) cannot run.
//
// Each output is one dot product over a contiguous weight row, read once, front to back; threads
// split the rows. Products go through vpmaddubsw (|w| unsigned times x with w's sign) where x has
// no -128, which is every x the int8 layers quantise; otherwise bytes are widened to 16 bits
// (vpmovsxbw) and multiplied in pairs (vpmaddwd). Both are exact, and a row's sum cannot overflow
// for any K a model has (|x w| <= 2^14 per product).
#include "int8_gemv_op.h"
#include <torch/library.h>
#include <immintrin.h>

namespace {

constexpr int64_t kPrefetch = 4096;  // as the AVX-512 kernel: past the 4 KB page the prefetchers stop at

inline __m256i widen(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline int32_t horizontal_sum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// Rows by widening: exact for every int8 value, -128 included.
void dot_rows_widened(const int8_t* x, const int8_t* w, int64_t K, int32_t* y, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = w + n * K;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(row + k + kPrefetch), _MM_HINT_T0);
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(widen(x + k), widen(row + k)));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(widen(x + k + 16), widen(row + k + 16)));
    }
    int32_t sum = horizontal_sum(_mm256_add_epi32(a0, a1));
    for (; k < K; ++k) sum += static_cast<int32_t>(x[k]) * static_cast<int32_t>(row[k]);
    y[n] = sum;
  }
}

// Rows for x without -128 (every x that quant.quantize_rows makes): vpmaddubsw takes |w| as
// unsigned bytes and x with w's sign (vpsignb), 32 products a load with no widening; a pair's
// sum is at most 2 * 128 * 127 < 2^15, so nothing saturates, and vpmaddwd by ones widens it.
void dot_rows_signed(const int8_t* x, const int8_t* w, int64_t K, int32_t* y, int64_t n0, int64_t n1) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = w + n * K;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(row + k + kPrefetch), _MM_HINT_T0);
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k + 32));
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 32));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(x0, w0)), ones));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w1), _mm256_sign_epi8(x1, w1)), ones));
    }
    int32_t sum = horizontal_sum(_mm256_add_epi32(a0, a1));
    for (; k < K; ++k) sum += static_cast<int32_t>(x[k]) * static_cast<int32_t>(row[k]);
    y[n] = sum;
  }
}

// The row kernel for this x: the faster one unless x holds -128.
void dot_rows(const int8_t* x, const int8_t* w, int64_t K, int32_t* y, int64_t n0, int64_t n1) {
  bool has_min = false;
  for (int64_t k = 0; k < K && !has_min; ++k) has_min = x[k] == -128;
  (has_min ? dot_rows_widened : dot_rows_signed)(x, w, K, y, n0, n1);
}

}  // namespace

TORCH_LIBRARY(feldspar, m) { m.def("int8_gemv(Tensor x, Tensor w) -> Tensor"); }
TORCH_LIBRARY_IMPL(feldspar, CPU, m) { m.impl("int8_gemv", &int8_gemv_op<dot_rows>); }
