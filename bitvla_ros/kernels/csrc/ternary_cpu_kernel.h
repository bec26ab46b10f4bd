// ISA-generic body of the packed ternary matmul. No include guard on purpose: ternary_cpu.cpp
// includes this file once per instruction set, each time inside its own namespace (under a
// `#pragma GCC target` for the SIMD ones) right after defining `struct Tr`, the traits:
//
//   V                     one register: __m256i (AVX2), __m512i (AVX-512), 16 x int16 (portable)
//   V32                   the int32 accumulator register (V itself where V holds int32 lanes)
//   VW                    bytes of packed weights one register holds; a "block" is the 4*VW
//                         activations those bytes cover
//   FLUSH                 blocks a narrow accumulator may take before it is widened to int32
//                         (0: V holds int32 lanes and is the accumulator itself)
//   MR, NR                rows of x / rows of W per register tile, weights decoded on the fly
//   NR1                   rows of W per register tile when x has one row
//   PMR, PNR, NB          the same for the pre-decoded path, and W rows decoded per batch
//   zero(), zero32(), loadw(p), loada(p), storew(p, v), field<G>(v), mac(acc, w, a), widen(acc),
//   add32(a, b), hsum(v), hsum4(a, b, c, d, out), and pin(v): an empty asm that keeps v in a
//   register, so that the compiler cannot reassociate the accumulator sums across fields, which
//   (measured, GCC 12) spills the whole register tile and costs a third of the speed
//
// Layouts (see ternary_cpu.cpp): a packed byte holds elements 4i+g in bits 2g..2g+1, so field g
// of the VW bytes of block b is elements {b*4*VW + 4j + g : j < VW}. The activations are stored
// permuted to match: A[m][b*BK + g*VW + j] = a[m][b*BK + 4j + g], zero past K. The dot product of
// codes c = w + 1 in {0, 1, 2} with int8 activations is taken with u8 x s8 instructions; the
// caller subtracts sum(a) per row.

static constexpr int VW = Tr::VW;
static constexpr int BK = 4 * VW;
using V = Tr::V;
using V32 = Tr::V32;

// One field of one block, weights decoded from the packed registers p.
template <int G, int MR, int NR>
static inline __attribute__((always_inline)) void step_fly(V (&acc)[MR][NR], const int8_t* ab, int64_t lda,
                                                           const V (&p)[NR]) {
  V w[NR];
  for (int j = 0; j < NR; ++j) w[j] = Tr::template field<G>(p[j]);
  for (int i = 0; i < MR; ++i) {
    const V a = Tr::loada(ab + i * lda + G * VW);
    for (int j = 0; j < NR; ++j) {
      acc[i][j] = Tr::mac(acc[i][j], w[j], a);
      Tr::pin(acc[i][j]);
    }
  }
}

// One field of one block, weights already decoded to u8 codes in the permuted layout.
template <int G, int MR, int NR>
static inline __attribute__((always_inline)) void step_pre(V (&acc)[MR][NR], const int8_t* ab, int64_t lda,
                                                           const uint8_t* const (&wb)[NR]) {
  V w[NR];
  for (int j = 0; j < NR; ++j) w[j] = Tr::loadw(wb[j] + G * VW);
  for (int i = 0; i < MR; ++i) {
    const V a = Tr::loada(ab + i * lda + G * VW);
    for (int j = 0; j < NR; ++j) {
      acc[i][j] = Tr::mac(acc[i][j], w[j], a);
      Tr::pin(acc[i][j]);
    }
  }
}

// acc[i][j] += the products of blocks [b0, b1).
// PRE: w[j] is a decoded row (nblocks*BK bytes). Otherwise w[j] is a packed row whose first
// nfull blocks are read in place and whose last, partial block (if nblocks > nfull) is read from
// tail + j*VW, a zero-padded copy.
template <int MR, int NR, bool PRE>
static inline __attribute__((always_inline)) void blocks(V (&acc)[MR][NR], const int8_t* a, int64_t lda,
                                                         const uint8_t* const* w, const uint8_t* tail, int64_t nfull,
                                                         int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    const int8_t* ab = a + b * BK;
    if constexpr (PRE) {
      const uint8_t* wb[NR];
      for (int j = 0; j < NR; ++j) wb[j] = w[j] + b * BK;
      step_pre<0>(acc, ab, lda, wb);
      step_pre<1>(acc, ab, lda, wb);
      step_pre<2>(acc, ab, lda, wb);
      step_pre<3>(acc, ab, lda, wb);
    } else {
      V p[NR];
      for (int j = 0; j < NR; ++j) p[j] = Tr::loadw(b < nfull ? w[j] + b * VW : tail + j * VW);
      step_fly<0>(acc, ab, lda, p);
      step_fly<1>(acc, ab, lda, p);
      step_fly<2>(acc, ab, lda, p);
      step_fly<3>(acc, ab, lda, p);
    }
  }
}

// out[i][j] = sum_k codes(W row j)[k] * A[i][k] over all blocks (no sum(a) correction yet).
template <int MR, int NR, bool PRE>
static inline void tile_dot(const int8_t* a, int64_t lda, const uint8_t* const* w, const uint8_t* tail, int64_t nfull,
                            int64_t nblocks, int32_t (&out)[MR][NR]) {
  V32 acc32[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc32[i][j] = Tr::zero32();
  if constexpr (Tr::FLUSH == 0) {
    // Registers accumulate in int32 already (V is V32): one pass, no second set of registers.
    blocks<MR, NR, PRE>(acc32, a, lda, w, tail, nfull, 0, nblocks);
  } else {
    for (int64_t b0 = 0; b0 < nblocks; b0 += Tr::FLUSH) {
      V acc[MR][NR];
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = Tr::zero();
      blocks<MR, NR, PRE>(acc, a, lda, w, tail, nfull, b0, std::min<int64_t>(nblocks, b0 + Tr::FLUSH));
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc32[i][j] = Tr::add32(acc32[i][j], Tr::widen(acc[i][j]));
    }
  }
  // Horizontal sums, four accumulators at a time where the tile allows (t = i * NR + j).
  constexpr int T = MR * NR, T4 = T - T % 4;
  for (int t = 0; t < T4; t += 4) {
    int32_t r4[4];
    Tr::hsum4(acc32[t / NR][t % NR], acc32[(t + 1) / NR][(t + 1) % NR], acc32[(t + 2) / NR][(t + 2) % NR],
              acc32[(t + 3) / NR][(t + 3) % NR], r4);
    for (int u = 0; u < 4; ++u) out[(t + u) / NR][(t + u) % NR] = r4[u];
  }
  for (int t = T4; t < T; ++t) out[t / NR][t % NR] = Tr::hsum(acc32[t / NR][t % NR]);
}

// A register tile and its epilogue: y = (acc - sum(a)) as int32, or (float)(acc - sum(a)) * fac.
template <int MR, int NR, bool PRE>
static void tile_entry(const TileArgs& t) {
  int32_t r[MR][NR];
  tile_dot<MR, NR, PRE>(t.a, t.lda, t.w, t.tail, t.nfull, t.nblocks, r);
  for (int i = 0; i < MR; ++i) {
    const int32_t s = t.rowsum[i];
    if (t.yh != nullptr) {  // the fp32 value rounded to bf16 / fp16, as torch's .to() rounds it
      const float f = t.fac[i];
      for (int j = 0; j < NR; ++j) t.yh[i * t.ldy + j] = to_half_bits(static_cast<float>(r[i][j] - s) * f, t.hkind);
    } else if (t.yf != nullptr) {
      const float f = t.fac[i];
      for (int j = 0; j < NR; ++j) t.yf[i * t.ldy + j] = static_cast<float>(r[i][j] - s) * f;
    } else {
      for (int j = 0; j < NR; ++j) t.yi[i * t.ldy + j] = r[i][j] - s;
    }
  }
}

template <bool PRE, int MR, int NR>
static TileFn pick_nr(int nr) {
  if (nr == NR) return &tile_entry<MR, NR, PRE>;
  if constexpr (NR > 1) return pick_nr<PRE, MR, NR - 1>(nr);
  return nullptr;
}

template <bool PRE, int MR, int NR>
static TileFn pick(int mr, int nr) {
  if (mr == MR) return pick_nr<PRE, MR, NR>(nr);
  if constexpr (MR > 1) return pick<PRE, MR - 1, NR>(mr, nr);
  return nullptr;
}

static inline void set_rows(TileArgs& t, const Problem& P, int64_t m, int64_t n) {
  t.a = P.A + m * P.lda;
  t.rowsum = P.rowsum + m;
  t.fac = P.fac != nullptr ? P.fac + m : nullptr;
  t.yf = P.yf != nullptr ? P.yf + m * P.N + n : nullptr;
  t.yi = P.yi != nullptr ? P.yi + m * P.N + n : nullptr;
  t.yh = P.yh != nullptr ? P.yh + m * P.N + n : nullptr;
  t.hkind = P.hkind;
}

// Output columns [n0, n1): weights decoded in registers straight from the packed rows. Each
// group of NR packed rows stays in L1 while all M activation rows stream past it.
template <int MR, int NR>
static void run_fly_t(const Problem& P, int64_t n0, int64_t n1) {
  const int64_t nfull = P.KB / VW, tb = P.KB % VW;
  alignas(64) uint8_t tail[NR * VW];
  TileArgs t;
  t.lda = P.lda;
  t.ldy = P.N;
  t.tail = tail;
  t.nfull = nfull;
  t.nblocks = nfull + (tb ? 1 : 0);
  const TileFn full = pick<false, MR, NR>(MR, NR);
  for (int64_t n = n0; n < n1; n += NR) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, n1 - n));
    for (int j = 0; j < nr; ++j) t.w[j] = P.W + (n + j) * P.KB;
    if (tb) {
      std::memset(tail, 0, sizeof(tail));
      for (int j = 0; j < nr; ++j) std::memcpy(tail + j * VW, t.w[j] + nfull * VW, tb);
    }
    for (int64_t m = 0; m < P.M; m += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, P.M - m));
      set_rows(t, P, m, n);
      const TileFn fn = (mr == MR && nr == NR) ? full : pick<false, MR, NR>(mr, nr);
      fn(t);
    }
  }
}

static void run_fly(const Problem& P, int64_t n0, int64_t n1) {
  // One row: a wider column tile for more independent accumulators.
  if (P.M == 1)
    run_fly_t<1, Tr::NR1>(P, n0, n1);
  else
    run_fly_t<Tr::MR, Tr::NR>(P, n0, n1);
}

// Packed rows [n0, n0 + nr) -> u8 codes in the permuted layout, nblocks*BK bytes a row.
static void decode_rows(const Problem& P, int64_t n0, int64_t nr, uint8_t* D, int64_t ldd) {
  const int64_t nfull = P.KB / VW, tb = P.KB % VW;
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* row = P.W + (n0 + r) * P.KB;
    uint8_t* d = D + r * ldd;
    for (int64_t b = 0; b < nfull; ++b) {
      const V p = Tr::loadw(row + b * VW);
      Tr::storew(d + b * BK + 0 * VW, Tr::template field<0>(p));
      Tr::storew(d + b * BK + 1 * VW, Tr::template field<1>(p));
      Tr::storew(d + b * BK + 2 * VW, Tr::template field<2>(p));
      Tr::storew(d + b * BK + 3 * VW, Tr::template field<3>(p));
    }
    if (tb) {
      alignas(64) uint8_t tmp[VW] = {};
      std::memcpy(tmp, row + nfull * VW, tb);
      const V p = Tr::loadw(tmp);
      uint8_t* db = d + nfull * BK;
      Tr::storew(db + 0 * VW, Tr::template field<0>(p));
      Tr::storew(db + 1 * VW, Tr::template field<1>(p));
      Tr::storew(db + 2 * VW, Tr::template field<2>(p));
      Tr::storew(db + 3 * VW, Tr::template field<3>(p));
    }
  }
}

// Output columns [n0, n1) for many rows: NB weight rows at a time are decoded once into a
// transient u8 buffer (NB x K bytes, per thread, freed on return), then every activation row
// tile runs over them; the decode is paid once per NB rows instead of once per row tile.
static void run_pre(const Problem& P, int64_t n0, int64_t n1) {
  const int64_t nfull = P.KB / VW, tb = P.KB % VW;
  const int64_t nblocks = nfull + (tb ? 1 : 0);
  const int64_t ldd = nblocks * BK;
  std::unique_ptr<uint8_t, void (*)(void*)> buf(
      static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(P.nb * ldd + 64))), &std::free);
  if (!buf) throw std::bad_alloc();
  TileArgs t;
  t.lda = P.lda;
  t.ldy = P.N;
  t.tail = nullptr;
  t.nfull = nblocks;
  t.nblocks = nblocks;
  const TileFn full = pick<true, Tr::PMR, Tr::PNR>(Tr::PMR, Tr::PNR);
  for (int64_t nb0 = n0; nb0 < n1; nb0 += P.nb) {
    const int64_t nbr = std::min<int64_t>(P.nb, n1 - nb0);
    decode_rows(P, nb0, nbr, buf.get(), ldd);
    for (int64_t m = 0; m < P.M; m += Tr::PMR) {
      const int mr = static_cast<int>(std::min<int64_t>(Tr::PMR, P.M - m));
      for (int64_t j0 = 0; j0 < nbr; j0 += Tr::PNR) {
        const int nr = static_cast<int>(std::min<int64_t>(Tr::PNR, nbr - j0));
        for (int j = 0; j < nr; ++j) t.w[j] = buf.get() + (j0 + j) * ldd;
        set_rows(t, P, m, nb0 + j0);
        const TileFn fn = (mr == Tr::PMR && nr == Tr::PNR) ? full : pick<true, Tr::PMR, Tr::PNR>(mr, nr);
        fn(t);
      }
    }
  }
}

#ifndef BT_RUN_TILES
#define BT_RUN_TILES nullptr
#endif
static const Kernels kernels = {VW, Tr::NB, &run_fly, &run_pre, &permute_rows, BT_RUN_TILES};
#undef BT_RUN_TILES
