"""BitVLA: vision encoder + projector + BitNet LLM + proprio projector + L1 action head.

One forward pass turns (token ids, images, normalized proprio) into a normalized action chunk
(B, chunk, action_dim), as docs/model.md describes:
1. embed the ids; overwrite the image-pad rows, in order, with projected patch features and the
   proprio-pad row with the projected proprio;
2. set the action-slot rows (ids above the proprio id) to exactly zero;
3. one LLM pass with bidirectional attention over every non-pad token;
4. read each action slot from the hidden state one position *before* it (the shifted read-out),
   reshape 56 → 8 × (7 · hidden) timestep-major, and run the action head.
``forward`` is ``token_positions`` (the layout checks and token positions, on the host) then
``forward_at`` (steps 1–4 at those positions, on the device, no host synchronization): the one
forward pass, run eagerly or replayed from a CUDA graph (model/cuda_graph.py).
"""

from __future__ import annotations

import torch
from torch import nn

from bitvla_ros.kernels import attention, autotune, elementwise, heap
from bitvla_ros.model.bitlinear import BitLinear
from bitvla_ros.model.bitnet import BitNetModel
from bitvla_ros.model.config import BitVLAConfig
from bitvla_ros.model.embedding import QuantizedEmbedding
from bitvla_ros.model.heads import L1ActionHead, ProprioProjector, Projector
from bitvla_ros.model.int8_linear import Int8Linear
from bitvla_ros.model.meta import meta_skeleton
from bitvla_ros.model.vision import VisionEncoder

# How the embedding and the float heads may be stored in deploy form.
STORAGES = ("int8", "float")
# The float parts around the towers that ``heads='int8'`` compacts.
HEAD_MODULES = ("projector", "proprio_projector", "action_head")

# Text tokens of a chunk besides images and action slots: the prompt template and a ~12-word
# instruction (626 tokens in all at full size, as bench/model.py's inputs).
TYPICAL_TEXT_TOKENS = 58


class BitVLA(nn.Module):
    def __init__(self, config: BitVLAConfig):
        super().__init__()
        self.config = config.validate()
        h = config.text.hidden_size
        self.vision = VisionEncoder(config.vision, num_layers=config.vision_layers_used)
        self.projector = Projector(config.vision.hidden_size, h)
        self.llm = BitNetModel(config.text)
        self.proprio_projector = ProprioProjector(config.proprio_dim, h) if config.use_proprio else None
        self.action_head = L1ActionHead(h, config.action_dim, config.action_head_blocks)
        self.kernel_tuning: autotune.Tuning | None = None  # set by set_backend('auto') on a CPU
        self.attention_tuning: autotune.Tuning | None = None  # set by set_backend on a CPU
        self.elementwise_tuning: autotune.Tuning | None = None  # likewise

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.llm.norm.weight.device

    # --- forward -----------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N_img, 3, S, S) → (B, N_img · patches, hidden); cameras are encoded independently."""
        b, n = pixel_values.shape[:2]
        feats = self.vision(pixel_values.flatten(0, 1).to(self.dtype))
        return self.projector(feats).reshape(b, n * feats.shape[1], -1)

    def token_masks(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Check the token layout against the inputs; the (B, L) masks of the image tokens, the
        proprio token (None without a proprio projector) and the action slots."""
        cfg, tok = self.config, self.config.tokens
        image_mask = input_ids == tok.image
        expected = cfg.num_images * cfg.vision.num_patches
        if pixel_values.shape[1] != cfg.num_images or not bool((image_mask.sum(1) == expected).all()):
            raise ValueError(
                f"expected {cfg.num_images} images and {expected} image tokens per sequence, found "
                f"{pixel_values.shape[1]} images and {image_mask.sum(1).tolist()} tokens; build inputs with BitVLAProcessor"
            )
        proprio_mask = None
        if self.proprio_projector is not None:
            proprio_mask = input_ids == tok.proprio
            if proprio is None or not bool((proprio_mask.sum(1) == 1).all()):
                raise ValueError("this model uses proprio: pass a (B, proprio_dim) tensor and one proprio token per sequence")
        action_mask = input_ids > tok.proprio
        if not bool((action_mask.sum(1) == cfg.num_action_slots).all()):
            raise ValueError(
                f"expected {cfg.num_action_slots} action slots per sequence, found {action_mask.sum(1).tolist()}"
            )
        return image_mask, proprio_mask, action_mask

    def token_positions(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None) -> dict:
        """The host part of the forward: check the token layout and find, once, the positions of the
        image tokens, the proprio token and the read-out rows (slot p is read from p - 1).

        This is the only part that synchronizes with the host (``bool``, ``nonzero``); what it
        returns is the keyword set of ``forward_at``, whose shapes are fixed for a fixed token count,
        so a CUDA graph can replay ``forward_at`` for every prompt of that length.
        """
        cfg = self.config
        ids = input_ids.detach().to("cpu")
        b, device = ids.shape[0], input_ids.device
        image_mask, proprio_mask, action_mask = self.token_masks(ids, pixel_values, proprio)
        out = {"input_ids": input_ids, "pixel_values": pixel_values, "attention_mask": attention_mask,
               "image_pos": image_mask.nonzero()[:, 1].view(b, cfg.num_images * cfg.vision.num_patches).to(device),
               "read_pos": (action_mask.nonzero()[:, 1].view(b, cfg.num_action_slots) - 1).to(device)}
        if proprio_mask is not None:
            out["proprio"] = proprio
            out["proprio_pos"] = proprio_mask.nonzero()[:, 1].view(b, 1).to(device)
        return out

    def embed_at(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_pos: torch.Tensor,
                 proprio: torch.Tensor | None = None, proprio_pos: torch.Tensor | None = None) -> torch.Tensor:
        """The LLM input embeddings: token rows, image features and the projected proprio written at
        their positions, action slots zeroed. No host synchronization."""
        embeds = self.llm.embed_tokens(input_ids).to(self.dtype)
        h = embeds.shape[-1]
        image_feats = self.encode_images(pixel_values).to(embeds.dtype)
        embeds = embeds.scatter(1, image_pos.unsqueeze(-1).expand(-1, -1, h), image_feats)
        if self.proprio_projector is not None:
            p = self.proprio_projector(proprio.to(self.dtype)).to(embeds.dtype).reshape(-1, 1, h)
            embeds = embeds.scatter(1, proprio_pos.unsqueeze(-1).expand(-1, -1, h), p)
        # Action slots enter as zero vectors: no token embedding, position comes from RoPE only.
        action_mask = input_ids > self.config.tokens.proprio
        return embeds * (~action_mask).unsqueeze(-1).to(embeds.dtype)

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                     proprio: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM input embeddings and the action-slot mask (B, L)."""
        pos = self.token_positions(input_ids, pixel_values, proprio)
        embeds = self.embed_at(input_ids, pixel_values, pos["image_pos"], proprio, pos.get("proprio_pos"))
        return embeds, input_ids > self.config.tokens.proprio

    def read_out(self, hidden: torch.Tensor, read_pos: torch.Tensor) -> torch.Tensor:
        """Hidden states at the read-out rows, timestep-major, through the action head (fp32)."""
        cfg = self.config
        idx = read_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        gathered = hidden.gather(1, idx).reshape(hidden.shape[0], cfg.action_chunk, cfg.action_dim * hidden.shape[-1])
        return self.action_head(gathered).float()

    def forward_at(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_pos: torch.Tensor,
                   read_pos: torch.Tensor, proprio: torch.Tensor | None = None, proprio_pos: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The device part of the forward (no host synchronization, fixed shapes): what a CUDA
        graph captures (model/cuda_graph.py) and what ``forward`` runs eagerly."""
        embeds = self.embed_at(input_ids, pixel_values, image_pos, proprio, proprio_pos)
        return self.read_out(self.llm(embeds, attention_mask), read_pos)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """→ normalized actions (B, action_chunk, action_dim), in fp32."""
        return self.forward_at(**self.token_positions(input_ids, pixel_values, proprio, attention_mask))

    # --- deploy form -------------------------------------------------------------------------

    def ternary_layers(self):
        return [(n, m) for n, m in self.named_modules() if isinstance(m, BitLinear) and m.quantize]

    def to_deploy(self, backend: str = "auto", embedding: str = "int8", dtype: torch.dtype | None = None,
                  heads: str = "float") -> "BitVLA":
        """Pack every ternary linear (dropping its float weight), optionally store the token
        embedding as int8 rows and the projectors' and action head's linears as int8 rows
        (``heads='int8'``), and cast the remaining parameters to ``dtype``.

        Quantization scales stay fp32 buffers; only parameters take ``dtype``.
        """
        if embedding not in STORAGES:
            raise ValueError(f"embedding storage must be one of {STORAGES}, got {embedding!r}")
        if heads not in STORAGES:
            raise ValueError(f"heads storage must be one of {STORAGES}, got {heads!r}")
        for _, layer in self.ternary_layers():
            layer.to_deploy(backend)
        if embedding == "int8" and isinstance(self.llm.embed_tokens, nn.Embedding):
            self.llm.embed_tokens = QuantizedEmbedding.from_float(self.llm.embed_tokens)
        if heads == "int8":
            self.compact_heads()
        if dtype is not None:
            cast_parameters(self, dtype)
        self.set_backend(backend)  # `auto` and the attention measured, now that the codes and dtype are final
        return self

    @classmethod
    def deploy_skeleton(cls, config: BitVLAConfig, embedding: str = "int8", heads: str = "float") -> "BitVLA":
        """A deploy-form model on the meta device: packed BitLinears and (optionally) an int8
        embedding and int8 heads, with no storage at all. Fill it with
        ``load_state_dict(sd, assign=True)``."""
        with meta_skeleton():
            model = cls(config)
            for name, layer in model.ternary_layers():
                packed = BitLinear.packed(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                          device="meta")
                model.set_submodule(name, packed)
            if embedding == "int8":
                t = config.text
                model.llm.embed_tokens = QuantizedEmbedding(t.vocab_size, t.hidden_size, device="meta")
            if heads == "int8":
                for name, linear in model.head_linears():
                    model.set_submodule(name, Int8Linear(linear.in_features, linear.out_features,
                                                         bias=linear.bias is not None, device="meta"))
        return model

    def head_linears(self) -> list[tuple[str, nn.Linear]]:
        """The float linears around the towers (projectors and action head) that ``heads='int8'``
        stores as int8 rows."""
        return [(f"{part}.{name}", m) for part in HEAD_MODULES if getattr(self, part) is not None
                for name, m in getattr(self, part).named_modules() if isinstance(m, nn.Linear)]

    def compact_heads(self) -> "BitVLA":
        """Store the projectors' and action head's linears as int8 rows (weight-only, per-row scale)."""
        for name, linear in self.head_linears():
            self.set_submodule(name, Int8Linear.from_linear(linear))
        return self

    @property
    def heads_storage(self) -> str:
        parts = [getattr(self, part) for part in HEAD_MODULES if getattr(self, part) is not None]
        return "int8" if any(isinstance(m, Int8Linear) for p in parts for m in p.modules()) else "float"

    def set_backend(self, name: str = "auto") -> None:
        """The kernel backend of every packed layer. ``auto`` with the codes on the CPU times the
        available backends on this model's shapes (or reads this machine's cached timings):
        ``kernel_tuning`` keeps the choice and the figures behind it. With the codes on the CPU
        (any backend) the attention and RMSNorm/GLU implementations are chosen the same way
        (``attention_tuning``, ``elementwise_tuning``)."""
        self.kernel_tuning = self.attention_tuning = None
        on_cpu = self.deployed and self.device_of_codes() == "cpu"
        if on_cpu:
            heap.keep_activation_pages()
        if name == "auto" and on_cpu and autotune.enabled():
            self.kernel_tuning = autotune.tune(self.kernel_workload(), dtype=self.dtype)
            name = self.kernel_tuning.choice.backend
        for _, layer in self.ternary_layers():
            if layer.deployed:
                layer.set_backend(name)
        # Attention is float math, the same whichever ternary backend runs: measured for any of
        # them (so two backends compared on one machine share it), cached per machine and shape.
        if on_cpu and autotune.enabled():
            self.attention_tuning = autotune.tune_attention(self.attention_shapes(), dtype=self.dtype)
            self.set_attention(self.attention_tuning.choice.backend)
        else:
            self.set_attention(attention.DEFAULT)
        # RMSNorm and the GLU in one pass each, where the cpu kernel's extension is built and
        # that measured faster than torch's ops here.
        self.elementwise_tuning = None
        if on_cpu and autotune.enabled() and elementwise.fused_available():
            t = self.config.text
            self.elementwise_tuning = autotune.tune_elementwise(
                self.attention_shapes()[0].tokens, t.hidden_size, t.intermediate_size, t.num_hidden_layers,
                dtype=self.dtype)
            self.set_elementwise(self.elementwise_tuning.choice.backend)
        else:
            self.set_elementwise("torch")

    def set_elementwise(self, name: str) -> None:
        """RMSNorm / GLU implementation of the LLM layers: "torch" or "fused" (kernels/elementwise.py)."""
        if name not in elementwise.IMPLS:
            raise ValueError(f"unknown elementwise implementation {name!r}; expected one of {elementwise.IMPLS}")
        for module in self.modules():
            if hasattr(module, "elementwise_impl"):
                module.elementwise_impl = name

    def set_attention(self, name: str) -> None:
        """The attention implementation of every layer (kernels/attention.py)."""
        attention.get(name)  # validates
        for module in self.modules():
            if hasattr(module, "attention_impl"):
                module.attention_impl = name

    @property
    def attention_name(self) -> str:
        names = {m.attention_impl for m in self.modules() if hasattr(m, "attention_impl")}
        return names.pop() if len(names) == 1 else "mixed"

    def attention_shapes(self) -> list[autotune.AttentionShape]:
        """The attention calls of one chunk: the LLM's over the whole sequence, the vision tower's
        over each image's patches."""
        cfg, v, t = self.config, self.config.vision, self.config.text
        image_rows = cfg.num_images * v.num_patches
        llm_rows = image_rows + cfg.num_action_slots + TYPICAL_TEXT_TOKENS
        return [autotune.AttentionShape(t.num_attention_heads, t.num_key_value_heads, llm_rows, t.head_dim,
                                        t.num_hidden_layers),
                autotune.AttentionShape(v.num_attention_heads, v.num_attention_heads, v.num_patches, v.head_dim,
                                        cfg.vision_layers_used * cfg.num_images)]

    def device_of_codes(self) -> str:
        return self.ternary_layers()[0][1].qweight.device.type

    def kernel_workload(self) -> list[autotune.Workload]:
        """The packed matmuls of one chunk: one layer per distinct (rows, in, out) shape, with how
        many layers share it. Rows: the images' patches in the vision tower, those plus the
        action slots and a typical instruction's text in the LLM."""
        cfg = self.config
        image_rows = cfg.num_images * cfg.vision.num_patches
        rows = {"vision": image_rows, "llm": image_rows + cfg.num_action_slots + TYPICAL_TEXT_TOKENS}
        groups: dict[tuple[int, int, int], list] = {}
        for name, layer in self.ternary_layers():
            r = rows.get(name.split(".")[0])
            if r is not None and layer.deployed:
                groups.setdefault((r, layer.in_features, layer.out_features), [layer.packed_weight(), 0])[1] += 1
        return [autotune.Workload(r, w, n) for (r, _, _), (w, n) in groups.items()]

    @property
    def deployed(self) -> bool:
        layers = self.ternary_layers()
        return bool(layers) and all(layer.deployed for _, layer in layers)

    @property
    def backend_name(self) -> str | None:
        names = {layer.backend_name for _, layer in self.ternary_layers() if layer.deployed}
        return names.pop() if len(names) == 1 else None


def cast_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating-point parameters (not buffers: quantization scales stay fp32)."""
    for p in module.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
