// The ops both int8 one-row kernels register, checked, with threads splitting the weight rows
// among DotRows(x, w, K, y, n0, n1):
// - feldspar::int8_gemv(x int8 [1, K], w int8 [N, K]) -> int32 [1, N], the integer products;
// - feldspar::int8_gemv_f32(x fp32 [1, K], w int8 [N, K], scales fp32 [N]) -> fp32 [1, N]: x
//   quantised per row as model.quant.quantize_rows does it (s = max(amax|x|, 1e-12) / 127, codes
//   round(x / s) half to even), the integer products, then y = p * (s * scales): what
//   quant.int8_dynamic_mm computes around int8_gemv, in one call (no kernels around it a product).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

using DotRowsFn = void (*)(const int8_t*, const int8_t*, int64_t, int32_t*, int64_t, int64_t);

// Rows [n0, n1) of the products into yp, then done(n0, n1), on each thread's share of the rows.
template <DotRowsFn DotRows, typename Done>
void int8_rows(const int8_t* xp, const at::Tensor& wc, int32_t* yp, Done done) {
  const int64_t N = wc.size(0), K = wc.size(1);
  const int8_t* wp = wc.const_data_ptr<int8_t>();
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(K, 1));  // >= 64 KB of weight a task
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    DotRows(xp, wp, K, yp, n0, n1);
    done(n0, n1);
  });
}

inline void check_weight(const at::Tensor& x, const at::Tensor& w, const char* op) {
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(1) && w.scalar_type() == at::kChar, op,
              ": w must be int8 [N, K] with x's K");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), op, ": CPU tensors only");
}

template <DotRowsFn DotRows>
at::Tensor int8_gemv_op(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kChar, "int8_gemv: x must be int8 [1, K]");
  check_weight(x, w, "int8_gemv");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  at::Tensor y = at::empty({1, wc.size(0)}, x.options().dtype(at::kInt));
  int8_rows<DotRows>(xc.const_data_ptr<int8_t>(), wc, y.mutable_data_ptr<int32_t>(), [](int64_t, int64_t) {});
  return y;
}

// x's codes and their scale, as quantize_rows makes them (fp32 division, then half to even: the
// conversion's default rounding), eight numbers at a time.
__attribute__((target("avx2"))) inline float quantize_row(const float* x, int64_t K, int8_t* codes) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 peak = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) peak = _mm256_max_ps(peak, _mm256_and_ps(_mm256_loadu_ps(x + k), magnitude));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, peak);
  float amax = 0.0f;
  for (float lane : lanes) amax = std::max(amax, lane);
  for (int64_t t = k; t < K; ++t) amax = std::max(amax, std::fabs(x[t]));
  const float scale = std::max(amax, 1e-12f) / 127.0f;
  const __m256 divisor = _mm256_set1_ps(scale);
  alignas(32) int32_t ints[8];
  for (k = 0; k + 8 <= K; k += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints), _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + k), divisor)));
    for (int i = 0; i < 8; ++i) codes[k + i] = static_cast<int8_t>(ints[i]);
  }
  for (; k < K; ++k) codes[k] = static_cast<int8_t>(std::nearbyint(x[k] / scale));
  return scale;
}

template <DotRowsFn DotRows>
at::Tensor int8_gemv_f32_op(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "int8_gemv_f32: x must be fp32 [1, K]");
  check_weight(x, w, "int8_gemv_f32");
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) == w.size(0) && scales.scalar_type() == at::kFloat &&
              scales.device().is_cpu(), "int8_gemv_f32: scales must be fp32 [N] on the CPU");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous(), sc = scales.contiguous();
  const int64_t N = wc.size(0), K = wc.size(1);
  std::vector<int8_t> codes(K);
  const float row_scale = quantize_row(xc.const_data_ptr<float>(), K, codes.data());
  const std::unique_ptr<int32_t[]> products(new int32_t[N]);  // every row written before it is read
  at::Tensor y = at::empty({1, N}, x.options());
  float* yp = y.mutable_data_ptr<float>();
  const float* sp = sc.const_data_ptr<float>();
  int8_rows<DotRows>(codes.data(), wc, products.get(), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) yp[n] = static_cast<float>(products[n]) * (row_scale * sp[n]);
  });
  return y;
}
