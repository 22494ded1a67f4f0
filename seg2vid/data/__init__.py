"""Data: SynthCity (procedural street scenes with ground-truth motion) and Cityscapes sequences."""
