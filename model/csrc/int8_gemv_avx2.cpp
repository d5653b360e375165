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

#include <cstring>

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

// The int32 sums of 32 products x[0..32) * w[0..32), by widening: exact for every int8 value.
inline __m256i widened(const int8_t* x, const int8_t* w) {
  return _mm256_add_epi32(_mm256_madd_epi16(widen(x), widen(w)), _mm256_madd_epi16(widen(x + 16), widen(w + 16)));
}

// The same for x without -128 (every x that quant.quantize_rows makes): vpmaddubsw takes |w| as
// unsigned bytes and x with w's sign (vpsignb), 32 products a load with no widening; a pair's
// sum is at most 2 * 128 * 127 < 2^15, so nothing saturates, and vpmaddwd by ones widens it.
inline __m256i signed_bytes(const int8_t* x, const int8_t* w) {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv)), _mm256_set1_epi16(1));
}

template <__m256i (*Products)(const int8_t*, const int8_t*)>
void dot_rows(const int8_t* x, const int8_t* w, int64_t K, int32_t* y, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = w + n * K;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(row + k + kPrefetch), _MM_HINT_T0);
      a0 = _mm256_add_epi32(a0, Products(x + k, row + k));
      a1 = _mm256_add_epi32(a1, Products(x + k + 32, row + k + 32));
    }
    int32_t sum = horizontal_sum(_mm256_add_epi32(a0, a1));
    for (; k < K; ++k) sum += static_cast<int32_t>(x[k]) * static_cast<int32_t>(row[k]);
    y[n] = sum;
  }
}

// The op: the sign trick unless x holds -128 (looked for once a call).
at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor xc = x.contiguous();
  const bool has_min = xc.scalar_type() == at::kChar && std::memchr(xc.const_data_ptr<int8_t>(), 0x80, xc.numel());
  return has_min ? int8_gemv_op<dot_rows<widened>>(xc, w) : int8_gemv_op<dot_rows<signed_bytes>>(xc, w);
}

}  // namespace

TORCH_LIBRARY(feldspar, m) {
  m.def("int8_gemv(Tensor x, Tensor w) -> Tensor");
  m.def("int8_gemv_f32(Tensor x, Tensor w, Tensor scales) -> Tensor");
}
TORCH_LIBRARY_IMPL(feldspar, CPU, m) {
  m.impl("int8_gemv", &int8_gemv);
  m.impl("int8_gemv_f32", &int8_gemv_f32_op<dot_rows<signed_bytes>>);  // quantised codes have no -128
}
