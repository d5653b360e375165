// feldspar::int4_gemv_f32(x fp32 [1, K], w uint8 [N * K / 2], scales_zeros fp32 [K / G, N, 2], G, block)
// -> fp32 [1, N]: x @ W^T for a weight packed by torch._convert_weight_to_int4pack_for_cpu, each
// weight (q - 8) * scale + zero per group of G inputs, as torch._weight_int4pack_mm_for_cpu
// computes it with fp32 activations (fp32 products and sums, in another order): the one-row
// products of an fp32 int4 decode step, on any CPU with AVX2.
//
// ATen's CPU packing depends on the CPU: blocks of `block` output rows (32 with AVX2, 64 with
// AVX-512) store, per input column k, block / 2 bytes whose low and high nibbles are rows j and
// j + block / 2; the last N % block rows store rows 2j and 2j + 1 in byte j.
// Per group, sum_k x_k w_k = scale * sum_k x_k q_k + (zero - 8 * scale) * sum_k x_k. 32 bytes of
// codes are read as eight 32-bit lanes; nibble j of every lane (masked in place) is converted
// to fp32 and multiplied into accumulator j by the lanes' x, so no byte shuffles are needed:
// for blocks of 64 the 32 bytes are one column (x broadcast), for blocks of 32 two columns (x_k
// in lanes 0-3, x_k+1 in 4-7, the halves added at the end of a group). Threads split the blocks
// (at::parallel_for). AVX2 only, by function attributes, so the AVX-512 library holds it too.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#define FELDSPAR_AVX2 __attribute__((target("avx2,fma")))

namespace {

constexpr int64_t kPrefetch = 4096;  // as the other one-row kernels: past the 4 KB page the prefetchers stop at

struct Problem {
  const float* x;        // [K]
  const float* xpairs;   // blocks of 32: per two columns x_k four times, then x_k+1 four times
  const float* xsum;     // [K / G] the groups' sums of x
  const uint8_t* w;      // packed
  const float* sz;       // [K / G, N, 2]
  int64_t N, K, G, block;  // block: ATen's rows per packed block, 32 (AVX2) or 64 (AVX-512)
  float* y;              // [N]
};

// acc[j] += float(nibble j of each 32-bit lane of v, left in place: q * 16^j) * xs. Masking the
// nibble where it is saves the shift; the products are exact multiples of x * q by powers of two,
// undone at the end of a group (``unscale``). The top nibble is shifted down: as a signed int it
// would turn negative.
FELDSPAR_AVX2 inline void multiply_nibbles(__m256i v, __m256 xs, __m256* acc) {
  for (int j = 0; j < 7; ++j)
    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xf << (4 * j)))), xs, acc[j]);
  acc[7] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 28)), xs, acc[7]);
}

constexpr float unscale[8] = {1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f};

FELDSPAR_AVX2 inline __m256 in_order(__m256 v) {  // undoes shuffle_ps's lane interleave
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

// scale and zero - 8 * scale of 8 rows, from their interleaved (scale, zero) pairs
FELDSPAR_AVX2 inline void scales_and_offsets(const float* pairs, __m256& scale, __m256& offset) {
  const __m256 a = _mm256_loadu_ps(pairs), b = _mm256_loadu_ps(pairs + 8);
  scale = in_order(_mm256_shuffle_ps(a, b, 0x88));
  offset = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), scale, in_order(_mm256_shuffle_ps(a, b, 0xDD)));
}

// Four vectors whose lane i holds row 4i + m (vector m; lanes 4-7: rows 16 + 4(i - 4) + m) as
// rows 0-7, 8-15, 16-23, 24-31.
FELDSPAR_AVX2 inline void transpose_rows(const __m256* a, __m256* rows) {
  const __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
  const __m256 t2 = _mm256_unpacklo_ps(a[2], a[3]), t3 = _mm256_unpackhi_ps(a[2], a[3]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  rows[0] = _mm256_permute2f128_ps(u0, u1, 0x20), rows[1] = _mm256_permute2f128_ps(u2, u3, 0x20);
  rows[2] = _mm256_permute2f128_ps(u0, u1, 0x31), rows[3] = _mm256_permute2f128_ps(u2, u3, 0x31);
}

FELDSPAR_AVX2 inline __m128 fold(__m256 v) { return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); }

// The rows of block b, group by group: acc[j] lane i holds byte 4i + j / 2 of the 32 bytes, its
// low nibble for even j and high for odd (blocks of 32: lanes 4-7 are column k + 1, folded onto
// 0-3); a transpose puts them in row order to be scaled per group into `rows`. HALF, the bytes
// per column, is a constant so the loop over a group's columns is a cache line (two loads and
// one prefetch) an iteration with nothing left to compute.
template <int64_t HALF>
FELDSPAR_AVX2 void block_rows_t(const Problem& p, int64_t b) {
  constexpr int64_t half = HALF, step = 32 / HALF;  // bytes per column; columns per 32 bytes
  const uint8_t* block = p.w + b * half * p.K;
  alignas(32) float rows[64] = {};
  for (int64_t g = 0; g < p.K / p.G; ++g) {
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    const uint8_t* at = block + g * p.G * half;
    const float* xg = half == 32 ? p.x + g * p.G : p.xpairs + 4 * g * p.G;
    for (int64_t k = 0; k < p.G; k += 2 * step, at += 64) {  // a cache line: 64 bytes
      _mm_prefetch(reinterpret_cast<const char*>(at + kPrefetch), _MM_HINT_T0);
      const __m256 x0 = half == 32 ? _mm256_broadcast_ss(xg + k) : _mm256_loadu_ps(xg + 4 * k);
      multiply_nibbles(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(at)), x0, acc);
      const __m256 x1 = half == 32 ? _mm256_broadcast_ss(xg + k + 1) : _mm256_loadu_ps(xg + 4 * k + 8);
      multiply_nibbles(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + 32)), x1, acc);
    }
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_mul_ps(acc[j], _mm256_set1_ps(unscale[j]));
    __m256 sets[2][4];  // by nibble (blocks of 64) or, for blocks of 32, one set of both nibbles
    for (int m = 0; m < 4; ++m) {
      if (half == 32) sets[0][m] = acc[2 * m], sets[1][m] = acc[2 * m + 1];
      else sets[0][m] = _mm256_set_m128(fold(acc[2 * m + 1]), fold(acc[2 * m]));
    }
    const __m256 xsum = _mm256_set1_ps(p.xsum[g]);
    for (int set = 0; set < (half == 32 ? 2 : 1); ++set) {
      __m256 ordered[4];
      transpose_rows(sets[set], ordered);
      for (int r = 0; r < 4; ++r) {
        const int64_t row = 32 * set + 8 * r;
        __m256 scale, offset;
        scales_and_offsets(p.sz + 2 * (g * p.N + b * p.block + row), scale, offset);
        _mm256_store_ps(rows + row, _mm256_fmadd_ps(scale, ordered[r],
                                                    _mm256_fmadd_ps(offset, xsum, _mm256_load_ps(rows + row))));
      }
    }
  }
  std::copy(rows, rows + p.block, p.y + b * p.block);
}

FELDSPAR_AVX2 void block_rows(const Problem& p, int64_t b) {  // block: 64 or 32 rows
  p.block == 64 ? block_rows_t<32>(p, b) : block_rows_t<16>(p, b);
}

// Rows full + 16 * chunk .. + 16 of the last N % block (a multiple of 16): byte j of a column
// of the tail holds its rows 2j and 2j + 1.
FELDSPAR_AVX2 void tail_rows(const Problem& p, int64_t full, int64_t chunk) {
  const int64_t stride = (p.N - full) / 2;
  const uint8_t* base = p.w + full * p.K / 2 + 8 * chunk;
  const __m128i nibble = _mm_set1_epi8(0x0f);
  __m256 out[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t g = 0; g < p.K / p.G; ++g) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t k = g * p.G; k < (g + 1) * p.G; ++k) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(base + k * stride));
      const __m128i codes = _mm_unpacklo_epi8(_mm_and_si128(v, nibble), _mm_and_si128(_mm_srli_epi16(v, 4), nibble));
      const __m256 xs = _mm256_broadcast_ss(p.x + k);
      acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), xs, acc[0]);
      acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))), xs, acc[1]);
    }
    const float* sz = p.sz + 2 * (g * p.N + full + 16 * chunk);
    alignas(32) float sums[16];
    _mm256_store_ps(sums, acc[0]), _mm256_store_ps(sums + 8, acc[1]);
    alignas(32) float add[16];
    for (int r = 0; r < 16; ++r) add[r] = sz[2 * r] * sums[r] + (sz[2 * r + 1] - 8.0f * sz[2 * r]) * p.xsum[g];
    out[0] = _mm256_add_ps(out[0], _mm256_load_ps(add)), out[1] = _mm256_add_ps(out[1], _mm256_load_ps(add + 8));
  }
  _mm256_storeu_ps(p.y + full + 16 * chunk, out[0]), _mm256_storeu_ps(p.y + full + 16 * chunk + 8, out[1]);
}

at::Tensor int4_gemv_f32(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales_zeros, int64_t group,
                         int64_t block) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "int4_gemv_f32: x must be fp32 [1, K]");
  const int64_t K = x.size(1);
  TORCH_CHECK(group > 0 && group % 4 == 0 && K % group == 0, "int4_gemv_f32: group must be a multiple of 4 and divide K");
  TORCH_CHECK(scales_zeros.dim() == 3 && scales_zeros.size(0) == K / group && scales_zeros.size(2) == 2 &&
              scales_zeros.scalar_type() == at::kFloat, "int4_gemv_f32: scales_zeros must be fp32 [K / group, N, 2]");
  const int64_t N = scales_zeros.size(1);
  TORCH_CHECK(N % 16 == 0 && w.scalar_type() == at::kByte && w.numel() * 2 == N * K,
              "int4_gemv_f32: w must be the uint8 CPU int4 packing of an [N, K] weight, N a multiple of 16");
  TORCH_CHECK(block == 32 || block == 64, "int4_gemv_f32: block must be 32 or 64 rows");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu() && scales_zeros.device().is_cpu(), "int4_gemv_f32: CPU only");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous(), szc = scales_zeros.contiguous();
  const float* xp = xc.const_data_ptr<float>();
  thread_local std::vector<float> xpairs, xsum;  // the caller's, reused: no allocation per call
  xpairs.resize(4 * K), xsum.assign(K / group, 0.0f);
  for (int64_t k = 0; k < K; ++k) xsum[k / group] += xp[k];
  for (int64_t k = 0; block == 32 && k < K; k += 2)
    for (int i = 0; i < 4; ++i) xpairs[4 * k + i] = xp[k], xpairs[4 * k + 4 + i] = xp[k + 1];
  at::Tensor out = at::empty({1, N}, x.options());
  const Problem p{xp, xpairs.data(), xsum.data(), wc.const_data_ptr<uint8_t>(), szc.const_data_ptr<float>(),
                  N, K, group, block, out.mutable_data_ptr<float>()};
  const int64_t blocks = N / block, tails = N % block / 16;
  const int64_t grain = std::max<int64_t>(1, 65536 / (block / 2 * K));  // >= 64 KB of weight a task
  at::parallel_for(0, blocks + tails, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) i < blocks ? block_rows(p, i) : tail_rows(p, blocks * block, i - blocks);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(feldspar, m) {
  m.def("int4_gemv_f32(Tensor x, Tensor w, Tensor scales_zeros, int group, int block) -> Tensor");
}
TORCH_LIBRARY_IMPL(feldspar, CPU, m) { m.impl("int4_gemv_f32", &int4_gemv_f32); }
