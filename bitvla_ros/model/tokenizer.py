"""The BitVLA tokenizer: a byte-level BPE with the published special-token layout.

Published ids (docs/model.md), at base B = 128000 for the Llama-3 vocabulary:
B <|begin_of_text|>, B+1 <|end_of_text|>, B+2 <|pad|>, B+3..B+8 reserved placeholders,
B+9 <|eot_id|>, B+10 <|image_pad|>, B+11 <proprio_pad>, then <action_0>... (252 published).
`build_tokenizer` makes a small tokenizer with the same layout above its own trained vocabulary,
for tests and for the small model this project trains itself. Only the `tokenizers` library is
used: no transformers, no remote code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bitvla_ros.model.config import TokenIds

BOS = "<|begin_of_text|>"
STOP = "<|end_of_text|>"
PAD = "<|pad|>"
EOT = "<|eot_id|>"
IMAGE = "<|image_pad|>"
PROPRIO = "<proprio_pad>"
RESERVED = "<|reserved_special_token_{}|>"
ACTION = "<action_{}>"

SYSTEM_PROMPT = (
    "System: A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# The chat template convert_ckpt.py writes, in the Jinja dialect of HF tokenizer_config.json.
CHAT_TEMPLATE = (
    SYSTEM_PROMPT + EOT
    + "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] | trim }}"
    + EOT + "{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}"
)


def special_tokens(n_action_bins: int) -> list[str]:
    """Special tokens in id order from the base: offsets 0..11, then the action tokens."""
    return ([BOS, STOP, PAD] + [RESERVED.format(i) for i in range(1, 7)] + [EOT, IMAGE, PROPRIO]
            + [ACTION.format(i) for i in range(n_action_bins)])


def build_tokenizer(texts: Iterable[str], vocab_size: int, n_action_bins: int = 4) -> Tokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` ordinary tokens on ``texts``, then add the
    special tokens right after the trained vocabulary (so the base B is the trained size)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet):
        raise ValueError(f"vocab_size is {vocab_size}; a byte-level BPE needs at least {len(alphabet)} "
                         "(one token per byte) so that any text encodes")
    if n_action_bins < 1:
        raise ValueError(f"n_action_bins is {n_action_bins}; the action slots need at least one action token")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[],
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)

    base = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens(n_action_bins)])
    if tok.token_to_id(BOS) != base:  # the layout is the whole point; never ship a shifted one
        raise RuntimeError(f"special tokens landed at {tok.token_to_id(BOS)}, expected {base}")
    # Like Llama-3 with add_special_tokens=True: BOS before every sequence.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                      special_tokens=[(BOS, base)]),
    ])
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a model folder, or the file itself."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {file}; a BitVLA model folder needs the tokenizer.json "
                                "of its language model (write one with save_tokenizer)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise ValueError(f"{file} is not a readable tokenizers tokenizer.json: {e}") from None


def vocab_size(tokenizer: Tokenizer) -> int:
    """Number of ids the tokenizer can produce, added tokens included."""
    return tokenizer.get_vocab_size(with_added_tokens=True)


def token_ids(tokenizer: Tokenizer) -> TokenIds:
    """The special ids of ``tokenizer``, found by token content.

    BOS, end-of-text and eot must be present (every Llama-3 tokenizer has them). Pad, image and
    proprio may be absent: the published tokenizer.json drops them and training re-adds them at
    fixed offsets from BOS, so they fall back to those offsets.
    """
    found = {name: tokenizer.token_to_id(content) for name, content in
             (("bos", BOS), ("stop", STOP), ("pad", PAD), ("eot", EOT), ("image", IMAGE), ("proprio", PROPRIO))}
    missing = [content for name, content in (("bos", BOS), ("stop", STOP), ("eot", EOT)) if found[name] is None]
    if missing:
        raise ValueError(f"the tokenizer lacks {missing}; it is not a BitVLA (Llama-3 style) tokenizer; use the "
                         "tokenizer.json of the model or one from build_tokenizer")
    fallback = TokenIds.from_base(found["bos"])
    for name, content in (("pad", PAD), ("image", IMAGE), ("proprio", PROPRIO)):
        if found[name] is None:
            taken = tokenizer.id_to_token(getattr(fallback, name))
            if taken is not None and not taken.startswith("<|reserved_special_token_"):
                raise ValueError(f"the tokenizer lacks {content} and its published id {getattr(fallback, name)} is "
                                 f"already the token {taken!r}; the tokenizer does not follow the BitVLA layout")
            found[name] = getattr(fallback, name)
    ids = TokenIds(**found)

    if len(set(found.values())) != len(found):
        raise ValueError(f"special token ids collide: {found}")
    if ids.proprio != ids.image + 1:
        raise ValueError(f"{PROPRIO} is id {ids.proprio} but {IMAGE} is {ids.image}; the BitVLA layout puts "
                         "proprio right after image (action ids follow it)")
    first_action = tokenizer.token_to_id(ACTION.format(0))
    if first_action is not None and first_action != ids.first_action:
        raise ValueError(f"{ACTION.format(0)} is id {first_action}, expected {ids.first_action} "
                         f"(right after {PROPRIO}); the action tokens are out of place")
    return ids


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write tokenizer.json, plus a tokenizer_config.json with the chat template for HF users."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": STOP,
        "pad_token": PAD,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
