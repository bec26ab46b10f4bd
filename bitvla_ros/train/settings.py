"""The settings of `bitvla train` and `bitvla distill`, one dataclass each.

Each field is declared once, with its default and help (``setting``); the CLI derives its flags
from them (bitvla_ros/arguments.py) and the run folder records them (training.json). Kept apart
from the training loops so that building the CLI does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitvla_ros.arguments import setting


@dataclass
class TrainConfig:
    """The settings of one training run; `bitvla train` has a flag for each (bitvla_ros/arguments.py)."""

    dataset: str | list[str] = setting(help="dataset folder (LeRobot layout); repeat to train on several recorded alike",
                                       action="append")
    output: str = setting(help="run folder: checkpoints, metrics, loss.png, model/")
    preset: str = setting("demo", "model size for a new model (demo, tiny, bitvla-3b)")
    init: str | None = setting(None, "start from this published-layout checkpoint (e.g. a BitVLA release) "
                                     "instead of a new model")
    steps: int = setting(5000, "optimizer steps")
    batch_size: int = setting(32, "samples per step, per process")
    lr: float = setting(5e-4, "peak learning rate (AdamW)")
    warmup: int = setting(200, "linear warm-up steps before the cosine decay")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    image_aug: bool = setting(True, "no crop and colour augmentation of the training images")
    vocab_size: int = setting(400, "tokenizer size for a new model")
    val_episodes: int = setting(0, "hold out the last N episodes for validation")
    save_every: int = setting(1000, "steps between checkpoints")
    keep_checkpoints: int = setting(2, "checkpoints kept in <output>/checkpoints, the latest ones (0 = every one, "
                                       "to choose among them with `bitvla select`)")
    log_every: int = setting(10, "steps between metric lines")
    num_workers: int = setting(1, "data loading processes")
    seed: int = setting(0, "seed of the model init, the sampling and the augmentation")
    resume: bool = setting(False, "continue from the latest checkpoint in --output")
    fp_vision: bool = setting(False, "keep the vision encoder in full precision (then make it 1.58-bit with "
                                     "`bitvla distill`)")
    device: str = setting("auto", "auto, cpu or cuda")
    threads: int = setting(0, "torch CPU threads per process (0 = torch's default)")
    notes: dict = setting(default_factory=dict, cli=False)  # free-form, written to training.json



@dataclass
class DistillConfig:
    """The settings of one distillation run; `bitvla distill` has a flag for each (bitvla_ros/arguments.py)."""

    model: str = setting(help="VLA checkpoint (published layout), e.g. trained with --fp-vision")
    output: str = setting(help="run folder: checkpoints, metrics, loss.png, model/")
    images: list[str] = setting(default_factory=list, help="image folders and/or recorded datasets to distill on",
                                nargs="*")
    dataset: str | list[str] | None = setting(None, "recorded dataset: adds the task (L1) loss (and its frames as "
                                                    "images); repeat for several", action="append")
    steps: int = setting(2000, "optimizer steps; 0 writes the encoder ternarized as it is (the baseline without "
                               "distillation)")
    batch_size: int = setting(32, "images (and task samples) per step")
    lr: float = setting(3e-4, "peak learning rate (AdamW)")
    warmup: int = setting(100, "linear warm-up steps before the cosine decay")
    align_weight: float = setting(1.0, "weight of the per-layer alignment loss")
    task_weight: float = setting(1.0, "weight of the task L1 loss (with --dataset)")
    save_every: int = setting(500, "steps between checkpoints")
    seed: int = setting(0, "seed of the sampling and the augmentation")
    resume: bool = setting(False, "continue from the latest checkpoint in --output")
    eval_images: int = setting(256, "held-out images for the agreement with the teacher (at most 256)")
