"""Model zoo and ONNX export: published checkpoint formats load strictly, export, and match PyTorch exactly.

Checkpoints are random weights saved in each family's exact published format (plain state dict; AdaFace's Lightning
dict with 'model.'/'head.' keys; MagFace's 'features.module.' dict). Large variants are checked with a reduced depth
here and at full size in the slow tests. Skipped when torch (the `export` extra) is not installed.
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import subprocess
import sys
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from fiqa_trt.errors import FiqaError  # noqa: E402
from fiqa_trt.onnx_export import checkpoints, export, fp16, graph  # noqa: E402
from fiqa_trt.weights import fetch, locations, registry, zoo  # noqa: E402
from benchmarks.harness.nets import randomise  # noqa: E402
from tests.onnx_models import fixed_batch_embedder  # noqa: E402

REDUCED = {  # stand-ins for the big variants: same key patterns, fewer blocks (full sizes: the slow tests)
    "iresnet100": dict(layers=(1, 1, 2, 1)),
    "iresnet200": dict(layers=(1, 1, 1, 1)),
    "adaface_ir101": dict(units=(1, 1, 2, 1)),
    "magface_iresnet100": dict(layers=(1, 1, 2, 1)),
    "crfiqa_iresnet100": dict(layers=(1, 1, 1, 1)),
    # a ViT's heads grow with width x 144 patches (ViT-S: 48M parameters, ViT-L: 101M): narrower here
    "transface_vit_s": dict(embed_dim=128, depth=2),
    "transface_vit_l": dict(depth=1),
}


# ---------------------------------------------------------------------------------------------------- helpers


class FakeAttributeDict(dict):
    """Stands for pytorch_lightning's AttributeDict: a class the loading side does not have installed."""


def published(arch: zoo.Arch, sd: dict):
    """The object the authors' code saves, for this architecture's family."""
    sd = collections.OrderedDict(sd)
    if arch.family == "adaface":  # PyTorch Lightning: model.* + head.* in 'state_dict', plus training state
        state = collections.OrderedDict((f"model.{k}", v) for k, v in sd.items())
        state.update({"head.kernel": torch.randn(512, 16), "head.t": torch.zeros(1),
                      "head.batch_mean": torch.ones(1) * 20, "head.batch_std": torch.ones(1) * 100})
        return {"epoch": 25, "global_step": 1000, "pytorch-lightning_version": "1.8.6", "state_dict": state,
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.9)}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}],
                "lr_schedulers": [{"milestones": collections.Counter({12: 1, 20: 1}), "gamma": 0.1}],
                "hparams_name": "kwargs", "hyper_parameters": FakeAttributeDict(arch="ir_50", head="adaface")}
    if arch.family == "magface":  # DataParallel-wrapped features + the MagLinear head
        state = collections.OrderedDict((f"features.module.{k}", v) for k, v in sd.items())
        state["fc.weight"] = torch.randn(512, 16)
        return {"epoch": 25, "arch": "iresnet100", "state_dict": state, "optimizer": {"state": {}}}
    return sd  # arcface_torch backbone.pth, TransFace model.pt, CR-FIQA <step>backbone.pth


def save_published(obj, path: Path) -> Path:
    """torch.save, with FakeAttributeDict pickled under a module name that does not exist when loading."""
    module = types.ModuleType("fiqa_fake_lightning")
    module.FakeAttributeDict = FakeAttributeDict
    FakeAttributeDict.__module__ = "fiqa_fake_lightning"
    sys.modules["fiqa_fake_lightning"] = module
    try:
        torch.save(obj, path)
    finally:
        del sys.modules["fiqa_fake_lightning"]
        FakeAttributeDict.__module__ = __name__
    return path


def make_checkpoint(tmp_path: Path, name: str, reduced: bool, seed: int = 0):
    arch = zoo.arch(name)
    if reduced:
        arch = arch.with_kwargs(name=f"{name}-reduced", **REDUCED[name])
    net = randomise(export.build_network(arch), seed)
    path = save_published(published(arch, net.state_dict()), tmp_path / f"{arch.name}.ckpt")
    return arch, net, path


def reference(net, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = net(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def onnx_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o, np.float32) for o in session.run(None, {"input": x})]


def meta_shapes(arch: zoo.Arch) -> dict:
    return {k: tuple(v.shape) for k, v in export.build_network(arch, device="meta").state_dict().items()}


def meta_state(arch: zoo.Arch, prefix: str = "") -> dict:
    return {prefix + k: v for k, v in export.build_network(arch, device="meta").state_dict().items()}


# ---------------------------------------------------------------------------------------------------- layouts

# key counts and shapes of the published networks (checked against the authors' code: same keys, same order,
# identical outputs on the same weights)
LAYOUT_FACTS = {
    "iresnet18": (187, {"conv1.weight": (64, 3, 3, 3), "layer1.0.downsample.0.weight": (64, 64, 1, 1),
                        "fc.weight": (512, 25088), "features.running_var": (512,)}),
    "iresnet34": (331, {"layer3.5.bn3.weight": (256,)}),
    "iresnet50": (475, {"layer3.13.bn3.running_var": (256,), "layer4.2.prelu.weight": (512,)}),
    "iresnet100": (925, {"layer3.29.conv2.weight": (256, 256, 3, 3)}),
    "iresnet200": (1807, {"layer3.59.conv1.weight": (256, 256, 3, 3)}),
    "magface_iresnet100": (925, {"features.weight": (512,)}),
    "crfiqa_iresnet50": (477, {"qs.weight": (1, 512), "qs.bias": (1,)}),
    "adaface_ir18": (179, {"input_layer.2.weight": (64,), "body.2.shortcut_layer.0.weight": (128, 64, 1, 1),
                           "body.1.res_layer.3.weight": (64,), "output_layer.3.weight": (512, 25088),
                           "output_layer.4.running_mean": (512,)}),
    "adaface_ir50": (467, {"body.23.res_layer.5.running_var": (512,)}),
    "adaface_ir101": (917, {"body.48.res_layer.4.weight": (512, 512, 3, 3)}),
    "transface_vit_s": (152, {"patch_embed.proj.weight": (512, 3, 9, 9), "pos_embed": (1, 144, 512),
                              "mask_token": (1, 1, 512), "blocks.11.attn.qkv.weight": (1536, 512),
                              "blocks.0.mlp.fc1.weight": (2048, 512), "senet.0.weight": (144, 73728),
                              "senet.2.weight": (144, 144), "feature.0.weight": (512, 73728),
                              "feature.3.running_var": (512,)}),
    "transface_vit_b": (284, {"blocks.23.norm2.bias": (512,)}),
    "transface_vit_l": (284, {"feature.0.weight": (768, 110592), "blocks.23.attn.proj.weight": (768, 768)}),
}
ABSENT = {"adaface_ir18": ["body.0.shortcut_layer.0.weight", "output_layer.4.weight"],
          "transface_vit_s": ["blocks.0.attn.qkv.bias"], "iresnet18": ["qs.weight"]}


@pytest.mark.parametrize("name", sorted(LAYOUT_FACTS))
def test_networks_have_the_published_state_dict_layout(name):
    shapes = meta_shapes(zoo.arch(name))
    count, samples = LAYOUT_FACTS[name]
    assert len(shapes) == count
    for key, shape in samples.items():
        assert shapes[key] == shape, key
    for key in ABSENT.get(name, []):
        assert key not in shapes


def test_batchnorm_eps_and_momentum_follow_each_family():
    def bn(name):
        net = export.build_network(zoo.arch(name), device="meta")
        return {(m.eps, m.momentum) for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    assert bn("iresnet50") == {(1e-5, 0.1)} and bn("crfiqa_iresnet50") == {(1e-5, 0.1)}
    assert bn("magface_iresnet50") == {(2e-5, 0.9)}
    assert bn("adaface_ir50") == {(1e-5, 0.1)}
    assert bn("transface_vit_s") == {(2e-5, 0.1)}


# ---------------------------------------------------------------------------------------------------- --arch auto


@pytest.mark.parametrize("name", sorted(zoo.ARCHS))
def test_arch_auto_recognises_every_published_layout(name):
    arch = zoo.arch(name)
    sd = meta_state(arch, arch.fam.canonical_prefix)
    if arch.family == "magface":
        sd["fc.weight"] = torch.empty(512, 16, device="meta")
    found = checkpoints.recognise(sd)
    assert found is not None and found.arch.name == name and found.prefix == arch.fam.canonical_prefix


def test_arch_auto_on_an_unknown_layout_says_what_it_knows():
    obj = {"encoder.weight": torch.zeros(4, 4), "decoder.weight": torch.zeros(4, 4)}
    with pytest.raises(FiqaError, match=r"cannot recognise .*match none of the known layouts.*--arch NAME"):
        checkpoints.prepare(obj, "auto", meta_shapes, name="x.pth")


def test_arch_auto_on_an_unpublished_depth_exports_a_custom_variant():
    arch = zoo.arch("iresnet50").with_kwargs(layers=(1, 1, 2, 1))
    found = checkpoints.recognise(meta_state(arch))
    assert not found.arch.published and found.arch.kwargs["layers"] == (1, 1, 2, 1)


# ---------------------------------------------------------------------------------------------------- export parity

# (architecture, reduced depth, also export FP16, also export the second output)
CASES = [("iresnet18", False, True, False), ("iresnet100", True, False, False), ("iresnet200", True, False, False),
         ("adaface_ir18", False, False, True), ("adaface_ir101", True, True, False),
         ("transface_vit_s", True, True, False), ("magface_iresnet100", True, False, False),
         ("crfiqa_iresnet100", True, True, True)]
SLOW_CASES = [("transface_vit_l", True, True, False)]  # width 768: even one block carries 400 MB of heads


def _check_file(path: Path, arch: zoo.Arch, use_fp16: bool, fp16_io: bool = False):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    meta = graph.read_metadata(model)
    fam = arch.fam
    assert (meta["color"], meta["mean"], meta["std"]) == (fam.color, [fam.mean] * 3, [fam.std] * 3)
    assert meta["input_size"] == [112, 112] and meta["embedding_size"] == 512 and meta["layout"] == "NCHW"
    assert meta["normalized_output"] is fam.normalized_output and meta["arch"] == arch.name
    assert meta["precision"] == ("fp16" if use_fp16 else "fp32")
    if use_fp16:  # strongly typed: every float weight is float16; Casts only at the edges (fp32 I/O)
        floats = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT,
                                                                         onnx.TensorProto.FLOAT16)]
        assert floats and all(i.data_type == onnx.TensorProto.FLOAT16 for i in floats)
        io_type = onnx.TensorProto.FLOAT16 if fp16_io else onnx.TensorProto.FLOAT
        assert model.graph.input[0].type.tensor_type.elem_type == io_type
        assert model.graph.output[0].type.tensor_type.elem_type == io_type
        if not fp16_io:
            assert model.graph.node[0].op_type == "Cast" and model.graph.node[-1].op_type == "Cast"
    return model


def _parity(tmp_path, name, reduced, with_fp16, aux, fp16_io=False):
    """Random weights in the published format -> export (fp32, and fp16) -> ONNX Runtime vs the original network."""
    arch, net, path = make_checkpoint(tmp_path, name, reduced)
    x = export.random_inputs(arch.model_config(), 5, seed=11)  # batch 5: not the traced 2, the batch is dynamic
    want = reference(net, x)
    found = {}
    for use_fp16 in (False, True) if with_fp16 else (False,):
        out = tmp_path / f"{arch.name}{'.fp16' if use_fp16 else ''}.onnx"
        result = export.export_checkpoint(path, arch if reduced else "auto", out=out, fp16=use_fp16, aux=aux,
                                          fp16_io=fp16_io and use_fp16, samples=2)
        assert result.path == out and result.arch == arch.name
        _check_file(out, arch, use_fp16, fp16_io and use_fp16)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        feed = x.astype(np.float16) if fp16_io and use_fp16 else x
        got = [np.asarray(o, np.float32) for o in session.run(None, {"input": feed})]
        assert len(got) == (2 if aux else 1) and got[0].shape == (5, 512)
        cos = export.cosines(want[0], got[0])
        assert cos.min() >= (export.FP16_MIN_COSINE if use_fp16 else export.FP32_MIN_COSINE), cos
        if aux:  # fp16: within 2% of the output's scale (a dot product of large values loses relative precision)
            scale = float(np.abs(want[1]).max())
            np.testing.assert_allclose(got[1], want[1], rtol=0 if use_fp16 else 1e-4,
                                       atol=2e-2 * scale if use_fp16 else 1e-5)
        found["fp16" if use_fp16 else "fp32"] = float(cos.min())
    print(f"\nparity {arch.name}: " + ", ".join(f"{k} min cosine {v:.9f} (1 - cos {1 - v:.1e})"
                                                for k, v in found.items()))
    return arch, want, found


@pytest.mark.parametrize("name,reduced,with_fp16,aux", CASES)
def test_published_checkpoint_exports_with_parity(tmp_path, name, reduced, with_fp16, aux):
    _parity(tmp_path, name, reduced, with_fp16, aux, fp16_io=name.startswith("crfiqa"))


@pytest.mark.fullsize
@pytest.mark.parametrize("name,reduced,with_fp16,aux", SLOW_CASES)
def test_wide_vit_exports_with_parity(tmp_path, name, reduced, with_fp16, aux):
    _parity(tmp_path, name, reduced, with_fp16, aux)


@pytest.mark.parametrize("name", ["transface_vit_s", pytest.param("iresnet200", marks=pytest.mark.fullsize)])
def test_fp16_graph_holds_when_every_operator_computes_in_float16(tmp_path, name):
    """ONNX Runtime's CPU provider runs a float16 graph by casting to float32 where it lacks half kernels; onnx's
    reference evaluator computes each operator in its declared type (NumPy float16), as a strongly typed engine
    builds it."""
    from onnx.reference import ReferenceEvaluator

    arch, net, path = make_checkpoint(tmp_path, name, True)
    out = export.export_checkpoint(path, arch, out=tmp_path / "h.onnx", fp16=True, samples=2).path
    x = export.random_inputs(arch.model_config(), 2, seed=4)
    got = ReferenceEvaluator(onnx.load(str(out))).run(None, {"input": x})[0]
    assert export.cosines(reference(net, x)[0], got).min() >= export.FP16_MIN_COSINE


def test_normalised_output_and_norm_of_adaface(tmp_path):
    arch, net, path = make_checkpoint(tmp_path, "adaface_ir101", True)
    out = export.export_checkpoint(path, out=tmp_path / "a.onnx", aux=True).path
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["embedding", "norm"]
    x = export.random_inputs(arch.model_config(), 2, seed=3)
    feature, norm = onnx_outputs(out, x)
    np.testing.assert_allclose(np.linalg.norm(feature, axis=1), 1.0, rtol=1e-5)
    assert norm.shape == (2, 1) and (norm > 0).all()


def test_aux_is_refused_for_a_single_output_network(tmp_path):
    arch, net, path = make_checkpoint(tmp_path, "iresnet200", True)
    with pytest.raises(FiqaError, match="no second output"):
        export.export_checkpoint(path, out=tmp_path / "x.onnx", aux=True)


def test_fp16_conversion_keeps_every_tensor_typed(tmp_path):
    proto = onnx.load(str(fixed_batch_embedder(tmp_path / "m.onnx", dim=32)))
    half = fp16.convert_to_fp16(proto)
    onnx.checker.check_model(half, full_check=True)
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in half.graph.initializer)
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
    want, got = export.run_onnx(proto, x)[0], export.run_onnx(half, x)[0]
    assert export.cosines(want, got).min() >= 0.999


# ---------------------------------------------------------------------------------------------------- problems


def _prepare(obj, arch):
    return checkpoints.prepare(obj, arch, meta_shapes, name="ckpt.pth")


def test_dataparallel_prefix_is_stripped_with_a_message_naming_the_fix():
    arch = zoo.arch("iresnet18")
    prepared = _prepare(meta_state(arch, "module."), "iresnet18")
    assert set(prepared.state_dict) == set(meta_shapes(arch))
    assert any("DataParallel" in n and "model.module.state_dict()" in n for n in prepared.notes)


def test_lightning_checkpoint_given_for_a_plain_state_dict_is_explained():
    arch = zoo.arch("iresnet18")
    obj = {"pytorch-lightning_version": "2.1.0", "state_dict": meta_state(arch, "model."), "epoch": 3}
    prepared = _prepare(obj, "iresnet18")
    assert any("Lightning" in n and "expects a plain state dict" in n and "torch.save(" in n for n in prepared.notes)


def test_checkpoint_of_another_family_names_the_right_arch():
    obj = published(zoo.arch("adaface_ir50"), meta_state(zoo.arch("adaface_ir50")))
    with pytest.raises(FiqaError, match=r"Lightning checkpoint .*AdaFace IR.*; --arch iresnet50 takes "
                                        r"insightface.*Use --arch adaface_ir50"):
        _prepare(obj, "iresnet50")


def test_missing_unexpected_and_mismatched_keys_are_listed_with_a_fix():
    arch = zoo.arch("iresnet18")
    sd = meta_state(arch)
    del sd["layer2.1.bn1.weight"], sd["fc.bias"]
    sd["layer5.0.conv1.weight"] = torch.empty(3, 3, device="meta")
    with pytest.raises(FiqaError) as info:
        _prepare(sd, "iresnet18")
    text = str(info.value)
    assert "missing keys (2): layer2.1.bn1.weight, fc.bias" in text and "unexpected keys (1)" in text
    assert "Fix:" in text
    sd = meta_state(arch)
    sd["fc.weight"] = torch.empty(256, 25088, device="meta")
    with pytest.raises(FiqaError, match=r"shape mismatches \(1\): fc.weight is \[256, 25088\] in the file, "
                                        r"\[512, 25088\] in the network"):
        _prepare(sd, "iresnet18")


def test_wrong_depth_names_the_architecture_the_file_holds():
    with pytest.raises(FiqaError, match=r"(?s)missing keys .*Fix: the file holds .*\[2, 2, 2, 2\].*"
                                        r"use --arch iresnet18"):
        _prepare(meta_state(zoo.arch("iresnet18")), "iresnet50")


def test_stray_keys_outside_the_network_are_refused():
    arch = zoo.arch("adaface_ir18")
    obj = {"state_dict": {**meta_state(arch, "model."), "teacher.fc.weight": torch.empty(2, 2, device="meta")}}
    with pytest.raises(FiqaError, match="not a known training head: teacher.fc.weight"):
        _prepare(obj, "adaface_ir18")


def test_lightning_checkpoint_with_unavailable_classes_loads_safely(tmp_path):
    arch, net, path = make_checkpoint(tmp_path, "adaface_ir101", True)
    obj = checkpoints.read_checkpoint(path)  # hyper_parameters' class does not exist here: a placeholder
    assert obj["hyper_parameters"].__dict__["_fiqa_placeholder_for"] == "fiqa_fake_lightning.FakeAttributeDict"
    loaded, prepared = export.load_network(path, arch)
    assert prepared.container.kind == "Lightning checkpoint" and not prepared.notes


def test_whole_pickled_module_and_non_checkpoints_get_a_clear_message(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(FiqaError, match=r"pickled .*Linear.*torch.save\(model.state_dict\(\)"):
        export.load_network(tmp_path / "module.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(FiqaError, match="not a PyTorch checkpoint"):
        export.load_network(tmp_path / "text.pth")


def test_plain_iresnet_is_accepted_as_magface_when_asked():
    arch = zoo.arch("magface_iresnet18")
    prepared = _prepare(meta_state(arch), "magface_iresnet18")  # extracted backbone: no 'features.module.'
    assert prepared.arch.name == "magface_iresnet18" and not prepared.notes
    with pytest.raises(FiqaError, match="Use --arch magface_iresnet18"):  # but a MagFace file is not an ArcFace one
        _prepare(published(arch, meta_state(arch)), "iresnet18")


def test_missing_num_batches_tracked_is_filled():
    arch = zoo.arch("iresnet18")
    sd = {k: v for k, v in meta_state(arch).items() if not k.endswith("num_batches_tracked")}
    assert set(_prepare(sd, "iresnet18").state_dict) == set(meta_shapes(arch))


# ---------------------------------------------------------------------------------------------------- ONNX files


def _mxnet_style(path: Path) -> Path:
    """A model-zoo style file whose graph starts with its own Sub/Mul normalisation (fixed batch 1)."""
    model = onnx.load(str(fixed_batch_embedder(path, dim=32)))
    g = model.graph
    g.initializer.extend([onnx.numpy_helper.from_array(np.array(127.5, np.float32), "sub_c"),
                          onnx.numpy_helper.from_array(np.array(1 / 127.5, np.float32), "mul_c")])
    for node in g.node:
        node.input[:] = ["normed" if n == "input" else n for n in node.input]
    head = [onnx.helper.make_node("Sub", ["input", "sub_c"], ["centred"], name="_minusscalar0"),
            onnx.helper.make_node("Mul", ["centred", "mul_c"], ["normed"], name="_mulscalar0")]
    nodes = head + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("self_normalising", [False, True])
def test_model_zoo_onnx_file_is_relabelled_with_detected_normalisation(tmp_path, self_normalising):
    src = (_mxnet_style(tmp_path / "w600k_like.onnx") if self_normalising
           else fixed_batch_embedder(tmp_path / "w600k_like.onnx", dim=32))
    result = export.export_checkpoint(src, out=tmp_path / "out.onnx")
    meta = graph.read_metadata(onnx.load(str(result.path)))
    assert meta["mean"] == [0.0 if self_normalising else 127.5] * 3
    assert meta["std"] == [1.0 if self_normalising else 127.5] * 3
    assert meta["color"] == "RGB" and meta["graph_normalises_input"] is self_normalising
    assert graph.fixed_batch_size(onnx.load(str(result.path))) is None and result.min_cosine >= 0.99999


# ---------------------------------------------------------------------------------------------------- CLI


def _cli(*args, cwd=None):
    from tests.cli_runner import run_cli

    proc = run_cli(*args, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_exported_model_scores_through_the_cli_without_preprocessing_flags(tmp_path, face_like):
    arch, net, path = make_checkpoint(tmp_path, "adaface_ir101", True)
    out = tmp_path / "adaface.onnx"
    proc = _cli("export", path, "--arch", "auto", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "adaface-custom" in proc.stderr and "min cosine" in proc.stderr and "BGR" in proc.stderr
    folder = tmp_path / "faces"
    folder.mkdir()
    for p in face_like[:3]:
        p.rename(folder / p.name)
    csv_path = tmp_path / "x.csv"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fiqa_trt.cli", "score", folder, "--model", out,
                           "--out", csv_path], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "(BGR, 112x112, from metadata)" in proc.stderr  # preprocessing read from the file, no flags
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported or "openvino" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}  # scoring never imports torch
    rows = csv_path.read_text().strip().splitlines()
    assert len(rows) == 4 and all(r.split(",")[-1] == "" for r in rows[1:])


def test_export_of_a_model_the_registry_knows_carries_its_preprocessing_and_recipe(real_model, tmp_path):
    """The shared MobileFaceNet is known to the registry by its sha256 ((x - 127) / 128, recipe
    mobilefacenet-default): its exported copy, which the registry no longer knows, states both in its metadata and
    scores as the original does (not with the ArcFace normalisation)."""
    import csv

    record = registry.lookup(hashlib.sha256(real_model.read_bytes()).hexdigest())
    assert record is not None and record.name == "faceplugin-mobilefacenet"
    out = tmp_path / "copy.onnx"
    proc = _cli("export", real_model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "preprocessing from the registry (faceplugin-mobilefacenet)" in " ".join(proc.stderr.split())
    meta = graph.read_metadata(onnx.load(str(out)))
    assert (meta["color"], meta["mean"], meta["std"]) == ("RGB", [127.0] * 3, [128.0] * 3)
    assert meta["recipe"]["name"] == "mobilefacenet-default" == record.recipe["name"]
    faces = Path(__file__).resolve().parents[1] / "examples" / "faces"
    scores = {}
    for name, model in (("original", real_model), ("copy", out)):
        scored = _cli("score", faces, "-m", model, "--backend", "onnxruntime", "--precision", "fp32", "-q",
                      "-o", tmp_path / f"{name}.csv")
        assert scored.returncode == 0, scored.stderr
        with open(tmp_path / f"{name}.csv", newline="") as f:
            scores[name] = [(r["path"], float(r["quality"]), int(r["score"])) for r in csv.DictReader(f)]
    assert len(scores["copy"]) == 6
    for (pa, qa, sa), (pb, qb, sb) in zip(scores["original"], scores["copy"]):
        assert pa == pb and abs(qa - qb) < 1e-5 and sa == sb, (pa, qa, qb)


def test_cli_reports_a_checkpoint_problem_without_traceback(tmp_path):
    arch, net, path = make_checkpoint(tmp_path, "adaface_ir101", True)
    proc = _cli("export", path, "--arch", "transface_vit_s", "--out", tmp_path / "x.onnx")
    assert proc.returncode == 2
    assert "AdaFace" in proc.stderr and "--arch" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_records_are_complete_and_lookup_still_works():
    for m in zoo.MODELS.values():
        assert m.arch in zoo.ARCHS or m.arch == zoo.ONNX_ARCH
        assert m.files and m.source.startswith("https://") and m.licence and m.directory
        assert m.url is None or m.url.startswith("https://")
        assert m.embedding_size() == 512 and m.preprocessing()
    assert {"arcface", "adaface", "transface"} <= set(locations.directories())
    assert registry.lookup(registry.KNOWN_MODELS[0].sha256).name == registry.KNOWN_MODELS[0].name


def test_weights_folders_of_the_seed_convention_are_found(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fiqa_trt.cli.app import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIQA_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(locations.ENV_ROOT, raising=False)
    ada = tmp_path / "weights" / "adaface" / "adaface_ir101_webface12m.ckpt"
    other = tmp_path / "weights" / "transface" / "my_finetune.pt"
    for p in (ada, other):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert locations.resolve("adaface-ir101-webface12m") == (Path("weights/adaface/adaface_ir101_webface12m.ckpt")
                                                             .absolute(), zoo.MODELS["adaface-ir101-webface12m"])
    with pytest.raises(FiqaError, match=r"(?s)not in the weights folders.*weights/transface"):
        locations.resolve("transface-glint360k-vit_l")
    result = CliRunner().invoke(app, ["weights", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "found" in result.output and str(ada) in result.output.replace("\n", "")
    assert "my_finetune.pt" in result.output


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _zoo_entry(url, sha, member="model.onnx"):
    return zoo.ModelRecord("test-model", zoo.ONNX_ARCH, (member,), "https://example.org/models", "test", sha256=sha,
                        url=url, archive_member=member if url.endswith(".zip") else None, weights_dir="arcface")


def test_fetch_downloads_unpacks_and_verifies(http_server, tmp_path):
    root, base = http_server
    payload = b"onnx-bytes" * 1000
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("pack/model.onnx", payload)
        zf.writestr("pack/other.onnx", b"x")
    sha = hashlib.sha256(payload).hexdigest()
    seen = []
    path = fetch.fetch(_zoo_entry(f"{base}/pack.zip", sha), root=tmp_path / "w",
                       progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "w" / "arcface" / "model.onnx" and path.read_bytes() == payload
    assert seen and seen[-1][0] == seen[-1][1]
    assert fetch.fetch(_zoo_entry(f"{base}/pack.zip", sha), root=tmp_path / "w") == path  # already there
    (root / "plain.onnx").write_bytes(payload)
    plain = fetch.fetch(_zoo_entry(f"{base}/plain.onnx", sha), root=tmp_path / "p")
    assert plain.read_bytes() == payload


def test_fetch_refuses_a_bad_checksum_and_leaves_nothing(http_server, tmp_path):
    root, base = http_server
    (root / "plain.onnx").write_bytes(b"tampered")
    with pytest.raises(FiqaError, match="checksum mismatch .*expected sha256 0+, got"):
        fetch.fetch(_zoo_entry(f"{base}/plain.onnx", "0" * 64), root=tmp_path / "w")
    assert not any((tmp_path / "w").rglob("*.*"))
    with pytest.raises(FiqaError, match="HTTP 404"):
        fetch.fetch(_zoo_entry(f"{base}/missing.zip", "0" * 64), root=tmp_path / "w")
    with pytest.raises(FiqaError, match="no direct download link.*github.com/mk-minchul/AdaFace"):
        fetch.fetch(zoo.MODELS["adaface-ir50-ms1mv2"], root=tmp_path / "w")


def test_weights_fetch_command_against_a_local_server(http_server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fiqa_trt.cli.app import app

    root, base = http_server
    (root / "m.onnx").write_bytes(b"weights")
    entry = _zoo_entry("https://unreachable.invalid/m.onnx", hashlib.sha256(b"weights").hexdigest())
    monkeypatch.setitem(zoo.MODELS, entry.name, entry)
    result = CliRunner().invoke(app, ["weights", "fetch", entry.name, "--url", f"{base}/m.onnx", "--dest",
                                      str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "arcface" / "model.onnx").read_bytes() == b"weights"


# ---------------------------------------------------------------------------------------------------- full size

FULL = ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "adaface_ir18", "adaface_ir34",
        "adaface_ir50", "adaface_ir101", "transface_vit_s", "transface_vit_b", "transface_vit_l",
        "magface_iresnet18", "magface_iresnet50", "magface_iresnet100", "crfiqa_iresnet50", "crfiqa_iresnet100"]


@pytest.mark.fullsize
@pytest.mark.parametrize("name", FULL)
def test_full_size_published_checkpoint_parity_fp32_and_fp16(tmp_path, name):
    _parity(tmp_path, name, False, True, len(zoo.arch(name).fam.outputs) > 1)
