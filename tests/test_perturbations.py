import numpy as np
import pytest

from fiqa_trt.engine.perturbations import (DEFAULT_SPEC, KINDS, Draws, derangements, draw_values, image_words,
                                           mixup_partners, parse_spec, plan_views)
from fiqa_trt.engine.pipeline import host_inputs
from fiqa_trt.errors import FiqaError


def test_default_is_the_study_setting():
    spec = parse_spec(DEFAULT_SPEC)
    assert spec.kind.name == "affine"
    assert spec.values == {"rot": 0.5, "scale": 1.01, "tx": 0.0, "ty": 0.0, "flip": 1.0}
    assert spec.deterministic


def test_all_eight_study_perturbations_are_registered():
    assert set(KINDS) == {"affine", "gaussian", "poisson", "saltpepper", "occlusion", "border", "elastic",
                          "selfmixup", "mixup", "lowres"}  # + lowres: the ui centre's view


def test_values_and_ranges():
    spec = parse_spec("affine:rot=-3:3,scale=1.02,flip=0")
    assert spec.values["rot"] == (-3.0, 3.0) and spec.values["scale"] == 1.02 and spec.values["flip"] == 0.0
    assert not spec.deterministic
    assert parse_spec("affine:rot=-5:-1").values["rot"] == (-5.0, -1.0)
    assert parse_spec("gaussian").values == {"sigma": 8.0}
    assert parse_spec("salt_pepper:amount=0.1").kind.name == "saltpepper"


@pytest.mark.parametrize("text, fragment", [
    ("blur:sigma=2", "available: affine, gaussian"),
    ("affine:angle=3", "its parameters are: rot, scale, tx, ty, flip"),
    ("gaussian:sigma=abc", "not a number"),
    ("gaussian:sigma=3:1", "low end above its high end"),
    ("gaussian:sigma=-1", "outside [0, 255]"),
    ("occlusion:size=2.5", "whole number"),
    ("affine:rot", "expected name=value"),
    ("affine:rot=1:2:3", "neither a value nor a low:high range"),
])
def test_mistakes_get_clear_messages(text, fragment):
    with pytest.raises(FiqaError, match=None) as info:
        parse_spec(text)
    assert fragment in str(info.value)


def test_fixed_specs_give_one_view_random_specs_give_k():
    plan = plan_views([parse_spec(DEFAULT_SPEC), parse_spec("gaussian:sigma=8"), parse_spec("border")], views=4)
    assert [v.spec.kind.name for v in plan] == ["affine"] + ["gaussian"] * 4 + ["border"]
    assert [v.index for v in plan] == list(range(6))
    assert len(plan_views([parse_spec("affine:flip=0.5")], views=3)) == 3
    with pytest.raises(FiqaError):
        plan_views([], views=0)


def _values(spec: str, seed: int, keys: list[str], view: int = 0) -> dict:
    return draw_values(parse_spec(spec), Draws(image_words(seed, keys), view))


def test_draws_depend_on_seed_image_and_view_only():
    spec = "affine:rot=-3:3,scale=0.9:1.1"
    a = _values(spec, 1, ["x/a.jpg"])
    same = _values(spec, 1, ["x/b.jpg", "x/a.jpg", "x/c.jpg"])  # another batch, another position
    assert a["rot"][0] == same["rot"][1] and a["scale"][0] == same["scale"][1]
    assert a["rot"][0] != _values(spec, 2, ["x/a.jpg"])["rot"][0]
    assert a["rot"][0] != same["rot"][0]  # another image
    assert a["rot"][0] != _values(spec, 1, ["x/a.jpg"], view=1)["rot"][0]
    assert a["rot"][0] != a["scale"][0] and -3 <= a["rot"][0] <= 3 and 0.9 <= a["scale"][0] <= 1.1
    sizes = _values("occlusion:size=10:12", 0, [str(i) for i in range(50)])["size"]
    assert set(sizes) == {10.0, 11.0, 12.0}
    assert _values("gaussian:sigma=4", 0, ["a", "b"])["sigma"] == 4.0  # a fixed value stays a number


def test_every_input_of_a_view_is_independent_of_the_batch():
    """The whole host-side input of every kind for an image is the same alone, in a batch, at any position."""
    keys = [f"person_{i}/img_{i}.jpg" for i in range(9)]
    specs = [parse_spec(f"{k}:{'grid=2:5' if k == 'selfmixup' else ''}") for k in KINDS] + [
        parse_spec("affine:rot=-4:4,flip=0.5"), parse_spec("elastic:sigma=2:6")]
    views = plan_views(specs, 3)
    batch = host_inputs(views, keys, 5, 112, 112)
    for pos in (0, 4, 8):
        alone = host_inputs(views, keys[pos:pos + 1], 5, 112, 112)
        for name, array in alone.items():
            if name.endswith("_ids"):  # the index of the sample in its batch (multi_paste's input ids)
                assert (np.asarray(array[0]) == 0).all() and (np.asarray(batch[name][pos]) == pos).all()
                continue
            np.testing.assert_array_equal(np.asarray(array[0]), np.asarray(batch[name][pos]), err_msg=name)
    occlusion = next(v.index for v in views if v.spec.kind.name == "occlusion")
    other_seed = host_inputs(views, keys, 6, 112, 112)
    assert not np.array_equal(batch[f"v{occlusion}_anchor"], other_seed[f"v{occlusion}_anchor"])


def test_keyed_uniforms_look_uniform_and_independent():
    draws = Draws(image_words(0, [f"k{i}" for i in range(20000)]), 3)
    u, v = draws.uniform(0), draws.uniform(1)
    assert ((0 <= u) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12 ** -0.5) < 0.01
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.03  # two counters of one view
    assert abs(np.corrcoef(u, Draws(draws.words, 4).uniform(0))[0, 1]) < 0.03  # two views
    counts = np.bincount(draws.integers(2, 0, 9), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200


def test_default_spec_matrix_is_the_one_of_the_per_image_draws():
    """The deterministic default keeps its exact float32 matrix (the one before the batched draws), so its scores
    do not change."""
    (matrix,) = host_inputs(plan_views([parse_spec(DEFAULT_SPEC)], 4), ["a", "b"], 0, 112, 112).values()
    want = np.frombuffer(bytes.fromhex("a8747dbf598f0d3c4febdd42598f0d3ca8747d3fc4ed943d"), np.float32).reshape(2, 3)
    np.testing.assert_array_equal(matrix, np.stack([want, want]))
    (unflipped,) = host_inputs(plan_views([parse_spec("affine:flip=0")], 1), ["a"], 0, 112, 112).values()
    want = np.frombuffer(bytes.fromhex("a8747d3f598f0dbc4b2c853f598f0d3ca8747d3fc4ed943d"), np.float32).reshape(2, 3)
    np.testing.assert_array_equal(unflipped[0], want)


def test_flip_probability_and_ranged_geometry():
    keys = [str(i) for i in range(4000)]
    (m,) = host_inputs(plan_views([parse_spec("affine:rot=0,scale=1,flip=0.3")], 1), keys, 0, 112, 112).values()
    flipped = m[:, 0, 0] < 0
    assert abs(flipped.mean() - 0.3) < 0.03
    (r,) = host_inputs(plan_views([parse_spec("affine:rot=-10:10,scale=1,flip=0")], 1), keys, 0, 112, 112).values()
    angles = np.degrees(np.arctan2(r[:, 1, 0], r[:, 1, 1]))
    assert angles.min() >= -10 and angles.max() <= 10 and angles.std() > 5
    np.testing.assert_allclose(r[:, 0, 0] ** 2 + r[:, 1, 0] ** 2, 1, rtol=1e-5)  # a pure rotation
    # the centre maps to itself (rotation about the centre): in = M @ (56, 56, 1)
    np.testing.assert_allclose(r @ np.array([56.0, 56.0, 1.0]), 56.0, atol=1e-3)


def test_derangements_leave_nothing_in_place_and_do_not_depend_on_the_batch():
    draws = Draws(image_words(0, [str(i) for i in range(500)]), 0)
    perms = derangements(draws, 16, 9)
    assert (np.sort(perms, 1) == np.arange(9)).all() and not (perms == np.arange(9)).any()
    assert len({p.tobytes() for p in perms}) > 450
    np.testing.assert_array_equal(derangements(Draws(draws.words[7:8], 0), 16, 9)[0], perms[7])


def test_mixup_partners_are_other_images_keyed_by_image():
    keys = [f"k{i}" for i in range(50)]
    view = plan_views([parse_spec("mixup")], 1)[0]
    partners = mixup_partners(range(50), keys, view, 0)
    assert ((partners >= 0) & (partners < 50)).all() and (partners != np.arange(50)).all()
    assert len(set(partners.tolist())) > 25
    np.testing.assert_array_equal(mixup_partners([10, 3], keys, view, 0), partners[[10, 3]])
    with pytest.raises(FiqaError, match="at least two"):
        mixup_partners([0], keys[:1], view, 0)


def test_each_kind_is_one_object():
    for kind in KINDS.values():
        assert kind.inputs, kind.name
        assert type(kind).arrays is not type(kind).__mro__[-2].arrays, kind.name  # its own draws
    assert [k.name for k in KINDS.values() if k.needs_partner] == ["mixup"]
