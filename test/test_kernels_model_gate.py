"""Accuracy gate for the whole model: the action chunk from every available backend against the
reference backend on the same inputs, in normalized action units."""

import pytest
import torch

import tiny
from bitvla_ros.kernels import available_backends


@pytest.mark.parametrize("backend", [b for b in available_backends("cpu") if b != "reference"])
def test_every_backend_gives_the_reference_actions(backend, report):
    cfg = tiny.config()
    images, instruction, proprio = tiny.observation(4, cfg)
    batch = tiny.processor(cfg)(images, instruction, proprio)
    model = tiny.model(seed=11).to_deploy("reference", dtype=torch.bfloat16)
    with torch.no_grad():
        expected = model(**batch)
        model.set_backend(backend)
        got = model(**batch)
    assert model.backend_name == backend
    err = (got - expected).abs().max().item()
    report(f"tiny model, {backend} vs reference: max |Δaction| = {err:.2e} (normalized units)")
    # Every backend takes the same exact int32 sums and the reference's fp32 epilogue, and the rest
    # of the forward is shared code: the chunk is the reference's bit for bit, on any CPU.
    assert torch.equal(got, expected), f"max |Δaction| = {err:.2e}"
