"""ONNX graph tools and exporters: dynamic batch rewriting, model-config metadata (`graph`), observer outputs
(`observers`: intermediate layers reduced inside the graph), dlib's ResNet as ONNX (`dlib_resnet`), the checkpoint
exporter and the importer of ONNX files as they are (`export`, `checkpoints`, `nets/`, `fp16`; the `export` command
in `cli`) and a small ONNX -> PyTorch importer (`onnx_to_torch`); the only code that imports torch (lazily).
"""
