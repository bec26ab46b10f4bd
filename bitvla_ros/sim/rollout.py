"""One episode of a LIBERO task under the eval's rules (docs/libero.md), for any actor with `act(obs)`."""

from __future__ import annotations

from dataclasses import dataclass, field

from bitvla_ros.sim.libero_env import LiberoEnv


@dataclass
class Episode:
    init_state: int
    success: bool
    steps: int                       # policy steps taken, settle steps not counted
    phases: list[tuple[int, str]] = field(default_factory=list)  # (step, phase) where a phase began


def run_episode(env: LiberoEnv, actor, init_state: int, max_steps: int | None = None) -> Episode:
    """Reset to `init_state` (settle steps included), then step `actor.act(obs)` until success or the
    step limit (the suite's, by default). The episode ends at the first success, as the eval's does."""
    limit = env.max_steps if max_steps is None else max_steps
    obs = env.reset(init_state)
    if hasattr(actor, "reset"):
        actor.reset()
    episode = Episode(init_state, False, 0)
    for step in range(limit):
        action = actor.act(obs)
        phase = getattr(actor, "phase", None)
        if phase is not None and (not episode.phases or episode.phases[-1][1] != phase):
            episode.phases.append((step, phase))
        obs, success = env.step(action)
        episode.steps = step + 1
        if success:
            episode.success = True
            break
    return episode
