// Fused elementwise pieces of the BitNet layer on the CPU, with the reference's rounding.
//
// In PyTorch, RMSNorm in bf16 is five passes over the activations (to fp32, square, mean, scale,
// to bf16, times the weight) and the squared-ReLU GLU three; at full size they are ~5 % of a
// forward. Each op here is one pass per row, in fp32, rounding to the output dtype exactly
// where the torch module rounds (model/bitnet.py):
//   rms_norm:  y = w * bf16(x * (1 / sqrt(mean(x^2) + eps)))      (bf16 x and w; fp32 as is)
//   relu2_glu: y = bf16(bf16(relu(g)^2) * u)
// The sum of squares runs in 16 fp32 lanes and is then added up, so its last bit can differ from
// torch's cascade sum: an output may land one bf16 step away where a value sits on a rounding
// boundary (test_kernels_norm.py bounds how often). Everything else is the same operations.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace bt_norm {

// The portable loops are compiled for several x86 levels, picked by the loader (GCC's function
// multiversioning); elsewhere once, for the target's baseline.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BT_CLONES
#endif

static inline float bf16_to_float(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept NaN (as c10::BFloat16 does).
static inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? static_cast<uint16_t>(0x7FC0u) : static_cast<uint16_t>(rounded);
}

constexpr int kLanes = 16;

BT_CLONES
static void norm_row_bf16(const uint16_t* x, const uint16_t* w, int64_t K, float eps, uint16_t* y) {
  float part[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float v = bf16_to_float(x[k + l]);
      part[l] += v * v;
    }
  for (; k < K; ++k) {
    const float v = bf16_to_float(x[k]);
    part[k % kLanes] += v * v;
  }
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += part[l];
  const float r = 1.0f / std::sqrt(s / static_cast<float>(K) + eps);
  for (int64_t j = 0; j < K; ++j) {
    const float n = bf16_to_float(float_to_bf16(bf16_to_float(x[j]) * r));
    y[j] = float_to_bf16(bf16_to_float(w[j]) * n);
  }
}

BT_CLONES
static void norm_row_f32(const float* x, const float* w, int64_t K, float eps, float* y) {
  float part[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += x[k + l] * x[k + l];
  for (; k < K; ++k) part[k % kLanes] += x[k] * x[k];
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += part[l];
  const float r = 1.0f / std::sqrt(s / static_cast<float>(K) + eps);
  for (int64_t j = 0; j < K; ++j) y[j] = w[j] * (x[j] * r);
}

BT_CLONES
static void glu_bf16(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y) {
  for (int64_t j = 0; j < n; ++j) {
    const float a = std::max(bf16_to_float(g[j]), 0.0f);
    const float sq = bf16_to_float(float_to_bf16(a * a));
    y[j] = float_to_bf16(sq * bf16_to_float(u[j]));
  }
}

BT_CLONES
static void glu_f32(const float* g, const float* u, int64_t n, float* y) {
  for (int64_t j = 0; j < n; ++j) {
    const float a = std::max(g[j], 0.0f);
    y[j] = (a * a) * u[j];
  }
}


#if defined(__x86_64__)
#include <immintrin.h>
#define BT_NORM_X86 1

__attribute__((target("avx512f,avx512bw")))
static inline __m512 load_bf16x16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// Round to nearest even, NaN -> 0x7FC0, as float_to_bf16.
__attribute__((target("avx512f,avx512bw")))
static inline __m256i to_bf16x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

__attribute__((target("avx512f,avx512bw")))
static void norm_row_bf16_avx512(const uint16_t* x, const uint16_t* w, int64_t K, float eps, uint16_t* y) {
  __m512 acc = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 v = load_bf16x16(x + k);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));  // no FMA: the products round as the scalar code's
  }
  alignas(64) float part[16];
  _mm512_store_ps(part, acc);
  for (; k < K; ++k) {
    const float v = bf16_to_float(x[k]);
    part[k % 16] += v * v;
  }
  float s = 0.0f;
  for (int l = 0; l < 16; ++l) s += part[l];
  const float r = 1.0f / std::sqrt(s / static_cast<float>(K) + eps);
  const __m512 rv = _mm512_set1_ps(r);
  int64_t j = 0;
  for (; j + 16 <= K; j += 16) {
    const __m256i n = to_bf16x16(_mm512_mul_ps(load_bf16x16(x + j), rv));
    const __m512 nf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(n), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j), to_bf16x16(_mm512_mul_ps(load_bf16x16(w + j), nf)));
  }
  for (; j < K; ++j) {
    const float n = bf16_to_float(float_to_bf16(bf16_to_float(x[j]) * r));
    y[j] = float_to_bf16(bf16_to_float(w[j]) * n);
  }
}

__attribute__((target("avx512f,avx512bw")))
static void glu_bf16_avx512(const uint16_t* g, const uint16_t* u, int64_t n, uint16_t* y) {
  int64_t j = 0;
  const __m512 zero = _mm512_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    const __m512 a = _mm512_max_ps(zero, load_bf16x16(g + j));  // NaN in the second operand comes through, as relu(NaN) = NaN
    const __m256i sq = to_bf16x16(_mm512_mul_ps(a, a));
    const __m512 sqf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(sq), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j), to_bf16x16(_mm512_mul_ps(sqf, load_bf16x16(u + j))));
  }
  for (; j < n; ++j) {
    const float a = std::max(bf16_to_float(g[j]), 0.0f);
    y[j] = float_to_bf16(bf16_to_float(float_to_bf16(a * a)) * bf16_to_float(u[j]));
  }
}
#endif

static bool has_avx512() {
#ifdef BT_NORM_X86
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
#else
  return false;
#endif
}

static void check(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), what, ": expected a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kFloat, what,
              ": expected bfloat16 or float32, got ", t.scalar_type());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check(x, "rms_norm x");
  check(weight, "rms_norm weight");
  const int64_t K = x.size(-1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == K && weight.scalar_type() == x.scalar_type(),
              "rms_norm: weight must be (", K, ") of x's dtype");
  auto y = at::empty_like(x);
  const int64_t M = K ? x.numel() / K : 0;
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      if (bf16 && has_avx512()) {
#ifdef BT_NORM_X86
        norm_row_bf16_avx512(reinterpret_cast<const uint16_t*>(x.data_ptr()) + m * K,
                             reinterpret_cast<const uint16_t*>(weight.data_ptr()), K, static_cast<float>(eps),
                             reinterpret_cast<uint16_t*>(y.data_ptr()) + m * K);
#endif
      } else if (bf16) {
        norm_row_bf16(reinterpret_cast<const uint16_t*>(x.data_ptr()) + m * K,
                      reinterpret_cast<const uint16_t*>(weight.data_ptr()), K, static_cast<float>(eps),
                      reinterpret_cast<uint16_t*>(y.data_ptr()) + m * K);
      } else {
        norm_row_f32(x.data_ptr<float>() + m * K, weight.data_ptr<float>(), K, static_cast<float>(eps),
                     y.data_ptr<float>() + m * K);
      }
    }
  });
  return y;
}

at::Tensor relu2_glu(const at::Tensor& gate, const at::Tensor& up) {
  check(gate, "relu2_glu gate");
  check(up, "relu2_glu up");
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.scalar_type() == up.scalar_type(),
              "relu2_glu: gate and up must have one shape and dtype");
  auto y = at::empty_like(gate);
  const int64_t n = gate.numel();
  const bool bf16 = gate.scalar_type() == at::kBFloat16;
  at::parallel_for(0, n, 1 << 16, [&](int64_t j0, int64_t j1) {
    if (bf16 && has_avx512()) {
#ifdef BT_NORM_X86
      glu_bf16_avx512(reinterpret_cast<const uint16_t*>(gate.data_ptr()) + j0,
                      reinterpret_cast<const uint16_t*>(up.data_ptr()) + j0, j1 - j0,
                      reinterpret_cast<uint16_t*>(y.data_ptr()) + j0);
#endif
    } else if (bf16) {
      glu_bf16(reinterpret_cast<const uint16_t*>(gate.data_ptr()) + j0,
               reinterpret_cast<const uint16_t*>(up.data_ptr()) + j0, j1 - j0,
               reinterpret_cast<uint16_t*>(y.data_ptr()) + j0);
    } else {
      glu_f32(gate.data_ptr<float>() + j0, up.data_ptr<float>() + j0, j1 - j0, y.data_ptr<float>() + j0);
    }
  });
  return y;
}

}  // namespace bt_norm

TORCH_LIBRARY_FRAGMENT(bitvla_ternary_cpu, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor", &bt_norm::rms_norm);
  m.def("relu2_glu(Tensor gate, Tensor up) -> Tensor", &bt_norm::relu2_glu);
}
