"""Triton W2A8 kernels: int8 per-token activations × 2-bit packed ternary weights, int32 accumulate.

The three steps of ``ternary_matmul_reference`` (kernels/reference.py), on the GPU:

1. ``act_quant``: per row (one or a few rows a program) ``s = 127 · (1 / max(max|x|, 1e-5))`` and ``q = clamp(rne(x · s), -128, 127)``
   in fp32, exactly as ``quantize_activations_int8`` computes them. Note that torch evaluates
   ``127.0 / t`` as ``t.reciprocal() * 127`` (two roundings), so the kernel does the same.
2. ``acc[m, n] = Σ_k q[m, k] · w[n, k]`` in int32, with ``w`` decoded in registers from the packed
   layout of ``quant/packing.py`` (uint8 (N, ceil(K/4)), code ``w + 1`` of element ``4j + t`` of a row
   in bits ``2t..2t+1`` of byte ``j``). Integer sums are exact, so this equals the reference's fp32
   matmul of integer-valued operands.
3. epilogue ``y[m, n] = float(acc[m, n]) · (scale_w / s[m])`` in fp32 with an IEEE division
   (``tl.div_rn``), the same two operations the reference does, so ``y`` is bitwise equal.

Three mainloops share the decode and the epilogue:

- ``_w2a8_dot_kernel`` (kind ``dot``): BLOCK_M × BLOCK_N × BLOCK_K tiles, ``tl.dot(int8, int8) -> int32``
  (INT8 tensor cores on sm80+), grouped tile order, for prefill (M ≈ 512-626).
- the same kernel with ``SWAP_AB`` (kind ``dot_swap``): computes ``accᵀ = W · Aᵀ`` so that the decoded
  weight tile is the left (register) operand and the few rows of a short input fill the small side
  of the MMA; meant for 4 < M ≤ 16.
- ``_w2a8_gemv_kernel`` (kind ``gemv``): CUDA cores, for M ≤ 4: each decoded weight tile is
  broadcast against every row of the block (BLOCK_M ≤ 4) and reduced along K.

Each of them can split K over a second grid axis (``SPLIT_K > 1``) when there are too few output
tiles to fill the GPU: the partial int32 sums go to a workspace (SPLIT_K, M, N) with plain stores,
and ``_splitk_epilogue_kernel`` adds them in a fixed order (deterministic) and applies step 3.

No repack: the kernels read the deployment layout as it is (rows of ceil(K/4) contiguous bytes; a
(BLOCK_N, BLOCK_K/4) byte tile is BLOCK_N runs of 32 contiguous bytes at BLOCK_K = 128), so
``prepare`` keeps only the 2-bit codes and the scale, sharing the module's storage. Weight bytes
past the row end are masked; inside the last byte of a row with K % 4 != 0 the padding fields
decode to -1, which is harmless because the activation tile is masked to 0 for k ≥ K.

Importing this module imports triton (it defines the kernels); ``bitvla_ros.kernels`` imports it
only lazily, from ``triton_backend``. With ``TRITON_INTERPRET=1`` set before triton is imported,
everything here runs on CPU tensors through Triton's interpreter (the tests do that).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from bitvla_ros.kernels.constants import interpreting
from bitvla_ros.quant.ternary import SCALE_EPS

try:  # round-to-nearest-even as one instruction (cvt.rni) on NVIDIA GPUs
    from triton.language.extra.cuda import libdevice as _libdevice

    _HAS_RINT = hasattr(_libdevice, "rint")
except Exception:  # pragma: no cover - very old or non-CUDA triton builds
    try:
        from triton.language.extra import libdevice as _libdevice

        _HAS_RINT = hasattr(_libdevice, "rint")
    except Exception:
        _libdevice = tl.math
        _HAS_RINT = False

KINDS = ("gemv", "dot_swap", "dot")
_EPS = tl.constexpr(SCALE_EPS)  # kernels may read only constexpr globals


# --------------------------------------------------------------------------------------------
# device helpers (inlined into the kernels)
# --------------------------------------------------------------------------------------------


@triton.jit
def _round_half_even(v, USE_RINT: tl.constexpr):
    """torch.round on fp32: round half to even. ``rint`` on the GPU; elsewhere (the interpreter)
    floor plus a parity check, exact for |v| < 2**22 (here |v| ≤ 127.00002)."""
    if USE_RINT:
        r = _libdevice.rint(v)
    else:
        f = tl.floor(v)
        d = v - f  # exact (Sterbenz) wherever the tie test matters
        half = f * 0.5
        odd = (half - tl.floor(half)) != 0.0
        up = (d > 0.5) | ((d == 0.5) & odd)
        r = tl.where(up, f + 1.0, f)
    return r


@triton.jit
def _decode_ternary(b):
    """uint8 (R, C) packed bytes → int8 (R, 4C) values in {-1, 0, 1}, in natural K order:
    column 4j + t of the result is field t (bits 2t..2t+1) of byte j, minus one."""
    f0 = (b & 3).to(tl.int8) - 1
    f1 = ((b >> 2) & 3).to(tl.int8) - 1
    f2 = ((b >> 4) & 3).to(tl.int8) - 1
    f3 = ((b >> 6) & 3).to(tl.int8) - 1
    # interleave(f0, f2) = f0 f2 f0 f2 …; interleaving that with f1 f3 … gives f0 f1 f2 f3 per byte
    return tl.interleave(tl.interleave(f0, f2), tl.interleave(f1, f3))


@triton.jit
def _tile_rows(a_ptr, w_ptr, pid_m, pid_n, M, N, stride_am, stride_wn,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row/column offsets of output tile (pid_m, pid_n), their bounds masks, and the first byte of
    each activation row and each packed weight row."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    a_rows = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    return offs_m, offs_n, offs_m < M, offs_n < N, a_rows, w_rows


@triton.jit
def _load_k_step(a_rows, w_rows, k0, m_mask, n_mask, K, Kb, BLOCK_K: tl.constexpr):
    """int8 activations a[:, k0:k0+BLOCK_K] and the matching weights, decoded from 2-bit codes
    (padding bytes 0x55 decode to zeros)."""
    kk = k0 + tl.arange(0, BLOCK_K)
    a = tl.load(a_rows + kk[None, :], mask=m_mask[:, None] & (kk[None, :] < K), other=0)
    kb = k0 // 4 + tl.arange(0, BLOCK_K // 4)
    b = tl.load(w_rows + kb[None, :], mask=n_mask[:, None] & (kb[None, :] < Kb), other=0x55)
    return a, _decode_ternary(b)


@triton.jit
def _store_tile(acc, offs_m, offs_n, m_mask, n_mask, xs_ptr, wscale_ptr, out_ptr, ws_ptr, pid_k, M, N,
                stride_om, PARTIAL: tl.constexpr):
    """The int32 tile out: scaled to float (y = acc · scale_w / s[m]), or raw into split-K slice pid_k."""
    out_mask = m_mask[:, None] & n_mask[None, :]
    if not PARTIAL:
        xs = tl.load(xs_ptr + offs_m, mask=m_mask, other=1.0)
        factor = tl.div_rn(tl.load(wscale_ptr) + tl.zeros_like(xs), xs)  # scale_w / s, IEEE
        y = acc.to(tl.float32) * factor[:, None]
        tl.store(out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :], y, mask=out_mask)
    else:
        base = ws_ptr + pid_k.to(tl.int64) * M * N
        tl.store(base + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :], acc, mask=out_mask)


# --------------------------------------------------------------------------------------------
# 1. activation quantization
# --------------------------------------------------------------------------------------------


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm,
                      ROWS: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE_PASS: tl.constexpr,
                      USE_RINT: tl.constexpr):
    """ROWS rows per program: s = 127 · (1/max(max|x|, 1e-5)); q = clamp(rne(x · s), -128, 127).

    SINGLE_PASS (BLOCK_K ≥ K): each row is read once and kept in registers; otherwise two passes.
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    r_mask = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    offs = tl.arange(0, BLOCK_K)
    if SINGLE_PASS:
        mask = r_mask[:, None] & (offs[None, :] < K)
        x = tl.load(x_rows + offs[None, :], mask=mask, other=0.0).to(tl.float32)
        amax = tl.max(tl.abs(x), axis=1)
    else:
        run = tl.zeros([ROWS, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            m = r_mask[:, None] & (k0 + offs[None, :] < K)
            xk = tl.load(x_rows + k0 + offs[None, :], mask=m, other=0.0).to(tl.float32)
            run = tl.maximum(run, tl.abs(xk))
        amax = tl.max(run, axis=1)
    amax = tl.maximum(amax, _EPS)
    scale = tl.div_rn(tl.full([ROWS], 1.0, tl.float32), amax) * 127.0  # torch: 127.0 / t == t.reciprocal() * 127
    tl.store(s_ptr + rows, scale, mask=r_mask)
    if SINGLE_PASS:
        q = _round_half_even(x * scale[:, None], USE_RINT)
        q = tl.minimum(tl.maximum(q, -128.0), 127.0)
        tl.store(q_rows + offs[None, :], q.to(tl.int8), mask=mask)
    else:
        for k0 in range(0, K, BLOCK_K):
            m = r_mask[:, None] & (k0 + offs[None, :] < K)
            xk = tl.load(x_rows + k0 + offs[None, :], mask=m, other=0.0).to(tl.float32)
            q = _round_half_even(xk * scale[:, None], USE_RINT)
            q = tl.minimum(tl.maximum(q, -128.0), 127.0)
            tl.store(q_rows + k0 + offs[None, :], q.to(tl.int8), mask=m)


# --------------------------------------------------------------------------------------------
# 2a. tensor-core mainloop (prefill GEMM, and with SWAP_AB the short-input path)
# --------------------------------------------------------------------------------------------


@triton.jit
def _w2a8_dot_kernel(a_ptr, xs_ptr, w_ptr, wscale_ptr, out_ptr, ws_ptr,
                     M, N, K, Kb, stride_am, stride_wn, stride_om, K_PER_SPLIT,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr, PARTIAL: tl.constexpr, SWAP_AB: tl.constexpr):
    """acc = A[BLOCK_M rows] · W[BLOCK_N rows]ᵀ over this program's K range, then either the fp32
    epilogue or (PARTIAL, split K) an int32 partial sum into the workspace slice of this K range."""
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # grouped ordering: GROUP_M row tiles walk the N tiles together (L2 reuse of weight tiles)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m, offs_n, m_mask, n_mask, a_rows, w_rows = _tile_rows(a_ptr, w_ptr, pid_m, pid_n, M, N, stride_am,
                                                                stride_wn, BLOCK_M, BLOCK_N)

    k_start = pid_k * K_PER_SPLIT  # a multiple of BLOCK_K (so of 4): byte-aligned
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(k_start, k_end, BLOCK_K):
        a, w = _load_k_step(a_rows, w_rows, k0, m_mask, n_mask, K, Kb, BLOCK_K)  # (BLOCK_M|N, BLOCK_K) int8
        if SWAP_AB:
            acc = tl.dot(w, tl.trans(a), acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, tl.trans(w), acc, out_dtype=tl.int32)
    if SWAP_AB:
        acc = tl.trans(acc)

    _store_tile(acc, offs_m, offs_n, m_mask, n_mask, xs_ptr, wscale_ptr, out_ptr, ws_ptr, pid_k, M, N,
                stride_om, PARTIAL)


# --------------------------------------------------------------------------------------------
# 2b. CUDA-core mainloop for a few rows (GEMV)
# --------------------------------------------------------------------------------------------


@triton.jit
def _w2a8_gemv_kernel(a_ptr, xs_ptr, w_ptr, wscale_ptr, out_ptr, ws_ptr,
                      M, N, K, Kb, stride_am, stride_wn, stride_om, K_PER_SPLIT,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      PARTIAL: tl.constexpr):
    """Each decoded (BLOCK_N, BLOCK_K) weight tile serves all BLOCK_M rows:
    acc[m, n] += Σ_k a[m, k] · w[n, k] as an int32 broadcast product reduced along K."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m, offs_n, m_mask, n_mask, a_rows, w_rows = _tile_rows(a_ptr, w_ptr, pid_m, pid_n, M, N, stride_am,
                                                                stride_wn, BLOCK_M, BLOCK_N)

    k_start = pid_k * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(k_start, k_end, BLOCK_K):
        a, w = _load_k_step(a_rows, w_rows, k0, m_mask, n_mask, K, Kb, BLOCK_K)  # (BLOCK_M|N, BLOCK_K) int8
        prod = a.to(tl.int32)[:, None, :] * w.to(tl.int32)[None, :, :]  # (BLOCK_M, BLOCK_N, BLOCK_K)
        acc += tl.sum(prod, axis=2)

    _store_tile(acc, offs_m, offs_n, m_mask, n_mask, xs_ptr, wscale_ptr, out_ptr, ws_ptr, pid_k, M, N,
                stride_om, PARTIAL)


# --------------------------------------------------------------------------------------------
# 3. split-K reduction + epilogue
# --------------------------------------------------------------------------------------------


@triton.jit
def _splitk_epilogue_kernel(ws_ptr, xs_ptr, wscale_ptr, out_ptr, total, N, stride_om, SPLIT_K,
                            BLOCK: tl.constexpr):
    """y[m, n] = float(Σ_s ws[s, m, n]) · (scale_w / s[m]); the int32 sum is exact in any order."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    ptrs = ws_ptr + offs
    for _ in range(SPLIT_K):
        acc += tl.load(ptrs, mask=mask, other=0)
        ptrs += total
    m = offs // N
    n = offs % N
    xs = tl.load(xs_ptr + m, mask=mask, other=1.0)
    factor = tl.div_rn(tl.load(wscale_ptr) + tl.zeros_like(xs), xs)
    tl.store(out_ptr + m * stride_om + n, acc.to(tl.float32) * factor, mask=mask)


# --------------------------------------------------------------------------------------------
# launch wrappers
# --------------------------------------------------------------------------------------------

# Compile option for every launch: no contraction of a multiply into a following add/sub (the
# portable rounding subtracts from a product), so fp32 results are the reference's bit for bit.
_LAUNCH_OPTS = {"enable_fp_fusion": False}


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def use_rint() -> bool:
    return _HAS_RINT and not interpreting()


def act_quant(x: torch.Tensor, *, rint: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row absmax int8 of a 2-D float tensor: (int8 codes (M, K), fp32 scales (M,)).

    Matches ``quantize_activations_int8`` bit for bit (its scale has shape (M, 1); here (M,)).
    ``rint`` picks the rounding implementation (default: libdevice rint on a GPU).
    """
    if x.dim() != 2:
        raise ValueError(f"act_quant expects a 2-D (rows, features) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"act_quant expects a floating-point input, got {x.dtype}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m == 0:
        return q, s
    if k == 0:
        s.fill_(127.0 / SCALE_EPS)
        return q, s
    rint = use_rint() if rint is None else (rint and use_rint())  # no libdevice in the interpreter
    block = _next_pow2(k)
    single = block <= 16384
    if not single:
        block = 4096
    rows = max(1, min(16, 4096 // block))  # several short rows per program
    num_warps = max(1, min(16, rows * block // 512))
    _act_quant_kernel[(triton.cdiv(m, rows),)](x, q, s, m, k, x.stride(0), q.stride(0),
                                               ROWS=rows, BLOCK_K=block, SINGLE_PASS=single, USE_RINT=rint,
                                               num_warps=num_warps, **_LAUNCH_OPTS)
    return q, s


@dataclass(frozen=True)
class W2A8Config:
    """One launch configuration. ``kind`` is 'gemv', 'dot_swap' or 'dot' (see the module doc)."""

    kind: str
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def validate(self) -> "W2A8Config":
        if self.kind not in KINDS:
            raise ValueError(f"unknown W2A8 kernel kind {self.kind!r}; expected one of {KINDS}")
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name}={v} must be a power of two")
        if self.block_k < 16 or self.block_k % 4:
            raise ValueError(f"block_k={self.block_k} must be a power of two ≥ 16")
        if self.kind != "gemv" and min(self.block_m, self.block_n, self.block_k) < 16:
            raise ValueError(f"tl.dot needs every block dimension ≥ 16, got {self}")
        if self.split_k < 1:
            raise ValueError(f"split_k={self.split_k} must be ≥ 1")
        return self


@functools.lru_cache(maxsize=None)
def _num_sms(device_type: str, index: int | None) -> int:
    if device_type == "cuda":
        return torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device()).multi_processor_count
    return 4  # the interpreter: small, so that the tests meet split-K at small shapes


def num_sms(device: torch.device) -> int:
    return _num_sms(device.type, device.index)


def _split_for(tiles: int, k: int, block_k: int, target: int, max_split: int = 16) -> int:
    """How many K slices so that tiles × slices reaches ``target`` programs, keeping ≥ 2 K blocks
    a slice."""
    k_blocks = triton.cdiv(k, block_k)
    if tiles >= target or k_blocks < 4:
        return 1
    return max(1, min(max_split, triton.cdiv(target, tiles), k_blocks // 2))


def pick_config(m: int, n: int, k: int, device: torch.device, kind: str | None = None) -> W2A8Config:
    """The heuristic launch configuration for an (M, N, K) problem (and a kernel kind, if forced).

    Fixed, shape-driven choices (no autotuning, so nothing is timed at first call and the same
    launches are replayed under a CUDA graph); bench/gpu_check.py sweeps alternatives.
    """
    sms = num_sms(device)
    if kind is None:
        kind = "gemv" if m <= 4 else ("dot_swap" if m <= 16 else "dot")
    if kind == "gemv":
        bm = min(_next_pow2(m), 4)
        bk = 256
        bn = max(8, 16384 // (bm * bk))  # bm·bn·bk int32 products live in registers
        tiles = triton.cdiv(n, bn) * triton.cdiv(m, bm)
        split = _split_for(tiles, k, bk, 2 * sms)
        return W2A8Config("gemv", bm, bn, bk, split, 1, 4, 2)
    if kind == "dot_swap":
        bm, bn, bk = 16, 64, 128
        tiles = triton.cdiv(n, bn) * triton.cdiv(m, bm)
        split = _split_for(tiles, k, bk, 2 * sms)
        return W2A8Config("dot_swap", bm, bn, bk, split, 1, 4, 4)
    if kind != "dot":
        raise ValueError(f"unknown W2A8 kernel kind {kind!r}; expected one of {KINDS}")
    bk = 128
    if m <= 16:
        candidates = [(16, 64, 4)]
    elif m <= 64:
        candidates = [(64, 128, 4), (64, 64, 4)]
    else:
        candidates = [(128, 128, 8), (128, 64, 4), (64, 128, 4), (64, 64, 4)]
    chosen = None
    for bm, bn, warps in candidates:
        if triton.cdiv(m, bm) * triton.cdiv(n, bn) >= sms:
            chosen = (bm, bn, warps)
            break
    if chosen is None:
        chosen = candidates[-1]
    bm, bn, warps = chosen
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split = _split_for(tiles, k, bk, sms)
    return W2A8Config("dot", bm, bn, bk, split, 8, warps, 3)


def w2a8_gemm(xq: torch.Tensor, xs: torch.Tensor, codes: torch.Tensor, w_scale: torch.Tensor, in_features: int,
              config: W2A8Config | None = None) -> torch.Tensor:
    """y (M, N) fp32 = float(xq · unpack(codes)ᵀ) · (w_scale / xs[:, None]).

    xq: int8 (M, K); xs: fp32 (M,); codes: uint8 (N, ceil(K/4)); w_scale: fp32 with one element.
    """
    k = in_features
    if xq.dtype != torch.int8 or xq.dim() != 2 or xq.shape[1] != k:
        raise ValueError(f"xq must be int8 (M, {k}), got {xq.dtype} {tuple(xq.shape)}")
    if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] != (k + 3) // 4:
        raise ValueError(f"codes must be uint8 (N, {(k + 3) // 4}), got {codes.dtype} {tuple(codes.shape)}")
    if xs.dtype != torch.float32 or xs.numel() != xq.shape[0]:
        raise ValueError(f"xs must be fp32 with {xq.shape[0]} elements, got {xs.dtype} {tuple(xs.shape)}")
    if w_scale.dtype != torch.float32 or w_scale.numel() != 1:
        raise ValueError(f"w_scale must be one fp32 value, got {w_scale.dtype} {tuple(w_scale.shape)}")
    for name, t in (("xs", xs), ("codes", codes), ("w_scale", w_scale)):
        if t.device != xq.device:
            raise ValueError(f"{name} is on {t.device} but the activations are on {xq.device}")
    if xq.stride(1) != 1:
        xq = xq.contiguous()
    if codes.stride(1) != 1:
        codes = codes.contiguous()
    xs = xs.reshape(-1).contiguous()
    m, n = xq.shape[0], codes.shape[0]
    out = torch.empty((m, n), dtype=torch.float32, device=xq.device)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_()
    cfg = (config or pick_config(m, n, k, xq.device)).validate()
    split = max(1, min(cfg.split_k, triton.cdiv(k, cfg.block_k)))
    k_per_split = triton.cdiv(triton.cdiv(k, split), cfg.block_k) * cfg.block_k
    split = triton.cdiv(k, k_per_split)  # no empty slices
    ws = torch.empty((split, m, n), dtype=torch.int32, device=xq.device) if split > 1 else out
    kb = codes.shape[1]
    common = (xq, xs, codes, w_scale, out, ws, m, n, k, kb, xq.stride(0), codes.stride(0), out.stride(0), k_per_split)
    if cfg.kind == "gemv":
        grid = (triton.cdiv(n, cfg.block_n), split, triton.cdiv(m, cfg.block_m))
        _w2a8_gemv_kernel[grid](*common, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                                PARTIAL=split > 1, num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_LAUNCH_OPTS)
    else:
        grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split)
        _w2a8_dot_kernel[grid](*common, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                               GROUP_M=cfg.group_m, PARTIAL=split > 1, SWAP_AB=cfg.kind == "dot_swap",
                               num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_LAUNCH_OPTS)
    if split > 1:
        block = 1024
        _splitk_epilogue_kernel[(triton.cdiv(m * n, block),)](ws, xs, w_scale, out, m * n, n, out.stride(0), split,
                                                              BLOCK=block, num_warps=4, **_LAUNCH_OPTS)
    return out


def w2a8_matmul(x: torch.Tensor, codes: torch.Tensor, w_scale: torch.Tensor, in_features: int,
                config: W2A8Config | None = None, kind: str | None = None) -> torch.Tensor:
    """y = x · Wᵀ in fp32 for any (…, K) float x: ``act_quant`` then ``w2a8_gemm``.

    Equal bit for bit to ``ternary_matmul_reference(x, PackedTernary(codes, w_scale, K))`` for
    fp32/bf16/fp16 inputs. ``kind`` forces a mainloop with its heuristic configuration;
    ``config`` forces everything.
    """
    k = in_features
    if x.shape[-1] != k:
        raise ValueError(f"input has {x.shape[-1]} features, the ternary weight expects {k}")
    rows = x.reshape(-1, k)
    n = codes.shape[0]
    if config is None and kind is not None:
        config = pick_config(rows.shape[0], n, k, x.device, kind)
    xq, xs = act_quant(rows)
    y = w2a8_gemm(xq, xs, codes, w_scale.reshape(1), k, config)
    return y.reshape(*x.shape[:-1], n)
