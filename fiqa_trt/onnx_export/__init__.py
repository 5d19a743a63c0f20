"""ONNX graph tools and exporters: dynamic batch rewriting, model-config metadata."""
