import pytest

from fiqa_trt.engine.perturbations import DEFAULT_SPEC, KINDS, draw, parse_spec, plan_views, view_rng
from fiqa_trt.errors import FiqaError


def test_default_is_the_study_setting():
    spec = parse_spec(DEFAULT_SPEC)
    assert spec.kind.name == "affine"
    assert spec.values == {"rot": 0.5, "scale": 1.01, "tx": 0.0, "ty": 0.0, "flip": 1.0}
    assert spec.deterministic


def test_all_eight_study_perturbations_are_registered():
    assert set(KINDS) == {"affine", "gaussian", "poisson", "saltpepper", "occlusion", "border", "elastic",
                          "selfmixup", "mixup"}


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


def test_draws_depend_on_seed_image_and_view_only():
    spec = parse_spec("affine:rot=-3:3,scale=0.9:1.1")
    a = draw(spec, view_rng(1, "x/a.jpg", 0))
    assert a == draw(spec, view_rng(1, "x/a.jpg", 0))
    assert a != draw(spec, view_rng(2, "x/a.jpg", 0))
    assert a != draw(spec, view_rng(1, "x/b.jpg", 0))
    assert a != draw(spec, view_rng(1, "x/a.jpg", 1))
    assert -3 <= a["rot"] <= 3 and 0.9 <= a["scale"] <= 1.1
    sizes = {draw(parse_spec("occlusion:size=10:12"), view_rng(0, str(i), 0))["size"] for i in range(50)}
    assert sizes == {10.0, 11.0, 12.0}
