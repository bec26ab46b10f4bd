"""The `cuda` backend's Triton W2A8 kernels against the reference backend, bit for bit.

Where: with a CUDA GPU the kernel tests run compiled on it (plus the model's real shapes at
M = 600 and CUDA-graph capture). Without one, `test_kernels_in_triton_interpreter` runs this same
file again in a child process with TRITON_INTERPRET=1 set before anything imports triton, and the
kernels run on CPU tensors through Triton's interpreter (slow, so the shapes are small). In this
process the kernel tests are then skipped: triton may already have been imported without the
interpreter by another test module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitvla_ros.kernels import AUTO_ORDER, CudaBackend, get_backend
from bitvla_ros.kernels.constants import REAL_SHAPES
from bitvla_ros.kernels.reference import ternary_matmul_reference
from bitvla_ros.model.cuda_graph import BitVLAGraphForward, CUDAGraphRunner, CUDAGraphUnavailable
from bitvla_ros.quant import PackedTernary, pack_ternary, quantize_activations_int8
from triton_child import run_in_triton_interpreter, triton_importable

REPO = Path(__file__).resolve().parent.parent
CHILD_FLAG = "BITVLA_TRITON_INTERPRET_CHILD"
IN_CHILD = os.environ.get(CHILD_FLAG) == "1"
HAS_CUDA = torch.cuda.is_available()
if IN_CHILD:
    assert os.environ.get("TRITON_INTERPRET") == "1", "the interpreter child must start with TRITON_INTERPRET=1"
    DEVICE = "cpu"
elif HAS_CUDA:
    DEVICE = "cuda"
else:
    DEVICE = None

kernel_test = pytest.mark.skipif(
    DEVICE is None, reason="no CUDA: these run in the Triton interpreter child (test_kernels_in_triton_interpreter)")
gpu_only = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
not_in_child = pytest.mark.skipif(IN_CHILD, reason="runs in the parent process")


def _kernels():
    from bitvla_ros.kernels import triton_w2a8

    return triton_w2a8


def _packed(n: int, k: int, gen: torch.Generator, scale: float = 0.0371) -> PackedTernary:
    codes = torch.randint(-1, 2, (n, k), generator=gen, dtype=torch.int8)
    return PackedTernary(pack_ternary(codes).to(DEVICE), torch.tensor(scale, device=DEVICE), k)


def _assert_exact(y: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert y.dtype == torch.float32 and y.shape == ref.shape, f"{what}: {y.dtype} {tuple(y.shape)} vs {tuple(ref.shape)}"
    if not torch.equal(y, ref):
        diff = (y - ref).abs()
        bad = int((y != ref).sum())
        raise AssertionError(f"{what}: {bad} of {y.numel()} outputs differ from the reference, max |diff| "
                             f"{diff.max().item():.4g} (max |ref| {ref.abs().max().item():.4g})")


def _special_rows(m: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Random rows, with an all-zero row and a row dominated by one huge value when m allows."""
    x = torch.randn(m, k, generator=gen) * 2
    if m >= 2:
        x[1] = 0
    if m >= 3:
        x[2, k // 2] = 3e4
    return x.to(DEVICE)


# Small tiles: several tiles in M, N and K for the small test shapes, and split-K.
SMALL_CONFIGS = {
    "gemv": dict(kind="gemv", block_m=4, block_n=16, block_k=64, split_k=3, group_m=1, num_warps=4, num_stages=2),
    "dot_swap": dict(kind="dot_swap", block_m=16, block_n=16, block_k=64, split_k=3, group_m=1, num_warps=4, num_stages=2),
    "dot": dict(kind="dot", block_m=16, block_n=16, block_k=64, split_k=2, group_m=2, num_warps=4, num_stages=2),
}


# --------------------------------------------------------------------------------------------
# the interpreter child (CPU-only machines)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(IN_CHILD or HAS_CUDA, reason="the kernels run compiled on the GPU here" if HAS_CUDA else "in the child")
def test_kernels_in_triton_interpreter(report):
    report(f"Triton interpreter child: {run_in_triton_interpreter(__file__, CHILD_FLAG)}")


@not_in_child
def test_kernels_compile_for_sm80_and_sm90(report):
    """The real compiler (front end to cubin, with triton's bundled ptxas) on a few variants: the
    interpreter accepts code the compiler rejects, so this runs on machines without a GPU too."""
    if not triton_importable():
        pytest.skip("triton is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "bitvla_ros.kernels.triton_compile_check", "--quick", "--arch", "90,80", "--no-stats"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = (r.stdout + "\n" + r.stderr).strip()
    assert r.returncode == 0, out[-6000:]
    assert "wgmma" in out and "mma.sync" in out, "no INT8 tensor-core instruction in the compiled GEMMs"
    report(out.splitlines()[-1] if out else "no output")


# --------------------------------------------------------------------------------------------
# registration, availability, import cost (no kernel runs)
# --------------------------------------------------------------------------------------------


@not_in_child
def test_cuda_backend_is_first_in_auto_order():
    assert AUTO_ORDER[0] == "cuda"
    assert AUTO_ORDER[-1] == "reference"
    if "cpu" in AUTO_ORDER:
        assert AUTO_ORDER.index("cuda") < AUTO_ORDER.index("cpu") < AUTO_ORDER.index("reference")
    assert CudaBackend.name == "cuda" and CudaBackend.devices == ("cuda",)


@not_in_child
def test_importing_kernels_does_not_import_triton():
    code = ("import sys, bitvla_ros.kernels as k; k.AUTO_ORDER; "
            "assert 'triton' not in sys.modules, 'triton imported eagerly'; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@not_in_child
@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_unavailable_without_cuda_says_why():
    assert not CudaBackend.available()
    reason = CudaBackend.unavailable_reason()
    assert reason and "CUDA" in reason
    assert get_backend("auto", "cpu").name != "cuda"
    with pytest.raises(RuntimeError, match="cuda"):
        get_backend("cuda", "cuda")


# --------------------------------------------------------------------------------------------
# activation quantization
# --------------------------------------------------------------------------------------------


@kernel_test
@pytest.mark.parametrize("k", [5, 63, 130, 257, 20000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_act_quant_matches_quantize_activations_int8(k, dtype):
    if k == 20000 and dtype != torch.float32:
        pytest.skip("the two-pass row once is enough")
    gen = torch.Generator().manual_seed(k)
    x = _special_rows(5, k, gen).to(dtype)
    x[3] *= 1e-3
    x[4] = -x[4].abs()
    q, s = _kernels().act_quant(x)
    rq, rs = quantize_activations_int8(x)
    assert q.dtype == torch.int8 and q.shape == (5, k) and s.dtype == torch.float32 and s.shape == (5,)
    assert torch.equal(s, rs.reshape(-1)), (s, rs.reshape(-1))
    assert torch.equal(q, rq), f"{int((q != rq).sum())} codes differ"


def _tie_row() -> tuple[torch.Tensor, list[int]]:
    """A row with max|x| = 1 (so the scale is exactly 127) whose other entries land exactly on
    half-integers after x · 127 in fp32: round half to even must pick the even neighbour."""
    xs, expected = [1.0], [127]
    for t2 in range(-253, 254, 2):  # t = t2 / 2 = ±0.5, ±1.5, …
        t = t2 / 2
        x = torch.tensor(t / 127, dtype=torch.float32)
        if float(x * torch.tensor(127.0)) == t:
            xs.append(float(x))
            expected.append(round(t))  # Python rounds half to even
    return torch.tensor(xs), expected


@kernel_test
@pytest.mark.parametrize("rint", [True, False], ids=["rint", "floor-parity"])
def test_act_quant_rounds_ties_to_even(rint):
    if rint and DEVICE == "cpu":
        pytest.skip("libdevice rint is a GPU instruction; the interpreter runs the floor-parity rounding")
    row, expected = _tie_row()
    assert len(expected) > 60, "too few exact ties constructed"
    x = row.unsqueeze(0).to(DEVICE)
    q, s = _kernels().act_quant(x, rint=rint)
    assert float(s[0]) == 127.0
    assert q[0].tolist() == expected
    assert torch.equal(q, quantize_activations_int8(x)[0])
    # ±0.5, ±1.5, ±2.5 land on 0, ±2, ±2
    lut = dict(zip(row.tolist(), q[0].tolist()))
    for t, want in ((0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2)):
        x_t = float(torch.tensor(t / 127, dtype=torch.float32))
        if x_t in lut:
            assert lut[x_t] == want, (t, lut[x_t])


# --------------------------------------------------------------------------------------------
# W2A8 matmul, every kernel kind, ragged shapes
# --------------------------------------------------------------------------------------------


@kernel_test
@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("k", [5, 63, 130, 257])
@pytest.mark.parametrize("n", [7, 33])
def test_small_m_exact(m, k, n):
    tw = _kernels()
    gen = torch.Generator().manual_seed(1000 * m + 10 * k + n)
    w = _packed(n, k, gen)
    x = _special_rows(m, k, gen)
    ref = ternary_matmul_reference(x, w)
    _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k), ref, f"auto M={m} K={k} N={n}")
    for kind, cfg in SMALL_CONFIGS.items():
        if kind == "gemv" and m > 4:
            continue  # the CUDA-core kernel serves M <= 4
        y = tw.w2a8_matmul(x, w.codes, w.scale, k, config=tw.W2A8Config(**cfg))
        _assert_exact(y, ref, f"{kind} small tiles M={m} K={k} N={n}")


@kernel_test
@pytest.mark.parametrize("m,k,n", [(33, 257, 33), (64, 130, 7), (64, 260, 48)])
def test_gemm_exact(m, k, n):
    tw = _kernels()
    gen = torch.Generator().manual_seed(m + k + n)
    w = _packed(n, k, gen)
    x = _special_rows(m, k, gen).to(torch.bfloat16)
    ref = ternary_matmul_reference(x, w)
    _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k), ref, f"auto M={m} K={k} N={n}")
    for kind in ("dot", "dot_swap"):
        _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k, config=tw.W2A8Config(**SMALL_CONFIGS[kind])), ref,
                      f"{kind} small tiles M={m} K={k} N={n}")
    big = tw.W2A8Config("dot", 64, 32, 128, split_k=1, group_m=4, num_warps=4, num_stages=2)
    _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k, config=big), ref, f"dot 64x32x128 M={m} K={k} N={n}")


@kernel_test
def test_gemm_epilogue_sees_integer_accumulator():
    """w2a8_gemm on given int8 codes returns float(acc) · (scale / xs) exactly."""
    tw = _kernels()
    gen = torch.Generator().manual_seed(7)
    m, n, k = 5, 33, 130
    w = _packed(n, k, gen)
    xq = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8).to(DEVICE)
    xq[0] = 127  # the largest sums
    xs = (torch.rand(m, generator=gen) * 50 + 0.5).to(DEVICE)
    from bitvla_ros.quant import unpack_ternary

    acc = xq.float() @ unpack_ternary(w.codes, k, torch.float32).t()
    ref = acc * (w.scale / xs[:, None])
    for kind in ("gemv", "dot_swap", "dot"):
        y = tw.w2a8_gemm(xq, xs, w.codes, w.scale.reshape(1), k, tw.pick_config(m, n, k, xq.device, kind))
        _assert_exact(y, ref, f"{kind} epilogue")


@kernel_test
def test_leading_dims_empty_input_and_errors():
    tw = _kernels()
    gen = torch.Generator().manual_seed(3)
    w = _packed(9, 70, gen)
    x = torch.randn(2, 3, 70, generator=gen).to(DEVICE)
    _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, 70), ternary_matmul_reference(x, w), "3-D input")
    assert tw.w2a8_matmul(x[:, :0], w.codes, w.scale, 70).shape == (2, 0, 9)
    with pytest.raises(ValueError, match="features"):
        tw.w2a8_matmul(x[..., :69], w.codes, w.scale, 70)
    with pytest.raises(ValueError, match="power of two"):
        tw.W2A8Config("dot", 48, 16, 64).validate()


@kernel_test
def test_backend_protocol_keeps_only_packed_codes():
    if DEVICE == "cpu":  # the interpreter: the backend takes CPU tensors and is available without a GPU
        assert "cpu" in CudaBackend.devices and CudaBackend.available(), CudaBackend.status()
    gen = torch.Generator().manual_seed(11)
    w = _packed(33, 130, gen)
    prepared = CudaBackend.prepare(w)
    tensors = [v for v in vars(prepared).values() if isinstance(v, torch.Tensor)]
    assert {t.dtype for t in tensors} == {torch.uint8, torch.float32}
    assert all(t.dtype == torch.uint8 or t.numel() == 1 for t in tensors), "a float copy of the weight was kept"
    assert prepared.codes.data_ptr() == w.codes.data_ptr(), "prepare copied the packed codes"
    for m in (1, 6, 40):
        x = _special_rows(m, 130, gen)
        _assert_exact(CudaBackend.matmul(x, prepared), ternary_matmul_reference(x, w), f"backend M={m}")


# --------------------------------------------------------------------------------------------
# model level: a tiny BitVLA on the cuda backend vs the reference backend
# --------------------------------------------------------------------------------------------


def _tiny_model_and_batch(device):
    from bitvla_ros.model.bitvla import BitVLA
    from bitvla_ros.model.config import tiny

    torch.manual_seed(0)
    cfg = tiny()
    model = BitVLA(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.to_deploy("reference")
    model.to(device)
    t, gen = cfg.tokens, torch.Generator().manual_seed(1)
    text = lambda n: torch.randint(1, t.bos, (n,), generator=gen).tolist()  # noqa: E731
    ids = ([t.bos] + text(9) + [t.eot] + [t.image] * (cfg.num_images * cfg.vision.num_patches)
           + ([t.proprio] if cfg.use_proprio else []) + text(5) + [t.eot]
           + [t.first_action] * cfg.num_action_slots + [t.stop])
    ids = torch.tensor([ids], device=device)
    s = cfg.vision.image_size
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "pixel_values": (torch.rand(1, cfg.num_images, 3, s, s, generator=gen) * 2 - 1).to(device)}
    if cfg.use_proprio:
        batch["proprio"] = (torch.rand(1, cfg.proprio_dim, generator=gen) * 2 - 1).to(device)
    return model, batch


@kernel_test
def test_tiny_model_cuda_backend_matches_reference(report):
    model, batch = _tiny_model_and_batch(DEVICE)
    with torch.no_grad():
        ref = model(**batch)
        ref_again = model(**batch)
        model.set_backend("cuda")
        assert model.backend_name == "cuda"
        out = model(**batch)
    noise = (ref - ref_again).abs().max().item()  # the rest of the forward's own run-to-run spread
    diff = (out - ref).abs().max().item()
    report(f"{DEVICE}: max |cuda - reference| = {diff:.3g} (reference run-to-run {noise:.3g})")
    assert diff <= noise, f"cuda backend output differs from the reference by {diff} (run-to-run {noise})"


# --------------------------------------------------------------------------------------------
# CUDA graphs
# --------------------------------------------------------------------------------------------


@not_in_child
def test_graph_forward_captures_the_models_own_device_part():
    """One forward pass in the code: the graph captures BitVLA.forward_at, which forward runs eagerly."""
    model, batch = _tiny_model_and_batch("cpu")
    with torch.no_grad():
        assert torch.equal(model.forward_at(**model.token_positions(**batch)), model(**batch))
        ids = batch["input_ids"].clone()
        ids[0, -2] = model.config.tokens.eot  # one action slot fewer
        with pytest.raises(ValueError, match="action slots"):
            model.token_positions(**dict(batch, input_ids=ids))
    assert not hasattr(BitVLAGraphForward, "device_forward"), "the graph path has its own copy of the forward again"


@not_in_child
@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_graph_runner_without_cuda_raises_clearly():
    with pytest.raises(CUDAGraphUnavailable, match="CUDA"):
        CUDAGraphRunner(lambda x: x * 2)
    model, batch = _tiny_model_and_batch("cpu")
    with pytest.raises(CUDAGraphUnavailable, match="CUDA"):
        BitVLAGraphForward(model)(**batch)


@gpu_only
def test_cuda_graph_replays_w2a8_matmul():
    tw = _kernels()
    gen = torch.Generator().manual_seed(5)
    w = _packed(640, 2560, gen)
    runner = CUDAGraphRunner(lambda x: tw.w2a8_matmul(x, w.codes, w.scale, 2560))
    for m in (1, 8, 64, 600):
        for _ in range(2):
            x = (torch.randn(m, 2560, generator=gen) * 3).to("cuda", torch.bfloat16)
            _assert_exact(runner(x=x), ternary_matmul_reference(x, w), f"graph replay M={m}")
    assert runner.num_graphs == 4


@gpu_only
def test_cuda_graph_tiny_model_matches_eager(report):
    model, batch = _tiny_model_and_batch("cuda")
    model.set_backend("cuda")
    gf = BitVLAGraphForward(model)
    with torch.no_grad():
        eager = model(**batch)
        graphed = gf(**batch)
        batch2 = dict(batch, pixel_values=torch.rand_like(batch["pixel_values"]) * 2 - 1)
        eager2 = model(**batch2)
        graphed2 = gf(**batch2)
    assert gf.num_graphs == 1
    d1, d2 = (graphed - eager).abs().max().item(), (graphed2 - eager2).abs().max().item()
    report(f"graph replay vs eager: max |diff| {d1:.3g}, {d2:.3g}")
    torch.testing.assert_close(graphed, eager, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(graphed2, eager2, rtol=1e-3, atol=1e-4)
    assert (graphed2 - graphed).abs().max().item() > 0, "the replay ignored the new inputs"


# --------------------------------------------------------------------------------------------
# GPU: the model's real shapes
# --------------------------------------------------------------------------------------------

@gpu_only
@pytest.mark.parametrize("n,k", REAL_SHAPES, ids=[f"{n}x{k}" for n, k in REAL_SHAPES])
def test_real_shapes_exact_on_gpu(n, k):
    tw = _kernels()
    gen = torch.Generator().manual_seed(n + k)
    w = _packed(n, k, gen, scale=0.02)
    for m in (1, 3, 8, 16, 64, 600, 626):
        x = (torch.randn(m, k, generator=gen) * 2).to("cuda", torch.bfloat16)
        ref = ternary_matmul_reference(x, w)
        _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k), ref, f"auto M={m} {n}x{k}")
        if m in (8, 600):
            for kind in tw.KINDS:
                if kind == "gemv" and m > 16:
                    continue
                _assert_exact(tw.w2a8_matmul(x, w.codes, w.scale, k, kind=kind), ref, f"{kind} M={m} {n}x{k}")


@gpu_only
def test_self_check_passes_on_this_gpu():
    from bitvla_ros.kernels.triton_backend import self_check

    assert self_check(torch.device("cuda", torch.cuda.current_device())) == set()
