"""Checkpoint I/O: the published master-weight folder and our packed deployment folder.

Published (docs/checkpoints.md): LLaVA-style config.json + safetensors shard(s) with the
published key names, `*action_head*checkpoint*.pt` and `*proprio_projector*checkpoint*.pt`
sidecars (DDP `module.` prefix), dataset_statistics.json, tokenizer files. Weights are master
(float) weights; we ternarize them on load when a deploy model is wanted.

Packed (ours): config.json (published layout + `bitvla_ros.format = "packed"`), one
model.safetensors with 2-bit codes + an fp32 scale per ternary linear, int8 rows + scales for the
embedding, bf16 for everything else; tokenizer files and dataset_statistics.json copied along.
It loads into a deploy-form skeleton by memory map: no float copy of a ternary layer is ever made.
With a ``device`` (e.g. cuda:0) each tensor goes from the map straight to it, codes as codes.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from bitvla_ros.model import keymap
from bitvla_ros.model.runtime import copy_runtime
from bitvla_ros.model.bitvla import BitVLA, cast_parameters
from bitvla_ros.model.config import BitVLAConfig, ConfigError
from bitvla_ros.model.embedding import QuantizedEmbedding
from bitvla_ros.model.lm_head import LanguageHead
from bitvla_ros.model.meta import meta_skeleton
from bitvla_ros.model.safetensors_io import SafetensorsError, data_offset, load_mmap
from bitvla_ros.model.tokenizer import load_tokenizer, token_ids

PACKED_FORMAT = "packed"
PACKED_WEIGHTS = "model.safetensors"
PACKED_LANGUAGE_HEAD = keymap.LANGUAGE_HEAD_MAP["lm_head.weight"]  # an untied head, kept for generation
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
STATS_FILE = "dataset_statistics.json"


class CheckpointError(RuntimeError):
    """A model folder that cannot be loaded, with what was expected and what to do."""


@dataclass
class LoadedModel:
    model: BitVLA
    directory: Path
    format: str  # "published" or "packed"

    @property
    def config(self) -> BitVLAConfig:
        return self.model.config


# --- entry points ------------------------------------------------------------------------------

def checkpoint_format(directory: str | Path) -> str:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model folder {directory} does not exist")
    cfg = _read_json(_config_path(directory))
    return PACKED_FORMAT if cfg.get("bitvla_ros", {}).get("format") == PACKED_FORMAT else "published"


def load_model(directory: str | Path, backend: str = "auto", deploy: bool = True,
               dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load either format onto ``device``. Published master weights are ternarized on load (on the
    CPU, then moved as codes) unless deploy=False."""
    directory = Path(directory)
    fmt = checkpoint_format(directory)
    if fmt == PACKED_FORMAT:
        if not deploy:
            raise CheckpointError(f"{directory} is a packed deployment folder; it has no master weights to train")
        return LoadedModel(load_packed(directory, backend=backend, dtype=dtype, device=device), directory, fmt)
    model = load_published(directory, dtype=dtype or torch.float32)
    if deploy:
        model.to_deploy("reference").to(device)
        model.set_backend(backend)  # resolved for the device the codes are on now
    else:
        model.to(device)
    return LoadedModel(model, directory, fmt)


# --- published master weights --------------------------------------------------------------------

def load_published(directory: str | Path, dtype: torch.dtype = torch.float32, require_action_head: bool = True) -> BitVLA:
    """A train-mode BitVLA from a published master-weight folder.

    ``require_action_head=False`` also accepts a released VLM folder (no action-head/proprio
    sidecars, e.g. bitvla-bitsiglipL-224px-bf16): the model then has no action head or proprio
    projector and serves text generation only (model/vqa.py)."""
    directory = Path(directory)
    weights_dir = _weights_dir(directory)
    config = _load_config(weights_dir, directory)
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in _read_weight_shards(weights_dir).items():
        name = keymap.normalize_prefix(name)
        if name.startswith(keymap.IGNORED_PREFIXES):
            continue
        ours = keymap.rename(name, keymap.WEIGHT_MAP)
        if ours is None:
            unknown.append(name)
        else:
            state[ours] = tensor
    if unknown:
        raise CheckpointError(f"{weights_dir}: {len(unknown)} weights have names BitVLA does not use, e.g. "
                              f"{unknown[:3]}; is this a BitVLA (LLaVA + BitNet) checkpoint?")
    vlm_only = not require_action_head and not any(directory.glob("*action_head*checkpoint*"))
    if not vlm_only:
        state.update(_read_sidecar(directory, "action_head", keymap.ACTION_HEAD_MAP))
        if config.use_proprio:
            state.update(_read_sidecar(directory, "proprio_projector", keymap.PROPRIO_MAP))
    # Vision layers past vision_feature_layer are never run; the published loader keeps them idle.
    used = config.vision_layers_used
    state = {k: v for k, v in state.items() if not _is_unused_vision_layer(k, used)}

    with meta_skeleton():
        model = BitVLA(config)
    if vlm_only:
        model.action_head = model.proprio_projector = None
    _check_and_assign(model, state, str(directory), dtype)
    return model.eval()


def save_published(model: BitVLA, directory: str | Path, step: int = 0, stats: dict | None = None,
                   tokenizer_dir: str | Path | None = None) -> Path:
    """Write a train-mode model in the published layout (master weights + .pt sidecars)."""
    if model.deployed:
        raise CheckpointError("a deployed (packed) model has no master weights; save it with save_packed")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    to_published = keymap.reverse(keymap.WEIGHT_MAP)
    main, head, proprio = {}, {}, {}
    for name, t in state.items():
        if name.startswith("action_head."):
            head["module." + keymap.rename(name, keymap.reverse(keymap.ACTION_HEAD_MAP))] = t
        elif name.startswith("proprio_projector."):
            proprio["module." + keymap.rename(name, keymap.reverse(keymap.PROPRIO_MAP))] = t
        else:
            main[keymap.rename(name, to_published)] = t
    model.config.save(directory)
    _save_readable(main, directory / "model.safetensors")
    torch.save(head, directory / f"action_head--{step}_checkpoint.pt")
    if proprio:
        torch.save(proprio, directory / f"proprio_projector--{step}_checkpoint.pt")
    _copy_side_files(directory, stats, tokenizer_dir)
    return directory


def _save_readable(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors writes its files 0600; a model folder is shared like any other file (umask)."""
    save_file(tensors, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


# --- packed deployment folder --------------------------------------------------------------------

def save_packed(model: BitVLA, directory: str | Path, stats: dict | None = None,
                tokenizer_dir: str | Path | None = None, language_head: torch.Tensor | None = None) -> Path:
    """``language_head``: an untied lm_head weight to keep for text generation (stored as-is)."""
    if not model.deployed:
        raise CheckpointError("save_packed needs a deployed model; call model.to_deploy() first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    embedding = "float" if isinstance(model.llm.embed_tokens, torch.nn.Embedding) else "int8"
    cfg["bitvla_ros"].update(format=PACKED_FORMAT, embedding=embedding, heads=model.heads_storage,
                             dtype=str(model.dtype).removeprefix("torch."))
    (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if language_head is not None:
        state[PACKED_LANGUAGE_HEAD] = language_head.detach().contiguous()
    _save_readable(state, directory / PACKED_WEIGHTS, metadata={"format": "bitvla_ros.packed"})
    _copy_side_files(directory, stats, tokenizer_dir)
    return directory


def load_packed(directory: str | Path, backend: str = "auto", dtype: torch.dtype | None = None,
                device: str | torch.device = "cpu") -> BitVLA:
    """A deploy-form BitVLA whose tensors are memory-mapped from the packed folder (on the CPU), or
    copied from the map straight to ``device``, as they are stored (2-bit codes stay codes)."""
    directory = Path(directory)
    raw = _read_json(_config_path(directory))
    ours = raw.get("bitvla_ros", {})
    if ours.get("format") != PACKED_FORMAT:
        raise CheckpointError(f"{directory} is not a packed deployment folder; convert it with "
                              f"`bitvla convert {directory} OUT`")
    config = _config_from_dict(raw, directory)
    path = directory / PACKED_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{directory} lacks {PACKED_WEIGHTS}; the packed folder is incomplete, convert it again")
    try:
        state = load_mmap(path)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None
    device = torch.device(device)
    if device.type != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    model = BitVLA.deploy_skeleton(config, embedding=ours.get("embedding", "int8"), heads=ours.get("heads", "float"))
    state.pop(PACKED_LANGUAGE_HEAD, None)  # generation reads it on demand (language_head)
    _check_and_assign(model, state, str(path), dtype=None)
    embed = model.llm.embed_tokens
    if device.type == "cpu" and isinstance(embed, QuantizedEmbedding):
        embed.read_rows_from(path, data_offset(path, "llm.embed_tokens.qweight"))
    if dtype is not None:
        cast_parameters(model, dtype)
    model.set_backend(backend)
    return model.eval()


def convert(src: str | Path, dst: str | Path, embedding: str = "int8", dtype: torch.dtype = torch.bfloat16,
            backend: str = "reference", heads: str = "float") -> BitVLA:
    """Published master weights (or a packed folder, re-saved) → packed deployment folder.
    ``heads='int8'`` stores the projectors and the action head as int8 rows (docs/quantization.md)."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("convert would overwrite its source; choose another output folder")
    if checkpoint_format(src) == PACKED_FORMAT:
        model = load_packed(src, backend=backend)
        if heads == "int8" and model.heads_storage == "float":
            model.compact_heads()
        elif heads == "float" and model.heads_storage == "int8":
            raise CheckpointError(f"{src} stores its heads as int8 rows already; float heads cannot be "
                                  "recovered from them: convert the published master weights instead")
        head = _stored_language_head(src)
    else:
        model = load_published(src, dtype=dtype)
        model.to_deploy(backend, embedding=embedding, dtype=dtype, heads=heads)
        head = _stored_language_head(src)
        head = head.to(dtype) if head is not None else None
    if model.config.text.tie_word_embeddings:
        head = None  # the embedding is the head
    save_packed(model, dst, stats=_stats_path(src), tokenizer_dir=_tokenizer_dir(src), language_head=head)
    copy_runtime(src, dst)
    return model


# --- language head (text generation) ----------------------------------------------------------

def language_head(directory: str | Path, model: BitVLA) -> LanguageHead:
    """The head that turns the LLM's hidden states into vocabulary logits, for ``model`` loaded
    from ``directory``: the token embedding when the config ties them, else the stored lm_head,
    memory-mapped (nothing is copied until generation runs)."""
    directory = Path(directory)
    if model.config.text.tie_word_embeddings:
        return LanguageHead.tied(model.llm.embed_tokens)
    weight = _stored_language_head(directory)
    expected = (model.config.text.vocab_size, model.config.text.hidden_size)
    if weight is None:
        fmt = checkpoint_format(directory)
        names = ", ".join(sorted(set(keymap.LANGUAGE_HEAD_MAP)))
        fix = ("this packed folder was written for actions only; convert the published model again with "
               "`bitvla convert SRC DST` (it keeps the language head), or point at the published folder"
               if fmt == PACKED_FORMAT else "point at a published VLM/VLA folder that stores its lm_head")
        raise CheckpointError(
            f"{directory} has no language head: its config.json says tie_word_embeddings=false, so text "
            f"generation needs a stored lm_head {expected} ({names}), and the {fmt} weights hold none; {fix}")
    if tuple(weight.shape) != expected:
        raise CheckpointError(f"{directory}: the lm_head is {tuple(weight.shape)}, config.json says (vocab, hidden) = "
                              f"{expected}; the weights and config.json belong to different models")
    return LanguageHead(weight, source="lm_head")


def _stored_language_head(directory: Path) -> torch.Tensor | None:
    """A memory-mapped view of the stored lm_head (published or packed names), or None."""
    weights_dir = _weights_dir(directory)
    for name, tensor in _read_weight_shards(weights_dir).items():
        if keymap.rename(name, keymap.LANGUAGE_HEAD_MAP) is not None:
            return tensor
    return None


# --- helpers -----------------------------------------------------------------------------------

def _config_path(directory: Path) -> Path:
    return _weights_dir(directory) / "config.json"


def _weights_dir(directory: Path) -> Path:
    """The folder holding config.json + weights. Fine-tuning writes them under lora_adapter/."""
    if not directory.is_dir():
        raise CheckpointError(f"model folder {directory} does not exist")
    if (directory / "config.json").is_file():
        return directory
    if (directory / "lora_adapter" / "config.json").is_file():
        return directory / "lora_adapter"
    raise CheckpointError(f"no config.json in {directory} (nor in {directory}/lora_adapter); "
                          "point at a BitVLA model folder")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def _config_from_dict(raw: dict, where: Path, tokens=None) -> BitVLAConfig:
    try:
        return BitVLAConfig.from_dict(raw, tokens)
    except ConfigError as e:
        raise CheckpointError(f"{where}/config.json: {e}") from None


def _load_config(weights_dir: Path, directory: Path) -> BitVLAConfig:
    """A published config.json; the special ids come from the tokenizer saved with the weights
    (published config.json files do not list them), else the published defaults."""
    raw = _read_json(weights_dir / "config.json")
    tokens, tok_dir = None, _tokenizer_dir(directory)
    if "token_ids" not in raw.get("bitvla_ros", {}) and tok_dir is not None:
        try:
            tokens = token_ids(load_tokenizer(tok_dir))
        except ValueError as e:
            raise CheckpointError(f"{tok_dir}/tokenizer.json: {e}") from None
    return _config_from_dict(raw, weights_dir, tokens)


def _read_weight_shards(weights_dir: Path) -> dict[str, torch.Tensor]:
    index = weights_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted({weights_dir / f for f in _read_json(index).get("weight_map", {}).values()})
    else:
        shards = sorted(weights_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"no *.safetensors weights in {weights_dir}")
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise CheckpointError(f"the shard index names files that are missing: {missing}")
    tensors = {}
    for shard in shards:
        try:
            tensors.update(load_mmap(shard))
        except SafetensorsError as e:
            raise CheckpointError(str(e)) from None
    return tensors


def _read_sidecar(directory: Path, kind: str, table: dict[str, str]) -> dict[str, torch.Tensor]:
    found = sorted(directory.glob(f"*{kind}*checkpoint*"))
    if len(found) != 1:
        raise CheckpointError(f"expected exactly one file matching *{kind}*checkpoint* in {directory}, "
                              f"found {[f.name for f in found] or 'none'}")
    path = found[0]
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a plain state dict of tensors (refusing to unpickle it "
                              f"beyond weights_only): {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise CheckpointError(f"{path.name} is not a plain state dict of tensors (got {type(raw).__name__})")
    out, unknown = {}, []
    for name, tensor in raw.items():
        name = name.removeprefix("module.")
        ours = keymap.rename(name, table)
        (unknown.append(name) if ours is None else out.__setitem__(ours, tensor))
    if unknown:
        raise CheckpointError(f"{path.name} has keys that are not a {kind} ({unknown[:3]}...)")
    return out


def _is_unused_vision_layer(name: str, used: int) -> bool:
    if not name.startswith("vision.layers."):
        return False
    return int(name.split(".")[2]) >= used


def _check_and_assign(model: BitVLA, state: dict[str, torch.Tensor], where: str, dtype: torch.dtype | None) -> None:
    expected = {k: v for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where} does not match its config: {len(missing)} weights missing "
                              f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
             for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{where} has {len(wrong)} weights whose shape disagrees with config.json: "
                              + "; ".join(wrong[:3]))
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, assign=True)


def _stats_path(directory: Path) -> Path | None:
    p = directory / STATS_FILE
    return p if p.is_file() else None


def _tokenizer_dir(directory: Path) -> Path | None:
    for d in (directory, directory / "lora_adapter"):
        if (d / "tokenizer.json").is_file():
            return d
    return None


def _copy_side_files(directory: Path, stats, tokenizer_dir) -> None:
    if isinstance(stats, dict):
        (directory / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    elif stats is not None and Path(stats).resolve() != (directory / STATS_FILE).resolve():
        shutil.copyfile(stats, directory / STATS_FILE)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file() and src.resolve() != (directory / name).resolve():
                shutil.copyfile(src, directory / name)
