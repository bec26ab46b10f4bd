"""The default model in models/: present, small, ternary, documented, and it reads the instruction.

Its success rate is measured by `bitvla eval` (the model card has the figure); here we check what a
fresh clone relies on: `bitvla demo` and `launch/demo.launch.py` find it, every backend loads it, and
on one real LIBERO frame the chunk depends on the language.
"""

import json

import numpy as np
import pytest

from bitvla_ros.model.checkpoint import load_model
from bitvla_ros.model.predict import BitVLAPredictor
from bitvla_ros.paths import default_model

MODEL = default_model()


def test_default_model_is_shipped_packed_and_documented():
    assert MODEL.is_dir(), f"{MODEL} missing: the repo must ship the default model"
    weights = MODEL / "model.safetensors"
    assert weights.stat().st_size < 8 * 2**20, "the default model should stay a few MB"
    card = (MODEL / "README.md").read_text()
    for needle in ("put the bowl on the stove", "put the bowl on top of the cabinet",
                   "put the wine bottle on the rack", "success", "training time"):
        assert needle in card.lower() or needle in card, f"model card lacks {needle!r}"
    demo = json.loads((MODEL / "demo.json").read_text())
    assert demo["suite"] == "libero_goal" and demo["tasks"] == [1, 4, 9]
    assert demo["eval_init_start"] >= 40  # held out: demonstrations used init states 0-39


def test_default_model_carries_the_settings_it_was_evaluated_with():
    from bitvla_ros.model.runtime import RuntimeSettings
    from bitvla_ros.ros.evaluate import ACTION_NAMES, PROPRIO_NAMES

    runtime = RuntimeSettings.load(MODEL)
    assert runtime.execute_steps == 4 and runtime.rate_hz == 20.0  # as in the model card's evaluation
    assert runtime.action_names == ACTION_NAMES and runtime.proprio_names == PROPRIO_NAMES


def test_default_model_is_ternary_in_llm_and_vision():
    loaded = load_model(MODEL, backend="reference")
    cfg = loaded.config
    assert cfg.vision.quantized, "the vision encoder must be W1.58-A8 (the BitNet LLM always is)"
    packed = [name for name, _ in loaded.model.named_buffers() if name.endswith("qweight")]
    assert any(n.startswith("vision") for n in packed) and any(n.startswith("llm") for n in packed), packed[:5]


@pytest.fixture(scope="module")
def libero_frame():
    pytest.importorskip("libero")
    from bitvla_ros.sim.libero_env import LiberoEnv

    with LiberoEnv("libero_goal", 1, image_size=128, cameras=True, seed=1) as env:
        return env.reset(45)


@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
def test_the_instruction_steers_the_chunk_on_a_libero_frame(libero_frame, report):
    obs = libero_frame
    chunks = {}
    for backend in ("reference", "cpu"):
        predictor = BitVLAPredictor.from_pretrained(MODEL, backend=backend)
        for text in ("put the bowl on the stove", "put the wine bottle on the rack"):
            chunk = predictor.predict([obs.agentview, obs.wrist], text, obs.proprio)
            assert np.isfinite(chunk.actions).all() and chunk.actions.shape == (8, 7)
            chunks[backend, text] = chunk.normalized
    bowl, wine = chunks["reference", "put the bowl on the stove"], chunks["reference", "put the wine bottle on the rack"]
    gap = float(np.abs(bowl - wine).max())
    backend_gap = max(float(np.abs(chunks["cpu", t] - chunks["reference", t]).max())
                      for t in ("put the bowl on the stove", "put the wine bottle on the rack"))
    report(f"shipped model on goal task 1 init 45: bowl vs wine instruction max |Δ| = {gap:.3f}, "
           f"cpu vs reference {backend_gap:.1e} (normalized units)")
    assert gap > 0.05, "the same frame with another instruction should give another chunk"
    assert backend_gap < 1e-3
