"""Checkpoints: the published master-weight layout in, the packed deployment folder out and back."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from bitvla_ros.model import checkpoint
from bitvla_ros.model.bitlinear import BitLinear
from bitvla_ros.model.checkpoint import CheckpointError, convert, load_model, load_packed, load_published
from bitvla_ros.model.normalize import NormStatsError
from bitvla_ros.model.predict import BitVLAPredictor


@pytest.fixture
def published(tmp_path):
    source = tiny.model(seed=3)
    return source, tiny.write_published_checkpoint(tmp_path / "published", source)


def _inputs(cfg, seed=0):
    images, instruction, proprio = tiny.observation(seed, cfg)
    return tiny.processor(cfg)(images, instruction, proprio)


def test_published_layout_loads_every_weight_in_place(published):
    source, folder = published
    loaded = load_published(folder)
    src, got = source.state_dict(), loaded.state_dict()
    assert src.keys() == got.keys()
    for k in src:
        assert torch.equal(src[k], got[k]), k
    b = _inputs(loaded.config)
    with torch.no_grad():
        assert torch.equal(source(**b), loaded(**b))


def test_published_variants_lora_adapter_shards_and_newer_prefixes(published, tmp_path):
    source, folder = published
    b = _inputs(source.config)
    with torch.no_grad():
        expected = source(**b)
    # fine-tuning output: weights + config under lora_adapter/, sidecars in the root
    ft = tmp_path / "ft"
    shutil.copytree(folder, ft)
    (ft / "lora_adapter").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.move(ft / name, ft / "lora_adapter" / name)
    # two shards with an index, transformers>=4.52 prefixes, and unused keys that must be ignored
    weights = load_file(ft / "lora_adapter" / "model.safetensors")
    (ft / "lora_adapter" / "model.safetensors").unlink()
    renamed = {}
    for k, v in weights.items():
        k = k.replace("language_model.model.", "model.language_model.", 1).replace("vision_tower.", "model.vision_tower.", 1)
        renamed[k] = v
    renamed["model.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(source.config.vision.hidden_size)
    renamed["lm_head.weight"] = torch.zeros(4, 4)
    keys = sorted(renamed)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for fname, ks in shards.items():
        save_file({k: renamed[k] for k in ks}, str(ft / "lora_adapter" / fname))
    index = {"weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (ft / "lora_adapter" / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = load_published(ft)
    with torch.no_grad():
        assert torch.equal(loaded(**b), expected)


def test_convert_then_load_packed_gives_identical_actions(published, tmp_path, report):
    _, folder = published
    out = tmp_path / "packed"
    deployed = convert(folder, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "dataset_statistics.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    loaded = load_packed(out, backend="reference")
    b = _inputs(loaded.config)
    with torch.no_grad():
        a, c = deployed(**b), loaded(**b)
    assert torch.equal(a, c)
    # and through `load_model`, which detects the format
    assert load_model(out).format == "packed"
    pub_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    report(f"tiny model: published master weights {pub_bytes} B -> packed model.safetensors "
           f"{(out / 'model.safetensors').stat().st_size} B")


def test_packed_load_never_makes_float_ternary_weights(published, tmp_path, monkeypatch):
    _, folder = published
    convert(folder, tmp_path / "packed")

    def forbidden(*args, **kwargs):
        raise AssertionError("a float weight was ternarized while loading a packed folder")

    real_init = torch.nn.init.kaiming_uniform_

    def init_only_on_meta(tensor, *args, **kwargs):
        assert tensor.device.type == "meta", f"a {tuple(tensor.shape)} weight was materialised and initialised"
        return real_init(tensor, *args, **kwargs)

    monkeypatch.setattr(BitLinear, "to_deploy", forbidden)
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", init_only_on_meta)
    model = load_packed(tmp_path / "packed", backend="reference")
    layers = model.ternary_layers()
    assert layers and all(layer.deployed and not hasattr(layer, "weight") for _, layer in layers)
    for _, layer in layers:
        assert layer.qweight.dtype == torch.uint8
        assert layer.qweight.shape == (layer.out_features, (layer.in_features + 3) // 4)
    assert model.llm.embed_tokens.qweight.dtype == torch.int8
    state = load_file(tmp_path / "packed" / "model.safetensors")
    assert not any(k.endswith("proj.weight") or k.endswith("fc1.weight") and k.startswith("vision") for k in state)


def test_save_published_round_trip(tmp_path):
    source = tiny.model(seed=5)
    checkpoint.save_published(source, tmp_path / "ckpt", step=7, stats=tiny.statistics())
    assert (tmp_path / "ckpt" / "action_head--7_checkpoint.pt").is_file()
    head = torch.load(tmp_path / "ckpt" / "action_head--7_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.model.") for k in head)
    loaded = load_published(tmp_path / "ckpt")
    for k, v in source.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_predictor_unnormalizes_with_the_folder_statistics(published, tmp_path):
    _, folder = published
    convert(folder, tmp_path / "packed")
    predictor = BitVLAPredictor.from_pretrained(tmp_path / "packed", backend="reference", unnorm_key="libero_spatial")
    images, instruction, proprio = tiny.observation(1, predictor.model.config)
    chunk = predictor.predict(images, instruction, proprio)
    assert chunk.actions.shape == (8, 7)
    assert np.allclose(chunk.actions, predictor.stats.unnormalize_actions(chunk.normalized))
    assert np.array_equal(chunk.actions[:, 6], chunk.normalized[:, 6])  # gripper untouched
    with pytest.raises(NormStatsError, match=r"available keys: \['libero_spatial_no_noops'\]"):
        BitVLAPredictor.from_pretrained(tmp_path / "packed", unnorm_key="libero_goal")


# --- errors a user can act on -------------------------------------------------------------------

def test_missing_files_are_named(published, tmp_path):
    _, folder = published
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    (folder / "proprio_projector--10000_checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match=r"exactly one file matching \*proprio_projector\*checkpoint\*.*none"):
        load_published(folder)


def test_two_action_heads_are_ambiguous(published):
    _, folder = published
    shutil.copy(folder / "action_head--10000_checkpoint.pt", folder / "action_head--5000_checkpoint.pt")
    with pytest.raises(CheckpointError, match="exactly one file matching .*action_head.*found"):
        load_published(folder)


def test_wrong_shapes_name_the_weight(published):
    _, folder = published
    weights = load_file(folder / "model.safetensors")
    key = "language_model.model.layers.1.mlp.up_proj.weight"
    weights[key] = torch.zeros(7, 3)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"llm\.layers\.1\.mlp\.up_proj\.weight: file \(7, 3\) vs config \(128, 64\)"):
        load_published(folder)


def test_unknown_model_type(published):
    _, folder = published
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown model_type 'gpt2'"):
        load_published(folder)
    cfg["model_type"], cfg["text_config"]["model_type"] = "bitvla", "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="BitNet language model"):
        load_published(folder)


class NotATensor:
    pass


def test_pickle_that_is_not_a_plain_state_dict_is_refused(published):
    _, folder = published
    torch.save({"module.fc1.weight": NotATensor()}, folder / "proprio_projector--10000_checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_published(folder)
    torch.save([torch.zeros(2)], folder / "proprio_projector--10000_checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a plain state dict.*list"):
        load_published(folder)


def test_truncated_packed_weights(published, tmp_path):
    _, folder = published
    convert(folder, tmp_path / "packed")
    path = tmp_path / "packed" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_packed(tmp_path / "packed")


def test_convert_refuses_to_overwrite_its_source(published):
    _, folder = published
    with pytest.raises(CheckpointError, match="overwrite its source"):
        convert(folder, folder)
