"""Which LIBERO init states and env seeds each step of the default-model recipe may use.

Every LIBERO task ships 50 init states. A success rate means something only on states (and seeds)
that no choice was made on, so they are split once, here:

    train 0–34       recorded as demonstrations (`bitvla record`)
    validation 35–39 every knob is chosen on these (`bitvla select`): execute_steps, checkpoint, ...
    test 40–49       reported only (`bitvla eval --split test`), never looked at to choose

and the env seeds (fixture placement, layout) likewise: selection runs on VALIDATION_SEEDS, the
reported figures on TEST_SEEDS, which no choice used.
"""

from __future__ import annotations

NUM_INIT_STATES = 50                 # per task, in every LIBERO suite
SPLITS = {"train": range(0, 35), "validation": range(35, 40), "test": range(40, 50)}
ALIASES = {"val": "validation"}
VALIDATION_SEEDS = (0, 3)
TEST_SEEDS = (1, 2)


def split_states(name: str) -> range:
    """The init states of a named split (train, validation or val, test)."""
    key = ALIASES.get(name, name)
    if key not in SPLITS:
        raise ValueError(f"expected a split among {sorted(SPLITS) + sorted(ALIASES)}, got {name!r}")
    return SPLITS[key]


def splits_of(states) -> list[str]:
    """The splits the given init states fall in, in split order (what a result is labelled with)."""
    states = set(states)
    return [name for name, r in SPLITS.items() if states & set(r)]


def describe(states) -> str:
    """'40–49 (test)' style label for a set of init states."""
    return f"{ranges_text(states)} ({', '.join(splits_of(states)) or 'outside the splits'})"


def parse_ranges(text: str) -> list[int]:
    """'0-9,12,20-34' -> [0..9, 12, 20..34] (inclusive ranges, in the given order, no repeats)."""
    states: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"expected init states like 0-34 or 0-9,12,20-34, got {text!r}") from None
        if hi < lo:
            raise ValueError(f"expected ranges written low-high, got {part!r} in {text!r}")
        states += [s for s in range(lo, hi + 1) if s not in states]
    if not states:
        raise ValueError(f"expected at least one init state in {text!r}")
    return states


def ranges_text(states) -> str:
    """[0, 1, 2, 5] -> '0–2, 5'."""
    values, parts = sorted(set(states)), []
    for v in values:
        if parts and v == parts[-1][1] + 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in parts)


def check_in_range(states) -> None:
    bad = sorted(s for s in states if not 0 <= s < NUM_INIT_STATES)
    if bad:
        raise ValueError(f"expected init states in 0–{NUM_INIT_STATES - 1} (LIBERO has {NUM_INIT_STATES} per task), "
                         f"got {ranges_text(bad)}")


def check_apart(states, forbidden, what: str, forbidden_what: str, fix: str) -> None:
    """Refuse when `states` (or seeds) share members with `forbidden`: a choice or a recording made on
    them would leak into the figures reported on the other set."""
    shared = sorted(set(states) & set(forbidden))
    if shared:
        raise ValueError(f"{what} {ranges_text(shared)} overlap {forbidden_what} ({ranges_text(forbidden)}); {fix}")
