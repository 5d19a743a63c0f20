"""Imported at start-up by a Python process that has this folder on PYTHONPATH (`tests.hooks.hooked`): installs the
test hook that $FIQA_TEST_HOOK names, a module of this folder (`dali_pause`, `stuck_call`) whose `install()` patches
a module of the product's dependencies right after its first import (`patching.after_import`)."""

from __future__ import annotations

import importlib
import os


if os.environ.get("FIQA_TEST_HOOK"):
    importlib.import_module(os.environ["FIQA_TEST_HOOK"]).install()
