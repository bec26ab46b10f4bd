"""`bitvla import-bag`: rosbag2 recordings -> a dataset, paired exactly as recorder_node pairs live input.

The bag's messages are replayed, in receive-time order, into the recorder's own core: the same
RecordingSession (rate or action mode) with the same ObservationBuffer, fed through the same
message conversions, with the bag's receive time as "now". So a bag recorded with `ros2 bag
record` from the topics the recorder takes gives the frames the recorder would have written live.

Episodes are cut by one of:
- ``topic``: the recorder's episode topic (std_msgs/String start / stop / discard) in the bag;
- ``gap``: a new episode wherever the action topic is silent longer than ``gap_s``;
- ``bag``: each bag is one episode.
The instruction is the bag's instruction topic (latest before the episode starts), or given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from bitvla_ros.data.recording import RATE, RecordingSession
from bitvla_ros.data.v3 import open_writer
from bitvla_ros.policy.rejections import Rejected
from bitvla_ros.ros.actions import ACTION_TYPES, action_from_message
from bitvla_ros.ros.bag import ACTION_MSGTYPES, COMPRESSED, IMAGE, JOINT_STATE, STRING, Bag, BagError, topic_name
from bitvla_ros.ros.conversions import compressed_to_rgb, header_seconds, image_to_rgb
from bitvla_ros.ros.recorder_params import PARAMS, camera_name

SPLITS = ("topic", "gap", "bag")


def recorder_defaults() -> dict:
    return {p.name: p.default for p in PARAMS}


def read_params_file(path: str | Path) -> dict:
    """recorder_node's parameters from a ROS params file (config/recorder.yaml's layout)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    node = data.get("bitvla_recorder") or next(iter(data.values()), {})
    params = (node or {}).get("ros__parameters")
    if not isinstance(params, dict):
        raise ValueError(f"{path} has no 'bitvla_recorder: ros__parameters:' section (see config/recorder.yaml)")
    unknown = sorted(set(params) - set(recorder_defaults()) - {"use_sim_time"})
    if unknown:
        raise ValueError(f"{path}: {unknown} are not recorder_node parameters")
    return params


@dataclass
class ImportResult:
    episodes: list[tuple[int, int]] = field(default_factory=list)  # (episode index, frames)
    discarded: int = 0
    messages: int = 0
    skipped: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(n for _, n in self.episodes)


def import_bags(bags: list[str | Path], params: dict, split: str = "bag", gap_s: float = 1.0,
                instruction: str | None = None, instruction_topic: str = "instruction",
                joint_states_topic: str = "joint_states", log=print) -> ImportResult:
    """Replay ``bags`` into the dataset ``params['dataset_dir']``; ``params`` are recorder_node's
    parameters (missing ones take the recorder's defaults)."""
    p = {**recorder_defaults(), **params}
    for row in PARAMS:  # the node's own checks (choices, limits)
        row.check(p[row.name])
    if split not in SPLITS:
        raise ValueError(f"split is {split!r}; expected one of {SPLITS}")
    if split == "topic" and not p["episode_topic"]:
        raise ValueError("split 'topic' needs the episode topic (recorder parameter episode_topic)")
    if p["action_type"] not in ACTION_TYPES:
        raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {p['action_type']!r}")
    topics = [topic_name(t) for t in p["image_topics"]]
    names = [n for n in p["camera_names"] if n] or [camera_name(t, i) for i, t in enumerate(topics)]
    action_names = [n for n in p["action_names"] if n]
    proprio = [n for n in p["proprio_names"] if n]
    if not action_names or not proprio:
        raise ValueError("name the action dimensions (action_names) and the joints of the state (proprio_names)")
    mask = list(p["action_mask"])
    mask = mask * len(action_names) if len(mask) == 1 else mask
    session = RecordingSession(
        lambda: open_writer(os.path.expanduser(p["dataset_dir"]), p["dataset_layout"], p["video"], p["video_codec"],
                            p["video_crf"], p["video_gop"], p["data_file_mb"], p["video_file_mb"],
                            fps=p["record_rate_hz"],
                            camera_names=names, state_names=proprio, action_names=action_names,
                            robot_type=p["robot_type"], image_format=p["image_format"],
                            jpeg_quality=p["jpeg_quality"], action_mask=mask, dataset_name=p["dataset_name"] or None),
        names, proprio, len(action_names), p["max_observation_age_s"], p["sample_mode"])
    replay = _Replay(session, p, dict(zip(topics, names)), action_names, split, gap_s, instruction, log)
    result = ImportResult()
    start = time.perf_counter()
    try:
        for path in bags:
            with Bag(path) as bag:
                wanted = replay.check(bag, topic_name(instruction_topic), topic_name(joint_states_topic))
                for m in bag.messages(wanted):
                    replay.handle(m)
                    result.messages += 1
                replay.end_of_bag(bag)
    finally:
        if session.writer is not None:
            session.writer.close()
    result.episodes, result.discarded = replay.saved, replay.discarded
    result.skipped = session.rejections.snapshot()
    result.seconds = time.perf_counter() - start
    return result


class _Replay:
    """What recorder_node's callbacks do with each message, with the bag's clock."""

    def __init__(self, session: RecordingSession, p: dict, cameras: dict[str, str], action_names: list[str],
                 split: str, gap_s: float, instruction: str | None, log):
        self.session, self.p, self.cameras, self.action_names = session, p, cameras, action_names
        self.split, self.gap_s, self.instruction, self.log = split, gap_s, instruction, log
        self.period = 1.0 / p["record_rate_hz"]
        self.saved: list[tuple[int, int]] = []
        self.discarded = 0
        self._next_tick: float | None = None
        self._last_action: float | None = None
        self.topics: dict[str, str] = {}

    def check(self, bag: Bag, instruction_topic: str, joints_topic: str) -> list[str]:
        """The topics to read; a BagError naming what the bag lacks."""
        kinds = {}
        for topic in self.cameras:
            kinds[topic] = bag.require(topic, (COMPRESSED,) if topic.endswith("/compressed") else (IMAGE,), "camera")
        kinds[joints_topic] = bag.require(joints_topic, (JOINT_STATE,), "robot state")
        action_topic = topic_name(self.p["action_topic"])
        kinds[action_topic] = bag.require(action_topic, (ACTION_MSGTYPES[self.p["action_type"]],),
                                          f"commands, action_type {self.p['action_type']}")
        if self.instruction is None:
            kinds[instruction_topic] = bag.require(instruction_topic, (STRING,),
                                                   "the instruction; or give it with --instruction")
        if self.split == "topic":
            episode_topic = topic_name(self.p["episode_topic"])
            kinds[episode_topic] = bag.require(episode_topic, (STRING,), "episode start / stop / discard")
        self.topics = {"joints": joints_topic, "action": action_topic, "instruction": instruction_topic,
                       "episode": topic_name(self.p["episode_topic"]) if self.split == "topic" else None}
        if self.instruction:
            self.session.observations.set_instruction(self.instruction)
        return list(kinds)

    def handle(self, m) -> None:
        now = m.time
        s = self.session
        self._tick_until(now)
        if self.split == "gap" and m.topic == self.topics["action"]:
            if self._last_action is not None and now - self._last_action > self.gap_s and s.recording:
                self._stop()
            self._last_action = now
        if self.split in ("gap", "bag") and not s.recording and m.topic == self.topics["action"] \
                and s.observations.instruction():
            self._start(now)
        try:
            if m.topic in self.cameras:
                # cv_bridge takes rclpy messages only; these are the bag's own
                rgb = compressed_to_rgb(m.msg) if m.topic.endswith("/compressed") else image_to_rgb(m.msg, False)
                size = self.p["image_size"]
                if size and rgb.shape[:2] != (size, size):
                    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
                s.observations.put_image(self.cameras[m.topic], rgb, header_seconds(m.msg.header, now))
                s.on_observation(now)
            elif m.topic == self.topics["joints"]:
                s.observations.put_joint_state(m.msg.name, m.msg.position, header_seconds(m.msg.header, now))
                s.on_observation(now)
            elif m.topic == self.topics["instruction"]:
                if self.instruction is None:
                    s.observations.set_instruction(m.msg.data)
            elif m.topic == self.topics["action"]:
                vec, stamp = action_from_message(m.msg, self.p["action_type"], self.action_names, now)
                s.on_action(vec, stamp, now)
            elif m.topic == self.topics["episode"]:
                command = m.msg.data.strip().lower()
                {"start": self._start, "stop": lambda t: self._stop(), "discard": lambda t: self._discard()}.get(
                    command, lambda t: self.log(f"  episode topic: unknown command {m.msg.data!r}"))(now)
        except Rejected as r:
            s.rejections.record(r, now)

    def _tick_until(self, now: float) -> None:
        """Rate mode: the recorder's timer ticks that fall before this message."""
        if self.p["sample_mode"] != RATE or self._next_tick is None:
            return
        while self._next_tick <= now:
            self.session.tick(self._next_tick)
            self._next_tick += self.period

    def _start(self, now: float) -> None:
        try:
            self.session.start(now)
        except RuntimeError as e:
            self.log(f"  at {now:.3f} s: not starting an episode: {e}")
            return
        self._next_tick = now + self.period

    def _stop(self) -> None:
        if not self.session.recording:
            return
        try:
            index, frames = self.session.stop()
        except RuntimeError as e:  # no frames
            self.log(f"  {e}")
            self.discarded += 1
        else:
            self.saved.append((index, frames))
            self.log(f"  episode {index}: {frames} frames")
        self._next_tick = None

    def _discard(self) -> None:
        if self.session.recording:
            self.session.discard()
            self.discarded += 1
        self._next_tick = None

    def end_of_bag(self, bag: Bag) -> None:
        if self.split in ("gap", "bag") and self.session.recording:
            self._stop()
        elif self.session.recording:  # topic split: an episode left open at the end is not finished
            self.log(f"  {bag.path}: the last episode was not stopped in the bag; discarded it")
            self._discard()
        self._last_action = None


__all__ = ["BagError", "ImportResult", "import_bags", "read_params_file", "recorder_defaults"]
