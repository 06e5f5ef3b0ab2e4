"""Does segmentation emerge? A trained GroupViT against baselines on the held-out scenes, with group usage.

``scene_emergence(model, data_root)`` (``metrics.py``) scores one model on a folder of held-out scenes
(``prepare-data scenes``: ``images/*.png`` + ``masks/*.png``; docs/training.md, "Scenes:
segmentation from captions") at the given test-time settings (the scenes preset's where none are
given; ``groupvit-fast eval emergence``, ``command.py``, applies the checkpoint's, as ``eval seg``
does) and returns, besides the protocol's mIoU (``GroupViTSegmenter``, soft maps, background by
threshold):

* ``no_grouping_mIoU``: each image's top zero-shot class (from the pooled image embedding) painted
  on every pixel the same pipeline calls foreground: what the image-level classifier alone gives;
* ``window_no_grouping_mIoU``: the same, with the class of each window instead of the whole image:
  every window's own zero-shot class probabilities (its pooled embedding) spread over the window,
  averaged where windows overlap, the best class painted on the same foreground: what sliding-window
  classification gives without the segments, a baseline that matters once ``short_side`` enlarges
  the scene so much that a window holds only part of it;
* ``window_classifier_mIoU``: those averaged window probabilities alone, with no segment anywhere:
  the best class where its probability reaches ``bg_thresh``, background elsewhere (sliding-window
  zero-shot classification, the foreground included);
* ``all_background_mIoU``: every pixel background;
* ``groups``: per grouping stage, the mean number of groups that receive at least one token of an
  image under the hard (argmax) assignment in eval mode, and the number of groups available: a
  collapsed model routes every token to one or two groups;
* ``image_top1_present``: the fraction of images whose top zero-shot class is drawn in them;
* ``oracle_grouping_mIoU``: per grouping stage, the mIoU when each group of the stage's hard
  assignment (stages chained, so a stage-2 group covers the patches of its stage-1 groups) is
  painted with the ground-truth class most of its pixels have: how well the groups separate the
  classes, whatever the text side says (an upper bound for any labelling of those groups);
* the image-level class, ``groups`` and ``oracle_grouping_mIoU`` come from one pass over each whole
  image resized to the window size (``crop_size``, the resolution the model was trained at), not
  from the windows of the prediction, which at a ``short_side`` above ``crop_size`` each see a
  part of the scene enlarged;
* ``patch_grid_mIoU``: each patch of the grid the windows see (the image resized to ``short_side``,
  in patches) painted with its majority class: the most any grouping of that grid can reach (at
  64 px with 8 px patches, far below 100).

All mIoUs are in percent, over the preset's classes (7 for scenes, background included), exactly as
``eval seg`` counts. ``emergence_figure`` (``figure.py``) draws the groups of a few scenes.
"""

from .figure import emergence_figure
from .metrics import chained_group_ids, emergence_settings, group_usage, oracle_groupings, scene_emergence

__all__ = [
    "scene_emergence",
    "emergence_settings",
    "group_usage",
    "chained_group_ids",
    "oracle_groupings",
    "emergence_figure",
]
