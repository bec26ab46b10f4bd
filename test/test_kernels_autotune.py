"""The measured `auto` choice: timing, dropping, selection, the per-machine cache and the model
hook, with fake backends and a fake clock (no speed is asserted anywhere)."""

import pytest
import torch

import tiny
from bitvla_ros.kernels import autotune, available_backends
from bitvla_ros.kernels.autotune import Candidate, Workload
from bitvla_ros.quant import PackedTernary, pack_ternary


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeBackend:
    """Each matmul advances the clock by cost_per_mac · rows · in · out (per variant)."""

    def __init__(self, name, clock, costs):
        self.name, self.clock, self.costs = name, clock, costs
        self.variant = next(iter(costs))
        self.calls = 0

    def variants(self):
        return [{"isa": v} for v in self.costs] if len(self.costs) > 1 else [{}]

    def configure(self, isa):
        self.variant = isa

    def prepare(self, w):
        return w

    def matmul(self, x, w):
        self.calls += 1
        self.clock.now += self.costs[self.variant] * x.shape[0] * w.in_features * w.out_features
        return torch.zeros(x.shape[0], w.out_features)


def _weight(n, k):
    return PackedTernary(pack_ternary(torch.randint(-1, 2, (n, k), dtype=torch.int8)), torch.tensor(1.0), k)


@pytest.fixture
def fakes():
    clock = FakeClock()
    backends = {"fast": FakeBackend("fast", clock, {"wide": 1.0, "narrow": 1.5}),
                "slow": FakeBackend("slow", clock, {"": 2.5}),
                "oracle": FakeBackend("oracle", clock, {"": 50.0})}
    cands = [Candidate("fast", (("isa", "narrow"),)), Candidate("fast", (("isa", "wide"),)),
             Candidate("slow"), Candidate("oracle")]
    work = [Workload(4, _weight(8, 16), 3), Workload(2, _weight(16, 8), 1)]
    return clock, backends, cands, work


def test_measure_weights_each_shape_by_its_layer_count_and_drops_the_slow(fakes):
    clock, backends, cands, work = fakes
    seconds = autotune.measure(cands, work, timer=clock, resolve=backends.__getitem__, dtype=torch.float32)
    macs = 3 * 4 * 16 * 8 + 1 * 2 * 8 * 16  # Σ count · rows · in · out
    assert seconds["fast[isa=narrow]"] == pytest.approx(1.5 * macs)
    assert seconds["fast[isa=wide]"] == pytest.approx(1.0 * macs)
    # The oracle (50x) is dropped after the warm-up round (one call per shape), the 2.5x one after
    # the first timed round (> DROP_RATIO); the winners are timed every round.
    assert seconds["slow"] is None and seconds["oracle"] is None
    assert backends["oracle"].calls == len(work)
    assert backends["slow"].calls == 2 * len(work)
    assert backends["fast"].calls == 2 * len(work) * (1 + autotune.REPEATS)
    assert autotune.select(seconds) == Candidate("fast", (("isa", "wide"),))


def test_min_of_rounds_ignores_disturbed_calls(fakes):
    clock, backends, cands, work = fakes
    fast = backends["fast"]
    disturbed = iter([0, 0, 500.0, 0, 0, 0, 900.0, 0])  # extra seconds on some calls

    def matmul(x, w, _orig=fast.matmul):
        clock.now += next(disturbed, 0)
        return _orig(x, w)

    fast.matmul = matmul
    seconds = autotune.measure(cands[1:2], work, timer=clock, resolve=backends.__getitem__, dtype=torch.float32)
    assert seconds["fast[isa=wide]"] == pytest.approx(3 * 4 * 16 * 8 + 2 * 8 * 16)


def test_tune_caches_per_machine_and_applies_the_winning_variant(fakes, tmp_path, monkeypatch):
    clock, backends, cands, work = fakes
    kw = dict(path=tmp_path / "t.json", cands=cands, resolve=backends.__getitem__, timer=clock, dtype=torch.float32)
    first = autotune.tune(work, **kw)
    assert first.source == "measured" and first.choice.label == "fast[isa=wide]"
    assert backends["fast"].variant == "wide"
    assert "auto -> fast[isa=wide]" in first.describe() and "slow dropped" in first.describe()

    backends["fast"].configure("narrow")
    calls = sum(b.calls for b in backends.values())
    again = autotune.tune(work, **kw)
    assert again.source == "cache" and again.choice == first.choice and again.seconds == first.seconds
    assert sum(b.calls for b in backends.values()) == calls  # nothing timed
    assert backends["fast"].variant == "wide"  # the cached variant is applied too
    assert [t.choice for t in autotune.cached(path=tmp_path / "t.json")] == [first.choice]

    # Another thread count is another machine for the kernels: measured again.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    assert autotune.tune(work, **kw).source == "measured"
    # So is a cached choice that is no longer available here.
    monkeypatch.undo()
    assert autotune.tune(work, **{**kw, "cands": cands[2:]}).choice == Candidate("slow")


def test_machine_id_names_the_cpu_isa_and_threads():
    mid = autotune.machine_id(3)
    assert autotune.cpu_model() in mid and "3 threads" in mid and torch.__version__ in mid
    assert all(f in mid for f in autotune.isa_flags())


def test_unreadable_cache_is_ignored(fakes, tmp_path):
    clock, backends, cands, work = fakes
    path = tmp_path / "t.json"
    path.write_text("{not json")
    t = autotune.tune(work, path=path, cands=cands, resolve=backends.__getitem__, timer=clock, dtype=torch.float32)
    assert t.source == "measured" and autotune.cached(path=path)[0].choice == t.choice


def test_candidates_cover_every_available_backend_and_cpu_isa():
    labels = [c.label for c in autotune.candidates("cpu")]
    assert {Candidate.from_label(label).backend for label in labels} == set(available_backends("cpu"))
    assert all(Candidate.from_label(label).label == label for label in labels)
    if "cpu" in available_backends("cpu"):
        assert any(label.startswith("cpu[isa=") for label in labels)


def test_model_auto_on_cpu_is_measured_and_exposed(monkeypatch, tmp_path):
    monkeypatch.setenv("BITVLA_CACHE_DIR", str(tmp_path))
    model = tiny.model().to_deploy("auto")
    tuning = model.kernel_tuning
    assert tuning is not None and tuning.source == "measured"
    assert model.backend_name == tuning.choice.backend
    assert set(tuning.seconds) == {c.label for c in autotune.candidates("cpu")}
    # one workload entry per distinct shape, counts covering every packed layer
    assert sum(w.count for w in model.kernel_workload()) == len(model.ternary_layers())
    model.set_backend("auto")
    assert model.kernel_tuning.source == "cache"
    model.set_backend("reference")
    assert model.kernel_tuning is None and model.backend_name == "reference"

    monkeypatch.setenv("BITVLA_AUTOTUNE", "0")
    model.set_backend("auto")
    assert model.kernel_tuning is None and model.backend_name == autotune.static_choice("cpu")
