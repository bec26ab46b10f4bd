"""The published VLM's chat prompt for a question about images (docs/vqa.md, "How generation works").

BitVLA's checkpoints carry one chat template: a fixed system sentence, then `Role: content` turns
each closed by <|eot_id|>, then `Assistant: ` to open the answer. A user turn holds one
<|image_pad|> run per image (the processor's `<image>\\n` is absorbed into the run), then the
question. Generation stops at <|eot_id|> (end of the assistant's turn) or <|end_of_text|>.
"""

from __future__ import annotations

from bitvla_ros.model.config import BitVLAConfig
from bitvla_ros.model.tokenizer import SYSTEM_PROMPT

MAX_QUESTION_CHARS = 2000


def question_prompt_ids(tokenizer, config: BitVLAConfig, question: str, num_images: int = 1) -> list[int]:
    """[BOS] System…<eot> User: [image ×patches]×num_images question <eot> Assistant: """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty; ask something about the image, e.g. 'is the drawer open?'")
    text = question.strip()
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(text)} characters, more than the {MAX_QUESTION_CHARS} allowed")
    if num_images < 0:
        raise ValueError(f"num_images is {num_images}; pass 0 or more images")
    t = config.tokens
    encode = lambda s: tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    images = [t.image] * (config.vision.num_patches * num_images)
    return [t.bos, *encode(SYSTEM_PROMPT), t.eot, *encode("User: "), *images, *encode(text), t.eot,
            *encode("Assistant: ")]


def stop_ids(config: BitVLAConfig) -> tuple[int, ...]:
    return (config.tokens.eot, config.tokens.stop)
