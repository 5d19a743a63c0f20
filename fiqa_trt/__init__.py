"""fiqa-trt: face image quality assessment by embedding stability under perturbations."""

from fiqa_trt.errors import FiqaError

__version__ = "0.1.0"

__all__ = ["FiqaError", "__version__"]
