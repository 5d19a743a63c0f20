"""Checkpoint -> ONNX export with the model config in the metadata, and the parity check that accepts it.

`export_checkpoint` builds the network (`nets/`), loads the checkpoint strictly (`checkpoints.prepare`), exports it
with `torch.onnx.export` (dynamic batch, opset `DEFAULT_OPSET`), runs `onnx.checker`, optionally converts it to FP16
(`fp16.convert_to_fp16`), writes the model config (colour order, mean/std in 0-255 units, input size, embedding
size, whether the output is normalised) with `graph.write_metadata`, and accepts the file only if ONNX Runtime
matches PyTorch float32 on random images (cosine per embedding >= 0.99999, or >= 0.999 for FP16). The graph's
input is the normalised float NCHW tensor; runners prepend the normalisation from the metadata.

`import_onnx` takes an ONNX file as it is (insightface model zoo: `w600k_r50.onnx`, ...), detects whether the
graph normalises its input itself (older MXNet conversions start with Sub and Mul: then it takes raw 0-255 pixels),
makes its batch dynamic and writes the same metadata.

torch is imported lazily (`checkpoints.require_torch`), so nothing here loads it until an export runs.
"""

from __future__ import annotations

import importlib
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from fiqa_trt import __version__
from fiqa_trt.files import sha256_of
from fiqa_trt.errors import FiqaError
from fiqa_trt.onnx_export import checkpoints, graph
from fiqa_trt.onnx_export.graph import ort_session
from fiqa_trt.onnx_export import fp16 as fp16_convert
from fiqa_trt.weights import zoo

log = logging.getLogger("fiqa_trt")

DEFAULT_OPSET = 20  # the highest the TorchScript exporter writes; ONNX Runtime and TensorRT 10+ parse it
MIN_OPSET = 17
FP32_MIN_COSINE = 0.99999
FP16_MIN_COSINE = 0.999
INPUT_NAME = "input"


@dataclass
class ExportResult:
    path: Path
    arch: str
    config: dict  # what was written to the metadata
    precision: str  # fp32 | fp16
    min_cosine: float | None  # ONNX Runtime vs PyTorch float32 (or vs the original ONNX graph), worst sample
    aux_max_abs_diff: dict = field(default_factory=dict)  # per extra output
    notes: list = field(default_factory=list)  # automatic fixes made while loading the checkpoint
    seconds: float = 0.0



# ---------------------------------------------------------------------------------------------------- networks


def build_network(arch: zoo.Arch, device: str | None = None):
    """The network of `arch` in eval mode (on the 'meta' device: shapes only, no memory, when asked)."""
    torch = checkpoints.require_torch()
    module_name, class_name = arch.fam.net.split(":")
    cls = getattr(importlib.import_module(f"fiqa_trt.onnx_export.nets.{module_name}"), class_name)
    with torch.device(device or "cpu"):
        net = cls(**arch.kwargs)
    return net.eval()


def load_network(checkpoint: str | Path, arch: str | zoo.Arch = "auto"):
    """(network with the checkpoint's weights, checkpoints.Prepared), loaded strictly."""
    path = Path(checkpoint)
    obj = checkpoints.read_checkpoint(path)
    skeletons = {}

    def shapes(a: zoo.Arch) -> dict:
        skeletons[a.name] = build_network(a, device="meta")
        return {k: tuple(v.shape) for k, v in skeletons[a.name].state_dict().items()}

    prepared = checkpoints.prepare(obj, arch, shapes, name=path.name)
    for note in prepared.notes:
        log.warning("%s: %s", path.name, note)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in prepared.state_dict.items()}
    net = skeletons[prepared.arch.name]
    net.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in list(net.parameters()) + list(net.buffers())):  # every tensor must come from the file
        raise FiqaError(f"{path.name}: some tensors of {prepared.arch.name} were not loaded")
    return net.eval(), prepared


class _Outputs:
    """Wraps a network so that it returns the chosen elements of its output tuple (torch imported lazily)."""

    @staticmethod
    def make(net, take: tuple[int, ...]):
        torch = checkpoints.require_torch()

        class Picked(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                out = self.net(x)
                out = out if isinstance(out, tuple) else (out,)
                picked = tuple(out[i] for i in take)
                return picked[0] if len(picked) == 1 else picked

        return Picked().eval()


# ---------------------------------------------------------------------------------------------------- checks


def random_inputs(config: dict, n: int = 4, seed: int = 0) -> np.ndarray:
    """Random 0-255 images normalised as the model expects: float32 (n, 3, H, W)."""
    h, w = config["input_size"]
    pixels = np.random.default_rng(seed).integers(0, 256, (n, 3, h, w)).astype(np.float32)
    mean = np.asarray(config["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config["std"], np.float32).reshape(1, 3, 1, 1)
    return (pixels - mean) / std


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def run_onnx(model, x: np.ndarray, batch: int | None = None) -> list[np.ndarray]:
    """All outputs of `model` (a ModelProto, bytes or an open session) on `x`, run `batch` samples at a time."""
    session = model if hasattr(model, "run") else ort_session(model)
    name = session.get_inputs()[0].name
    half = session.get_inputs()[0].type == "tensor(float16)"
    step = batch or len(x)
    parts = [session.run(None, {name: x[i:i + step].astype(np.float16) if half else x[i:i + step]})
             for i in range(0, len(x), step)]
    return [np.concatenate([np.asarray(p[k], np.float32) for p in parts]) for k in range(len(parts[0]))]


# ---------------------------------------------------------------------------------------------------- export


def default_output(source: Path, arch: str, fp16: bool) -> Path:
    suffix = ".fp16.onnx" if fp16 else ".onnx"
    stem = source.stem if source.suffix != ".onnx" else f"{source.stem}.fiqa"
    return Path.cwd() / (f"{stem}-{arch}{suffix}" if source.suffix != ".onnx" else f"{stem}{suffix}")


def export_checkpoint(checkpoint: str | Path, arch: str | zoo.Arch = "auto", out: str | Path | None = None,
                      fp16: bool = False, fp16_io: bool = False, aux: bool = False, opset: int = DEFAULT_OPSET,
                      check: bool = True, samples: int = 4, name: str | None = None,
                      preprocessing: dict | None = None, recipe: dict | None = None) -> ExportResult:
    """Export a PyTorch checkpoint (or an ONNX file, see `import_onnx`) to ONNX with fiqa-trt metadata.
    `preprocessing` (color, mean, std, input_size): stated values that replace the architecture's; `recipe`: a
    quality recipe (`Recipe.to_dict`) written with them, the model's default wherever the file goes."""
    started = time.perf_counter()
    source = Path(checkpoint)
    if source.suffix.lower() == ".onnx":
        if not (isinstance(arch, str) and arch.strip().lower() in ("auto", zoo.ONNX_ARCH)):
            raise FiqaError(f"{source.name} is an ONNX file: it is taken as it is (--arch auto), not rebuilt as {arch}")
        if aux:
            raise FiqaError(f"{source.name} is an ONNX file: its outputs are kept as they are (no --aux)")
        return import_onnx(source, out, fp16=fp16, fp16_io=fp16_io, check=check, samples=samples, name=name,
                           preprocessing=preprocessing, recipe=recipe)
    if opset < MIN_OPSET or opset > 20:
        raise FiqaError(f"--opset {opset}: the exporter writes opsets {MIN_OPSET} to 20")
    if fp16_io and not fp16:
        raise FiqaError("--fp16-io needs --fp16")
    torch = checkpoints.require_torch()
    net, prepared = load_network(source, arch)
    a = prepared.arch
    names = list(a.fam.outputs[:1])
    if aux:
        if len(a.fam.outputs) < 2:
            raise FiqaError(f"{a.name} has no second output to export (--aux is for AdaFace's norm and CR-FIQA's "
                            "quality score)")
        names = list(a.fam.outputs)
    wrapper = _Outputs.make(net, tuple(range(len(names))))
    config = stated(a.model_config(), preprocessing)
    x = random_inputs(config, max(samples, 2))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.from_numpy(x[:2]),), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=names, do_constant_folding=True,
                          dynamic_axes={n: {0: graph.BATCH_DIM} for n in [INPUT_NAME, *names]})
    model = _tidy(onnx.load_from_string(buffer.getvalue()))
    if fp16:
        model = fp16_convert.convert_to_fp16(model, keep_io_types=not fp16_io)
    meta = {**config, "name": name or a.name, "arch": a.name, "family": a.family, "outputs": names,
            "precision": "fp16" if fp16 else "fp32", "io_dtype": "float16" if fp16_io else "float32",
            "checkpoint": source.name, "checkpoint_sha256": sha256_of(source), "opset": opset,
            "exporter": f"fiqa-trt {__version__}, torch {torch.__version__.split('+')[0]} (TorchScript exporter)"}
    if recipe:
        meta["recipe"] = recipe
    graph.write_metadata(model, meta)
    model.producer_name, model.producer_version = "fiqa-trt", __version__
    model.doc_string = f"{a.fam.title}: {a.name} from {source.name}"
    data = model.SerializeToString()  # once: checked, run and saved as these bytes
    del model
    onnx.checker.check_model(data, full_check=True)

    min_cos, aux_diff = None, {}
    if check:
        with torch.no_grad():
            want = wrapper(torch.from_numpy(x))
        want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
        got = run_onnx(data, x, batch=3)  # 3: not the traced batch of 2, so the batch must be dynamic
        min_cos, aux_diff = _compare(want, got, names, fp16, f"{source.name} as {a.name}")
    path = _save(data, out or default_output(source, a.name, fp16), source)
    return ExportResult(path, a.name, meta, "fp16" if fp16 else "fp32", min_cos, aux_diff, prepared.notes,
                        time.perf_counter() - started)


def _compare(want: list, got: list, names: list, fp16: bool, what: str) -> tuple[float, dict]:
    threshold = FP16_MIN_COSINE if fp16 else FP32_MIN_COSINE
    if len(got) != len(want) or got[0].shape != want[0].shape:
        raise FiqaError(f"{what}: the ONNX outputs {[g.shape for g in got]} differ from PyTorch's "
                        f"{[w.shape for w in want]}")
    cos = cosines(want[0], got[0])
    if not np.isfinite(cos).all() or cos.min() < threshold:
        raise FiqaError(f"{what}: ONNX Runtime does not match PyTorch: cosine per embedding min {np.nanmin(cos):.7f} "
                        f"< {threshold} ({'fp16' if fp16 else 'fp32'}); the file was not written")
    aux = {}
    for n, w, g in zip(names[1:], want[1:], got[1:]):
        aux[n] = float(np.abs(w - g).max())
        scale = float(np.abs(w).max()) or 1.0
        if aux[n] > (2e-2 if fp16 else 1e-4) * scale:
            raise FiqaError(f"{what}: output '{n}' differs from PyTorch by {aux[n]:.3g} (scale {scale:.3g})")
    return float(cos.min()), aux


def _tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Exact clean-ups: drop Identity nodes and initializers no node reads."""
    g = model.graph
    outputs = {o.name for o in g.output}
    rename = {}
    kept = []
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    used = {n for node in kept for n in node.input} | outputs
    del g.node[:]
    g.node.extend(kept)
    unused = [i for i in g.initializer if i.name not in used]
    for init in unused:
        g.initializer.remove(init)
    return model


def _save(model: onnx.ModelProto | bytes, out: str | Path, source: Path) -> Path:
    out = Path(out)
    if out.resolve() == source.resolve():
        raise FiqaError(f"--out {out} is the input file: choose another name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------------- ONNX import


def stated(config: dict, preprocessing: dict | None) -> dict:
    """`config` with the stated preprocessing values (color, mean, std, input_size; None: not stated) put in,
    checked as a ModelConfig checks them; one value of mean or std stands for every channel (three are written)."""
    from fiqa_trt.weights.model_config import ModelConfig

    given = {k: v for k, v in (preprocessing or {}).items() if v is not None}
    merged = {**config, **given}
    if isinstance(merged.get("color"), str):
        merged["color"] = merged["color"].upper()
    checked = ModelConfig.from_dict({**merged, "input_size": merged.get("input_size") or (1, 1)}, "stated")
    return {**merged, "color": checked.color, "mean": checked.mean, "std": checked.std}


def import_onnx(path: str | Path, out: str | Path | None = None, fp16: bool = False, fp16_io: bool = False,
                check: bool = True, samples: int = 4, name: str | None = None, preprocessing: dict | None = None,
                recipe: dict | None = None) -> ExportResult:
    """An ONNX FR model as it is, re-labelled: a dynamic batch and fiqa-trt metadata. Its preprocessing, in order:
    `preprocessing` (stated values, per field), the file's own fiqa-trt metadata, the model registry (a known file,
    whose default recipe comes along too), the ArcFace convention (mean 0 and std 1 where the graph normalises its
    input itself). `recipe`: a quality recipe (`Recipe.to_dict`) to write instead of the one found."""
    from fiqa_trt.weights import registry

    started = time.perf_counter()
    path = Path(path)
    fr = graph.load_fr_graph(path)
    original, layout, hw, out_dims = fr.model, fr.layout, fr.hw, fr.output_dims
    digest = sha256_of(path)
    own, known = graph.read_metadata(original), registry.lookup(digest)
    self_normalising = graph.graph_normalises_input(original)
    mean, std = (0.0, 1.0) if self_normalising else (127.5, 127.5)
    config = dict(input_size=tuple(hw) if fr.fixed_size else None, color="RGB", mean=(mean,) * 3, std=(std,) * 3,
                  embedding_size=out_dims[-1] if isinstance(out_dims[-1], int) else 0, normalized_output=False,
                  layout=layout, name=name or path.stem)
    found = "the ArcFace convention" if not self_normalising else "the graph's own normalisation"
    if own is not None:
        config |= {k: v for k, v in own.items() if k in config}
        recipe, found = recipe or own.get("recipe"), "its fiqa-trt metadata"
    elif known is not None and known.config:
        config |= {k: v for k, v in known.config.items() if k in config} | {"name": name or known.name}
        recipe, found = recipe or (dict(known.recipe) if known.recipe else None), f"the registry ({known.name})"
    config = stated(config, preprocessing)
    if config["input_size"] is None:
        raise FiqaError(f"{path.name}: the input size is not fixed in the graph ({fr.hw}): give --input-size")
    model, rewritten = graph.make_batch_dynamic(original)
    if fp16_io and not fp16:
        raise FiqaError("--fp16-io needs --fp16")
    if fp16:
        model = fp16_convert.convert_to_fp16(model, keep_io_types=not fp16_io)
    meta = {**config, "arch": zoo.ONNX_ARCH, "family": "onnx", "outputs": [o.name for o in model.graph.output],
            "precision": "fp16" if fp16 else "fp32", "io_dtype": "float16" if fp16_io else "float32",
            "checkpoint": path.name, "checkpoint_sha256": digest,
            "graph_normalises_input": self_normalising, "exporter": f"fiqa-trt {__version__} (ONNX import)"}
    if recipe:
        meta["recipe"] = recipe
    graph.write_metadata(model, meta)
    onnx.checker.check_model(model)
    min_cos = None
    if check:
        x = random_inputs(config, max(samples, 2)) if layout == "NCHW" else None
        if x is None:
            x = random_inputs(config, max(samples, 2)).transpose(0, 2, 3, 1).copy()
        fixed = graph.fixed_batch_size(original)
        want = run_onnx(original, x, batch=fixed)[0]
        got = run_onnx(model, x, batch=3)[0]
        min_cos, _ = _compare([want], [got], ["embedding"], fp16, f"{path.name} (re-labelled)")
    saved = _save(model, out or default_output(path, zoo.ONNX_ARCH, fp16), path)
    notes = ["the graph normalises its input itself (Sub/Mul first): metadata mean 0, std 1"] if self_normalising \
        else []
    given = sorted(k for k, v in (preprocessing or {}).items() if v is not None)
    notes.append(f"preprocessing from {found}" + (f", {', '.join(given)} as stated" if given else ""))
    if recipe:
        notes.append(f"recipe '{recipe.get('name')}' written into the metadata")
    if rewritten or graph.fixed_batch_size(original):
        notes.append(f"fixed batch {graph.fixed_batch_size(original)} made dynamic ({rewritten} reshape(s))")
    return ExportResult(saved, zoo.ONNX_ARCH, meta, "fp16" if fp16 else "fp32", min_cos, {}, notes,
                        time.perf_counter() - started)
