"""PyTorch runner for the checkpoints `fiqa_trt.onnx_export` loads: the same `embed` interface as the ONNX runners.

Owns: building the network from a checkpoint (`onnx_export.export.load_network`: same architectures, same strict
loading), the model's normalisation (read from `config` at call time, so overrides set after loading apply), and
on CUDA: FP16 autocast, channels-last memory format and optional CUDA graphs (one captured graph per power-of-two
batch bucket, inputs padded to the bucket and copied into the graph's static input tensor).

On a CUDA device `embed` also takes CuPy arrays (the GPU pipeline's output) and returns CuPy arrays, through DLPack
on the caller's CuPy stream. `load_runner` opens a checkpoint (.pth/.pt/.ckpt/.bin) with this runner.

Tested here on device="cpu" only (float32, against ONNX Runtime on the exported ONNX). The CUDA path (autocast,
CUDA graphs, CuPy hand-over) has NOT been executed on a GPU yet; `benchmarks/device_check.py` measures it.
"""

from __future__ import annotations

import warnings

import numpy as np

from fiqa_trt.weights.model_config import ModelConfig
from fiqa_trt.engine.runners.base import Runner, power_of_two_bucket
from fiqa_trt.errors import FiqaError


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, net, config: ModelConfig, device: str = "cpu", fp16: bool | None = None,
                 channels_last: bool = True, cuda_graphs: bool = False, max_batch: int = 256, bf16: bool = False):
        """fp16 (default on CUDA) or bf16: autocast to that type on a CUDA device; neither: fp32."""
        from fiqa_trt.onnx_export.checkpoints import require_torch

        torch = self.torch = require_torch()
        if not (device == "cpu" or device.startswith("cuda")):
            raise FiqaError(f"device must be 'cpu' or 'cuda[:N]', not {device!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FiqaError(f"device {device}: PyTorch sees no CUDA device (torch {torch.__version__})")
        self.device, self.config, self.max_batch = device, config, max_batch
        cuda = device.startswith("cuda")
        self.fp16 = (cuda and not bf16) if fp16 is None else fp16
        if self.fp16 and bf16:
            raise FiqaError("choose fp16 or bf16, not both")
        if (self.fp16 or bf16) and not cuda:
            raise FiqaError("fp16 autocast is for CUDA devices (bf16 too); on the CPU use fp32")
        self.autocast = torch.float16 if self.fp16 else (torch.bfloat16 if bf16 else None)
        if cuda_graphs and not cuda:
            raise FiqaError("CUDA graphs need a CUDA device")
        self.precision = "fp16" if self.fp16 else ("bf16" if bf16 else "fp32")
        self.cuda_graphs = cuda_graphs
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.eval().to(device=device, memory_format=self.memory_format)
        self._graphs: dict[int, tuple] = {}  # bucket -> (graph, static uint8 input, static output)
        self._norm_key = self._norm = None  # the normalisation tensors of `config`, made at call time

    def _normalisation(self):
        """(mean, std) tensors of the current `config` (overrides applied after __init__, like --mean/--std on a
        checkpoint, take effect); remade, and the CUDA graphs that captured the old ones dropped, when it changes."""
        key = (tuple(self.config.mean), tuple(self.config.std))
        if key != self._norm_key:
            torch = self.torch
            self._norm = tuple(torch.tensor(v, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) for v in key)
            self._norm_key = key
            self._graphs.clear()
        return self._norm

    def _forward(self, pixels):
        """uint8 (B, H, W, 3) tensor on the device -> float32 (B, D)."""
        torch = self.torch
        x = pixels.permute(0, 3, 1, 2).float()
        mean, std = self._norm
        x = ((x - mean) / std).contiguous(memory_format=self.memory_format)
        with torch.autocast("cuda", dtype=self.autocast or torch.float16, enabled=self.autocast is not None):
            out = self.net(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float().reshape(len(out), -1)

    def _graphed(self, chunk):
        torch = self.torch
        bucket = power_of_two_bucket(len(chunk), 1, self.max_batch)
        if bucket not in self._graphs:
            static = torch.zeros((bucket, *chunk.shape[1:]), dtype=torch.uint8, device=self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture (cuDNN algorithm choice, allocator)
                    self._forward(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads keep using CUDA
                out = self._forward(static)
            self._graphs[bucket] = (graph, static, out)
        graph, static, out = self._graphs[bucket]
        static[: len(chunk)].copy_(chunk)
        graph.replay()
        return out[: len(chunk)]

    def _embed_tensor(self, images):
        """uint8 (B, H, W, 3) torch tensor -> float32 (B, D) on self.device, in max_batch chunks."""
        torch = self.torch
        self._normalisation()  # outside any graph capture
        outs = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            if chunk.device.type != "cuda" and self.device != "cpu":
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            out = self._graphed(chunk) if self.cuda_graphs else self._forward(chunk)
            outs.append(out.clone() if self.cuda_graphs else out)  # a graph's output buffer is reused
        if not outs:
            return torch.zeros((0, self.config.embedding_size), dtype=torch.float32, device=self.device)
        return torch.cat(outs)

    def _embed(self, batch):
        """NumPy uint8 (B, H, W, 3) -> NumPy float32 (B, D); a CuPy array on this runner's GPU -> a CuPy array,
        with no host copy (DLPack both ways, run on the caller's current CuPy stream)."""
        torch = self.torch
        if type(batch).__module__.startswith("cupy"):
            import cupy

            if self.device == "cpu":
                raise FiqaError("this PyTorch runner is on the CPU: give it NumPy arrays")
            caller = cupy.cuda.get_current_stream()
            with torch.cuda.device(self.device):
                stream = torch.cuda.ExternalStream(caller.ptr) if caller.ptr else torch.cuda.default_stream()
            with torch.inference_mode(), torch.cuda.device(self.device), torch.cuda.stream(stream):
                out = self._embed_tensor(torch.from_dlpack(batch.astype(cupy.uint8, copy=False)))
                return cupy.from_dlpack(out)
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        with warnings.catch_warnings():  # the pipeline's zero-copy output is read-only; it is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images = torch.from_numpy(batch)
        with torch.inference_mode():
            return self._embed_tensor(images).cpu().numpy()


def load_torch_runner(checkpoint, arch="auto", device: str = "cpu", fp16: bool | None = None,
                      channels_last: bool = True, cuda_graphs: bool = False, max_batch: int = 256) -> TorchRunner:
    """A TorchRunner for a checkpoint `fiqa-trt export` reads (arch: a name, a zoo.Arch, or auto)."""
    from fiqa_trt.onnx_export.export import load_network

    net, prepared = load_network(checkpoint, arch)
    config = ModelConfig.from_dict(prepared.arch.model_config(), source="checkpoint")
    return TorchRunner(net, config, device=device, fp16=fp16, channels_last=channels_last, cuda_graphs=cuda_graphs,
                       max_batch=max_batch)


def from_network(net, arch, **options) -> TorchRunner:
    """A TorchRunner for a network already built (benchmarks: random weights, no checkpoint file)."""
    return TorchRunner(net, ModelConfig.from_dict(arch.model_config(), source="network"), **options)
