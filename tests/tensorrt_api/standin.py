"""A `tensorrt` module made from a recorded API manifest (see extract.py): every attribute the code reads and every
call it makes is checked against that TensorRT version's real API (member names, property vs method, argument
names and counts), and `calls` records them. What the calls return comes from `behaviour`; without an entry a
method returns a stand-in object of its declared return class. This checks the code against the API, not
TensorRT's behaviour: engines are still only built and run where TensorRT and a GPU exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
VERSIONS = sorted(p.stem.removeprefix("tensorrt-") for p in HERE.glob("tensorrt-*.json"))


class ApiMismatch(AssertionError):
    pass


def _bind(sig: dict, args: tuple, kwargs: dict) -> str | None:
    """None when (args, kwargs) fit the signature, else why not."""
    params = sig["params"]
    positional = [p for p in params if not p.get("keyword_only")]
    if len(args) > len(positional):
        return f"{len(args)} positional arguments for {len(positional)} parameters"
    given = {p["name"] for p in positional[: len(args)]}
    for name in kwargs:
        match = [p for p in params if p["name"] == name]
        if not match or match[0]["positional_only"]:
            return f"no keyword parameter {name!r}"
        if name in given:
            return f"{name!r} given twice"
        given.add(name)
    missing = [p["name"] for p in params if p["name"] not in given and not p["default"]]
    return f"missing {missing}" if missing else None


class EnumValue:
    def __init__(self, owner: str, name: str, value: int):
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other) -> bool:
        return isinstance(other, EnumValue) and (other.owner, other.value) == (self.owner, self.value) or \
            (isinstance(other, int) and other == self.value)

    def __hash__(self) -> int:
        return hash((self.owner, self.value))

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.name}: {self.value}>"


class StandInObject:
    def __init__(self, module: "StandInTensorRT", cls: str, state: dict | None = None):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "state", state or {})

    def __getattr__(self, name: str):
        return self._module._member(self._cls, name, self)

    def __setattr__(self, name: str, value) -> None:
        member = self._module._lookup(self._cls, name)
        if member["kind"] not in ("property", "attribute"):
            raise ApiMismatch(f"TensorRT {self._module.__version__}: {self._cls}.{name} cannot be assigned")
        self._module.calls.append((f"{self._cls}.{name}=", (value,), {}))
        self.state[name] = value

    def __repr__(self) -> str:
        return f"<stand-in {self._cls}>"


class StandInClass:
    def __init__(self, module: "StandInTensorRT", cls: str):
        self._module, self._cls = module, cls

    def __call__(self, *args, **kwargs):
        self._module._check(self._cls, "__init__", args, kwargs)
        return self._module._result(self._cls, "__init__", None, args, kwargs)

    def __getattr__(self, name: str):
        return self._module._member(self._cls, name, None)


class StandInTensorRT:
    """Use as the `tensorrt` module: `StandInTensorRT("11.4", behaviour={("Builder", "build_serialized_network"):
    lambda obj, *a: b"engine", ...})`. Behaviour keys are (class, member); a property's entry may be a value."""

    def __init__(self, version: str, behaviour: dict | None = None):
        data = json.loads((HERE / f"tensorrt-{version}.json").read_text())
        self.__version__ = data["version"]
        self._classes, self._functions = data["classes"], data["functions"]
        self._behaviour = behaviour or {}
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._classes:
            return StandInClass(self, name)
        if name in self._functions:
            return lambda *args: self._behaviour[("tensorrt", name)](*args)
        raise ApiMismatch(f"TensorRT {self.__version__} has no tensorrt.{name}")

    def _lookup(self, cls: str, name: str) -> dict:
        member = self._classes[cls].get(name)
        if member is None:
            raise ApiMismatch(f"TensorRT {self.__version__} has no {cls}.{name}")
        return member

    def _check(self, cls: str, name: str, args: tuple, kwargs: dict) -> None:
        member = self._lookup(cls, name)
        if member["kind"] != "method":
            raise ApiMismatch(f"TensorRT {self.__version__}: {cls}.{name} is a {member['kind']}, not a method")
        reasons = [_bind(sig, args, kwargs) for sig in member["overloads"]]
        if member["overloads"] and all(reasons):
            raise ApiMismatch(f"TensorRT {self.__version__}: {cls}.{name}{args!r} {kwargs!r} fits no signature: "
                              + "; ".join(reasons))
        self.calls.append((f"{cls}.{name}", args, kwargs))

    def _result(self, cls: str, name: str, obj, args: tuple, kwargs: dict):
        hook = self._behaviour.get((cls, name))
        if hook is not None:
            return hook(obj, *args, **kwargs)
        if name == "__init__":
            return StandInObject(self, cls)
        returns = next((s["returns"] for s in self._lookup(cls, name)["overloads"] if s["returns"]), None)
        return StandInObject(self, returns) if returns else None

    def _member(self, cls: str, name: str, obj):
        member = self._lookup(cls, name)
        if member["kind"] == "value":
            return EnumValue(cls, name, member["int"])
        if member["kind"] in ("property", "attribute"):
            if obj is not None and name in obj.state:
                return obj.state[name]
            hook = self._behaviour.get((cls, name))
            if hook is None:
                raise ApiMismatch(f"no stand-in value for {cls}.{name}")
            return hook(obj) if callable(hook) else hook

        def method(*args, **kwargs):
            self._check(cls, name, args, kwargs)
            return self._result(cls, name, obj, args, kwargs)

        return method


def numpy_type(data_type: EnumValue):
    """What tensorrt.nptype gives for the data types an FR engine uses."""
    return {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "UINT8": np.uint8}[data_type.name]
