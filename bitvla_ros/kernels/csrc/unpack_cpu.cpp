// Packed ternary rows -> int8 codes in {-1, 0, 1}, a band of rows at a time.
//
// The int8 backend's "packed" variant keeps only the 2-bit codes and, per matmul, decodes one
// band of weight rows into the int8 layout oneDNN's GEMM takes (AMX tiles or VNNI behind
// torch._int_mm), runs that band, and reuses the buffer for the next: the int8 matrix is never
// whole in memory. Layout (quant/packing.py): element 4j + t of a row sits in bits 2t..2t+1 of
// byte j, stored as code + 1.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bt_unpack {

static inline void unpack_scalar(const uint8_t* p, int64_t nbytes, int64_t K, int8_t* out) {
  for (int64_t j = 0; j < nbytes; ++j) {
    const uint8_t b = p[j];
    for (int t = 0; t < 4 && 4 * j + t < K; ++t) out[4 * j + t] = static_cast<int8_t>(((b >> (2 * t)) & 3) - 1);
  }
}

#if defined(__x86_64__)
// 16 packed bytes -> 64 codes: the four 2-bit fields, then interleaved back to element order.
static void unpack_row_sse(const uint8_t* p, int64_t nbytes, int64_t K, int8_t* out) {
  const __m128i three = _mm_set1_epi8(3), one = _mm_set1_epi8(1);
  int64_t j = 0;
  for (; j + 16 <= nbytes && 4 * (j + 16) <= K; j += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j));
    const __m128i f0 = _mm_sub_epi8(_mm_and_si128(b, three), one);
    const __m128i f1 = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 2), three), one);
    const __m128i f2 = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), three), one);
    const __m128i f3 = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 6), three), one);
    const __m128i lo01 = _mm_unpacklo_epi8(f0, f1), hi01 = _mm_unpackhi_epi8(f0, f1);
    const __m128i lo23 = _mm_unpacklo_epi8(f2, f3), hi23 = _mm_unpackhi_epi8(f2, f3);
    __m128i* o = reinterpret_cast<__m128i*>(out + 4 * j);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(hi01, hi23));
  }
  unpack_scalar(p + j, nbytes - j, K - 4 * j, out + 4 * j);
}
#endif

// Rows [row0, row0 + rows) of codes (N, ceil(K/4)) -> int8 (rows, K).
at::Tensor unpack_rows(const at::Tensor& codes, int64_t row0, int64_t rows, int64_t K) {
  TORCH_CHECK(codes.device().is_cpu() && codes.dim() == 2 && codes.scalar_type() == at::kByte && codes.is_contiguous(),
              "unpack_rows: contiguous 2-D uint8 CPU codes expected");
  const int64_t KB = codes.size(1);
  TORCH_CHECK(KB == (K + 3) / 4, "unpack_rows: rows of ", KB, " bytes do not hold K = ", K);
  TORCH_CHECK(row0 >= 0 && rows >= 0 && row0 + rows <= codes.size(0), "unpack_rows: rows out of range");
  auto out = at::empty({rows, K}, at::kChar);
  const uint8_t* base = codes.data_ptr<uint8_t>() + row0 * KB;
  int8_t* o = out.data_ptr<int8_t>();
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(K, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
#if defined(__x86_64__)
      unpack_row_sse(base + r * KB, KB, K, o + r * K);
#else
      unpack_scalar(base + r * KB, KB, K, o + r * K);
#endif
    }
  });
  return out;
}

}  // namespace bt_unpack

TORCH_LIBRARY_FRAGMENT(bitvla_ternary_cpu, m) {
  m.def("unpack_rows(Tensor codes, int row0, int rows, int in_features) -> Tensor", &bt_unpack::unpack_rows);
}
