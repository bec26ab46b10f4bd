"""The path a GPU deployment takes, run without a GPU.

On CUDA the node resolves its `device`, loads the packed model onto it, runs every ternary linear
on the Triton backend, picks the CUDA-graph or the eager forward, and brings the chunk back with
`.cpu()`. Here the same code runs with TRITON_INTERPRET=1 on CPU tensors (the Triton kernels
through the interpreter): `BitVLAPredictor.predict` in a child pytest process
(`test_device_path_in_triton_interpreter`), and a `policy_node` process started with that
variable; both must give the reference backend's actions bit for bit. The parent process checks
device resolution, the device the predictor really uses (on the meta device, which exists
everywhere), the graph-or-eager choice and the CUDA backend order, none of which needs a kernel.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tiny
from ros_helpers.fake_robot import FakeRobot
from ros_helpers.harness import NodeProcess
from bitvla_ros.model.checkpoint import convert
from bitvla_ros.model.cuda_graph import EAGER, CUDAGraphUnavailable, DeployedForward
from bitvla_ros.model.device import DeviceError, resolve_device
from bitvla_ros.model.predict import BitVLAPredictor
from triton_child import run_in_triton_interpreter, triton_importable

CHILD_FLAG = "BITVLA_DEVICE_PATH_CHILD"
IN_CHILD = os.environ.get(CHILD_FLAG) == "1"
HAS_CUDA = torch.cuda.is_available()
in_child = pytest.mark.skipif(not IN_CHILD, reason="runs in the Triton interpreter child")
not_in_child = pytest.mark.skipif(IN_CHILD, reason="runs in the parent process")
no_gpu = pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")

# What FakeRobot publishes: two rgb8 cameras of constant grey, joints p0..p7 at 0.1 · i.
CAMERAS = ["cam0/image_raw", "cam1/image_raw"]
PROPRIO = [f"p{i}" for i in range(8)]
IMAGE = np.full((48, 64, 3), 90, np.uint8)
STATE = 0.1 * np.arange(8)
INSTRUCTION = "put the bowl on the stove"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_path")
    return convert(tiny.write_published_checkpoint(root / "pub", tiny.model(0)), root / "packed") and root / "packed"


# --------------------------------------------------------------------------------------------
# the interpreter child: predict() on the cuda backend, bit for bit
# --------------------------------------------------------------------------------------------


@not_in_child
@pytest.mark.skipif(HAS_CUDA, reason="with a GPU the Triton kernels run compiled (test_kernels_triton.py)")
def test_device_path_in_triton_interpreter(report):
    report(f"Triton interpreter child: {run_in_triton_interpreter(__file__, CHILD_FLAG)}")


@in_child
def test_predict_on_the_cuda_backend_equals_the_reference_bit_for_bit(packed):
    from bitvla_ros.kernels.triton_backend import W2A8Prepared

    ref = BitVLAPredictor.from_pretrained(packed, backend="reference", device="cpu")
    # What a node with `device: auto, backend: cuda` does; warmup=True runs the load-time chunk a
    # GPU load runs (there it also captures the graph).
    gpu_path = BitVLAPredictor.from_pretrained(packed, backend="cuda", device="auto", warmup=True)
    d = gpu_path.describe()
    assert d["device"] == "cpu" and "no CUDA GPU" in d["device_reason"]
    assert d["backend"] == "cuda" and "interpreter" in d["backend_reason"]
    assert d["forward"] == EAGER and "CUDA device" in d["forward_reason"]
    layers = gpu_path.model.ternary_layers()
    assert layers and all(isinstance(layer._prepared, W2A8Prepared) for _, layer in layers), \
        "the warm-up chunk did not prepare every ternary linear on the cuda backend"
    for instruction, state in ((INSTRUCTION, STATE), ("open the top drawer of the cabinet", -STATE)):
        want = ref.predict([IMAGE, IMAGE], instruction, state)
        got = gpu_path.predict([IMAGE, IMAGE], instruction, state)
        assert got.actions.dtype == np.float64 and got.actions.shape == want.actions.shape
        assert np.array_equal(got.normalized, want.normalized), np.abs(got.normalized - want.normalized).max()
        assert np.array_equal(got.actions, want.actions)


# --------------------------------------------------------------------------------------------
# device resolution and the device the predictor really uses
# --------------------------------------------------------------------------------------------


@not_in_child
@no_gpu
def test_auto_device_without_a_gpu_is_the_cpu_and_says_why():
    choice = resolve_device("auto")
    assert choice.device == torch.device("cpu") and "no CUDA GPU" in choice.reason
    assert resolve_device(None).device == torch.device("cpu")
    assert resolve_device("CPU").reason == "requested: cpu"


@not_in_child
@no_gpu
def test_a_cuda_device_without_a_gpu_is_an_error_not_a_cpu_run(packed):
    for setting in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="sees no CUDA GPU.*'auto' or 'cpu'"):
            resolve_device(setting)
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        BitVLAPredictor.from_pretrained(packed, backend="reference", device="cuda")


class _OnDevice:
    """Stands in for the head output on a device numpy cannot read: only `.cpu()` gets it back."""

    def __init__(self, shape):
        self.shape, self.cpu_calls = shape, 0

    def __getitem__(self, index):
        return self

    def cpu(self):
        self.cpu_calls += 1
        return torch.zeros(self.shape)


@not_in_child
def test_the_predictor_uses_the_requested_device(packed):
    """The meta device exists on every machine: the model must be loaded onto it (codes as
    codes), each batch must be sent to it, and the chunk must come back through .cpu()."""
    predictor = BitVLAPredictor.from_pretrained(packed, backend="reference", device="meta")
    assert predictor.device == torch.device("meta") and predictor.describe()["device"] == "meta"
    tensors = dict(predictor.model.named_parameters()) | dict(predictor.model.named_buffers())
    assert {t.device.type for t in tensors.values()} == {"meta"}
    codes = [layer.qweight for _, layer in predictor.model.ternary_layers()]
    assert codes and all(c.dtype == torch.uint8 for c in codes), "the codes were expanded on the way to the device"
    cfg = predictor.model.config
    seen, out = {}, _OnDevice((cfg.action_chunk, cfg.action_dim))

    def forward(**batch):
        seen.update({k: v.device.type for k, v in batch.items()})
        return out

    predictor.forward = forward
    chunk = predictor.predict([IMAGE, IMAGE], INSTRUCTION, STATE)
    assert seen and set(seen.values()) == {"meta"}, seen
    assert out.cpu_calls == 1 and chunk.normalized.shape == (cfg.action_chunk, cfg.action_dim)


# --------------------------------------------------------------------------------------------
# graph or eager, and the backend order on CUDA
# --------------------------------------------------------------------------------------------


@not_in_child
def test_off_cuda_the_forward_is_eager_and_forced_graphs_refuse_clearly():
    model = tiny.model(0).to_deploy("reference")
    forward = DeployedForward(model)
    assert forward.mode == EAGER and "cpu" in forward.reason and forward.num_graphs == 0
    assert DeployedForward(model, cuda_graphs=False).reason == "CUDA graphs turned off"
    with pytest.raises(CUDAGraphUnavailable, match="requested but cannot be used"):
        DeployedForward(model, cuda_graphs=True)


@not_in_child
def test_auto_on_cuda_orders_backends_by_what_the_gpu_supports(monkeypatch):
    """A GPU without the Triton path (older than sm80, or no triton) gets bitsandbytes' int8
    matmul; without a working bitsandbytes too, the reference. Nothing here runs a kernel."""
    from bitvla_ros.kernels import get_backend, int8
    from bitvla_ros.kernels.registry import backend_reason
    from bitvla_ros.kernels.triton_backend import CudaBackend

    monkeypatch.setattr(CudaBackend, "_status", (True, "NVIDIA H200 (sm90), triton 3.9.0"))
    monkeypatch.setattr(int8, "cuda_int8_status", lambda index=None: (True, "bitsandbytes int8 matmul on a test GPU"))
    assert get_backend("auto", "cuda").name == "cuda"
    monkeypatch.setattr(CudaBackend, "_status", (False, "Tesla T4 has compute capability 7.5; the Triton W2A8 "
                                                        "kernels need ≥ 8.0"))
    assert get_backend("auto", "cuda").name == "int8"
    why = backend_reason("auto", "cuda")
    assert why.startswith("auto for cuda tensors: bitsandbytes") and "cuda: Tesla T4" in why, why
    monkeypatch.setattr(int8, "cuda_int8_status", lambda index=None: (False, "bitsandbytes is not installed"))
    assert get_backend("auto", "cuda").name == "reference"
    assert "int8: bitsandbytes is not installed" in backend_reason("auto", "cuda")
    with pytest.raises(RuntimeError, match="bitsandbytes is not installed"):
        get_backend("int8", "cuda")
    # the CPU keeps its own order: int8 on a CPU is there to be chosen by name only
    assert get_backend("auto", "cpu").name != "int8"


# --------------------------------------------------------------------------------------------
# policy_node over DDS on the cuda backend (Triton interpreter in the node's process)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def robot(rclpy_context):
    r = FakeRobot(rclpy_context, CAMERAS, PROPRIO)
    yield r
    r.close()


@not_in_child
@pytest.mark.skipif(HAS_CUDA, reason="with a GPU, bench/gpu_check.sh runs the node on it")
def test_policy_node_on_the_cuda_backend_publishes_the_reference_actions(packed, robot, tmp_path, monkeypatch,
                                                                         report):
    if not triton_importable():
        pytest.skip("triton is not installed")
    want = BitVLAPredictor.from_pretrained(packed, backend="reference", device="cpu").predict(
        [IMAGE, IMAGE], INSTRUCTION, STATE).actions
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the node process only: this one imported no triton for it
    params = {"model_path": str(packed), "backend": "cuda", "device": "auto", "image_topics": CAMERAS,
              "proprio_names": PROPRIO, "action_names": [f"a{i}" for i in range(7)], "control_rate_hz": 20.0,
              "max_observation_age_s": 1.0, "start_enabled": True, "diagnostics_rate_hz": 4.0,
              "latency_compensation": False}  # the interpreter is far slower than a chunk: the whole chunk
    with NodeProcess("bitvla_ros.ros.policy_node", "bitvla_policy", params, tmp_path) as proc:
        robot.instruct(INSTRUCTION)
        assert robot.spin_until(lambda: len(robot.commands) >= 1, 120), proc.log()
        got = np.array([p.positions for p in robot.commands[0].points])
        assert robot.spin_until(lambda: robot.last_status()[1].get("forward"), 30), proc.log()
        values = robot.last_status()[1]
        log = proc.log()
    assert np.array_equal(got, want), f"max |node - reference| = {np.abs(got - want).max()}"
    assert values["device"] == "cpu" and values["backend"] == "cuda" and values["forward"] == EAGER, values
    assert "no CUDA GPU" in values["device_reason"] and "interpreter" in values["backend_reason"], values
    assert "device cpu" in log and "backend cuda" in log, log[-2000:]
    report(f"policy_node, backend cuda in the Triton interpreter: first chunk equal to the reference; "
           f"/diagnostics device={values['device']} forward={values['forward']}")


@not_in_child
def test_bitvla_info_reports_the_device_and_backend_it_chose_and_why(capsys):
    from bitvla_ros.cli import main

    assert main(["info", "--preset", "tiny", "--device", "cpu", "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert "device 'cpu' -> cpu (requested: cpu)" in out
    assert "backend 'reference' -> reference (requested" in out
    if not HAS_CUDA:
        assert main(["info", "--preset", "tiny"]) == 0
        out = capsys.readouterr().out
        assert "device 'auto' -> cpu (auto: " in out and "no CUDA GPU" in out
        assert "(auto for cpu tensors" in out
        assert main(["info", "--preset", "tiny", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@not_in_child
def test_a_failed_graph_capture_falls_back_to_eager_for_good():
    from bitvla_ros.model.cuda_graph import GRAPH

    model = tiny.model(0).to_deploy("reference")
    batch = tiny.processor()([IMAGE, IMAGE], INSTRUCTION, np.zeros(8))
    forward = DeployedForward(model)

    class FailingCapture:
        calls = 0

        def replay(self, positions):
            FailingCapture.calls += 1
            raise CUDAGraphUnavailable("capture failed (as a host sync inside the forward would make it)")

    forward._graph, forward.mode = FailingCapture(), GRAPH  # what a CUDA model has before its first capture
    with torch.no_grad():
        want = model(**batch)
        assert torch.equal(forward(**batch), want)
        assert forward.mode == EAGER and "capture failed" in forward.reason
        assert torch.equal(forward(**batch), want) and FailingCapture.calls == 1


@not_in_child
def test_one_graph_serves_every_prompt_of_the_same_token_count():
    """Graphs are keyed on the device part's input signature: the token count, not the text."""
    from bitvla_ros.model.cuda_graph import CUDAGraphRunner

    model, proc = tiny.model(0), tiny.processor()
    sig = lambda text: CUDAGraphRunner.signature(  # noqa: E731
        model.token_positions(**proc([IMAGE, IMAGE], text, np.zeros(8))))
    a, longer, same = INSTRUCTION, "open the top drawer of the cabinet", "turn on the stove"
    assert len(proc.prompt_ids(longer)) != len(proc.prompt_ids(a)) and sig(longer) != sig(a)  # a new capture
    assert len(proc.prompt_ids(same)) == len(proc.prompt_ids(a)) and sig(same) == sig(a)  # the same graph


gpu_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@gpu_only
def test_on_a_gpu_the_predictor_replays_cuda_graphs_captured_at_load(packed):
    from bitvla_ros.model.cuda_graph import GRAPH

    graphed = BitVLAPredictor.from_pretrained(packed, device="auto")
    d = graphed.describe()
    assert d["device"].startswith("cuda") and d["forward"] == GRAPH and graphed.forward.num_graphs == 1
    eager = BitVLAPredictor.from_pretrained(packed, backend=d["backend"], device=d["device"], cuda_graphs=False)
    for instruction in (INSTRUCTION, "open the top drawer of the cabinet"):
        got = graphed.predict([IMAGE, IMAGE], instruction, STATE)
        want = eager.predict([IMAGE, IMAGE], instruction, STATE)
        np.testing.assert_allclose(got.normalized, want.normalized, rtol=1e-3, atol=1e-4)
    assert graphed.forward.num_graphs >= 2  # the second prompt length was captured on its first chunk
