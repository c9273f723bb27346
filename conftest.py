"""Root conftest: makes the plugin usable from a plain checkout.

The plugin is normally loaded through its pytest11 entry point
(`pip install -e .`). From a checkout where it is not installed, load it
from plugins/ instead, so `pytest` still works.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("immutable_infra") is None:
    sys.path.insert(0, str(Path(__file__).parent / "plugins"))
    pytest_plugins = ["immutable_infra.plugin"]
