"""Real-time quality gating of camera streams: `streams` (sources and the bounded reader queue), `network` (RTSP and
other network streams read with PyAV), `tracking` (greedy IoU tracks), `gate` (detect, align, score in batches,
per-track best-shot decisions, JSON-lines events)."""
