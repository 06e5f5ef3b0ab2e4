"""Facts every room of the package shares, each written once: ``distributed`` (rank, world size, joining
torchrun's process group), ``files`` (atomic file writes), ``precision`` (autocast dtype names).

These modules import torch and the standard library only, nothing of the package, so the models, the
pipelines and the CLI can all import them without bending the import direction.
"""
