// The op both int8 one-row kernels register: feldspar::int8_gemv(x int8 [1, K], w int8 [N, K])
// -> int32 [1, N], checked, with threads splitting the weight rows among DotRows(x, w, K, y, n0, n1).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

template <void (*DotRows)(const int8_t*, const int8_t*, int64_t, int32_t*, int64_t, int64_t)>
at::Tensor int8_gemv_op(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kChar, "int8_gemv: x must be int8 [1, K]");
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(1) && w.scalar_type() == at::kChar,
              "int8_gemv: w must be int8 [N, K] with x's K");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "int8_gemv: CPU tensors only");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const int64_t N = wc.size(0), K = wc.size(1);
  at::Tensor y = at::empty({1, N}, x.options().dtype(at::kInt));
  const int8_t* xp = xc.const_data_ptr<int8_t>();
  const int8_t* wp = wc.const_data_ptr<int8_t>();
  int32_t* yp = y.mutable_data_ptr<int32_t>();
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(K, 1));  // >= 64 KB of weight a task
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { DotRows(xp, wp, K, yp, n0, n1); });
  return y;
}
