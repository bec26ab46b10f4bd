"""Text generation speed of the full-size model: time to first token and decode tokens/s at M = 1.

Ours: the BitVLA deploy form with random packed weights (bench/common.py), a one-image VQA prompt
(256 image tokens + text), the KV-cached loop of bitvla_ros/model/generate.py and the language
head from the int8 tied embedding. Time to first token is reported twice: the whole question
(vision tower + projector + LLM prefill + head) and the LLM prefill alone on a prompt of the same
length, which is what the baseline does.

Baselines, same run, same shapes: transformers' BitNetForCausalLM (2560 x 30 layers, vocab
128,264), bf16, greedy `generate` with a streamer that stamps each token, with either linear of
transformers' BitNet integration:
  hf-packed    `BitLinear`: 2-bit weights unpacked to bf16 at every call (how the published
               BitNet checkpoint runs in transformers; about the packed model's memory);
  hf-unpacked  `AutoBitLinear` (offline): the ternary weights held as bf16 (~4.2 GB), int8
               activation fake-quant, a bf16 matmul.

Each side runs in its own process, one after the other (the machine's memory is shared), with
fp32 denormals flushed to zero (random weights produce them; they slow every side).

    .venv/bin/python bench/decode.py [--backends cpu] [--new-tokens 16] [--text-tokens 64] [--baselines ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _prompt_ids(config, text_tokens: int, images: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    t = config.tokens
    text = lambda n: torch.randint(1, t.bos, (n,), generator=gen).tolist()  # noqa: E731
    # The chat layout of bitvla_ros/model/chat.py: system + user turn with the image run, then the question.
    ids = [t.bos] + text(35) + [t.eot] + text(3) + [t.image] * (images * config.vision.num_patches) \
        + text(text_tokens) + [t.eot] + text(4)
    return torch.tensor([ids])


def child_ours(backend: str, new_tokens: int, text_tokens: int, repeats: int) -> dict:
    import torch

    from common import peak_rss_mb, random_deploy_model, rss_mb

    from bitvla_ros.model.config import bitvla_3b
    from bitvla_ros.model.generate import GenerationSettings, generate_ids
    from bitvla_ros.model.lm_head import LanguageHead
    from bitvla_ros.model.vqa import prompt_embeds

    torch.set_grad_enabled(False)
    model = random_deploy_model(bitvla_3b())
    model.set_backend(backend)
    head = LanguageHead.tied(model.llm.embed_tokens)
    loaded = rss_mb()
    cfg = model.config
    ids = _prompt_ids(cfg, text_tokens, images=1)
    s = cfg.vision.image_size
    pixels = torch.rand(1, 1, 3, s, s, generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = GenerationSettings(max_new_tokens=new_tokens)

    def run(with_vision: bool):
        start = time.perf_counter()
        embeds = prompt_embeds(model, ids, pixels) if with_vision else model.llm.embed_tokens(ids).to(model.dtype)
        stamps = []
        for _ in generate_ids(model.llm, head, embeds, settings):  # no stop ids: always new_tokens tokens
            stamps.append(time.perf_counter())
        return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]

    start = time.perf_counter()
    list(generate_ids(model.llm, head, model.llm.embed_tokens(ids[:, :8]).to(model.dtype),
                      GenerationSettings(max_new_tokens=2)))  # warm-up: kernels prepared, head materialized
    warm_s = time.perf_counter() - start
    ttft_vqa, ttft_llm, steps = [], [], []
    for _ in range(repeats):  # interleaved, so that a burst of load on the shared machine hits both
        first, later = run(with_vision=True)
        ttft_vqa.append(first)
        steps += later
        first, later = run(with_vision=False)
        ttft_llm.append(first)
        steps += later
    return {"side": f"ours ({model.backend_name})", "prompt_tokens": ids.shape[1],
            "ttft_s": statistics.median(ttft_llm), "ttft_vqa_s": statistics.median(ttft_vqa),
            "decode_s": statistics.median(steps), "tokens": len(steps) + 2 * repeats,
            "warmup_s": warm_s, "rss_loaded_mb": loaded, "rss_peak_mb": peak_rss_mb()}


def child_hf(linear: str, new_tokens: int, text_tokens: int, repeats: int) -> dict:
    import torch
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.generation.streamers import BaseStreamer
    from transformers.integrations.bitnet import replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    from common import _VALID_BYTES, peak_rss_mb, rss_mb

    from bitvla_ros.model.config import bitvla_3b

    torch.set_grad_enabled(False)
    ours = bitvla_3b()
    t = ours.text
    cfg = BitNetConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                       num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                       num_key_value_heads=t.num_key_value_heads, rope_theta=t.rope_theta, rms_norm_eps=t.rms_norm_eps,
                       max_position_embeddings=t.max_position_embeddings, hidden_act="relu2",
                       bos_token_id=ours.tokens.bos, eos_token_id=ours.tokens.stop, pad_token_id=ours.tokens.pad,
                       tie_word_embeddings=True, dtype="bfloat16")
    with torch.device("meta"):
        model = BitNetForCausalLM(cfg).to(torch.bfloat16)  # BitLinear computes in its weights' dtype
    quant = BitNetQuantConfig(linear_class="bitlinear") if linear == "hf-packed" else \
        BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="offline")
    replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    gen = torch.Generator().manual_seed(0)
    state = {}
    ternary = {n + ".weight" for n, m in model.named_modules() if type(m).__name__ == "AutoBitLinear"}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.dtype == torch.uint8:
            state[name] = _VALID_BYTES[torch.randint(0, len(_VALID_BYTES), tensor.shape, generator=gen)]
        elif name in ternary:  # ternary values held as bf16
            state[name] = torch.randint(-1, 2, tensor.shape, generator=gen, dtype=torch.int8).to(torch.bfloat16)
        elif name.endswith("weight_scale"):
            state[name] = torch.full(tensor.shape, 0.02, dtype=torch.bfloat16)
        elif "norm" in name:
            state[name] = torch.ones(tensor.shape, dtype=torch.bfloat16)
        elif name.endswith("inv_freq") or "rotary" in name:
            continue
        else:
            state[name] = (torch.randn(tensor.shape, generator=gen) * 0.02).to(torch.bfloat16)
    model.load_state_dict(state, assign=True, strict=False)
    model.model.rotary_emb = type(model.model.rotary_emb)(cfg)  # buffers computed for real, not meta
    model.tie_weights()
    model.eval()
    loaded = rss_mb()

    class Stamps(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    ids = _prompt_ids(ours, text_tokens, images=1)

    def run(n):
        streamer = Stamps()
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, streamer=streamer, pad_token_id=ours.tokens.pad)
        stamps = streamer.times[1:]  # the first put() is the prompt
        return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]

    start = time.perf_counter()
    run(2)  # warm-up (torch.compile of its activation quantizer)
    warm_s = time.perf_counter() - start
    ttft, steps = [], []
    for _ in range(repeats):
        first, later = run(new_tokens)
        ttft.append(first)
        steps += later
    ttft = statistics.median(ttft)
    side = "transformers BitNet, packed BitLinear" if linear == "hf-packed" else "transformers BitNet, bf16 AutoBitLinear"
    return {"side": side, "prompt_tokens": ids.shape[1], "ttft_s": ttft,
            "ttft_vqa_s": None, "decode_s": statistics.median(steps), "tokens": len(steps) + repeats, "warmup_s": warm_s,
            "rss_loaded_mb": loaded, "rss_peak_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    env = dict(os.environ)
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(HERE.parent / ".cache" / "torchinductor"))
    res = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=HERE, env=env)
    if res.returncode:
        raise SystemExit(f"child {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="cpu", help="our kernel backends, comma-separated (cpu is the fastest "
                                                      "at M = 1 on x86; cuda on a GPU)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--text-tokens", type=int, default=64, help="question tokens besides the 256 image tokens")
    p.add_argument("--baselines", default="hf-packed,hf-unpacked", help="transformers baselines, comma-separated "
                                                                      "(hf-packed, hf-unpacked); '' for none")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (medians); hf-packed runs once, it is "
                                                           "minutes per run")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        # Random weights make tiny activations whose fp32 denormals cost several times the
        # compute on x86 (seen: 6x on our prefill); flush them on every side alike.
        import torch

        torch.set_flush_denormal(True)
        kind, *rest = args.child
        out = child_ours(rest[0], args.new_tokens, args.text_tokens, args.repeats) if kind == "ours" else \
            child_hf(kind, args.new_tokens, args.text_tokens, args.repeats)
        print(json.dumps(out))
        return

    import torch

    from bitvla_ros.kernels.autotune import cpu_model, isa_flags

    cpu = f"{cpu_model()} [{' '.join(isa_flags())}]"
    print(f"full-size BitVLA text generation, greedy, M = 1; {cpu}; {torch.get_num_threads()} threads; "
          f"{args.new_tokens} new tokens per run, {args.repeats} runs per side (hf-packed: 1), medians")
    flags = ["--new-tokens", str(args.new_tokens), "--text-tokens", str(args.text_tokens)]
    repeats = lambda kind: ["--repeats", str(1 if kind == "hf-packed" else args.repeats)]  # noqa: E731
    ours = [run_child("ours", b, *flags, *repeats("ours")) for b in args.backends.split(",")]
    hf = [run_child(kind, "-", *flags, *repeats(kind)) for kind in args.baselines.split(",") if kind]
    rows = ours + hf
    print(f"\n{'':46s} {'prompt':>6s} {'TTFT s':>7s} {'TTFT+vision s':>13s} {'ms/token':>9s} {'tokens/s':>8s} "
          f"{'RSS MB':>7s} {'peak MB':>7s}")
    for r in rows:
        vqa = f"{r['ttft_vqa_s']:.2f}" if r["ttft_vqa_s"] is not None else "-"
        print(f"{r['side']:46s} {r['prompt_tokens']:6d} {r['ttft_s']:7.2f} {vqa:>13s} {r['decode_s'] * 1000:9.1f} "
              f"{1 / r['decode_s']:8.2f} {r['rss_loaded_mb']:7.0f} {r['rss_peak_mb']:7.0f}")
    for r in ours:
        for b in hf:
            print(f"{r['side']} vs {b['side']}: decode {b['decode_s'] / r['decode_s']:.2f}x faster, "
                  f"time to first token (LLM prefill) {b['ttft_s'] / r['ttft_s']:.2f}x faster")
    print("(TTFT: question in -> first token; decode: median time per later token; random packed weights)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
