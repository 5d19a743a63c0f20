"""Reading published PyTorch checkpoints: safe loading, unwrapping, architecture recognition, strict key checks.

- `read_checkpoint` loads with `weights_only=True` (no code from the file runs). Objects of classes that are not
  installed here (a Lightning checkpoint's hyper-parameters, a training script's argparse namespace) load as inert
  placeholders, so an AdaFace `.ckpt` opens without PyTorch Lightning.
- `unwrap` finds the state dict: the file itself, or its 'state_dict' (Lightning, MagFace) / 'model' entry.
- `recognise` tells the architecture from key names and tensor shapes alone (`--arch auto`).
- `prepare` turns what the file holds into exactly the keys of the network: it strips the prefix the published
  format uses ('model.' for AdaFace, 'features.module.' for MagFace), drops training heads, and reports any other
  difference (a DataParallel 'module.' prefix, a Lightning checkpoint where a plain state dict was expected,
  missing or unexpected keys, shape mismatches) with a message that names the problem and the fix.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fiqa_trt.errors import FiqaError, require
from fiqa_trt.weights import zoo

log = logging.getLogger("fiqa_trt")


def require_torch():
    return require("torch", extra="export")


# ---------------------------------------------------------------------------------------------------- reading


def _placeholder(qualified: str):
    """A stand-in for a class that is not installed; unpickling it gives an inert OrderedDict (which the
    weights-only unpickler can fill with items and attributes)."""

    class Placeholder:
        def __new__(cls, *args, **kwargs):
            obj = OrderedDict()
            obj.__dict__["_fiqa_placeholder_for"] = qualified
            return obj

    module, _, name = qualified.rpartition(".")
    Placeholder.__module__, Placeholder.__name__, Placeholder.__qualname__ = module, name, name
    return Placeholder


def read_checkpoint(path: str | Path):
    """The object a .pth/.pt/.ckpt file holds, loaded without running code from it."""
    torch = require_torch()
    path = Path(path)
    if not path.is_file():
        raise FiqaError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # not torch.save's format: nothing to retry
            raise FiqaError(f"{path} is not a PyTorch checkpoint that torch.load can read "
                            f"({type(exc).__name__}: {str(exc)[:200]})") from None
        # else: classes that are not allowlisted; retry with placeholders below
    except Exception as exc:
        raise FiqaError(f"{path} is not a PyTorch checkpoint that torch.load can read "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([(_placeholder(name), name) for name in unknown]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FiqaError(f"{path}: cannot be loaded safely (weights only): {type(exc).__name__}: {str(exc)[:300]}. "
                        "If it holds a whole pickled model, load it in its own project and save "
                        "`torch.save(model.state_dict(), 'weights.pth')`") from None


# ---------------------------------------------------------------------------------------------------- unwrapping


@dataclass
class Container:
    kind: str  # "state dict", "Lightning checkpoint", "checkpoint dict"
    key: str | None = None  # the entry that holds the state dict
    top_keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return self.kind if self.key is None else f"{self.kind} (state dict in '{self.key}')"


def _is_state_dict(obj) -> bool:
    torch = require_torch()
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap(obj, name: str = "checkpoint") -> tuple[dict, Container]:
    if _is_state_dict(obj):
        return dict(obj), Container("state dict")
    if isinstance(obj, Mapping):
        top = sorted(str(k) for k in obj)
        lightning = "pytorch-lightning_version" in obj or "optimizer_states" in obj
        for key in ("state_dict", "model", "backbone", "model_state_dict", "net"):
            if _is_state_dict(obj.get(key)):
                return dict(obj[key]), Container("Lightning checkpoint" if lightning else "checkpoint dict", key, top)
        if getattr(obj, "__dict__", {}).get("_fiqa_placeholder_for"):
            raise FiqaError(f"{name} holds a pickled '{obj.__dict__['_fiqa_placeholder_for']}' object, not weights: "
                            "load it in its own project and save `torch.save(model.state_dict(), 'weights.pth')`")
        raise FiqaError(f"{name} is a dict without a state dict: its keys are {top[:12]}; expected tensors, or a "
                        "'state_dict' entry (Lightning / MagFace checkpoints)")
    torch = require_torch()
    if isinstance(obj, torch.nn.Module):
        raise FiqaError(f"{name} holds a whole nn.Module, not a state dict: save "
                        "`torch.save(model.state_dict(), 'weights.pth')` and export that")
    raise FiqaError(f"{name} holds a {type(obj).__name__}, not a state dict")


# ---------------------------------------------------------------------------------------------------- recognition

# per network layout: (anchor key, a second key that must sit beside it)
_LAYOUTS = {
    "iresnet": ("conv1.weight", "layer1.0.bn1.weight"),
    "adaface": ("input_layer.0.weight", "body.0.res_layer.0.weight"),
    "transface": ("patch_embed.proj.weight", "senet.0.weight"),
}
_LAYOUT_TEXT = ("insightface IResNet (conv1, layer1..layer4, fc, features), AdaFace IR (input_layer, body, "
                "output_layer), TransFace ViT (patch_embed, blocks, senet, feature)")
DATAPARALLEL = "module."


@dataclass
class Recognition:
    arch: zoo.Arch
    prefix: str  # the prefix of the network's keys in the file
    evidence: str  # in words, for messages


def _find_prefix(keys, anchor: str, partner: str) -> str | None:
    found = [k[: -len(anchor)] for k in keys if k.endswith(anchor) and (k == anchor or k[-len(anchor) - 1] == ".")]
    found = [p for p in found if p + partner in keys]
    return min(found, key=len) if found else None


def _count(keys, pattern_prefix: str) -> int:
    """How many distinct integer indices follow `pattern_prefix` ('layer1.' -> blocks of layer1)."""
    idx = set()
    for k in keys:
        if k.startswith(pattern_prefix):
            head = k[len(pattern_prefix):].split(".", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    return len(idx)


def recognise(sd: Mapping, container: Container | None = None) -> Recognition | None:
    """The architecture whose keys and shapes the state dict has, or None when it matches no known layout."""
    keys = set(sd)
    for layout, (anchor, partner) in _LAYOUTS.items():
        prefix = _find_prefix(keys, anchor, partner)
        if prefix is None:
            continue
        inner = {k[len(prefix):]: tuple(sd[k].shape) for k in keys if k.startswith(prefix)}
        outside = [k for k in keys if not k.startswith(prefix)]
        return _recognise_layout(layout, prefix, inner, outside, sd)
    return None


def _recognise_layout(layout, prefix, inner, outside, sd) -> Recognition:
    if layout == "iresnet":
        layers = tuple(_count(inner, f"layer{i}.") for i in range(1, 5))
        structure = dict(layers=layers)
        if (fc := inner.get("fc.weight")) and fc[0] != 512:
            structure["num_features"] = fc[0]
        if "qs.weight" in inner:
            family, why = "crfiqa", "an IResNet with CR-FIQA's quality head 'qs'"
        elif prefix.rstrip(".").split(".")[-2:] in (["features", "module"], ["module", "features"]) or (
                prefix in ("features.",) or any(k == "fc.weight" and len(sd[k].shape) == 2 for k in outside)):
            family, why = "magface", f"an IResNet under '{prefix}' beside MagFace's 'fc.weight' head"
        else:
            family, why = "arcface", "an insightface IResNet"
        why += f" with blocks per stage {list(layers)}"
    elif layout == "adaface":
        by_width: dict[int, int] = {}
        for i in range(_count(inner, "body.")):
            width = inner.get(f"body.{i}.res_layer.1.weight", (0,))[0]
            by_width[width] = by_width.get(width, 0) + 1
        units = tuple(by_width.get(w, 0) for w in (64, 128, 256, 512))
        structure = dict(units=units)
        if (lin := inner.get("output_layer.3.weight")) and lin[0] != 512:
            structure["embedding_size"] = lin[0]
        family, why = "adaface", f"an AdaFace IR network with units per stage {list(units)}"
    else:
        dim = inner["patch_embed.proj.weight"][0]
        depth = _count(inner, "blocks.")
        structure = dict(embed_dim=dim, depth=depth)
        if (feat := inner.get("feature.2.weight")) and feat[0] != 512:
            structure["num_features"] = feat[0]
        family, why = "transface", f"a TransFace ViT with width {dim} and depth {depth}"
    arch = zoo.derived_arch(family, **structure)
    return Recognition(arch, prefix, why)


# ---------------------------------------------------------------------------------------------------- preparing


@dataclass
class Prepared:
    arch: zoo.Arch
    state_dict: dict
    container: Container
    notes: list[str]  # automatic fixes, in words (shown as warnings)


def _fix_for(arch: zoo.Arch) -> str:
    return f"{arch.name} expects {arch.fam.checkpoint_format}"


def resolve_arch(sd: Mapping, container: Container, requested: str | zoo.Arch, name: str) -> tuple[zoo.Arch,
                                                                                                    Recognition | None]:
    """The architecture to build: the requested one (checked against what the file holds) or the recognised one."""
    found = recognise(sd, container)
    if isinstance(requested, str) and requested.strip().lower() == "auto":
        if found is None:
            sample = ", ".join(sorted(sd)[:6])
            raise FiqaError(f"--arch auto cannot recognise {name}: its keys ({len(sd)}, e.g. {sample}) match none of "
                            f"the known layouts: {_LAYOUT_TEXT}. Pass --arch NAME (`fiqa-trt export --help`)")
        if not found.arch.published:
            log.warning("%s is %s: not a published size; exporting it as %s", name, found.evidence, found.arch.name)
        return found.arch, found
    arch = zoo.arch(requested) if isinstance(requested, str) else requested
    plain_for_magface = found is not None and found.arch.family == "arcface" and arch.family == "magface"
    if found is not None and found.arch.family != arch.family and not plain_for_magface:
        holds = f"{container.describe()} holding {found.evidence}"
        raise FiqaError(f"{name} is a {holds}; --arch {arch.name} takes {arch.fam.title} checkpoints "
                        f"({arch.fam.checkpoint_format}). Use --arch "
                        f"{found.arch.name if found.arch.published else 'auto'}")
    return arch, found


def prepare(obj, requested: str | zoo.Arch, expected: Mapping[str, tuple], name: str = "checkpoint") -> Prepared:
    """A state dict with exactly the keys and shapes of `expected` (the network's own state dict shapes).

    `expected` may be given as a callable arch -> shapes, for `requested="auto"`."""
    sd, container = unwrap(obj, name)
    arch, found = resolve_arch(sd, container, requested, name)
    if callable(expected):
        expected = expected(arch)
    notes: list[str] = []
    canonical = arch.fam.canonical_prefix
    prefix = found.prefix if found is not None else _guess_prefix(sd, expected, canonical)
    if prefix != canonical:
        problem, text = _prefix_note(prefix, canonical, container, arch)
        if problem:
            notes.append(text)
        else:
            log.info("%s: %s", name, text)
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = sorted(k for k in sd if not k.startswith(prefix))
    heads = tuple(arch.fam.head_prefixes) + ("head.",)
    stray = [k for k in outside if not k.startswith(heads)]
    if stray:
        raise FiqaError(f"{name}: {len(stray)} entries outside the network's '{prefix}' keys are not a known training "
                        f"head: {', '.join(stray[:6])}{' ...' if len(stray) > 6 else ''}. Save only the backbone "
                        f"(`torch.save(backbone.state_dict(), ...)`); {_fix_for(arch)}")
    for key, shape in expected.items():  # buffers that old PyTorch versions did not save: no effect at inference
        if key.endswith("num_batches_tracked") and key not in inner:
            torch = require_torch()
            inner[key] = torch.zeros(shape, dtype=torch.long)
    _check_keys(inner, expected, arch, found, name, container)
    return Prepared(arch, inner, container, notes)


def _guess_prefix(sd: Mapping, expected: Mapping, canonical: str) -> str:
    """The prefix that makes the most keys match `expected` (used when the layout was not recognised)."""
    candidates = {canonical, "", DATAPARALLEL, "model.", "module.model.", "features.module.", "module.features."}
    return max(sorted(candidates), key=lambda p: sum(k[len(p):] in expected for k in sd if k.startswith(p)))


def _prefix_note(prefix: str, canonical: str, container: Container, arch: zoo.Arch) -> tuple[bool, str]:
    """(whether it is a problem worth a warning, the message naming it and the fix)."""
    where = f"under '{prefix}'" if prefix else "without a prefix"
    if prefix == DATAPARALLEL + canonical or (prefix.startswith(DATAPARALLEL) and canonical == ""):
        return True, (f"the weights carry the DataParallel prefix '{prefix}' (saved from a DataParallel / "
                      f"DistributedDataParallel wrapper); stripped it. Fix at the source: save "
                      f"`model.module.state_dict()`")
    if container.kind == "Lightning checkpoint" and canonical == "":
        return True, (f"this is a PyTorch Lightning checkpoint (the network {where} in its 'state_dict'), where "
                      f"{arch.name} expects a plain state dict; used the '{prefix}' entries and ignored the rest. Fix "
                      f"at the source: save `torch.save(lightning_module.{prefix.rstrip('.') or 'model'}"
                      ".state_dict(), 'backbone.pth')`")
    if canonical and prefix == "":
        return False, (f"the network's keys come without the '{canonical}' prefix of the published "
                       f"{arch.fam.name} files (already extracted): fine")
    return True, (f"the network's keys sit {where}, where the published {arch.fam.name} files use "
                  f"'{canonical or '(no prefix)'}'; used them as they are")


def _check_keys(inner: Mapping, expected: Mapping, arch: zoo.Arch, found: Recognition | None, name: str,
                container: Container) -> None:
    missing = [k for k in expected if k not in inner]
    unexpected = [k for k in inner if k not in expected]
    mismatched = [(k, tuple(inner[k].shape), tuple(expected[k])) for k in expected
                  if k in inner and tuple(inner[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or mismatched):
        return

    def listing(items) -> str:
        return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")

    lines = [f"{name} does not fit {arch.name} ({arch.fam.title}), loading strictly:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): "
                     + listing([f"{k} is {list(a)} in the file, {list(b)} in the network" for k, a, b in mismatched]))
    if found is not None and found.arch.name != arch.name:
        lines.append(f"Fix: the file holds {found.evidence}, which is "
                     + (f"{found.arch.name}: use --arch {found.arch.name}" if found.arch.published
                        else "not a published size: use --arch auto") + ".")
    else:
        lines.append(f"Fix: pass the {arch.fam.title} checkpoint this architecture expects "
                     f"({arch.fam.checkpoint_format}; this file is a {container.describe()}), or let --arch auto "
                     "recognise the file.")
    raise FiqaError("\n".join(lines))
