"""Generation pieces on their own: token choice (greedy, temperature, top-k, top-p, seed), the
language head from a float or int8 tied embedding, and the decode loop's limits."""

import pytest
import torch
from torch import nn

import tiny
from bitvla_ros.model.embedding import QuantizedEmbedding
from bitvla_ros.model.generate import GenerationSettings, choose_token, generate_ids
from bitvla_ros.model.lm_head import LanguageHead


def _logits():
    return torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0, -5.0]])


def test_greedy_is_argmax():
    assert choose_token(_logits(), GenerationSettings()).tolist() == [1]


def test_top_k_one_and_tiny_top_p_are_greedy_even_when_sampling():
    for s in (GenerationSettings(temperature=1.0, top_k=1), GenerationSettings(temperature=5.0, top_p=1e-6)):
        draws = {int(choose_token(_logits(), s, torch.Generator().manual_seed(i))) for i in range(20)}
        assert draws == {1}


def test_top_k_and_top_p_restrict_the_candidates():
    two = {int(choose_token(_logits(), GenerationSettings(temperature=10.0, top_k=2), torch.Generator().manual_seed(i)))
           for i in range(200)}
    assert two == {1, 2}
    # softmax([3, 2.9, 1, 0, -1, -5]) sorted: cumulative 0.47, 0.90, 0.97, ...
    nucleus = lambda p: {int(choose_token(_logits(), GenerationSettings(temperature=1.0, top_p=p),  # noqa: E731
                                          torch.Generator().manual_seed(i))) for i in range(300)}
    assert nucleus(0.85) == {1, 2}
    assert nucleus(0.95) == {1, 2, 4}


def test_sampling_follows_the_tempered_distribution():
    logits = torch.tensor([[0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([choose_token(logits, GenerationSettings(temperature=2.0), g) for _ in range(4000)])
    expected = torch.softmax(logits / 2.0, -1)[0, 1].item()  # 0.622
    assert abs(draws.float().mean().item() - expected) < 0.03


def test_settings_are_checked():
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            GenerationSettings(**bad).validate()


def test_head_from_int8_embedding_equals_its_dequantized_rows():
    torch.manual_seed(0)
    emb = nn.Embedding(20000, 16)  # more rows than one dequantization chunk
    q = QuantizedEmbedding.from_float(emb)
    head = LanguageHead.tied(q)
    assert not head.materialized
    h = torch.randn(3, 16)
    rows = q(torch.arange(20000))
    torch.testing.assert_close(head(h), h @ rows.T, rtol=1e-5, atol=1e-5)
    assert head.materialized
    float_head = LanguageHead.tied(emb)
    assert float_head.weight(torch.float32, torch.device("cpu")).data_ptr() == emb.weight.data_ptr()  # no copy


def _tiny_prompt(model, n=12):
    ids = torch.randint(0, model.config.tokens.bos, (1, n), generator=torch.Generator().manual_seed(0))
    return model.llm.embed_tokens(ids)


def test_seeded_sampling_repeats_and_seeds_differ():
    m = tiny.model()
    # a flat-ish random head, so that sampling has many likely tokens to choose from
    head = LanguageHead(0.05 * torch.randn(m.config.text.vocab_size, m.config.text.hidden_size))
    embeds = _tiny_prompt(m)
    run = lambda seed: list(generate_ids(m.llm, head, embeds, GenerationSettings(  # noqa: E731
        max_new_tokens=16, temperature=1.5, seed=seed)))
    assert run(3) == run(3)
    assert len({tuple(run(s)) for s in range(4)}) > 1


def test_max_new_tokens_and_position_limit():
    m = tiny.model()
    head = LanguageHead.tied(m.llm.embed_tokens)
    embeds = _tiny_prompt(m)
    assert len(list(generate_ids(m.llm, head, embeds, GenerationSettings(max_new_tokens=5)))) == 5
    limit = m.config.text.max_position_embeddings
    long = m.llm.embed_tokens(torch.zeros(1, limit - 3, dtype=torch.long))
    assert len(list(generate_ids(m.llm, head, long, GenerationSettings(max_new_tokens=50)))) == 3
    with pytest.raises(ValueError, match="positions"):
        list(generate_ids(m.llm, head, m.llm.embed_tokens(torch.zeros(1, limit, dtype=torch.long)),
                          GenerationSettings()))
