"""Compact deploy storage: int8 heads, embedding rows read from the packed file, and a CPU load
that never pulls in the compiler stack."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tiny
from bitvla_ros.model.checkpoint import CheckpointError, convert, load_packed
from bitvla_ros.model.int8_linear import ROWS_PER_BLOCK, Int8Linear

HERE = Path(__file__).resolve().parent


@pytest.fixture
def published(tmp_path):
    return tiny.write_published_checkpoint(tmp_path / "published", tiny.model(seed=5))


def _inputs(cfg, seed=0):
    images, instruction, proprio = tiny.observation(seed, cfg)
    return tiny.processor(cfg)(images, instruction, proprio)


def test_int8_linear_computes_with_its_rounded_weight_and_rounds_by_half_a_step():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 2 * ROWS_PER_BLOCK + 7)  # several row blocks and a ragged last one
    q = Int8Linear.from_linear(linear)
    w = q.dequantized()
    step = q.weight_scale[:, None]
    assert q.qweight.dtype == torch.int8 and q.qweight.shape == linear.weight.shape
    assert ((w - linear.weight).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(3, 5, 48)
    with torch.no_grad():
        torch.testing.assert_close(q(x), F.linear(x, w, linear.bias), rtol=1e-5, atol=1e-5)
        assert q(x.bfloat16()).dtype == torch.bfloat16  # the codes stay int8; the input sets the dtype


def test_int8_heads_round_trip_through_the_packed_folder(published, tmp_path, report):
    float_dir, int8_dir = tmp_path / "float", tmp_path / "int8"
    convert(published, float_dir)
    in_memory = convert(published, int8_dir, heads="int8")
    assert json.loads((int8_dir / "config.json").read_text())["bitvla_ros"]["heads"] == "int8"
    assert json.loads((float_dir / "config.json").read_text())["bitvla_ros"]["heads"] == "float"
    loaded = load_packed(int8_dir, backend="reference")
    assert loaded.heads_storage == "int8"
    linears = dict(loaded.head_linears())
    assert not linears, "every head linear is int8 after loading"
    assert isinstance(loaded.action_head.fc1, Int8Linear) and loaded.action_head.fc1.qweight.dtype == torch.int8
    b = _inputs(loaded.config)
    with torch.no_grad():
        a_int8, a_mem, a_float = loaded(**b), in_memory(**b), load_packed(float_dir, backend="reference")(**b)
    assert torch.equal(a_int8, a_mem)
    diff = (a_int8 - a_float).abs().max().item()
    assert 0 < diff < 0.1  # rounded weights move the actions, a little
    sizes = [(d / "model.safetensors").stat().st_size for d in (float_dir, int8_dir)]
    assert sizes[1] < sizes[0]
    report(f"tiny model: int8 heads {sizes[0]} -> {sizes[1]} B; max action change {diff:.2e} (normalized)")


def test_int8_heads_from_a_packed_folder_and_no_way_back(published, tmp_path):
    convert(published, tmp_path / "float")
    convert(tmp_path / "float", tmp_path / "int8", heads="int8")
    assert load_packed(tmp_path / "int8", backend="reference").heads_storage == "int8"
    with pytest.raises(CheckpointError, match="cannot be recovered"):
        convert(tmp_path / "int8", tmp_path / "again", heads="float")


def test_embedding_rows_come_from_the_file_and_equal_the_table(published, tmp_path):
    convert(published, tmp_path / "packed")
    model = load_packed(tmp_path / "packed", backend="reference")
    embed = model.llm.embed_tokens
    assert embed._reads_file()
    ids = torch.tensor([[3, 3, 0, embed.num_embeddings - 1, 17], [5, 6, 7, 8, 3]])
    table = F.embedding(ids, embed.qweight).float() * embed.row_scale[ids].unsqueeze(-1)
    assert torch.equal(embed(ids), table)
    with pytest.raises(IndexError, match="out of range"):
        embed(torch.tensor([embed.num_embeddings]))
    # replacing the table (e.g. a copy made elsewhere) goes back to ordinary lookups
    embed.qweight = embed.qweight.clone()
    assert not embed._reads_file() and torch.equal(embed(ids), table)


def test_cpu_load_and_forward_import_neither_dynamo_nor_triton(published, tmp_path):
    convert(published, tmp_path / "packed")
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import tiny\n"
        "from bitvla_ros.model.checkpoint import load_packed\n"
        f"m = load_packed({str(tmp_path / 'packed')!r}, backend='cpu')\n"
        "images, instruction, proprio = tiny.observation(0, m.config)\n"
        "with torch.no_grad():\n"
        "    m(**tiny.processor(m.config)(images, instruction, proprio))\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'triton' or k.startswith('torch._dynamo'))[:3])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
