"""Where weights files are looked for: the `weights/<family>` folders, and resolving a model name to its file.

Roots, searched in this order: `$FIQA_TRT_WEIGHTS` (if set), `./weights` (relative to the current directory: the
seed project's convention, `weights/arcface`, `weights/adaface`, `weights/transface`, ...), and `weights/` in the user
cache directory (`engine.precision.cache_dir()`, where `fiqa-trt weights fetch` puts downloads). A file dropped
into one of these folders is found without editing any source file: by its expected name (`zoo.ModelRecord.files`),
or listed as an unlisted file whose architecture `fiqa-trt export --arch auto` recognises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fiqa_trt.errors import FiqaError
from fiqa_trt.weights import zoo

WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".onnx", ".pth.tar", ".bin")
ENV_ROOT = "FIQA_TRT_WEIGHTS"


def roots() -> list[Path]:
    from fiqa_trt.files import cache_dir

    found = [Path(os.environ[ENV_ROOT])] if os.environ.get(ENV_ROOT) else []
    return found + [Path.cwd() / "weights", cache_dir() / "weights"]


def download_root() -> Path:
    from fiqa_trt.files import cache_dir

    return cache_dir() / "weights"


def directories() -> list[str]:
    """The family folder names, each searched under every root."""
    names = [f.weights_dir for f in zoo.FAMILIES.values()] + [m.directory for m in zoo.MODELS.values()]
    return list(dict.fromkeys(names))


def expected_paths(model: zoo.ModelRecord) -> list[Path]:
    return [root / model.directory / name for root in roots() for name in model.files]


def find(model: zoo.ModelRecord) -> Path | None:
    return next((p for p in expected_paths(model) if p.is_file()), None)


@dataclass(frozen=True)
class FoundFile:
    path: Path
    directory: str  # the family folder it sits in
    model: str | None  # the zoo model whose expected name it has, if any


def scan() -> list[FoundFile]:
    """Every weights-like file under the family folders of every root, matched to a zoo model by name."""
    by_name = {(m.directory, name): m.name for m in zoo.MODELS.values() for name in m.files}
    out, seen = [], set()
    for root in roots():
        for directory in directories():
            folder = root / directory
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or not path.name.lower().endswith(WEIGHT_SUFFIXES):
                    continue
                resolved = path.resolve()
                if resolved in seen:
                    continue
                seen.add(resolved)
                relative = path.relative_to(folder).as_posix()
                out.append(FoundFile(path, directory, by_name.get((directory, relative))))
    return out


def resolve(name_or_path: str) -> tuple[Path, zoo.ModelRecord | None]:
    """A checkpoint argument: an existing path, or the name of a known model found in the weights folders."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None
    if name_or_path in zoo.MODELS:
        model = zoo.MODELS[name_or_path]
        found = find(model)
        if found is None:
            where = "\n  ".join(str(p) for p in expected_paths(model))
            how = (f"`fiqa-trt weights fetch {model.name}`" if model.url else f"download it from {model.source}")
            raise FiqaError(f"model '{model.name}' is not in the weights folders; looked for:\n  {where}\n"
                            f"Get it: {how}, and put it at one of those paths")
        return found, model
    if path.exists():
        raise FiqaError(f"{path} is not a file")
    raise FiqaError(f"no such file or known model: '{name_or_path}' (`fiqa-trt weights list` shows the known models "
                    "and where they are looked for)")
