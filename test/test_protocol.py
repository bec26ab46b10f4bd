"""The published LIBERO eval protocol (bitvla_ros/sim/protocol.py): constants, and every image
transform against expectations computed by hand here (and a few of TensorFlow's own test values)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from bitvla_ros.model.config import BitVLAConfig, ConfigError
from bitvla_ros.model.processor import BitVLAProcessor
from bitvla_ros.sim import protocol as P
from bitvla_ros.sim.runner import model_to_env_action


def lanczos3(x: float) -> float:
    """The Lanczos3 kernel from its formula, in float64."""
    x = abs(x)
    if x > 3:
        return 0.0
    if x < 1e-9:
        return 1.0
    return 3 * math.sin(math.pi * x) * math.sin(math.pi * x / 3) / (math.pi ** 2 * x * x)


# --- constants ---------------------------------------------------------------------------------

def test_protocol_constants_are_the_published_ones():
    from bitvla_ros.sim import libero_env

    assert P.NUM_STEPS_WAIT == 10 == libero_env.SETTLE_STEPS
    assert P.MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                           "libero_90": 400} == libero_env.MAX_STEPS
    assert (P.TRIALS_PER_TASK, P.SEED, P.ENV_SEED, P.RENDER_SIZE, P.IMAGE_SIZE) == (50, 7, 0, 256, 224)
    assert (P.CROP_SCALE, P.JPEG_QUALITY, P.EXECUTE_STEPS) == (0.9, 95, 8)
    assert P.TASKS_PER_SUITE["libero_spatial"] == 10 and P.TASKS_PER_SUITE["libero_90"] == 90
    with pytest.raises(AttributeError):
        P.NOT_A_CONSTANT  # noqa: B018


def test_seed_everything_makes_draws_repeat():
    P.seed_everything(7)
    a = (np.random.rand(), torch.rand(1).item())
    P.seed_everything(7)
    assert (np.random.rand(), torch.rand(1).item()) == a
    assert torch.backends.cudnn.deterministic


# --- actions -----------------------------------------------------------------------------------

def test_gripper_is_binarized_and_inverted_arm_untouched():
    arm = [0.1, -0.2, 0.3, -0.01, 0.02, -0.03]
    assert P.libero_postprocess_action(arm + [0.9]).tolist() == arm + [-1.0]   # 2(0.9)−1 > 0 → open (−1)
    assert P.libero_postprocess_action(arm + [0.2]).tolist() == arm + [1.0]    # < 0.5 → close (+1)
    assert P.libero_postprocess_action(arm + [0.5])[6] == 0.0                  # sign(0) = 0
    assert P.libero_postprocess_action(arm + [1.7])[6] == -1.0                 # un-normalized outputs > 1 too
    chunk = np.random.default_rng(0).uniform(-1, 2, (8, 7))
    out = P.libero_postprocess_action(chunk)
    assert out.shape == (8, 7) and np.array_equal(out[:, :6], chunk[:, :6])
    for row_in, row_out in zip(chunk, out):  # the same as what sim_node / SimRunner send to the env
        assert np.array_equal(model_to_env_action(row_in), row_out)
    with pytest.raises(ValueError, match="7-D"):
        P.libero_postprocess_action([0.0] * 6)


# --- rotation and dtype conversion -------------------------------------------------------------

def test_rotate_180_flips_both_axes_as_the_libero_wrapper_does():
    from bitvla_ros.sim.libero_env import observation_from

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rotated = P.rotate_180(image)
    assert rotated[0, 0].tolist() == image[1, 2].tolist() and rotated[1, 2].tolist() == image[0, 0].tolist()
    assert rotated[0, 1].tolist() == image[1, 1].tolist()
    raw = {"robot0_eef_pos": np.zeros(3), "robot0_eef_quat": np.array([0, 0, 0, 1.0]),
           "robot0_gripper_qpos": np.zeros(2), "agentview_image": image, "robot0_eye_in_hand_image": image}
    obs = observation_from(raw, cameras=True)
    assert np.array_equal(obs.agentview, rotated) and np.array_equal(obs.wrist, rotated)


def test_convert_image_dtype_truncates_after_scaling_by_255_5():
    f = np.array([0.0, 0.5, 0.999, 1.0, -0.2, 1.3, 0.0039, 0.002], dtype=np.float32)
    # 0.5·255.5 = 127.75 → 127; 0.999·255.5 = 255.24 → clamp 255; 0.0039·255.5 = 0.996 → 0
    assert P.float_to_uint8(f).tolist() == [0, 127, 255, 255, 0, 255, 0, 0]
    p = np.arange(256, dtype=np.uint8)
    as_float = P.uint8_to_float(p)
    assert as_float.dtype == np.float32
    assert np.array_equal(as_float, p.astype(np.float32) * np.float32(1 / 255))
    assert as_float[255] == pytest.approx(1.0, abs=1e-7)
    # p/255·255.5 = p + p/510 with p/510 < 1: every level comes back unchanged
    assert np.array_equal(P.float_to_uint8(as_float), p)


# --- Lanczos3 (scale_and_translate) ------------------------------------------------------------

def test_lanczos_kernel_values():
    x = np.array([0.0, 0.0005, 0.5, 1.0, 1.5, 2.5, 3.0, 3.5, -0.5])
    k = P.lanczos_kernel(x, 3)
    assert k.dtype == np.float32
    assert k[0] == 1 and k[1] == 1                                  # |x| ≤ 1e-3 → 1
    assert k[2] == pytest.approx(6 / math.pi ** 2, rel=1e-6)         # 3·1·½ / (π²/4)
    assert abs(k[3]) < 1e-6 and abs(k[6]) < 1e-6                     # zeros at integers
    assert k[4] == pytest.approx(-4 / (3 * math.pi ** 2), rel=1e-6)  # 3·(−1)·1 / (2.25π²)
    assert k[5] == pytest.approx(lanczos3(2.5), rel=1e-5)
    assert k[7] == 0 and k[8] == k[2]                                # beyond the radius; symmetric


def test_spans_256_to_224_widen_the_kernel_by_the_inverse_scale():
    starts, weights = P._spans(224, 256, 3, True)
    # kernel scale 256/224 = 8/7; reach 3·8/7 = 3.43; span size 2·ceil(3.43) + 1 = 9
    assert weights.shape == (224, 9)
    # output 0: sample_f = 0.5·8/7 = 0.571; span [ceil(−3.36), floor(3.5)] → [0, 3]
    assert starts[0] == 0 and np.count_nonzero(weights[0]) == 4
    expected = np.array([lanczos3((s + 0.5 - 4 / 7) * 7 / 8) for s in range(4)])
    np.testing.assert_allclose(weights[0, :4], expected / expected.sum(), atol=1e-6)
    # output 100: sample_f = 100.5·8/7 = 114.857; span [ceil(110.93), floor(117.79)] = [111, 117]
    assert starts[100] == 111 and np.count_nonzero(weights[100]) == 7
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)
    # no antialias: the plain radius-3 kernel, span 7
    assert P._spans(224, 256, 3, False)[1].shape == (224, 7)


def test_lanczos_4x4_to_2x2_by_hand():
    # Downscale by 2: kernel scale 2, reach 6, the whole 4-pixel row in every span.
    # Output 0 samples at 1.0: sources 0..3 sit at −0.5, 0.5, 1.5, 2.5 → kernel at 0.25, 0.25, 0.75, 1.25.
    k = [lanczos3(0.25), lanczos3(0.25), lanczos3(0.75), lanczos3(1.25)]
    w0 = np.array(k) / sum(k)
    w = np.stack([w0, w0[::-1]])  # output 1 samples at 3.0: mirror image
    image = np.array([[10, 20, 30, 40], [50, 60, 70, 80], [90, 100, 110, 120], [130, 140, 150, 160]], np.uint8)
    expected = w @ image.astype(np.float64) @ w.T
    out = P.scale_and_translate(image, (2, 2))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    assert np.array_equal(P.resize_lanczos3(rgb, 2), np.repeat(np.round(expected)[:, :, None], 3, axis=2))


def test_lanczos_tensorflow_resize_up_values():
    """tf.image.resize of [[64, 32], [32, 64], [50, 100]] to 6×4: the expected values of
    tensorflow/python/ops/image_ops_test.py (ResizeImagesV2Test.testResizeUp, atol 1e-4 there too)."""
    data = np.array([64, 32, 32, 64, 50, 100], np.float32).reshape(3, 2)
    lanczos3_tf = [75.8294, 59.6281, 38.4313, 22.23, 60.6851, 52.0037, 40.6454, 31.964,
                   35.8344, 41.0779, 47.9383, 53.1818, 24.6968, 43.0769, 67.1244, 85.5045,
                   35.7939, 56.4713, 83.5243, 104.2017, 44.8138, 65.1949, 91.8603, 112.2413]
    lanczos5_tf = [77.5699, 60.0223, 40.6694, 23.1219, 61.8253, 51.2369, 39.5593, 28.9709,
                   35.7438, 40.8875, 46.5604, 51.7041, 21.5942, 43.5299, 67.7223, 89.658,
                   32.1213, 56.784, 83.984, 108.6467, 44.5802, 66.183, 90.0082, 111.6109]
    for radius, expected in ((3, lanczos3_tf), (5, lanczos5_tf)):
        for antialias in (False, True):  # upsampling: antialias changes nothing
            out = P.scale_and_translate(data, (6, 4), radius=radius, antialias=antialias)
            np.testing.assert_allclose(out.ravel(), expected, atol=1e-4)


def test_lanczos_matches_pillow_float_lanczos_on_a_render_sized_image():
    """An independent implementation of the same filter: PIL's LANCZOS (antialiased, radius 3) on a
    float image. Span ends differ only where the kernel is 0, so only float32 noise remains."""
    x = np.random.default_rng(3).uniform(0, 255, (256, 256)).astype(np.float32)
    pil = np.asarray(Image.fromarray(x, mode="F").resize((224, 224), Image.LANCZOS))
    np.testing.assert_allclose(P.scale_and_translate(x, (224, 224)), pil, atol=1e-2)


def test_resize_rounds_half_to_even_and_clips():
    # 2 → 1 pixel: equal weights ½ and ½ (checked), so the output is the mean, ending in .5
    assert P._spans(1, 2, 3, True)[1].tolist() == [[0.5, 0.5]]
    pairs = np.array([[[0, 1]], [[1, 2]], [[2, 3]], [[253, 254]], [[254, 255]]], np.uint8)  # (5, 1, 2)
    means = [P.resize_lanczos3(np.repeat(p.reshape(1, 2, 1), 3, axis=2), 1)[0, 0, 0] for p in pairs]
    assert means == [0, 2, 2, 254, 254]  # 0.5→0, 1.5→2, 2.5→2, 253.5→254, 254.5→254 (tf.round)
    # Lanczos rings past 0 and 255 at a step edge: those values are clipped, not wrapped
    edge = np.zeros((8, 8, 3), np.uint8)
    edge[:, 4:] = 255
    raw = P.scale_and_translate(edge, (4, 4))
    assert raw.min() < -0.5 and raw.max() > 255.5
    out = P.resize_lanczos3(edge, 4)
    assert out.dtype == np.uint8 and np.array_equal(out, np.clip(np.round(raw), 0, 255).astype(np.uint8))
    assert out[0, 0, 0] == 0 and out[0, 3, 0] == 255


def test_resize_keeps_a_constant_image_constant():
    for shape, size in (((256, 256, 3), 224), ((37, 53, 3), 20)):
        image = np.full(shape, 200, np.uint8)
        out = P.resize_lanczos3(image, size)
        assert out.shape == (size, size, 3) and np.all(out == 200)


# --- center crop (crop_and_resize) -------------------------------------------------------------

def test_crop_and_resize_tensorflow_test_values():
    """Literal cases of tensorflow/core/kernels/image/crop_and_resize_op_test.cc (exact there too)."""
    two = np.array([[1, 2], [3, 4]], np.float32)[:, :, None]
    three = np.arange(1, 10, dtype=np.float32).reshape(3, 3, 1)
    cases = [
        (two, (0, 0, 1, 1), (1, 1), 0, [[2.5]]),
        (two, (1, 1, 0, 0), (1, 1), 0, [[2.5]]),
        (two, (0, 0, 1, 1), (3, 3), 0, [[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]]),
        (two, (1, 1, 0, 0), (3, 3), 0, [[4, 3.5, 3], [3, 2.5, 2], [2, 1.5, 1]]),
        (three, (0, 0, 1, 1), (2, 2), 0, [[1, 3], [7, 9]]),
        (three, (0, 0, 0.5, 0.5), (2, 2), 0, [[1, 2], [4, 5]]),
        (three, (1, 1, 0, 0), (2, 2), 0, [[9, 7], [3, 1]]),
        (three, (0.5, 0.5, 0, 0), (2, 2), 0, [[5, 4], [2, 1]]),
        (two, (-1, -1, 1, 1), (3, 3), -1, [[-1, -1, -1], [-1, 1, 2], [-1, 3, 4]]),
    ]
    for image, box, size, fill, expected in cases:
        out = P.crop_and_resize(image, box, size, extrapolation_value=fill)
        assert out.dtype == np.float32
        assert out[:, :, 0].tolist() == expected, (box, size)


def test_crop_and_resize_on_a_gradient_by_hand():
    # value = 10·row + col; bilinear sampling reproduces a linear function exactly
    rows, cols = np.mgrid[0:5, 0:7]
    image = (10 * rows + cols).astype(np.float32)[:, :, None]
    # in_y = 0.1·4 + y·(0.8·4/3): 0.4, 1.4667, 2.5333, 3.6; in_x = 0.2·6 + x·(0.5·6/2): 1.2, 2.7, 4.2
    in_y = np.array([0.4, 0.4 + 3.2 / 3, 0.4 + 6.4 / 3, 3.6])
    in_x = np.array([1.2, 2.7, 4.2])
    out = P.crop_and_resize(image, (0.1, 0.2, 0.9, 0.7), (4, 3))[:, :, 0]
    np.testing.assert_allclose(out, 10 * in_y[:, None] + in_x[None, :], atol=1e-4)


def test_center_crop_box_keeps_90_percent_of_the_area():
    y1, x1, y2, x2 = P.center_crop_box(0.9)
    side = np.sqrt(np.float32(0.9))
    assert all(isinstance(v, np.float32) for v in (y1, x1, y2, x2))
    assert y1 == x1 == (np.float32(1) - side) / np.float32(2)          # (1 − s)/2
    assert y2 == x2 == np.float32(y1 + side)                           # (1 − s)/2 + s, in float32
    assert float(y1) == pytest.approx((1 - math.sqrt(0.9)) / 2, abs=1e-7)
    assert float(y2 - y1) ** 2 == pytest.approx(0.9, abs=1e-6)
    assert P.center_crop_box(1.5) == (0, 0, 1, 1)                       # sqrt clipped to 1


def test_center_crop_resize_on_a_row_gradient_by_hand():
    image = np.repeat(np.repeat(np.arange(224, dtype=np.uint8)[:, None, None], 224, axis=1), 3, axis=2)
    out = P.center_crop_resize(image)
    s = math.sqrt(0.9)
    in_y = (1 - s) / 2 * 223 + np.arange(224) * s  # y1·(H − 1) + y·(y2 − y1)(H − 1)/(224 − 1)
    # value in_y/255 (linear), back to uint8 as floor(v · 255.5): 5.72 → 5, 6.67 → 6, ...
    expected = np.floor(in_y / 255 * 255.5).astype(np.uint8)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, 0, 0], expected)
    assert (out == out[:, :1, :1]).all()  # constant along the rows, same in every channel
    assert out[0, 0, 0] == 5 and out[-1, 0, 0] == 217


def test_center_crop_resize_keeps_a_constant_image_constant():
    for value in (0, 1, 128, 254, 255):
        out = P.center_crop_resize(np.full((224, 224, 3), value, np.uint8))
        assert np.all(out == value), value


# --- JPEG ----------------------------------------------------------------------------------------

def _decoders():
    yield "opencv"
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return
    yield "simplejpeg"


@pytest.mark.parametrize("decoder", list(_decoders()))
def test_jpeg_round_trip_keeps_gray_exact_and_colours_in_order(decoder):
    gray = np.full((256, 256, 3), 77, np.uint8)
    out = P.jpeg_roundtrip(gray, decoder=decoder)
    assert out.shape == gray.shape and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, gray)  # DC only, Cb = Cr = 128: nothing to lose
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[:] = (200, 30, 90)
    out = P.jpeg_roundtrip(colour, decoder=decoder)
    # flat: the loss is the YCbCr round trip's rounding only; and R stays R (no BGR mix-up)
    assert np.abs(out.astype(int) - colour).max() <= 2
    yy, xx = np.mgrid[0:64, 0:96]
    smooth = np.stack([2 * xx, 3 * yy, 100 + 40 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], axis=2).astype(np.uint8)
    out = P.jpeg_roundtrip(smooth, decoder=decoder)
    assert out.shape == smooth.shape
    mse = np.mean((out.astype(float) - smooth) ** 2)
    assert 0 < mse and 10 * math.log10(255 ** 2 / mse) > 30  # lossy, but quality 95
    assert np.array_equal(P.jpeg_roundtrip(smooth, decoder=decoder), out)  # deterministic


def test_jpeg_decoder_choice():
    assert P.default_jpeg_decoder() in P.JPEG_DECODERS
    with pytest.raises(ValueError, match="decoder"):
        P.jpeg_roundtrip(np.zeros((8, 8, 3), np.uint8), decoder="pil")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        P.jpeg_roundtrip(np.zeros((8, 8), np.uint8))


# --- the chain and the processor ----------------------------------------------------------------

def test_libero_pipeline_is_the_chain_of_the_three_steps():
    image = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = P.libero_image_pipeline(image, jpeg_decoder="opencv")
    chained = P.center_crop_resize(P.resize_lanczos3(P.jpeg_roundtrip(image, decoder="opencv"), 224), 0.9, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and np.array_equal(out, chained)
    gray = np.full((256, 256, 3), 140, np.uint8)
    assert np.all(P.libero_image_pipeline(gray) == 140)


def test_processor_libero_pipeline_then_siglip_normalization_only():
    cfg = tiny.config()
    size = cfg.vision.image_size
    processor = BitVLAProcessor(cfg, tiny.tokenizer(), image_pipeline="libero")
    image = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = processor.preprocess_image(image)
    expected = torch.from_numpy(P.libero_image_pipeline(image, size=size)).permute(2, 0, 1).float() / 127.5 - 1
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert torch.equal(x, expected)
    # mono and RGBA inputs become RGB first
    mono = image[:, :, 0]
    assert torch.equal(processor.preprocess_image(mono),
                       processor.preprocess_image(np.repeat(mono[:, :, None], 3, axis=2)))
    rgba = np.concatenate([image, np.full((256, 256, 1), 9, np.uint8)], axis=2)
    assert torch.equal(processor.preprocess_image(rgba), x)
    # the siglip pipeline is unchanged and differs
    assert not torch.equal(BitVLAProcessor(cfg, tiny.tokenizer()).preprocess_image(image), x)
    with pytest.raises(ValueError, match="image_pipeline"):
        BitVLAProcessor(cfg, tiny.tokenizer(), image_pipeline="tf")


def test_config_and_predictor_carry_the_image_pipeline(tmp_path):
    from bitvla_ros.model.checkpoint import convert
    from bitvla_ros.model.predict import BitVLAPredictor

    cfg = tiny.config()
    cfg.image_pipeline = "libero"
    assert BitVLAConfig.from_dict(cfg.to_dict()).image_pipeline == "libero"
    assert BitVLAConfig.from_dict(tiny.config().to_dict()).image_pipeline == "siglip"
    bad = cfg.to_dict()
    bad["bitvla_ros"]["image_pipeline"] = "jpeg"
    with pytest.raises(ConfigError, match="image_pipeline"):
        BitVLAConfig.from_dict(bad)

    published = tiny.write_published_checkpoint(tmp_path / "published")  # no bitvla_ros section: siglip
    assert BitVLAPredictor.from_pretrained(published, backend="reference").processor.image_pipeline == "siglip"
    assert BitVLAPredictor.from_pretrained(published, backend="reference",
                                           image_pipeline="libero").processor.image_pipeline == "libero"
    packed = tmp_path / "packed"
    convert(published, packed)
    written = json.loads((packed / "config.json").read_text())
    assert written["bitvla_ros"]["image_pipeline"] == "siglip"
    written["bitvla_ros"]["image_pipeline"] = "libero"  # what a model evaluated with --protocol libero carries
    (packed / "config.json").write_text(json.dumps(written))
    assert BitVLAPredictor.from_pretrained(packed, backend="reference").processor.image_pipeline == "libero"
    assert BitVLAPredictor.from_pretrained(packed, backend="reference",
                                           image_pipeline="siglip").processor.image_pipeline == "siglip"
