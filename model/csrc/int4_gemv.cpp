// feldspar::int4_gemv(x bf16 [1, K], w uint8 [N * K / 2], scales_zeros bf16 [K / G, N, 2], G)
// -> bf16 [1, N]: x @ W^T for a weight packed by torch._convert_weight_to_int4pack_for_cpu, each
// weight (q - 8) * scale + zero per group of G inputs, as torch._weight_int4pack_mm_for_cpu
// computes it (fp32 sums, one bf16 rounding at the end): the one-row products of int4 decode.
//
// ATen's CPU packing: blocks of 64 output rows store, per input column k, 32 bytes whose low and
// high nibbles are rows j and j + 32; the last N % 64 rows store rows 2j and 2j + 1 in byte j.
// Per group, sum_k x_k * w_k = scale * sum_k x_k * q_k + (zero - 8 * scale) * sum_k x_k. The codes
// q are exact bf16 numbers, so AVX-512 BF16's vdpbf16ps takes two columns at once (rows as lanes;
// a code's bf16 bytes come from two 16-entry vpshufb tables, and one two-source byte permute puts
// row r's words for columns k and k + 1 side by side), and every product is exact; only the
// summation order differs from ATen's. Threads split the blocks (at::parallel_for). Compiled
// for AVX-512 BF16 + VBMI by function attributes only, so the rest of the library runs on CPUs
// without them; the caller checks the CPU before calling.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>

#include <cstring>
#include <vector>

#define FELDSPAR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16")))

namespace {

// Bytes ahead of the stream to prefetch: the hardware prefetchers stop at each 4 KB page, and the
// streams of a decode step are short (a layer is ~0.3-1.6 MB); 4 KB ahead measured 1.14-1.19x
// over none (2-16 KB: 1.14-1.19x; h-350m's 137 products, out of cache, 2 threads).
constexpr int64_t kPrefetch = 4096;

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

FELDSPAR_BF16 inline void store16(uint16_t* to, __m512 values) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), (__m256i)_mm512_cvtneps_pbh(values));
}

struct Problem {
  const uint16_t* x;    // [K] bf16
  const float* xf;      // [K] x in fp32
  const float* xsum;    // [K / G] per-group sums of x
  const uint8_t* w;     // packed
  const uint16_t* sz;   // [K / G, N, 2] bf16
  int64_t N, K, G;
  uint16_t* y;          // [N] bf16, rounded to nearest even
};

// y[rows of 64-row block b] for groups of G columns: four accumulators of 16 rows each.
FELDSPAR_BF16 void full_block(const Problem& p, int64_t b) {
  // lane r of a 16-row accumulator: (row r at k, row r at k + 1) as the bf16 words 0x43qq, i.e.
  // 128 + q, whose code byte comes from the codes and whose 0x43 from ``magic``
  alignas(64) uint8_t order[2][64];
  for (int half = 0; half < 2; ++half)
    for (int r = 0; r < 16; ++r) {
      const int row = 16 * half + r;
      order[half][4 * r] = row, order[half][4 * r + 2] = 32 + row;
      order[half][4 * r + 1] = order[half][4 * r + 3] = 64;
    }
  const __m512i first = _mm512_load_si512(order[0]), second = _mm512_load_si512(order[1]);
  const __m512i nibble = _mm512_set1_epi8(0x0f), magic = _mm512_set1_epi8(0x43);
  const uint8_t* block = p.w + b * 32 * p.K;
  __m512 out[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t g = 0; g < p.K / p.G; ++g) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t k = g * p.G; k < (g + 1) * p.G; k += 2) {
      const __m512i v = _mm512_loadu_si512(block + k * 32);  // columns k and k + 1
      _mm_prefetch(reinterpret_cast<const char*>(block + k * 32 + kPrefetch), _MM_HINT_T0);
      int32_t xpair;
      std::memcpy(&xpair, p.x + k, 4);
      const __m512bh xs = (__m512bh)_mm512_set1_epi32(xpair);
      const __m512i halves[2] = {_mm512_and_si512(v, nibble), _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble)};
      for (int h = 0; h < 2; ++h) {
        acc[2 * h] = _mm512_dpbf16_ps(acc[2 * h], (__m512bh)_mm512_permutex2var_epi8(halves[h], first, magic), xs);
        acc[2 * h + 1] = _mm512_dpbf16_ps(acc[2 * h + 1], (__m512bh)_mm512_permutex2var_epi8(halves[h], second, magic), xs);
      }
    }
    const __m512 xsum = _mm512_set1_ps(p.xsum[g]);
    for (int r = 0; r < 4; ++r) {  // rows b*64 + 16r .. +16: (scale, zero) pairs as 32-bit lanes
      const __m512i sz = _mm512_loadu_si512(p.sz + 2 * (g * p.N + b * 64 + 16 * r));
      const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(sz, 16));
      const __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(sz, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
      const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(136.0f), scale, zero);  // codes held 128 + q
      out[r] = _mm512_fmadd_ps(scale, acc[r], _mm512_fmadd_ps(offset, xsum, out[r]));
    }
  }
  for (int r = 0; r < 4; ++r) store16(p.y + b * 64 + 16 * r, out[r]);
}

// The last N % 64 rows (a multiple of 16), 16 at a time, in plain fp32 multiply-adds.
FELDSPAR_BF16 void tail_rows(const Problem& p, int64_t full, int64_t chunk) {
  const int64_t tail = p.N - full, stride = tail / 2;
  const uint8_t* base = p.w + full * p.K / 2 + chunk * 8;
  const __m128i nibble = _mm_set1_epi8(0x0f);
  __m512 out = _mm512_setzero_ps();
  for (int64_t g = 0; g < p.K / p.G; ++g) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = g * p.G; k < (g + 1) * p.G; ++k) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(base + k * stride));
      const __m128i rows = _mm_unpacklo_epi8(_mm_and_si128(v, nibble), _mm_and_si128(_mm_srli_epi16(v, 4), nibble));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(rows)), _mm512_set1_ps(p.xf[k]), acc);
    }
    const __m512i sz = _mm512_loadu_si512(p.sz + 2 * (g * p.N + full + 16 * chunk));
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(sz, 16));
    const __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(sz, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), scale, zero);
    out = _mm512_fmadd_ps(scale, acc, _mm512_fmadd_ps(offset, _mm512_set1_ps(p.xsum[g]), out));
  }
  store16(p.y + full + 16 * chunk, out);
}

at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scales_zeros, int64_t group) {
  TORCH_CHECK(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kBFloat16, "int4_gemv: x must be bf16 [1, K]");
  const int64_t K = x.size(1);
  TORCH_CHECK(group > 0 && group % 2 == 0 && K % group == 0, "int4_gemv: group must be even and divide K");
  TORCH_CHECK(scales_zeros.dim() == 3 && scales_zeros.size(0) == K / group && scales_zeros.size(2) == 2 &&
              scales_zeros.scalar_type() == at::kBFloat16, "int4_gemv: scales_zeros must be bf16 [K / group, N, 2]");
  const int64_t N = scales_zeros.size(1);
  TORCH_CHECK(N % 16 == 0 && w.scalar_type() == at::kByte && w.numel() * 2 == N * K,
              "int4_gemv: w must be the uint8 CPU int4 packing of an [N, K] weight, N a multiple of 16");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu() && scales_zeros.device().is_cpu(), "int4_gemv: CPU only");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous(), szc = scales_zeros.contiguous();
  std::vector<float> xf(K), xsum(K / group, 0.0f);
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(xc.const_data_ptr<at::BFloat16>());
  for (int64_t k = 0; k < K; ++k) xf[k] = bf16_to_float(xp[k]), xsum[k / group] += xf[k];
  at::Tensor out = at::empty({1, N}, x.options());
  const Problem p{xp, xf.data(), xsum.data(), wc.const_data_ptr<uint8_t>(),
                  reinterpret_cast<const uint16_t*>(szc.const_data_ptr<at::BFloat16>()), N, K, group,
                  reinterpret_cast<uint16_t*>(out.mutable_data_ptr<at::BFloat16>())};
  const int64_t blocks = N / 64, tails = (N % 64) / 16;
  at::parallel_for(0, blocks + tails, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) i < blocks ? full_block(p, i) : tail_rows(p, blocks * 64, i - blocks);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(feldspar, m) {
  m.def("int4_gemv(Tensor x, Tensor w, Tensor scales_zeros, int group) -> Tensor");
}
TORCH_LIBRARY_IMPL(feldspar, CPU, m) { m.impl("int4_gemv", &int4_gemv); }
