"""Generated data sets: data, not training. ``scenes`` draws the captioned scenes that training reads as
shards and that evaluation and segmentation score as held-out images with masks (docs/training.md,
"Scenes: segmentation from captions").

This package sits below ``train``, ``evaluation`` and ``segmentation``: each of them may import it, it
imports none of them, and it needs no extra at import (the shard writer asks for webdataset, the
``train`` extra, when it runs).
"""
