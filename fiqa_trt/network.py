"""The network policy: fiqa-trt opens no network connection the user did not ask for. The only connections it
makes are those a command is given an address for (`weights fetch` downloads, `--ray-address`, `gate` streams,
`serve` listening, URIs as INPUT); the libraries it uses are kept from phoning home:

- OpenVINO's Python package sends usage telemetry to Google Analytics (from a forked process) when `openvino` is
  imported, and writes a client id under ~/intel, unless the `openvino_telemetry` module cannot be imported, when it
  uses its own no-op stub (openvino.tools.ovc.telemetry_stub). `no_telemetry` makes that import fail in this
  process (and in those forked from it; any other process that imports fiqa_trt does it too, Ray's workers
  included), before anything imports openvino; the user's own opt-in state (the consent file that
  OpenVINO's `opt_in_out --opt_out` writes) is neither read nor changed.
- ONNX Runtime's official Linux builds (1.29 and later) send usage telemetry to Microsoft (1DS: process, session
  and model events) and keep a device id and an event cache under ~/.cache/Microsoft, unless ORT_DISABLE_TELEMETRY=1
  is set before the runtime initialises (its documented full opt-out on non-Windows platforms).
- Ray collects usage statistics unless RAY_USAGE_STATS_ENABLED=0, which is set for the Ray instance the process
  starts (and so for its workers).

The environment variables are set in this process (and so for the processes it starts) unless the user set them.
"""

from __future__ import annotations

import os
import sys


def no_telemetry() -> None:
    """Opt this process (and the processes it starts) out of the libraries' telemetry; a module someone imported
    already is left as it is."""
    sys.modules.setdefault("openvino_telemetry", None)  # a None entry: `import openvino_telemetry` fails
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
