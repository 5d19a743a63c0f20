"""Write the API manifests the TensorRT stand-in checks against (run by hand when a TensorRT version is added; it
needs the network and a C compiler; the tests only read the JSON it writes).

TensorRT 11.x: the real Python bindings wheel (tensorrt-cuXX-bindings, from PyPI) imported against a stub C library
that only exports the nine entry points the bindings link to (no TensorRT library can be installed here), then
introspected: members, properties, enum values, and every method's pybind11 signature(s).
TensorRT 10.x: the pybind11-stubgen stubs of the tensorrt-stubs package (PyPI), parsed with `ast`.

Only the classes `fiqa_trt.engine.runners.tensorrt` touches (and their bases) are kept; every member of those is.

    python tests/tensorrt_api/extract.py 11.4.0.106 10.13.0.35.1
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
CLASSES = ["ILogger", "Logger", "Runtime", "ICudaEngine", "IExecutionContext", "TensorIOMode", "DataType", "Builder",
           "INetworkDefinition", "ITensor", "OnnxParser", "ParserError", "IBuilderConfig", "IOptimizationProfile",
           "ITimingCache", "IHostMemory", "MemoryPoolType", "NetworkDefinitionCreationFlag", "BuilderFlag",
           "ExecutionContextAllocationStrategy"]
FUNCTIONS = ["nptype"]
ENTRY_POINTS = """
void* createInferBuilder_INTERNAL(void* a, int b){return 0;}
void* createInferRefitter_INTERNAL(void* a, void* b, int c){return 0;}
void* createInferRuntime_INTERNAL(void* a, int b){return 0;}
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c){return 0;}
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c){return 0;}
void* getBuilderPluginRegistry(int a){return 0;}
int getNvOnnxParserVersion(void){return 0;}
void* getPluginRegistry(void){return 0;}
int initLibNvInferPlugins(void* a, const char* b){return 0;}
"""


def split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{<"
        depth -= ch in ")]}>"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def short(type_text: str | None) -> str | None:
    """'tensorrt_bindings.tensorrt.INetworkDefinition' -> 'INetworkDefinition'; unions and builtins -> None."""
    if not type_text:
        return None
    name = type_text.strip().strip("'\"").split("[")[0].split(".")[-1]
    return name if name in CLASSES else None


def parse_pybind_signature(line: str, name: str) -> dict | None:
    match = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\)\s*->\s*(.+)$", line.strip())
    if not match:
        return None
    params = []
    for part in split_top(match.group(1)):
        pname = part.split(":")[0].split("=")[0].strip()
        if pname in ("self", "*", "/") or pname.startswith("*"):
            continue
        params.append({"name": pname, "default": "=" in part, "positional_only": bool(re.fullmatch(r"arg\d+", pname))})
    return {"params": params, "returns": short(match.group(2))}


def from_module(trt) -> dict:
    classes = {}
    for cname in CLASSES:
        cls = getattr(trt, cname, None)
        if cls is None:
            continue
        members = {}
        for m in [n for n in dir(cls) if not n.startswith("_")] + ["__init__"]:
            raw = inspect.getattr_static(cls, m, None)
            value = getattr(cls, m, None)
            if isinstance(raw, property) or type(raw).__name__ == "property":
                members[m] = {"kind": "property"}
            elif type(value).__name__ == type(getattr(cls, m)).__name__ and hasattr(value, "__int__") and \
                    hasattr(type(value), "__members__"):
                members[m] = {"kind": "value", "int": int(value)}
            elif callable(value):
                doc = (value.__doc__ or "").splitlines()
                sigs = [s for s in (parse_pybind_signature(line, m) for line in doc) if s]
                members[m] = {"kind": "method", "overloads": sigs}
            else:
                members[m] = {"kind": "attribute"}
        classes[cname] = members
    functions = {f: {"kind": "function"} for f in FUNCTIONS if hasattr(trt, f)}
    return {"classes": classes, "functions": functions}


def _args_of(fn: ast.FunctionDef) -> dict:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    params = [{"name": p.arg, "default": d, "positional_only": p in a.posonlyargs or bool(re.fullmatch(r"arg\d+", p.arg))}
              for p, d in zip(positional, defaults) if p.arg != "self"]
    params += [{"name": p.arg, "default": d is not None, "positional_only": False, "keyword_only": True}
               for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    returns = short(ast.unparse(fn.returns)) if fn.returns is not None else None
    return {"params": params, "returns": returns}


def _parse_repairing(pyi: str) -> tuple[ast.Module, str]:
    """The stubs hold a few signatures Python cannot parse (a parameter without default after defaults): those
    lines become `(self, *args, **kwargs)`, which no check relies on."""
    lines = pyi.splitlines()
    while True:
        try:
            return ast.parse("\n".join(lines)), "\n".join(lines)
        except SyntaxError as exc:
            i = exc.lineno - 1
            match = re.match(r"^(\s*def \w+)\(.*\)(\s*->.*)?:(.*)$", lines[i])
            if not match:
                raise
            lines[i] = f"{match.group(1)}(self, *args, **kwargs){match.group(2) or ''}:{match.group(3)}"


def from_stub(pyi: str, init_pyi: str) -> dict:
    tree, pyi = _parse_repairing(pyi)
    raw: dict[str, tuple[list[str], dict]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members: dict = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decorators = [ast.unparse(d) for d in item.decorator_list]
                    if "property" in decorators or any(d.endswith(".setter") for d in decorators):
                        members[item.name] = {"kind": "property"}
                    elif not item.name.startswith("_") or item.name == "__init__":
                        members.setdefault(item.name, {"kind": "method", "overloads": []})["overloads"].append(
                            _args_of(item))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    seg = ast.get_source_segment(pyi, item) or ""
                    line = pyi.splitlines()[item.lineno - 1]
                    value = re.search(r"# value = <[\w.]+: (-?\d+)>", line)
                    if value and not item.target.id.startswith("_"):
                        members[item.target.id] = {"kind": "value", "int": int(value.group(1))}
                    elif not item.target.id.startswith("_") and seg:
                        members[item.target.id] = {"kind": "attribute"}
                elif isinstance(item, ast.ClassDef):
                    members[item.name] = {"kind": "attribute"}
            raw[node.name] = ([ast.unparse(b).split(".")[-1] for b in node.bases], members)

    def merged(name: str) -> dict:
        bases, members = raw[name]
        out = {}
        for base in bases:
            if base in raw:
                out.update(merged(base))
        out.update(members)
        return out

    classes = {c: merged(c) for c in CLASSES if c in raw}
    functions = {f: {"kind": "function"} for f in FUNCTIONS if f"def {f}(" in init_pyi}
    return {"classes": classes, "functions": functions}


def pip_download(requirement: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), requirement],
                   check=True)
    return next(folder.glob("*.whl"))


def extract_11(version: str, work: Path) -> dict:
    wheel = pip_download(f"tensorrt-cu13-bindings=={version}", work / "wheel11")
    zipfile.ZipFile(wheel).extractall(work / "site11")
    libs = work / "libs"
    libs.mkdir()
    (libs / "stub.c").write_text(ENTRY_POINTS)
    for name in ("libnvinfer.so.11", "libnvonnxparser.so.11", "libnvinfer_plugin.so.11"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(libs / name), str(libs / "stub.c")], check=True)
    code = (f"import sys, json; sys.path.insert(0, {str(work / 'site11')!r}); sys.path.insert(0, {str(HERE.parent.parent)!r});"
            "import tensorrt_bindings as trt; from tests.tensorrt_api.extract import from_module;"
            "print(json.dumps({'version': trt.__version__, **from_module(trt)}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"LD_LIBRARY_PATH": str(libs), "PATH": "/usr/bin:/bin"})
    data = json.loads(out.stdout)
    data["source"] = f"tensorrt-cu13-bindings {version} (PyPI), introspected"
    return data


def extract_10(stub_version: str, work: Path) -> dict:
    wheel = pip_download(f"tensorrt-stubs=={stub_version}", work / "wheel10")
    z = zipfile.ZipFile(wheel)
    data = from_stub(z.read("tensorrt_bindings/tensorrt.pyi").decode(), z.read("tensorrt_bindings/__init__.pyi").decode())
    version = ".".join(stub_version.split(".")[:4])
    return {"version": version, **data, "source": f"tensorrt-stubs {stub_version} (PyPI), parsed"}


def main(v11: str, v10_stubs: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for data in (extract_11(v11, Path(tmp)), extract_10(v10_stubs, Path(tmp))):
            major_minor = ".".join(data["version"].split(".")[:2])
            path = HERE / f"tensorrt-{major_minor}.json"
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(path, sum(len(m) for m in data["classes"].values()), "members")


if __name__ == "__main__":
    main(*sys.argv[1:3])
