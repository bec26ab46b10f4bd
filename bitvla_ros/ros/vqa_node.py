"""vqa_node (`bitvla_vqa`): questions about what a camera sees, answered by BitVLA's VLM side.

A `std_msgs/String` on `question` is answered on the latest frame of `image_topic`; the answer
goes out on `answer` (std_msgs/String) once complete, and the text so far on `answer_partial` as
tokens stream in. Callbacks only store the frame and queue the question: generation runs on the
node's own worker thread, so the node can share an executor (even a single-threaded one) with
policy_node without ever holding up its control timer.

No service: no standard service type carries a text request and a text reply (std_srvs has
Empty, SetBool and Trigger), and an rclpy service must answer inside its callback, which would
tie up an executor thread for the whole generation.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from bitvla_ros.ros.conversions import compressed_to_rgb, header_seconds, image_to_rgb
from bitvla_ros.ros.params import Param, declare
from bitvla_ros.ros.qos import subscribe_sensor
from bitvla_ros.ros.spin import run

PARAMS = [
    Param("model_path", "", "model folder: packed, published VLA, or a released VLM folder (no action head)",
          read_only=True),
    Param("backend", "auto", "ternary kernel backend: auto, cuda, cpu, int8 or reference", read_only=True),
    Param("image_topic", "camera/image_raw", "camera whose latest frame each question is about; a topic ending in "
          "'/compressed' is read as sensor_msgs/CompressedImage", read_only=True),
    Param("input_reliability", "best_effort", "camera subscription: best_effort or reliable", read_only=True),
    Param("max_image_age_s", 0.0, "refuse to answer on a frame older than this (0 = any age)"),
    Param("wait_for_image_s", 5.0, "how long a question waits for a first frame before it is dropped"),
    Param("max_new_tokens", 64, "longest answer in tokens"),
    Param("temperature", 0.0, "0 = greedy; > 0 samples"),
    Param("top_k", 0, "sample among the k most likely tokens (0 = off)"),
    Param("top_p", 1.0, "nucleus sampling mass (1 = off)"),
    Param("seed", -1, "sampling seed per answer (-1 = unseeded)"),
    Param("max_pending", 4, "questions queued while one is being answered; the oldest is dropped beyond it",
          read_only=True),
    Param("num_threads", 0, "torch CPU threads for generation (0 = torch's default)", read_only=True),
]

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def load_answerer(model_path: str, backend: str):
    from bitvla_ros.model.vqa import load_vqa  # torch loads with the model, not at import

    return load_vqa(Path(model_path).expanduser(), backend=backend)


class VQANode(Node):
    def __init__(self, vqa=None, **kwargs):
        """``vqa``: an already loaded VQAModel (else model_path is loaded)."""
        super().__init__("bitvla_vqa", **kwargs)
        p = self.values = declare(self, PARAMS)
        if p["num_threads"] > 0:
            import torch

            torch.set_num_threads(p["num_threads"])
        self.vqa = vqa
        if self.vqa is None and p["model_path"]:
            try:
                self.vqa = load_answerer(p["model_path"], p["backend"])
                self.get_logger().info(f"loaded {p['model_path']} (backend {self.vqa.model.backend_name})")
            except Exception as e:  # noqa: BLE001 - report and keep running; questions are refused
                self.get_logger().error(f"could not load model_path {p['model_path']!r}: {e}")
        elif self.vqa is None:
            self.get_logger().error("model_path is empty: questions cannot be answered until the node is restarted "
                                    "with a model")

        self._frame = None  # (rgb, stamp seconds)
        self._frame_lock = threading.Lock()
        self._frame_arrived = threading.Condition(self._frame_lock)
        self._questions: queue.Queue = queue.Queue(maxsize=max(1, p["max_pending"]))
        self.answers_published = 0

        inputs = MutuallyExclusiveCallbackGroup()
        topic = p["image_topic"]
        kind, self._convert = (CompressedImage, compressed_to_rgb) if topic.endswith("/compressed") else (Image, image_to_rgb)
        subscribe_sensor(self, kind, topic, self._on_image, p["input_reliability"], callback_group=inputs)
        self.create_subscription(String, "question", self._on_question, RELIABLE, callback_group=inputs)
        self.answer_pub = self.create_publisher(String, "answer", RELIABLE)
        self.partial_pub = self.create_publisher(String, "answer_partial", RELIABLE)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._answer_loop, name="bitvla_vqa_generation", daemon=True)
        self._worker.start()

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- callbacks: store and queue, never generate -------------------------------------------

    def _on_image(self, msg) -> None:
        try:
            rgb = self._convert(msg)
        except ValueError as e:  # conversions raise Rejected, a ValueError
            self.get_logger().warning(f"dropped a frame: {e}", throttle_duration_sec=5.0)
            return
        with self._frame_arrived:
            self._frame = (rgb, header_seconds(msg.header, self.now()))
            self._frame_arrived.notify_all()

    def _on_question(self, msg: String) -> None:
        question = msg.data.strip()
        if not question:
            self.get_logger().warning("ignored an empty question")
            return
        while True:
            try:
                self._questions.put_nowait(question)
                return
            except queue.Full:
                try:
                    dropped = self._questions.get_nowait()
                    self.get_logger().warning(f"too many pending questions; dropped {dropped[:80]!r}")
                except queue.Empty:
                    pass

    # --- the worker thread ---------------------------------------------------------------------

    def _latest_frame(self):
        wait = float(self.get_parameter("wait_for_image_s").value)
        with self._frame_arrived:
            if self._frame is None:
                self._frame_arrived.wait_for(lambda: self._frame is not None or self._stop.is_set(), timeout=wait)
            return self._frame

    def _answer_loop(self) -> None:
        while not self._stop.is_set():
            try:
                question = self._questions.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._answer(question)
            except Exception as e:  # noqa: BLE001 - one bad question must not end the worker
                self.get_logger().error(f"could not answer {question[:80]!r}: {type(e).__name__}: {e}")

    def _answer(self, question: str) -> None:
        from bitvla_ros.model.generate import GenerationSettings

        if self.vqa is None:
            self.get_logger().error(f"no model loaded; cannot answer {question[:80]!r}")
            return
        frame = self._latest_frame()
        if frame is None:
            self.get_logger().error(f"no frame on {self.get_parameter('image_topic').value} within "
                                    f"{self.get_parameter('wait_for_image_s').value} s; dropped {question[:80]!r}")
            return
        rgb, stamp = frame
        max_age = float(self.get_parameter("max_image_age_s").value)
        age = self.now() - stamp
        if max_age > 0 and age > max_age:
            self.get_logger().error(f"the latest frame is {age:.2f} s old (max_image_age_s {max_age}); "
                                    f"dropped {question[:80]!r}")
            return
        g = {n: self.get_parameter(n).value for n in ("max_new_tokens", "temperature", "top_k", "top_p", "seed")}
        settings = GenerationSettings(max_new_tokens=g["max_new_tokens"], temperature=g["temperature"],
                                      top_k=g["top_k"], top_p=g["top_p"], seed=None if g["seed"] < 0 else g["seed"])
        text = []

        def on_text(piece: str) -> None:
            text.append(piece)
            self.partial_pub.publish(String(data="".join(text)))

        start = time.perf_counter()
        answer = self.vqa.ask([rgb], question, settings, on_text=on_text)
        per = answer.per_token_s
        self.get_logger().info(
            f"Q: {question[:120]!r} A: {answer.text[:200]!r} ({len(answer.token_ids)} tokens, first after "
            f"{answer.first_token_s * 1000:.0f} ms" + (f", {per * 1000:.1f} ms/token" if per else "")
            + f", {time.perf_counter() - start:.2f} s total, frame {age:.2f} s old)")
        self.answer_pub.publish(String(data=answer.text))
        self.answers_published += 1

    def destroy_node(self):
        self._stop.set()
        with self._frame_arrived:
            self._frame_arrived.notify_all()
        self._worker.join(timeout=5)
        return super().destroy_node()


def main(args=None) -> None:
    # Callbacks are short (generation has its own thread): one executor thread is enough.
    run(VQANode, SingleThreadedExecutor, args)


if __name__ == "__main__":
    main()
