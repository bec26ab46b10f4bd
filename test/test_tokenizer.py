"""The BitVLA tokenizer: special-token layout, BOS, round trips, save/load, published fallbacks."""

import json

import jinja2
import pytest
from tokenizers import Tokenizer

from bitvla_ros.model.config import TokenIds
from bitvla_ros.model.tokenizer import (
    ACTION,
    BOS,
    CHAT_TEMPLATE,
    EOT,
    IMAGE,
    PAD,
    PROPRIO,
    STOP,
    SYSTEM_PROMPT,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
    token_ids,
    vocab_size,
)

CORPUS = [
    SYSTEM_PROMPT,
    "User: What action should the robot take to put the black bowl on the plate?",
    "Assistant: ",
    "pick up the alphabet soup and place it in the basket",
    "open the top drawer and put the bowl inside",
    "turn on the stove and put the moka pot on it",
    "put both the cream cheese box and the butter in the basket",
]
TEXTS = [
    "put the bowl on the plate",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "Ünïcödé: 日本語のロボット, émoji 🤖, ñ",
    "a",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, vocab_size=320, n_action_bins=4)


def base_of(tok):
    return tok.get_vocab_size(with_added_tokens=False)


def edit(tok, change):
    """A copy of ``tok`` with its tokenizer.json dict changed by ``change``."""
    d = json.loads(tok.to_str())
    change(d)
    return Tokenizer.from_str(json.dumps(d))


def test_special_tokens_sit_at_the_published_offsets(tok):
    b = base_of(tok)
    assert 256 < b <= 320
    layout = {BOS: 0, STOP: 1, PAD: 2, EOT: 9, IMAGE: 10, PROPRIO: 11}
    layout.update({f"<|reserved_special_token_{i}|>": 2 + i for i in range(1, 7)})
    layout.update({ACTION.format(i): 12 + i for i in range(4)})
    assert {t: tok.token_to_id(t) - b for t in layout} == layout
    assert vocab_size(tok) == b + 16
    assert token_ids(tok) == TokenIds.from_base(b)
    assert token_ids(tok).first_action == tok.token_to_id(ACTION.format(0))


def test_bos_is_prepended_once(tok):
    b = base_of(tok)
    ids = tok.encode("put the bowl on the plate").ids
    assert ids[0] == b and b not in ids[1:]
    assert tok.encode("put the bowl on the plate", add_special_tokens=False).ids == ids[1:]


def test_special_token_strings_encode_to_single_ids(tok):
    b = base_of(tok)
    ids = tok.encode(f"{IMAGE}{IMAGE}{PROPRIO}x{EOT}").ids
    assert ids[:4] == [b, b + 10, b + 10, b + 11]
    assert ids[-1] == b + 9


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    ids = tok.encode(text).ids
    assert all(i < base_of(tok) for i in ids[1:])  # ordinary text never yields a special id
    assert tok.decode(ids) == text


def test_training_is_deterministic(tok):
    assert build_tokenizer(CORPUS, vocab_size=320, n_action_bins=4).to_str() == tok.to_str()


def test_build_rejects_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="at least 256"):
        build_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="n_action_bins"):
        build_tokenizer(CORPUS, vocab_size=300, n_action_bins=0)


def test_save_and_load(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path / "model")
    assert path == tmp_path / "model" / "tokenizer.json"
    for source in (tmp_path / "model", path):
        loaded = load_tokenizer(source)
        assert token_ids(loaded) == token_ids(tok)
        assert vocab_size(loaded) == vocab_size(tok)
        for text in TEXTS:
            assert loaded.encode(text).ids == tok.encode(text).ids
    config = json.loads((tmp_path / "model" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (BOS, STOP, PAD)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tokenizer.json")):
        load_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)


def test_chat_template_renders_the_published_prompt():
    # HF renders chat templates with this environment.
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    text = template.render(messages=[{"role": "user", "content": "  hi there \n"}], add_generation_prompt=True)
    assert text == (
        "System: A chat between a curious human and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the human's questions.<|eot_id|>User: hi there<|eot_id|>Assistant: "
    )


def drop_added_above(offset):
    """What convert_ckpt.py does to the published tokenizer.json: drop added tokens above B+offset."""
    def change(d):
        b = min(t["id"] for t in d["added_tokens"])
        d["added_tokens"] = [t for t in d["added_tokens"] if t["id"] <= b + offset]
    return change


def test_token_ids_fall_back_to_the_published_offsets(tok):
    published = edit(tok, drop_added_above(9))  # pad kept, image/proprio/actions gone, as published
    assert published.token_to_id(IMAGE) is None
    assert token_ids(published) == TokenIds.from_base(base_of(tok))
    assert TokenIds.from_base(128000) == TokenIds()  # the published ids themselves


def test_token_ids_fall_back_over_an_unrenamed_pad(tok):
    def unrenamed(d):  # the base Llama-3 file: B+2 is still a reserved placeholder
        drop_added_above(9)(d)
        next(t for t in d["added_tokens"] if t["content"] == PAD)["content"] = "<|reserved_special_token_0|>"
    llama3 = edit(tok, unrenamed)
    assert llama3.token_to_id(PAD) is None
    assert token_ids(llama3) == TokenIds.from_base(base_of(tok))


def test_token_ids_rejects_an_inconsistent_layout(tok):
    def swap(d):
        image, proprio = (next(t for t in d["added_tokens"] if t["content"] == c) for c in (IMAGE, PROPRIO))
        image["content"], proprio["content"] = PROPRIO, IMAGE
    with pytest.raises(ValueError, match="proprio right after image"):
        token_ids(edit(tok, swap))

    def clash(d):  # image dropped, its published id taken by another token
        drop_added_above(12)(d)
        next(t for t in d["added_tokens"] if t["content"] == IMAGE)["content"] = "<tool>"
    with pytest.raises(ValueError, match="already the token '<tool>'"):
        token_ids(edit(tok, clash))

    def no_bos(d):
        d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] != BOS]
        d["post_processor"] = None
    with pytest.raises(ValueError, match="lacks"):
        token_ids(edit(tok, no_bos))

    def misplaced_action(d):
        next(t for t in d["added_tokens"] if t["content"] == ACTION.format(0))["content"] = "<x>"
        next(t for t in d["added_tokens"] if t["content"] == ACTION.format(1))["content"] = ACTION.format(0)
    with pytest.raises(ValueError, match="action tokens are out of place"):
        token_ids(edit(tok, misplaced_action))
