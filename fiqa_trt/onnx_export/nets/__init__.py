"""PyTorch networks of the published face-recognition checkpoints, written here to load those files strictly.

Each module reproduces one family's parameter names, shapes, layer order and inference forward pass:
`iresnet` (insightface arcface_torch, MagFace, CR-FIQA), `adaface_ir` (AdaFace IR), `vit` (TransFace ViT). They
import torch at module level and are imported only by the exporter (`onnx_export.export`), never by scoring.
"""
