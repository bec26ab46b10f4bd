"""Training loops: OFT fine-tuning and vision-encoder distillation."""
