// The op both decode attention kernels register (attend_f32.cpp, attend_bf16.cpp): its checks,
// then threads splitting the KV heads for the scores (Scores), ATen's fp32 softmax over them and
// threads again for the weighted sums of the values (Values), which write every output number.
// T is a cached number as the kernels read it (float, or uint16_t for bf16's bits).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/empty.h>

constexpr int64_t kAttendMaxD = 256;

struct AttendKind {
  const char* op;          // "attend_f32"
  const char* dtype_name;  // "fp32"
  at::ScalarType dtype;
  int64_t d_multiple;      // D must be a multiple of this
};

template <typename T, typename Scores, typename Values>
at::Tensor attend_op(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale,
                     const AttendKind& kind, Scores head_scores, Values head_values) {
  TORCH_CHECK(q.dim() == 4 && q.size(0) == 1 && q.size(2) == 1 && q.scalar_type() == kind.dtype,
              kind.op, ": q must be ", kind.dtype_name, " [1, H, 1, D]");
  TORCH_CHECK(keys.dim() == 4 && keys.size(0) == 1 && keys.sizes() == values.sizes() &&
              keys.scalar_type() == kind.dtype && values.scalar_type() == kind.dtype,
              kind.op, ": keys and values must be ", kind.dtype_name, " [1, KV, n, D] of one shape");
  const int64_t H = q.size(1), D = q.size(3), KV = keys.size(1), n = keys.size(2);
  TORCH_CHECK(keys.size(3) == D && D % kind.d_multiple == 0 && D <= kAttendMaxD && n > 0 && H % KV == 0,
              kind.op, ": shapes do not agree (D at most 256", kind.d_multiple > 1 ? ", a multiple of 8)" : ")");
  TORCH_CHECK(keys.stride(3) == 1 && values.stride(3) == 1, kind.op, ": each token's numbers must be contiguous");
  TORCH_CHECK(q.device().is_cpu() && keys.device().is_cpu() && values.device().is_cpu(), kind.op, ": CPU only");
  const at::Tensor qc = q.contiguous();
  const int64_t rep = H / KV;
  at::Tensor scores = at::empty({H, n}, q.options().dtype(at::kFloat));
  const T* qp = static_cast<const T*>(qc.const_data_ptr());
  const T* kp = static_cast<const T*>(keys.const_data_ptr());
  const T* vp = static_cast<const T*>(values.const_data_ptr());
  float* sp = scores.mutable_data_ptr<float>();
  at::parallel_for(0, KV, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      head_scores(qp + g * rep * D, rep, kp + g * keys.stride(1), n, keys.stride(2), D, static_cast<float>(scale),
                  sp + g * rep * n);
  });
  const at::Tensor p = at::_softmax(scores, -1, false);
  const float* pp = p.const_data_ptr<float>();
  at::Tensor out = at::empty({1, H, 1, D}, q.options());
  T* op = static_cast<T*>(out.mutable_data_ptr());
  at::parallel_for(0, KV, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      head_values(pp + g * rep * n, rep, vp + g * values.stride(1), n, values.stride(2), D, op + g * rep * D);
  });
  return out;
}
