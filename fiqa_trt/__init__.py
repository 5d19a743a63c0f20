"""fiqa-trt: face image quality assessment by embedding stability under perturbations.

Importing the package opts the process out of the usage telemetry of the libraries it uses (`network.py`), so that
fiqa-trt opens no network connection the user did not ask for."""

from fiqa_trt import network
from fiqa_trt.errors import FiqaError

network.no_telemetry()

__version__ = "0.1.0"

__all__ = ["FiqaError", "__version__"]
