"""The model zoo: architectures the exporter can build, and the published pretrained weights that use them.

Two record types, both plain data (no torch import here):
- `Arch`: an exportable network: its family (checkpoint format, preprocessing, outputs, where its weights live) and
  the constructor arguments. `arch(name)` resolves a name or alias; `derived_arch` describes a checkpoint whose depth
  is not a published size.
- `ModelRecord`: everything known about one model file, in one record: name, source page, licence, sha256 where
  known; for published weights the architecture, expected file name(s) and a direct download link where one exists
  (`fiqa-trt weights fetch`); for files scored as they are (weights.registry) the preprocessing config, the
  reduced-precision ranking checks and the gate's quality calibration.
Preprocessing is given in 0-255 pixel units, as in `weights.model_config.ModelConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fiqa_trt.errors import FiqaError


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    net: str  # "module:Class" under fiqa_trt.onnx_export.nets, imported lazily
    checkpoint_format: str  # what the published files hold, in words
    canonical_prefix: str  # the prefix of the network's keys inside the published file
    head_prefixes: tuple[str, ...]  # training heads stored beside the network in the published file (ignored)
    color: str
    mean: float
    std: float
    normalized_output: bool
    outputs: tuple[str, ...]  # the forward's outputs that can be exported, the embedding first
    weights_dir: str  # weights/<weights_dir> relative to the current directory, and in the user cache
    source: str
    licence: str
    notes: str = ""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("arcface", "insightface arcface_torch IResNet (ArcFace / CosFace / Partial FC)",
           "iresnet:IResNet", "plain state dict (backbone.pth), no prefix", "", (),
           "RGB", 127.5, 127.5, False, ("embedding",), "arcface",
           "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
           "code MIT; the released weights are for non-commercial research purposes only"),
    Family("adaface", "AdaFace IR", "adaface_ir:AdaFaceIR",
           "PyTorch Lightning checkpoint (*.ckpt): 'state_dict' with 'model.*' network keys and 'head.*' keys",
           "model.", ("head.",), "BGR", 127.5, 127.5, True, ("embedding", "norm"), "adaface",
           "https://github.com/mk-minchul/AdaFace", "MIT (code and released weights)",
           "forward returns (feature / ||feature||, ||feature||); the norm is the optional second output"),
    Family("transface", "TransFace ViT (patch 9, 144 patches)", "vit:TransFaceViT",
           "plain state dict (model.pt), no prefix", "", (), "RGB", 127.5, 127.5, False, ("embedding",),
           "transface", "https://github.com/DanJun6737/TransFace",
           "no licence file in the repository: ask the authors before any use beyond research",
           "forward returns (embedding, patch weights, patch entropy); the embedding is exported"),
    Family("magface", "MagFace IResNet (BN eps 2e-5)", "iresnet:IResNet",
           "checkpoint dict: 'state_dict' with 'features.module.*' network keys and the MagLinear 'fc.weight'",
           "features.module.", ("fc.",), "BGR", 0.0, 255.0, False, ("embedding",), "magface",
           "https://github.com/IrvingMeng/MagFace", "Apache-2.0 (code); weights from the authors' drive links",
           "the embedding's norm is MagFace's quality score; inputs are cv2 BGR images scaled to [0, 1]"),
    Family("crfiqa", "CR-FIQA IResNet with its quality head", "iresnet:IResNet",
           "plain state dict (<step>backbone.pth), no prefix", "", (), "RGB", 127.5, 127.5, False,
           ("embedding", "quality"), "crfiqa", "https://github.com/fdbtrs/CR-FIQA",
           "no licence file in the repository: research use; ask the authors otherwise",
           "forward returns (embedding, quality); the quality score is the optional second output. Trained on "
           "RGB crops (insightface MXNet records); the repository's evaluation reads files it wrote channel-swapped"),
)}


@dataclass(frozen=True)
class Arch:
    name: str
    family: str
    kwargs: dict = field(default_factory=dict, hash=False)
    aliases: tuple[str, ...] = ()
    published: bool = True
    description: str = ""

    @property
    def fam(self) -> Family:
        return FAMILIES[self.family]

    @property
    def embedding_size(self) -> int:
        return int(self.kwargs.get("num_features", self.kwargs.get("embedding_size", 512)))

    def with_kwargs(self, name: str | None = None, **kwargs) -> "Arch":
        """A variant (for example a reduced depth for tests), with a name that says it is not published."""
        return replace(self, name=name or f"{self.name}-custom", kwargs={**self.kwargs, **kwargs}, published=False,
                       aliases=())

    def model_config(self) -> dict:
        """The ModelConfig fields written into the exported ONNX file's metadata."""
        f = self.fam
        return dict(input_size=(112, 112), color=f.color, mean=(f.mean,) * 3, std=(f.std,) * 3,
                    embedding_size=self.embedding_size, normalized_output=f.normalized_output, layout="NCHW",
                    name=self.name)


_IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3),
                   200: (6, 26, 60, 6)}


def _archs() -> list[Arch]:
    out = []
    for depth, layers in _IRESNET_LAYERS.items():
        out.append(Arch(f"iresnet{depth}", "arcface", dict(layers=layers), (f"r{depth}", f"arcface_r{depth}"),
                        description=f"arcface_torch r{depth}, layers {list(layers)}"))
    for depth in (18, 34, 50, 100):
        out.append(Arch(f"magface_iresnet{depth}", "magface",
                        dict(layers=_IRESNET_LAYERS[depth], bn_eps=2e-5, bn_momentum=0.9), (f"magface_r{depth}",),
                        description=f"MagFace iResNet{depth}"))
    for depth in (50, 100):
        out.append(Arch(f"crfiqa_iresnet{depth}", "crfiqa", dict(layers=_IRESNET_LAYERS[depth], quality_head=True),
                        (f"crfiqa_r{depth}",), description=f"CR-FIQA iResNet{depth} + quality head"))
    for name, units in (("ir18", (2, 2, 2, 2)), ("ir34", (3, 4, 6, 3)), ("ir50", (3, 4, 14, 3)),
                        ("ir101", (3, 13, 30, 3))):
        out.append(Arch(f"adaface_{name}", "adaface", dict(units=units), (f"adaface_{name[:2]}_{name[2:]}",),
                        description=f"AdaFace IR-{name[2:]}, {sum(units)} units"))
    for size, (dim, depth) in {"s": (512, 12), "b": (512, 24), "l": (768, 24)}.items():
        out.append(Arch(f"transface_vit_{size}", "transface", dict(embed_dim=dim, depth=depth, num_heads=8),
                        (f"vit_{size}", f"transface_{size}"),
                        description=f"TransFace ViT-{size.upper()}: dim {dim}, depth {depth}, 8 heads"))
    return out


ARCHS: dict[str, Arch] = {a.name: a for a in _archs()}
ONNX_ARCH = "insightface_onnx"  # an ONNX file as it is (insightface model zoo): re-labelled, not rebuilt


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def arch(name: str) -> Arch:
    wanted = _key(name)
    for a in ARCHS.values():
        if wanted == a.name or wanted in a.aliases:
            return a
    raise FiqaError(f"unknown architecture '{name}'; known: {', '.join(ARCHS)} (or 'auto' to recognise it from the "
                    "checkpoint)")


def derived_arch(family: str, **structure) -> Arch:
    """The published architecture of `family` whose constructor arguments include `structure` (the sizes read
    from a checkpoint: layers, units, embed_dim, depth, ...), or an unpublished variant with those sizes."""
    for a in ARCHS.values():
        if a.family == family and all(_same(a.kwargs.get(k), v) for k, v in structure.items()):
            return a
    base = next(a for a in ARCHS.values() if a.family == family)
    detail = ",".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
                      for k, v in structure.items())
    return base.with_kwargs(name=f"{family}-custom[{detail}]", **structure)


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return a is not None and b is not None and tuple(a) == tuple(b)
    return a == b


@dataclass(frozen=True)
class ModelRecord:
    name: str
    arch: str  # an ARCHS name, or ONNX_ARCH
    files: tuple[str, ...]  # expected file name(s) under weights/<family dir>/, the first preferred
    source: str  # the page the weights are published on
    licence: str
    sha256: str | None = None  # of the model file (the one that lands in the weights folder, or the one scored)
    url: str | None = None  # a direct link, where the authors give one
    archive_member: str | None = None  # the file to take out of the downloaded zip
    weights_dir: str | None = None  # defaults to the family's
    notes: str = ""
    # for a file scored as it is: its preprocessing (ModelConfig fields) when the file carries no fiqa-trt metadata
    config: dict | None = None
    # "backend:precision" -> Spearman of quality scores against fp32 (`fiqa-trt bench` on the shared LFW)
    precision_checks: dict = field(default_factory=dict, hash=False)
    # the model's default quality recipe (quality.Recipe fields, with the figures that chose it)
    recipe: dict | None = field(default=None, hash=False)
    # recipe name -> (raw quality at the 1st, at the 99th percentile) on the shared LFW crops put back on the
    # ArcFace template: the ends of the 0-100 score of `score` and `gate` for that recipe on this model
    calibrations: dict = field(default_factory=dict, hash=False)
    # role (`fast`, `froq`) -> recipe fields: the model's recipes for the named recipes fitted per model (the
    # one-forward recipe, FROQ's layers), packaged beside the default
    variants: dict = field(default_factory=dict, hash=False)

    @property
    def directory(self) -> str:
        return self.weights_dir or ARCHS[self.arch].fam.weights_dir

    def preprocessing(self) -> str:
        if self.arch == ONNX_ARCH:
            return "RGB, (x - 127.5) / 127.5 or raw pixels (detected on export)"
        f = ARCHS[self.arch].fam
        return f"{f.color}, (x - {f.mean:g}) / {f.std:g}"

    def embedding_size(self) -> int:
        return 512 if self.arch == ONNX_ARCH else ARCHS[self.arch].embedding_size


_INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
_ARCFACE_ZOO = "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch#model-zoo"
_ARCFACE_LICENCE = "non-commercial research purposes only (insightface model zoo)"
_ADAFACE_ZOO = "https://github.com/mk-minchul/AdaFace#pretrained-models"
_TRANSFACE_ZOO = "https://github.com/DanJun6737/TransFace#transface-pretrained-models"


def _zoo() -> list[ModelRecord]:
    out = [
        ModelRecord("insightface-buffalo_l-w600k_r50", ONNX_ARCH, ("w600k_r50.onnx",),
                 "https://github.com/deepinsight/insightface/tree/master/model_zoo", _ARCFACE_LICENCE,
                 url=f"{_INSIGHTFACE_RELEASE}/buffalo_l.zip", archive_member="w600k_r50.onnx", weights_dir="arcface",
                 notes="ResNet50 trained on WebFace600K, inside the buffalo_l pack; export it to add metadata"),
        ModelRecord("insightface-buffalo_s-w600k_mbf", ONNX_ARCH, ("w600k_mbf.onnx",),
                 "https://github.com/deepinsight/insightface/tree/master/model_zoo", _ARCFACE_LICENCE,
                 url=f"{_INSIGHTFACE_RELEASE}/buffalo_s.zip", archive_member="w600k_mbf.onnx", weights_dir="arcface",
                 notes="MobileFaceNet trained on WebFace600K, inside the buffalo_s pack"),
        ModelRecord("insightface-antelopev2-glintr100", ONNX_ARCH, ("glintr100.onnx",),
                 "https://github.com/deepinsight/insightface/tree/master/model_zoo", _ARCFACE_LICENCE,
                 url=f"{_INSIGHTFACE_RELEASE}/antelopev2.zip", archive_member="glintr100.onnx",
                 weights_dir="arcface", notes="ResNet100 trained on Glint360K, inside the antelopev2 pack"),
    ]
    for data, depths in (("ms1mv3_arcface", (18, 34, 50, 100)), ("glint360k_cosface", (18, 34, 50, 100))):
        for d in depths:
            out.append(ModelRecord(f"arcface-{data}-r{d}", f"iresnet{d}", (f"{data}_r{d}_fp16/backbone.pth",
                                                                        f"{data}_r{d}.pth"),
                                _ARCFACE_ZOO, _ARCFACE_LICENCE,
                                notes="OneDrive / Baidu folders (no direct link); keep the folder name, or rename "
                                      "backbone.pth"))
    for d, data in ((18, "casia"), (18, "vgg2"), (18, "webface4m"), (50, "casia"), (50, "webface4m"),
                    (50, "ms1mv2"), (101, "ms1mv2"), (101, "ms1mv3"), (101, "webface4m"), (101, "webface12m")):
        out.append(ModelRecord(f"adaface-ir{d}-{data}", f"adaface_ir{d}", (f"adaface_ir{d}_{data}.ckpt",), _ADAFACE_ZOO,
                            "MIT", notes="Google Drive (no direct link)"))
    for data in ("ms1mv2", "glint360k"):
        for size in ("s", "b", "l"):
            out.append(ModelRecord(f"transface-{data}-vit_{size}", f"transface_vit_{size}",
                                (f"{data}_model_TransFace_{size.upper()}.pt", f"{data}_vit_{size}/model.pt"),
                                _TRANSFACE_ZOO, FAMILIES["transface"].licence, notes="Google Drive (no direct link)"))
    out += [
        ModelRecord("magface-ms1mv2-iresnet100", "magface_iresnet100", ("magface_epoch_00025.pth",),
                 "https://github.com/IrvingMeng/MagFace#model-zoo", FAMILIES["magface"].licence,
                 notes="Google Drive / Baidu (no direct link)"),
        ModelRecord("crfiqa-l", "crfiqa_iresnet100", ("181952backbone.pth",), "https://github.com/fdbtrs/CR-FIQA",
                 FAMILIES["crfiqa"].licence, notes="CR-FIQA(L), MS1MV2; Google Drive folder (no direct link)"),
        ModelRecord("crfiqa-s", "crfiqa_iresnet50", ("32572backbone.pth",), "https://github.com/fdbtrs/CR-FIQA",
                 FAMILIES["crfiqa"].licence, notes="CR-FIQA(S), CASIA-WebFace; Google Drive folder (no direct link)"),
    ]
    return out


MODELS: dict[str, ModelRecord] = {m.name: m for m in _zoo()}


def model(name: str) -> ModelRecord:
    try:
        return MODELS[name.strip()]
    except KeyError:
        raise FiqaError(f"unknown model '{name}'; `fiqa-trt weights list` shows the known ones") from None
