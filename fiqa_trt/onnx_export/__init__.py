"""ONNX graph tools and exporters: dynamic batch rewriting, model-config metadata (`graph`), and the checkpoint
exporter (`export`, `checkpoints`, `nets/`, `fp16`, the `export` command in `cli`), the only code that imports torch
(lazily).
"""
