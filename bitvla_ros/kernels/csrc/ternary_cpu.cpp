// Packed ternary matmul on the CPU for bitvla_ros (the `cpu` kernel backend).
//
// y[m, n] = (sum_k q[m, k] * w[n, k]) * (scale / xs[m])   with
//   w in {-1, 0, +1}, 2-bit packed (bitvla_ros/quant/packing.py: code c = w + 1, element 4i+g of
//     a row in bits 2g..2g+1 of byte i, rows padded on their own to ceil(K/4) bytes),
//   q, xs the per-token absmax int8 codes and scales of bitvla_ros.quant.quantize_activations_int8,
//     computed here with the same fp32 operations, so the result is bit-identical to the
//     reference backend.
//
// The integer dot product is taken as dot(c, q) - sum(q) (c = w + 1 >= 0), so the weights can be
// the unsigned operand of u8 x s8 multiply-adds: AVX-512 VNNI `vpdpbusd` (int32 accumulators) or
// AVX2 `vpmaddubsw` (int16 accumulators, widened with `vpmaddwd` every FLUSH blocks, before they
// can overflow), and a portable version of the same loop (compiler vector extensions, int16
// lanes). One binary serves any x86-64: each SIMD flavour is compiled under its own
// `#pragma GCC target` and picked at run time with __builtin_cpu_supports. The weights are never
// unpacked to memory for short inputs (decode in registers: shift + mask); for long inputs a few
// rows at a time are decoded to a small per-thread buffer that every row tile then reuses. To
// match the decoded order, each block of 4*VW activations is stored permuted once per call
// (field-major) instead of repacking the weights.

// Only light ATen headers (not torch/extension.h: a third of the build time), ops registered
// with TORCH_LIBRARY and called from Python as torch.ops.bitvla_ternary_cpu.*.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define BT_X86 1
#include <immintrin.h>
#endif

namespace bt {

// One matmul: activations already quantized and permuted.
struct Problem {
  const int8_t* A;        // (M, lda) permuted int8 codes, zero past K
  int64_t lda;            // nblocks * 4 * VW
  const int32_t* rowsum;  // (M) sum of each row's codes
  const float* fac;       // (M) scale / xs, or null for the int32 output
  int64_t M;
  const uint8_t* W;  // (N, KB) packed codes
  int64_t KB;
  int64_t N;
  float* yf;    // (M, N) fp32 output, or
  int32_t* yi;  // (M, N) int32 output
  int64_t nb;   // W rows a pre-decoded batch (a multiple of the flavour's PNR)
  uint16_t* yh = nullptr;  // (M, N) bf16 / fp16 output (bits) instead of yf, or null
  int hkind = 0;           // 1: bf16, 2: fp16
};

// fp32 -> bf16 (hkind 1) or fp16 (2) bits, rounded to nearest even like c10's conversions.
static inline uint16_t to_half_bits(float v, int hkind) {
  return hkind == 1 ? c10::BFloat16(v).x : c10::Half(v).x;
}

struct TileArgs {
  const int8_t* a;
  int64_t lda;
  const uint8_t* w[8];
  const uint8_t* tail;
  int64_t nfull, nblocks;
  const int32_t* rowsum;
  const float* fac;
  float* yf;
  int32_t* yi;
  int64_t ldy;
  uint16_t* yh;
  int hkind;
};

using TileFn = void (*)(const TileArgs&);
using RunFn = void (*)(const Problem&, int64_t, int64_t);
// Natural-order codes (nblocks * 4 * VW, zero past K) -> the permuted activation row.
using PermuteFn = void (*)(const int8_t*, int64_t, int8_t*);

struct Kernels {
  int vw;
  int64_t nb;  // W rows a pre-decoded batch (a multiple of PNR)
  RunFn run_fly;
  RunFn run_pre;
  PermuteFn permute;
  RunFn run_tiles;  // the broadcast schedule on natural-order activations, where the flavour has one
};

// ---------------------------------------------------------------------------------------------
// Portable flavour (any CPU; the only one off x86): GCC/Clang vector extensions, which the
// compiler maps to SSE2, NEON, ... A register holds 16 codes / activations widened to int16;
// the products (at most 3 * 128 = 384) add up in int16 for FLUSH blocks, then in int32.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // wide vector types by value, only between inlined calls
#endif
namespace isa_portable {
typedef int16_t i16x16 __attribute__((vector_size(32)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef int8_t i8x16 __attribute__((vector_size(16)));
struct Tr {
  using V = i16x16;
  using V32 = i32x16;
  static constexpr int VW = 16;
  static constexpr int64_t FLUSH = 20;  // 20 blocks * 4 fields * 384 = 30720 < 32767
  static constexpr int MR = 2, NR = 2, NR1 = 4, PMR = 2, PNR = 2, NB = 16;
  static inline V zero() { return V{}; }
  static inline V32 zero32() { return V32{}; }
  static inline V loadw(const uint8_t* p) {
    u8x16 b;
    std::memcpy(&b, p, sizeof(b));
    return __builtin_convertvector(b, V);
  }
  static inline V loada(const int8_t* p) {
    i8x16 b;
    std::memcpy(&b, p, sizeof(b));
    return __builtin_convertvector(b, V);
  }
  static inline void storew(uint8_t* p, V v) {
    const u8x16 b = __builtin_convertvector(v, u8x16);
    std::memcpy(p, &b, sizeof(b));
  }
  template <int G>
  static inline V field(V p) {
    return (p >> (2 * G)) & 3;
  }
  static inline V mac(V acc, V w, V a) { return acc + w * a; }
  static inline V32 widen(V acc) { return __builtin_convertvector(acc, V32); }
  static inline V32 add32(V32 a, V32 b) { return a + b; }
  static inline int32_t hsum(V32 v) {
    int32_t s = 0;
    for (int i = 0; i < 16; ++i) s += v[i];
    return s;
  }
  static inline void hsum4(V32 a, V32 b, V32 c, V32 d, int32_t* out) {
    out[0] = hsum(a), out[1] = hsum(b), out[2] = hsum(c), out[3] = hsum(d);
  }
  static inline void pin(V&) {}
};
static void permute_rows(const int8_t* q, int64_t nblocks, int8_t* out) {
  for (int64_t b = 0; b < nblocks; ++b)
    for (int g = 0; g < 4; ++g)
      for (int j = 0; j < 16; ++j) out[b * 64 + g * 16 + j] = q[b * 64 + 4 * j + g];
}
#include "ternary_cpu_kernel.h"
}  // namespace isa_portable

#ifdef BT_X86

// ---------------------------------------------------------------------------------------------
// AVX2: 32 packed bytes = 128 weights a register; vpmaddubsw into int16 lanes. A lane gains at
// most |3*128 + 3*128| = 768 per vpmaddubsw (even for the invalid code 3 and the code -128), 4 per
// block, so 10 blocks (30720) stay below 32767; then vpmaddwd by 1 widens into int32.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#endif
namespace isa_avx2 {
struct Tr {
  using V = __m256i;
  using V32 = __m256i;
  static constexpr int VW = 32;
  static constexpr int64_t FLUSH = 10;
  static constexpr int MR = 4, NR = 2, NR1 = 4, PMR = 4, PNR = 3, NB = 12;
  static inline V zero() { return _mm256_setzero_si256(); }
  static inline V32 zero32() { return _mm256_setzero_si256(); }
  static inline V loadw(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline V loada(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static inline void storew(uint8_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  template <int G>
  static inline V field(V p) {
    return _mm256_and_si256(_mm256_srli_epi16(p, 2 * G), _mm256_set1_epi8(3));
  }
  static inline V mac(V acc, V w, V a) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, a)); }
  static inline V widen(V acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
  static inline V add32(V a, V b) { return _mm256_add_epi32(a, b); }
  static inline int32_t hsum(V v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
  }
  // The four sums of a, b, c, d.
  static inline void hsum4(V a, V b, V c, V d, int32_t* out) {
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
  }
  static inline void pin(V& v) { asm("" : "+x"(v)); }
};

// 128 natural-order bytes (elements 4j+g, j < 32) -> 4 runs of 32 (field g at dst + g*stride):
// group bytes by field inside each 128-bit lane, gather the lanes' dwords by field, then a 4x4
// transpose of qwords.
static inline void transpose_block(const int8_t* src, int8_t* dst, int64_t stride) {
  const __m256i shuf = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i idx = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i v[4];
  for (int i = 0; i < 4; ++i)
    v[i] = _mm256_permutevar8x32_epi32(
        _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * i)), shuf), idx);
  const __m256i t0 = _mm256_unpacklo_epi64(v[0], v[1]), t1 = _mm256_unpackhi_epi64(v[0], v[1]);
  const __m256i t2 = _mm256_unpacklo_epi64(v[2], v[3]), t3 = _mm256_unpackhi_epi64(v[2], v[3]);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 0 * stride), _mm256_permute2x128_si256(t0, t2, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 1 * stride), _mm256_permute2x128_si256(t1, t3, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * stride), _mm256_permute2x128_si256(t0, t2, 0x31));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 3 * stride), _mm256_permute2x128_si256(t1, t3, 0x31));
}

static void permute_rows(const int8_t* q, int64_t nblocks, int8_t* out) {
  for (int64_t b = 0; b < nblocks; ++b) transpose_block(q + b * 128, out + b * 128, 32);
}
#include "ternary_cpu_kernel.h"

// Activation quantization, 8 floats a step (also used by the AVX-512 flavour).
static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

template <typename In>
static void quant_row(const In* x, int64_t K, int8_t* q, float* xs, int32_t* rowsum) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps(), vnan = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = load8(x + k);
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, absmask));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float l : lanes) amax = std::max(amax, l);
  bool nan = _mm256_movemask_ps(vnan) != 0;
  for (int64_t i = k; i < K; ++i) {
    const float f = static_cast<float>(x[i]);
    nan |= std::isnan(f);
    amax = std::max(amax, std::fabs(f));
  }
  // torch: 127.0 / absmax.clamp(min=1e-5) is absmax.reciprocal() * 127.0, in fp32.
  const float floor = static_cast<float>(1e-5);
  const float s = nan ? std::numeric_limits<float>::quiet_NaN() : (1.0f / std::max(amax, floor)) * 127.0f;
  *xs = s;

  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i vsum = _mm256_setzero_si256();
  k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i c[4];
    for (int u = 0; u < 4; ++u) {
      const __m256 r = _mm256_round_ps(_mm256_mul_ps(load8(x + k + 8 * u), vs),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // half to even
      c[u] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
      vsum = _mm256_add_epi32(vsum, c[u]);
    }
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permutevar8x32_epi32(p, order));
  }
  int32_t sum = isa_avx2::Tr::hsum(vsum);
  for (; k < K; ++k) {
    const float r = std::nearbyint(static_cast<float>(x[k]) * s);
    const int8_t c = static_cast<int8_t>(static_cast<int32_t>(std::min(std::max(r, -128.0f), 127.0f)));
    q[k] = c;
    sum += c;
  }
  *rowsum = sum;
}
}  // namespace isa_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------------------------
// AVX-VNNI (VEX vpdpbusd on 256-bit registers: Alder Lake and later cores, Zen 5, and Xeons that
// also have AVX-512): the AVX2 layout (32 packed bytes a register) with int32 accumulators, so no
// int16 flush and room for a wider pre-decoded tile (12 accumulators + 3 weights + 1 activation).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c,avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c,avxvnni")
#endif
namespace isa_avxvnni {
struct Tr : isa_avx2::Tr {
  static constexpr int64_t FLUSH = 0;  // int32 lanes (at most 3072 a block): no widening
  static constexpr int MR = 4, NR = 2, NR1 = 4, PMR = 4, PNR = 3, NB = 12;
  static inline V mac(V acc, V w, V a) { return _mm256_dpbusd_avx_epi32(acc, w, a); }
  static inline V widen(V acc) { return acc; }
  static inline void pin(V&) {}  // vpdpbusd accumulates in place
};
static void permute_rows(const int8_t* q, int64_t nblocks, int8_t* out) { isa_avx2::permute_rows(q, nblocks, out); }
#include "ternary_cpu_kernel.h"
}  // namespace isa_avxvnni
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: 64 packed bytes = 256 weights a register; vpdpbusd straight into int32 lanes.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,f16c,avx512f,avx512bw,avx512vnni")
#endif
namespace isa_vnni {
struct Tr {
  using V = __m512i;
  using V32 = __m512i;
  static constexpr int VW = 64;
  static constexpr int64_t FLUSH = 0;  // int32 lanes (at most 6144 a block): no widening
  static constexpr int MR = 4, NR = 4, NR1 = 4, PMR = 4, PNR = 4, NB = 16;
  static inline V zero() { return _mm512_setzero_si512(); }
  static inline V32 zero32() { return _mm512_setzero_si512(); }
  static inline V loadw(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static inline V loada(const int8_t* p) { return _mm512_loadu_si512(p); }
  static inline void storew(uint8_t* p, V v) { _mm512_storeu_si512(p, v); }
  template <int G>
  static inline V field(V p) {
    return _mm512_and_si512(_mm512_srli_epi16(p, 2 * G), _mm512_set1_epi8(3));
  }
  static inline V mac(V acc, V w, V a) { return _mm512_dpbusd_epi32(acc, w, a); }
  static inline V widen(V acc) { return acc; }
  static inline V add32(V a, V b) { return _mm512_add_epi32(a, b); }
  static inline int32_t hsum(V v) {
    // (maskz: the plain extract/cast/reduce intrinsics of GCC 12 warn about their undefined
    // pass-through operand.)
    return isa_avx2::Tr::hsum(
        _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xF, v, 0), _mm512_maskz_extracti64x4_epi64(0xF, v, 1)));
  }
  static inline void hsum4(V a, V b, V c, V d, int32_t* out) {
    out[0] = hsum(a), out[1] = hsum(b), out[2] = hsum(c), out[3] = hsum(d);
  }
  static inline void pin(V&) {}  // vpdpbusd accumulates in place: nothing to reassociate
};

// A 256-element block is two 128-byte AVX2 transposes, each filling half of every field's run.
static void permute_rows(const int8_t* q, int64_t nblocks, int8_t* out) {
  for (int64_t b = 0; b < nblocks; ++b) {
    isa_avx2::transpose_block(q + b * 256, out + b * 256, 64);
    isa_avx2::transpose_block(q + b * 256 + 128, out + b * 256 + 32, 64);
  }
}
static void run_tiles(const Problem& P, int64_t n0, int64_t n1);
#define BT_RUN_TILES &run_tiles
#include "ternary_cpu_kernel.h"

// The broadcast ("tiles") schedule, the layout of vendor int8 GEMMs: a register holds one
// 4-element k-group of 16 output columns (VNNI layout: column-major dwords of 4 u8 codes), the
// activations stay in natural order and each row's 4 int8 of a k-group are broadcast from memory.
// Every register of the MR x TZ tile accumulates 16 finished outputs: no horizontal sums, and the
// epilogue is vector code. A tile of TN packed weight rows is decoded into that layout once
// (KB * TN * 4 bytes, per thread: 160 KB at K = 2560, inside L2) and reused by all M rows.
static constexpr int TZ = 4, TN = 16 * TZ, TMR = 6;

// Packed rows [n0, n0 + nt) (nt <= TN; missing columns zero) -> D[k4][column][4 codes].
static void decode_tile(const Problem& P, int64_t n0, int nt, uint8_t* D) {
  const int64_t KB = P.KB, K4 = KB - KB % 4;
  const uint8_t* base = P.W + n0 * P.KB;
  const __m512i m8 = _mm512_set1_epi32(0xFF), m0 = _mm512_set1_epi32(0x3), m1 = _mm512_set1_epi32(0x300),
                m2 = _mm512_set1_epi32(0x30000), m3 = _mm512_set1_epi32(0x3000000);
  for (int z = 0; z < TZ; ++z) {
    const int c0 = 16 * z;
    const int valid = std::max(0, std::min(16, nt - c0));
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512i idx = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32(c0), _mm512_setr_epi32(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)), _mm512_set1_epi32(static_cast<int>(KB)));
    for (int64_t k4 = 0; k4 < K4; k4 += 4) {
      // Four packed bytes (16 codes) of each of 16 rows, then one byte -> one dword of 4 codes.
      const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, idx, base + k4, 1);
      for (int b = 0; b < 4; ++b) {
        const __m512i x = _mm512_and_si512(_mm512_srli_epi32(g, 8 * b), m8);
        const __m512i d = _mm512_or_si512(
            _mm512_or_si512(_mm512_and_si512(x, m0), _mm512_and_si512(_mm512_slli_epi32(x, 6), m1)),
            _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(x, 12), m2), _mm512_and_si512(_mm512_slli_epi32(x, 18), m3)));
        _mm512_storeu_si512(D + (k4 + b) * TN * 4 + c0 * 4, d);
      }
    }
    for (int64_t k4 = K4; k4 < KB; ++k4) {  // the last < 4 bytes: no gather past the matrix's end
      alignas(64) uint32_t d[16] = {};
      for (int c = 0; c < valid; ++c) {
        const uint32_t x = base[(c0 + c) * KB + k4];
        d[c] = (x & 3u) | ((x << 6) & 0x300u) | ((x << 12) & 0x30000u) | ((x << 18) & 0x3000000u);
      }
      _mm512_storeu_si512(D + k4 * TN * 4 + c0 * 4, _mm512_load_si512(d));
    }
  }
}

// The loops over the tile are unrolled by pragma so that GCC keeps acc in 24 registers (rolled,
// it keeps the array on the stack: a load and a store around every vpdpbusd, at half the speed).
template <int MR>
static void tiles_mr(const Problem& P, int64_t m, int64_t n, int nt, const uint8_t* D) {
  __m512i acc[MR][TZ];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int z = 0; z < TZ; ++z) acc[i][z] = _mm512_setzero_si512();
  const int8_t* a = P.A + m * P.lda;
  for (int64_t k4 = 0; k4 < P.KB; ++k4) {
    const uint8_t* dk = D + k4 * TN * 4;
    __m512i w[TZ];
#pragma GCC unroll 4
    for (int z = 0; z < TZ; ++z) w[z] = _mm512_loadu_si512(dk + 64 * z);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t q4;
      std::memcpy(&q4, a + i * P.lda + 4 * k4, 4);
      const __m512i av = _mm512_set1_epi32(q4);
#pragma GCC unroll 4
      for (int z = 0; z < TZ; ++z) acc[i][z] = _mm512_dpbusd_epi32(acc[i][z], w[z], av);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m512i s = _mm512_set1_epi32(P.rowsum[m + i]);
#pragma GCC unroll 4
    for (int z = 0; z < TZ; ++z) {
      const int valid = std::max(0, std::min(16, nt - 16 * z));
      if (valid == 0) continue;
      const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
      const __m512i r = _mm512_sub_epi32(acc[i][z], s);
      const int64_t o = (m + i) * P.N + n + 16 * z;
      if (P.yh != nullptr || P.yf != nullptr) {
        // (float)(acc - sum) * fac, one rounding, exactly the scalar epilogue
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(r), _mm512_set1_ps(P.fac[m + i]));
        if (P.yh == nullptr) {
          _mm512_mask_storeu_ps(P.yf + o, mask, v);
        } else {
          alignas(64) float tmp[16];
          _mm512_store_ps(tmp, v);
          for (int j = 0; j < valid; ++j) P.yh[o + j] = to_half_bits(tmp[j], P.hkind);
        }
      } else {
        _mm512_mask_storeu_epi32(P.yi + o, mask, r);
      }
    }
  }
}

static void run_tiles(const Problem& P, int64_t n0, int64_t n1) {
  std::unique_ptr<uint8_t, void (*)(void*)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(P.KB * TN * 4 + 64))), &std::free);
  if (!buf) throw std::bad_alloc();
  for (int64_t n = n0; n < n1; n += TN) {
    const int nt = static_cast<int>(std::min<int64_t>(TN, n1 - n));
    decode_tile(P, n, nt, buf.get());
    int64_t m = 0;
    for (; m + TMR <= P.M; m += TMR) tiles_mr<TMR>(P, m, n, nt, buf.get());
    switch (P.M - m) {
      case 5: tiles_mr<5>(P, m, n, nt, buf.get()); break;
      case 4: tiles_mr<4>(P, m, n, nt, buf.get()); break;
      case 3: tiles_mr<3>(P, m, n, nt, buf.get()); break;
      case 2: tiles_mr<2>(P, m, n, nt, buf.get()); break;
      case 1: tiles_mr<1>(P, m, n, nt, buf.get()); break;
      default: break;
    }
  }
}
}  // namespace isa_vnni
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // BT_X86

// ---------------------------------------------------------------------------------------------
// Portable quantization, the same fp32 operations as the AVX2 one.
template <typename In>
static void quant_row_portable(const In* x, int64_t K, int8_t* q, float* xs, int32_t* rowsum) {
  float amax = 0.0f;
  bool nan = false;
  for (int64_t k = 0; k < K; ++k) {
    const float f = static_cast<float>(x[k]);
    nan |= std::isnan(f);
    amax = std::max(amax, std::fabs(f));
  }
  const float floor = static_cast<float>(1e-5);
  const float s = nan ? std::numeric_limits<float>::quiet_NaN() : (1.0f / std::max(amax, floor)) * 127.0f;
  *xs = s;
  int32_t sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    const float r = std::nearbyint(static_cast<float>(x[k]) * s);
    const int8_t c = static_cast<int8_t>(static_cast<int32_t>(std::min(std::max(r, -128.0f), 127.0f)));
    q[k] = c;
    sum += c;
  }
  *rowsum = sum;
}

enum Isa : int64_t { kPortable = 0, kAvx2 = 1, kVnni = 2, kAvxVnni = 3 };

static bool isa_supported(int64_t isa) {
  switch (isa) {
    case kPortable:
      return true;
#ifdef BT_X86
    case kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    case kVnni:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    case kAvxVnni:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avxvnni");
#endif
    default:
      return false;
  }
}

static int64_t best_isa() {
  for (int64_t isa : {kVnni, kAvxVnni, kAvx2})
    if (isa_supported(isa)) return isa;
  return kPortable;
}

static const char* isa_name(int64_t isa) {
  switch (isa) {
    case kAvx2:
      return "avx2";
    case kVnni:
      return "avx512vnni";
    case kAvxVnni:
      return "avxvnni";
    default:
      return "portable";
  }
}

static const Kernels& kernels_for(int64_t isa) {
  TORCH_CHECK(isa_supported(isa), "ternary cpu kernel: instruction set '", isa_name(isa),
              "' is not supported by this CPU");
#ifdef BT_X86
  if (isa == kVnni) return isa_vnni::kernels;
  if (isa == kAvxVnni) return isa_avxvnni::kernels;
  if (isa == kAvx2) return isa_avx2::kernels;
#endif
  return isa_portable::kernels;
}

struct Prepared {
  at::Tensor A, rowsum, xs;
  int64_t nblocks;
};

template <typename T>
static void quant_one(const at::Tensor& x, int64_t m, int64_t K, int64_t isa, int8_t* q, float* xs, int32_t* rs) {
  const T* src = x.data_ptr<T>() + m * K;
#ifdef BT_X86
  if (isa != kPortable) return isa_avx2::quant_row(src, K, q, xs, rs);
#endif
  quant_row_portable(src, K, q, xs, rs);
}

static void permute_none(const int8_t* q, int64_t nblocks, int8_t* out) {
  std::memcpy(out, q, static_cast<size_t>(nblocks * 4));
}

// x (M, K) float/bf16/half, quantized here, or int8 codes: the int8 rows laid out for the kernel
// (vw, permute; vw = 1 with permute_none keeps the natural order), their sums and, for float
// input, the scales xs. Rows in parallel.
static Prepared prepare_activations(const at::Tensor& x, int64_t K, int64_t isa, int vw, PermuteFn permute) {
  const int64_t M = x.size(0);
  const int64_t KB = (K + 3) / 4;
  const int64_t nblocks = (KB + vw - 1) / vw;
  const int64_t kp = nblocks * 4 * vw;
  Prepared p;
  p.nblocks = nblocks;
  p.A = at::empty({M, kp}, at::kChar);
  p.rowsum = at::empty({M}, at::kInt);
  p.xs = at::empty({M}, at::kFloat);
  int8_t* A = p.A.data_ptr<int8_t>();
  int32_t* rs = p.rowsum.data_ptr<int32_t>();
  float* xs = p.xs.data_ptr<float>();
  const auto st = x.scalar_type();
  // Rows in parallel only for ~100 us of work or more (see run() on why not for less).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(K, 1));
  at::parallel_for(0, M, grain, [&](int64_t m0, int64_t m1) {
    std::vector<int8_t> q(static_cast<size_t>(kp), 0);
    for (int64_t m = m0; m < m1; ++m) {
      if (st == at::kChar) {
        const int8_t* src = x.data_ptr<int8_t>() + m * K;
        int32_t s = 0;
        for (int64_t k = 0; k < K; ++k) s += src[k];
        std::memcpy(q.data(), src, static_cast<size_t>(K));
        rs[m] = s;
      } else {
        if (st == at::kFloat)
          quant_one<float>(x, m, K, isa, q.data(), xs + m, rs + m);
        else if (st == at::kBFloat16)
          quant_one<c10::BFloat16>(x, m, K, isa, q.data(), xs + m, rs + m);
        else
          quant_one<c10::Half>(x, m, K, isa, q.data(), xs + m, rs + m);
      }
      permute(q.data(), nblocks, A + m * kp);
    }
  });
  return p;
}

static void check_weight(const at::Tensor& codes, int64_t K) {
  TORCH_CHECK(codes.device().is_cpu() && codes.scalar_type() == at::kByte && codes.dim() == 2 && codes.is_contiguous(),
              "ternary cpu kernel: packed codes must be a contiguous 2-D uint8 CPU tensor");
  TORCH_CHECK(K > 0 && codes.size(1) == (K + 3) / 4, "ternary cpu kernel: packed rows hold ", codes.size(1),
              " bytes, in_features=", K, " needs ", (K + 3) / 4);
}

static void check_input(const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() && x.size(1) == K,
              "ternary cpu kernel: input must be a contiguous (M, ", K, ") CPU tensor");
}

// mode: 0 = pick by M (pre-decoded at M >= pre_min_m, broadcast tiles from kTilesMinRows where
// the flavour has them), 1 = decode in registers, 2 = pre-decoded, 3 = the broadcast tiles where
// the flavour has them (else pre-decoded).
// (Batches of 2-4x more pre-decoded rows, to stream the activations fewer times, measured the
// same on the 2-core EPYC.)
// Tiles vs pre-decoded rows, one AVX-512 VNNI core (EPYC, 6912 x 2560): 1.1x slower at 64 rows,
// 1.15x faster at 128, 1.3-1.8x at 512-626 (bench/cpu_kernel_sweep.py --schedules).
static constexpr int64_t kTilesMinRows = 128;

static bool use_tiles(const Kernels& kern, int64_t mode, int64_t M) {
  return kern.run_tiles != nullptr && (mode == 3 || (mode == 0 && M >= kTilesMinRows));
}

static void run(Problem& P, const Kernels& kern, int64_t mode, int64_t pre_min_m) {
  const bool tiles = use_tiles(kern, mode, P.M);
  const bool pre = mode == 2 || mode == 3 || (mode == 0 && P.M >= pre_min_m);
  P.nb = kern.nb;
  // Work items: groups of output columns (a multiple of every flavour's NR / PNR).
  const int64_t tn = tiles ? 64 : pre ? P.nb : 8;
  const int64_t items = (P.N + tn - 1) / tn;
  // One thread below ~2^25 MACs (~0.3 ms on one AVX2 core), chunks of >= 2^22 MACs above. Waking
  // a second OpenMP thread pays off little for so short a call, and where another process holds
  // that core it costs a scheduler tick or two (4-16 ms measured on the shared 2-vCPU machine).
  const int64_t work = std::max<int64_t>(1, P.M * P.lda * tn);  // MACs per item
  const int64_t grain = P.M * P.lda * P.N < (int64_t(1) << 25) ? items
                                                               : std::max<int64_t>(1, (int64_t(1) << 22) / work);
  const RunFn fn = tiles ? kern.run_tiles : pre ? kern.run_pre : kern.run_fly;
  at::parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) { fn(P, i0 * tn, std::min(P.N, i1 * tn)); });
}

static Prepared prepare_for(const at::Tensor& x, int64_t K, int64_t isa, const Kernels& kern, int64_t mode) {
  // The broadcast tiles read natural-order rows (zero past K); the other schedules permuted ones.
  return use_tiles(kern, mode, x.size(0)) ? prepare_activations(x, K, isa, 1, &permute_none)
                               : prepare_activations(x, K, isa, kern.vw, kern.permute);
}

// y = x Wᵀ, bit-identical to the reference backend: fp32 (out_kind 0), or that fp32 value rounded
// to bf16 (1) / fp16 (2) as torch's .to() rounds it, saving a pass over the output.
at::Tensor ternary_matmul(const at::Tensor& x, const at::Tensor& codes, int64_t K, const at::Tensor& scale,
                             int64_t isa, int64_t mode, int64_t pre_min_m, int64_t out_kind) {
  check_weight(codes, K);
  check_input(x, K);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf,
              "ternary cpu kernel: input must be float32, bfloat16 or float16");
  TORCH_CHECK(scale.device().is_cpu() && scale.numel() == 1 && scale.scalar_type() == at::kFloat,
              "ternary cpu kernel: scale must be one fp32 value");
  TORCH_CHECK(out_kind >= 0 && out_kind <= 2, "ternary cpu kernel: out_kind must be 0 (fp32), 1 (bf16) or 2 (fp16)");
  const Kernels& kern = kernels_for(isa);
  const int64_t M = x.size(0), N = codes.size(0);
  auto y = at::empty({M, N}, out_kind == 1 ? at::kBFloat16 : out_kind == 2 ? at::kHalf : at::kFloat);
  if (M == 0 || N == 0) return y;
  Prepared pa = prepare_for(x, K, isa, kern, mode);
  // torch: weight.scale / xs (fp32 division), then acc.float() * that.
  const float wscale = scale.contiguous().data_ptr<float>()[0];
  auto fac = at::empty({M}, at::kFloat);
  const float* xs = pa.xs.data_ptr<float>();
  float* f = fac.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) f[m] = wscale / xs[m];
  Problem P{pa.A.data_ptr<int8_t>(), pa.A.size(1), pa.rowsum.data_ptr<int32_t>(), f, M,
            codes.data_ptr<uint8_t>(), codes.size(1), N, nullptr, nullptr, 0};
  if (out_kind == 0) {
    P.yf = y.data_ptr<float>();
  } else {
    P.yh = reinterpret_cast<uint16_t*>(y.data_ptr());
    P.hkind = static_cast<int>(out_kind);
  }
  run(P, kern, mode, pre_min_m);
  return y;
}

// The exact int32 accumulator sum_k q[m, k] * w[n, k] for given int8 codes q (M, K).
at::Tensor ternary_matmul_codes(const at::Tensor& q, const at::Tensor& codes, int64_t K, int64_t isa, int64_t mode,
                                   int64_t pre_min_m) {
  check_weight(codes, K);
  check_input(q, K);
  TORCH_CHECK(q.scalar_type() == at::kChar, "ternary cpu kernel: codes input must be int8");
  const Kernels& kern = kernels_for(isa);
  const int64_t M = q.size(0), N = codes.size(0);
  auto y = at::empty({M, N}, at::kInt);
  if (M == 0 || N == 0) return y;
  Prepared pa = prepare_for(q, K, isa, kern, mode);
  Problem P{pa.A.data_ptr<int8_t>(), pa.A.size(1), pa.rowsum.data_ptr<int32_t>(), nullptr, M,
            codes.data_ptr<uint8_t>(), codes.size(1), N, nullptr, y.data_ptr<int32_t>(), 0};
  run(P, kern, mode, pre_min_m);
  return y;
}

// The fused activation quantizer alone: (int8 codes (M, K), fp32 scales (M, 1)).
std::vector<at::Tensor> quantize(const at::Tensor& x, int64_t isa) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(), "quantize: contiguous 2-D CPU input");
  TORCH_CHECK(isa_supported(isa), "quantize: instruction set not supported here");
  const int64_t M = x.size(0), K = x.size(1);
  Prepared pa = prepare_activations(x, K, isa, 1, &permute_none);
  return {pa.A.narrow(1, 0, K).contiguous(), pa.xs.view({M, 1})};
}

}  // namespace bt

TORCH_LIBRARY(bitvla_ternary_cpu, m) {
  m.def("matmul(Tensor x, Tensor codes, int in_features, Tensor scale, int isa, int mode, int pre_min_m, "
        "int out_kind=0) -> Tensor",
        &bt::ternary_matmul);
  m.def("matmul_codes(Tensor q, Tensor codes, int in_features, int isa, int mode, int pre_min_m) -> Tensor",
        &bt::ternary_matmul_codes);
  m.def("quantize(Tensor x, int isa) -> Tensor[]", &bt::quantize);
  m.def("isa_supported(int isa) -> bool", &bt::isa_supported);
  m.def("best_isa() -> int", &bt::best_isa);
}
