"""Test configuration: shared helpers importable as plain modules, the repo root kept off sys.path.

Run with ``pytest --import-mode=importlib`` (pytest.ini sets it) so that ``kernels/`` is never
imported as a top-level module named ``kernels`` (transformers probes for a package of that name);
the installed ``groupvit_fast`` (``pip install -e .``) is what the tests import.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
