"""vqa_node: over real DDS in its own process with a tiny VLM, and in one single-threaded executor
with policy_node, where a long generation must not stop the other node's timers."""

import threading

import numpy as np

import tiny  # noqa: F401  (test helpers on the path)
from ros_helpers.harness import NodeProcess, spin_until
from test_vqa import QUESTION, write_vlm

from bitvla_ros.model.generate import GenerationSettings
from bitvla_ros.model.vqa import load_vqa

TOPIC = "front/image_raw"


def _frame():
    return np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _image_msg(rgb):
    from sensor_msgs.msg import Image

    h, w, _ = rgb.shape
    return Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())


def test_answers_a_question_on_the_latest_frame_over_dds(rclpy_context, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    write_vlm(tmp_path / "vlm")
    params = {"model_path": str(tmp_path / "vlm"), "backend": "reference", "image_topic": TOPIC,
              "max_new_tokens": 10}
    want = load_vqa(tmp_path / "vlm", backend="reference").ask([_frame()], QUESTION,
                                                               GenerationSettings(max_new_tokens=10)).text
    node = rclpy.create_node("vqa_test_peer", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    images = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    questions = node.create_publisher(String, "question", reliable)
    answers, partials = [], []
    node.create_subscription(String, "answer", lambda m: answers.append(m.data), reliable)
    node.create_subscription(String, "answer_partial", lambda m: partials.append(m.data), reliable)
    node.create_timer(0.05, lambda: images.publish(_image_msg(_frame())))
    try:
        with NodeProcess("bitvla_ros.ros.vqa_node", "bitvla_vqa", params, tmp_path) as proc:
            assert spin_until(executor, lambda: questions.get_subscription_count() > 0, 60), proc.log()
            questions.publish(String(data=QUESTION))
            assert spin_until(executor, lambda: answers, 60), proc.log()
            assert answers == [want]
            assert partials and partials[-1] == want  # the text so far streamed, ending with the answer
            assert "Q: 'is the drawer open?'" in proc.log() and "ms/token" in proc.log()
    finally:
        executor.shutdown()
        node.destroy_node()


class _BlockingVQA:
    """Stands in for the model: 'generates' until the release event is set by the other node's timer."""

    def __init__(self, release: threading.Event):
        self.release, self.threads = release, []

    def ask(self, images, question, settings, on_text=None):
        from bitvla_ros.model.vqa import Answer

        self.threads.append(threading.get_ident())
        assert self.release.wait(30), "the other node's timer never fired while generating: the executor is blocked"
        on_text("yes")
        return Answer(text="yes", token_ids=[1], prompt_tokens=3, stopped=True, first_token_s=0.01)


def test_generation_never_blocks_a_shared_single_threaded_executor(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from bitvla_ros.ros.policy_node import PolicyNode
    from bitvla_ros.ros.vqa_node import VQANode

    release = threading.Event()
    fake = _BlockingVQA(release)
    policy = PolicyNode(context=rclpy_context, parameter_overrides=[
        Parameter("diagnostics_rate_hz", value=20.0), Parameter("proprio_names", value=[f"p{i}" for i in range(8)]),
        Parameter("action_names", value=["dx", "dy", "dz", "dax", "day", "daz", "gripper"])])
    vqa = VQANode(vqa=fake, context=rclpy_context, parameter_overrides=[Parameter("image_topic", value=TOPIC)])
    peer = rclpy.create_node("vqa_test_peer", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    for n in (policy, vqa, peer):
        executor.add_node(n)
    during = []

    def on_diagnostics(_msg):
        if fake.threads:  # generation has started and not been released yet
            during.append(threading.get_ident())
            if len(during) >= 3:
                release.set()
    peer.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    answers = []
    peer.create_subscription(String, "answer", lambda m: answers.append(m.data), 10)
    try:
        vqa._on_image(_image_msg(_frame()))
        vqa._on_question(String(data="is the gripper closed?"))
        assert spin_until(executor, lambda: answers, 40)
        assert answers == ["yes"] and len(during) >= 3
        assert fake.threads[0] != during[0]  # generation ran on the node's worker, not the executor's thread
    finally:
        executor.shutdown()
        for n in (policy, vqa, peer):
            n.destroy_node()
