"""Test hook (tests/hooks/sitecustomize.py): three quarters through DALI's first registration of its operators (the
lazy import that the first pipeline build triggers), write the line "pausing DALI's operator registration" to
standard error and sleep up to a minute, once, so that a test can send a signal exactly while a DALI import is half
done; the registration then goes on. The operators are registered in sorted order (DALI's own order is a set's, so
it changes with the string hash seed), which makes what an interruption leaves behind the same in every run."""

from __future__ import annotations

import sys
import time

MARK = "pausing DALI's operator registration"
_paused: list[bool] = []


class _Pausing(list):
    def __iter__(self):
        for i, name in enumerate(list.__iter__(self)):
            if i == len(self) * 3 // 4 and not _paused:
                _paused.append(True)
                sys.stderr.write(MARK + "\n")
                sys.stderr.flush()
                time.sleep(60)
            yield name


def _patch(module) -> None:
    registered = module._all_registered_ops
    module._all_registered_ops = lambda *a, **k: _Pausing(sorted(registered(*a, **k)))


def install() -> None:
    from patching import after_import

    after_import("nvidia.dali.ops._registry", _patch)
