"""BitVLAProcessor: prompt layout, SigLIP image preprocessing, batching and errors."""

from dataclasses import replace

import jinja2
import numpy as np
import pytest
import torch

from bitvla_ros.model.config import tiny, with_vocab
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.model.tokenizer import (
    ACTION,
    CHAT_TEMPLATE,
    IMAGE,
    PROPRIO,
    STOP,
    SYSTEM_PROMPT,
    build_tokenizer,
    save_tokenizer,
    token_ids,
    vocab_size,
)

CORPUS = [
    SYSTEM_PROMPT,
    "User: What action should the robot take to put the black bowl on the plate?",
    "pick up the alphabet soup and place it in the basket",
    "open the top drawer and put the bowl inside",
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def cfg(tok):
    return with_vocab(tiny(), vocab_size(tok), token_ids(tok))


@pytest.fixture(scope="module")
def proc(cfg, tok):
    return BitVLAProcessor(cfg, tok)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def rendered_prompt(cfg, instruction):
    """The published way: render the chat template with <image> already expanded, then encode."""
    images = IMAGE * (cfg.vision.num_patches * cfg.num_images)
    content = images + (PROPRIO if cfg.use_proprio else "") + f"What action should the robot take to {instruction}?"
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(CHAT_TEMPLATE).render(messages=[{"role": "user", "content": content}],
                                                 add_generation_prompt=True)
    return text + ACTION.format(0) * cfg.num_action_slots + STOP


# --- prompt -----------------------------------------------------------------------------------

def test_prompt_layout(proc, cfg, tok):
    t = cfg.tokens
    ids = proc.prompt_ids("put the bowl on the plate").tolist()
    n_img = cfg.vision.num_patches * cfg.num_images
    first_img = 1 + len(encode(tok, SYSTEM_PROMPT)) + 1 + len(encode(tok, "User: "))
    assert ids[0] == t.bos and ids[first_img - len(encode(tok, "User: ")) - 1] == t.eot
    assert ids[first_img:first_img + n_img] == [t.image] * n_img and ids.count(t.image) == n_img
    assert ids[first_img + n_img] == t.proprio and ids.count(t.proprio) == 1
    assert ids[-cfg.num_action_slots - 1:] == [t.first_action] * cfg.num_action_slots + [t.stop]
    assert ids.count(t.first_action) == 56 and ids.count(t.stop) == 1 and ids.count(t.eot) == 2
    tail = encode(tok, "Assistant: ")
    assert ids[-57 - len(tail):-57] == tail and ids[-58 - len(tail)] == t.eot
    question = tok.decode(ids[first_img + n_img + 1:-58 - len(tail)])
    assert question == "What action should the robot take to put the bowl on the plate?"


INSTRUCTIONS = ["put the bowl on the plate", "Open the TOP drawer", "pick up the crème brûlée",
                "stack  the\tcups, then wait!"]


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_prompt_equals_encoding_the_rendered_chat_template(proc, cfg, tok, instruction):
    assert proc.prompt_ids(instruction).tolist() == tok.encode(rendered_prompt(cfg, instruction.lower())).ids


def test_prompt_lowercases_and_strips(proc):
    assert torch.equal(proc.prompt_ids("  Put The Bowl ON the plate\n"), proc.prompt_ids("put the bowl on the plate"))
    assert proc.prompt_ids("x").dtype == torch.long


def test_prompt_without_proprio(cfg, tok):
    no_proprio = replace(cfg, use_proprio=False)
    ids = BitVLAProcessor(no_proprio, tok).prompt_ids("put the bowl on the plate")
    assert cfg.tokens.proprio not in ids.tolist()
    assert ids.tolist() == tok.encode(rendered_prompt(no_proprio, "put the bowl on the plate")).ids


@pytest.mark.parametrize("bad, match", [("", "empty"), ("  \n\t", "empty"), ("x" * 1001, "1001 characters"),
                                        (None, "string")])
def test_prompt_rejects_bad_instructions(proc, bad, match):
    with pytest.raises(ValueError, match=match):
        proc.prompt_ids(bad)


def test_prompt_longer_than_the_positions(cfg, tok):
    short = replace(cfg, text=replace(cfg.text, max_position_embeddings=100))
    with pytest.raises(ValueError, match="more than the model's 100 positions"):
        BitVLAProcessor(short, tok).prompt_ids("put the bowl on the plate")


def test_tokenizer_must_match_the_config(tok):
    with pytest.raises(ValueError, match="differ from the config"):
        BitVLAProcessor(tiny(), tok)  # tiny() assumes a 256-token base


# --- images -----------------------------------------------------------------------------------

def expected(p):
    return np.float32(p) / np.float32(127.5) - np.float32(1)


@pytest.mark.parametrize("shape", [(56, 56), (100, 80)])  # as is, and resized
def test_constant_color_maps_to_the_exact_value(proc, shape):
    image = np.empty(shape + (3,), np.uint8)
    image[...] = (0, 200, 255)
    x = proc.preprocess_image(image)
    assert x.shape == (3, 56, 56) and x.dtype == torch.float32
    for c, p in enumerate((0, 200, 255)):
        assert torch.all(x[c] == float(expected(p)))
    assert x[0, 0, 0] == -1 and x[2, 0, 0] == 1


def test_orientation_and_range(proc):
    # Top half dark, bottom half bright, on a non-square image: a transposed or flipped
    # pipeline would move the edge.
    image = np.zeros((60, 90, 3), np.uint8)
    image[30:] = 250
    x = proc.preprocess_image(image)
    assert torch.all(x[:, :20] == -1) and torch.all(x[:, -20:] == float(expected(250)))
    noise = np.random.default_rng(0).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    y = proc.preprocess_image(noise)
    assert y.min() >= -1 and y.max() <= 1
    levels = (y + 1) * 127.5
    assert torch.all((levels - levels.round()).abs() < 1e-3)  # whole uint8 levels, as SigLIP's


@pytest.mark.parametrize("side, edge", [(112, [17, 238]), (40, [25, 230])])  # shrink 2x, enlarge 1.4x
def test_resize_matches_pil_bicubic(proc, side, edge):
    # A vertical 0 | 255 step: the two columns at the edge are what Pillow 13's
    # Image.resize((56, 56), BICUBIC) gives (recorded once); every other column is 0 or 255.
    image = np.zeros((side, side, 3), np.uint8)
    image[:, side // 2:] = 255
    row = ((proc.preprocess_image(image) + 1) * 127.5).round()[0, 0]
    assert row.tolist() == [0] * 27 + edge + [255] * 27
    x = proc.preprocess_image(image)
    assert torch.equal(x, x[:1, :1].expand_as(x))  # channels and rows are identical


def test_resize_stores_uint8_between_passes_as_pil(proc):
    # One bright dot enlarged 8x. PIL resizes width then height and clips to uint8 in between, so
    # the negative bicubic lobes of the two passes never multiply into positive halos, and the
    # row and column through the dot differ by rounding. Values recorded once from Pillow 13.
    image = np.zeros((7, 7, 3), np.uint8)
    image[3, 3] = 255
    levels = ((proc.preprocess_image(image)[0] + 1) * 127.5).round().int()
    half = [10, 39, 77, 120, 163, 202, 233, 251]
    assert levels[27].tolist() == [0] * 20 + half + half[::-1] + [0] * 20
    assert levels[:, 27].tolist() == [0] * 20 + [10, 39, 77, 120, 164, 203, 233, 251, 251, 233, 203, 164, 120, 77,
                                                 39, 10] + [0] * 20
    assert (levels > 0).sum() == 252 and levels.sum() == 19164


def test_center_crop_drops_the_border(cfg, tok):
    # A 2-px black border around grey: the 90%-area crop (95 of 100 px, from offset 2) removes it.
    image = np.zeros((100, 100, 3), np.uint8)
    image[2:-2, 2:-2] = 180
    cropped = BitVLAProcessor(cfg, tok, center_crop=True).preprocess_image(image)
    assert torch.all(cropped == float(expected(180)))
    full = BitVLAProcessor(cfg, tok).preprocess_image(image)
    assert full[:, 0].max() < float(expected(180)) and full[:, 28, 28].eq(float(expected(180))).all()


def test_mono_and_rgba(proc):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (40, 70), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert torch.equal(proc.preprocess_image(grey), proc.preprocess_image(rgb))
    assert torch.equal(proc.preprocess_image(grey[:, :, None]), proc.preprocess_image(rgb))
    colour = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    rgba = np.concatenate([colour, rng.integers(0, 256, (40, 70, 1), dtype=np.uint8)], axis=2)
    assert torch.equal(proc.preprocess_image(rgba), proc.preprocess_image(colour))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((56, 56, 3), np.float32), "dtype float32"),
    (np.zeros((56, 56, 2), np.uint8), r"shape \(56, 56, 2\)"),
    (np.zeros((1, 56, 56, 3), np.uint8), "shape"),
    (np.zeros((0, 56, 3), np.uint8), "shape"),
    ([[0, 1]], "numpy array"),
])
def test_image_errors(proc, bad, match):
    with pytest.raises(ValueError, match=match):
        proc.preprocess_image(bad)


# --- whole observation ------------------------------------------------------------------------

def test_call(proc, cfg):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    state = np.linspace(-1, 1, cfg.proprio_dim)
    out = proc(images, "put the bowl on the plate", state)
    ids = proc.prompt_ids("put the bowl on the plate")
    assert torch.equal(out["input_ids"], ids[None]) and torch.equal(out["attention_mask"], torch.ones_like(ids)[None])
    assert out["input_ids"].dtype == out["attention_mask"].dtype == torch.long
    assert out["pixel_values"].shape == (1, 2, 3, 56, 56) and out["pixel_values"].dtype == torch.float32
    assert torch.equal(out["pixel_values"][0, 1], proc.preprocess_image(images[1]))  # order kept
    assert out["proprio"].dtype == torch.float32 and out["proprio"].shape == (1, cfg.proprio_dim)
    assert torch.allclose(out["proprio"][0], torch.tensor(state, dtype=torch.float32))


def test_call_errors(proc, cfg, tok):
    image = np.zeros((56, 56, 3), np.uint8)
    state = np.zeros(cfg.proprio_dim)
    with pytest.raises(ValueError, match="takes 2 images per step.*got 1"):
        proc([image], "go", state)
    with pytest.raises(ValueError, match="got one array"):
        proc(image, "go", state)
    with pytest.raises(ValueError, match="got None"):
        proc([image, image], "go")
    with pytest.raises(ValueError, match=r"shape \(7,\); expected \(8,\)"):
        proc([image, image], "go", np.zeros(7))
    with pytest.raises(ValueError, match="non-finite"):
        proc([image, image], "go", np.array([0, 0, np.nan, 0, 0, 0, 0, 0]))
    no_proprio = BitVLAProcessor(replace(cfg, use_proprio=False), tok)
    assert "proprio" not in no_proprio([image, image], "go")
    with pytest.raises(ValueError, match="does not use proprio"):
        no_proprio([image, image], "go", state)


def test_pad_batch(proc, cfg):
    a, b = torch.tensor([5, 6, 7]), torch.tensor([1, 2, 3, 4, 5])
    ids, mask = proc.pad_batch([a, b])
    assert ids.tolist() == [[5, 6, 7, cfg.tokens.pad, cfg.tokens.pad], [1, 2, 3, 4, 5]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="1-D"):
        proc.pad_batch([a[None]])


def test_from_pretrained(proc, cfg, tok, tmp_path):
    save_tokenizer(tok, tmp_path)
    loaded = BitVLAProcessor.from_pretrained(tmp_path, cfg, center_crop=True)
    assert loaded.center_crop
    assert torch.equal(loaded.prompt_ids("open the drawer"), proc.prompt_ids("open the drawer"))
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        BitVLAProcessor.from_pretrained(tmp_path / "missing", cfg)
