"""Test configuration: shared helpers importable as plain modules, the repo root kept off sys.path.

Run with ``pytest --import-mode=importlib`` (pytest.ini sets it) so that ``kernels/`` is never
imported as a top-level module named ``kernels`` (transformers probes for a package of that name);
the installed ``groupvit_fast`` (``pip install -e .``) is what the tests import.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Without a CUDA device the Triton kernels run in Triton's interpreter (slow, so the tests use small
# shapes). It must be chosen before the kernels are imported, i.e. here.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
