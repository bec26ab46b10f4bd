"""The BitVLA model: BitLinear, config, vision encoder, BitNet LLM, heads, processor, checkpoints."""
