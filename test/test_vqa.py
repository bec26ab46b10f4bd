"""Questions about images, end to end: a synthetic checkpoint in the released VLM layout (no action
head, untied lm_head), our packed folder keeping that head, the clear error when a packed folder
lost it, and the shipped model (tied int8 embedding as its head; its answers mean nothing)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tiny
from bitvla_ros.model.chat import question_prompt_ids
from bitvla_ros.model.checkpoint import CheckpointError, convert, load_model, save_packed
from bitvla_ros.model.generate import GenerationSettings, generate_ids
from bitvla_ros.model.lm_head import LanguageHead
from bitvla_ros.model.tokenizer import save_tokenizer
from bitvla_ros.model.vqa import load_vqa, prompt_embeds
from bitvla_ros.paths import default_model

QUESTION = "is the drawer open?"


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (60, 70, 3), dtype=np.uint8)


def _vlm_state(seed=0):
    """(published main weights without sidecars, a random untied lm_head, config.json dict)."""
    m = tiny.model(seed)
    main, _, _ = tiny.published_state(m)
    t = m.config.text
    head = torch.Generator().manual_seed(seed + 1)
    lm_head = 0.5 * torch.randn(t.vocab_size, t.hidden_size, generator=head)
    cfg = tiny.published_config(m.config)
    cfg["model_type"] = "llava"  # the VLM before robot fine-tuning is a plain LLaVA config
    cfg["architectures"] = ["LlavaForConditionalGeneration"]
    cfg["text_config"]["tie_word_embeddings"] = False
    return m, main, lm_head, cfg


def write_vlm(directory, seed=0, newer_names=False):
    m, main, lm_head, cfg = _vlm_state(seed)
    if newer_names:  # transformers >= 4.52 prefixes
        main = {("model." + k if not k.startswith("language_model.") else
                 "model.language_model." + k.removeprefix("language_model.model.")): v for k, v in main.items()}
        main["lm_head.weight"] = lm_head
    else:
        main["language_model.lm_head.weight"] = lm_head
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(main, str(directory / "model.safetensors"))
    save_tokenizer(tiny.tokenizer(), directory)
    return m, lm_head


@pytest.mark.parametrize("newer_names", [False, True], ids=["llava-4.51", "llava-4.52+"])
def test_released_vlm_layout_answers_with_its_own_head(tmp_path, newer_names):
    m, lm_head = write_vlm(tmp_path / "vlm", newer_names=newer_names)
    vqa = load_vqa(tmp_path / "vlm", backend="reference", dtype=torch.float32)
    assert vqa.model.action_head is None and vqa.model.proprio_projector is None
    assert vqa.head.source == "lm_head" and not vqa.head.materialized
    answer = vqa.ask([_image()], QUESTION, GenerationSettings(max_new_tokens=12))
    assert vqa.head.materialized and 1 <= len(answer.token_ids) <= 12
    assert answer.prompt_tokens == len(question_prompt_ids(tiny.tokenizer(), m.config, QUESTION, 1))

    # The same weights assembled by hand (deploy form, float embedding, the stored head) agree.
    ref_model = m.to_deploy("reference", embedding="float")
    ids, pixels = vqa.prompt([_image()], QUESTION)
    with torch.no_grad():
        embeds = prompt_embeds(ref_model, ids, pixels)
    want = list(generate_ids(ref_model.llm, LanguageHead(lm_head), embeds, GenerationSettings(max_new_tokens=12),
                             (m.config.tokens.eot, m.config.tokens.stop)))
    assert answer.token_ids == want
    tied = list(generate_ids(ref_model.llm, LanguageHead.tied(ref_model.llm.embed_tokens), embeds,
                             GenerationSettings(max_new_tokens=12)))
    assert tied != want  # so the untied head is really the one in use

    # Streamed text pieces add up to the answer, and the answer is what the ids decode to.
    pieces = list(vqa.stream([_image()], QUESTION, GenerationSettings(max_new_tokens=12)))
    assert "".join(pieces) == answer.text
    kept = [t for t in answer.token_ids if t not in (m.config.tokens.eot, m.config.tokens.stop)]
    assert answer.text == tiny.tokenizer().decode(kept, skip_special_tokens=True)


def test_answer_depends_on_the_image(tmp_path):
    write_vlm(tmp_path / "vlm")
    vqa = load_vqa(tmp_path / "vlm", backend="reference")
    settings = GenerationSettings(max_new_tokens=10)
    answers = {tuple(vqa.ask([_image(s)], QUESTION, settings).token_ids) for s in range(4)}
    assert len(answers) > 1


def test_vlm_folder_is_not_an_action_model(tmp_path):
    write_vlm(tmp_path / "vlm")
    with pytest.raises(CheckpointError, match="action_head"):
        load_model(tmp_path / "vlm", backend="reference")


def _untied_vla(tmp_path):
    """A published VLA folder (with sidecars) whose config unties the head and stores lm_head."""
    src = tiny.write_published_checkpoint(tmp_path / "vla")
    cfg = json.loads((src / "config.json").read_text())
    cfg["text_config"]["tie_word_embeddings"] = False
    (src / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file
    main = load_file(src / "model.safetensors")
    t = tiny.config().text
    main["language_model.lm_head.weight"] = torch.randn(t.vocab_size, t.hidden_size)
    save_file(main, str(src / "model.safetensors"))
    return src, main["language_model.lm_head.weight"]


def test_packed_folder_keeps_an_untied_head_and_says_so_when_it_is_missing(tmp_path):
    src, lm_head = _untied_vla(tmp_path)
    convert(src, tmp_path / "packed", backend="reference")
    vqa = load_vqa(tmp_path / "packed", backend="reference")
    torch.testing.assert_close(vqa.head.weight(torch.bfloat16, torch.device("cpu")), lm_head.to(torch.bfloat16))
    assert vqa.ask([_image()], QUESTION, GenerationSettings(max_new_tokens=4)).token_ids
    load_model(tmp_path / "packed", backend="reference")  # the action path ignores the extra head

    # An action-only packed folder (no lm_head) of an untied model: a clear error, not a crash.
    save_packed(load_model(tmp_path / "packed", backend="reference").model, tmp_path / "actions_only",
                tokenizer_dir=src)
    with pytest.raises(CheckpointError) as err:
        load_vqa(tmp_path / "actions_only", backend="reference")
    msg = str(err.value)
    assert "no language head" in msg and "tie_word_embeddings=false" in msg and "bitvla convert" in msg


def test_shipped_model_answers_through_its_tied_int8_embedding():
    vqa = load_vqa(default_model(), backend="reference")
    assert vqa.head.source.startswith("tied embedding (int8")
    answer = vqa.ask([_image()], "what is on the plate?", GenerationSettings(max_new_tokens=6))
    assert 1 <= len(answer.token_ids) <= 6 and answer.first_token_s > 0
    assert len(answer.token_times_s) == len(answer.token_ids) - 1


def test_question_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        question_prompt_ids(tiny.tokenizer(), tiny.config(), "  ")
    write_vlm(tmp_path / "vlm")
    vqa = load_vqa(tmp_path / "vlm", backend="reference")
    with pytest.raises(ValueError, match="special token"):
        vqa.ask([_image()], "what is <|image_pad|> here?")


def test_bitvla_ask_streams_the_answer_and_its_timings(tmp_path, capsys):
    from PIL import Image

    from bitvla_ros.cli import main

    write_vlm(tmp_path / "vlm")
    frame = tmp_path / "frame.png"
    Image.fromarray(_image()).save(frame)
    args = ["ask", "--model", str(tmp_path / "vlm"), "--image", str(frame), "--question", QUESTION,
            "--max-new-tokens", "8", "--backend", "reference"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    want = load_vqa(tmp_path / "vlm", backend="reference").ask([_image()], QUESTION,
                                                                GenerationSettings(max_new_tokens=8))
    assert out == want.text + "\n"
    assert "time to first token" in err and "ms/token" in err and "prompt" in err
    # the shipped model (default --model) answers too; sampling flags are accepted
    assert main(["ask", "--image", str(frame), "--question", "is the drawer open?", "--max-new-tokens", "3",
                 "--temperature", "0.8", "--top-p", "0.9", "--seed", "1", "--backend", "reference"]) == 0
    assert "bitvla-libero-goal-demo" in capsys.readouterr().err
    # one-line errors: a missing image, bad settings
    assert main(["ask", "--image", str(tmp_path / "nope.png"), "--question", "x"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["ask", "--question", "x", "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
