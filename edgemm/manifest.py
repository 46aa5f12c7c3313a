"""manifest.json: everything the runtime needs to know about converted artifacts.

Written by `edgemm convert`, read by `edgemm run` and `edgemm bench`. A manifest
names each artifact with its format, precision, size, sha256, input and output
tensors (names, shapes, dtypes, quantization), and carries the model spec
(edgemm.spec: what feeds each input, what each output means). An artifact whose
sha256 does not match is refused. Schema 1 manifests (a "preprocess" spec and
"labels") are migrated on read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import Path
from typing import Any

from edgemm.atomic import read_json_object
from edgemm.errors import InputError, quote
from edgemm.spec import ModelSpec, from_dict, from_v1

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
FORMATS = ("tflite", "onnx")


def is_model_dir(path: Path) -> bool:
    """A directory edgemm convert wrote (it holds manifest.json): its files are convert's, never overwritten
    by run or bench."""
    return (Path(path) / MANIFEST_NAME).is_file()
PRECISIONS = ("float32", "float16", "int8", "int16x8", "mixed")  # int16x8: 16-bit activations (TFLite)
# Tensor types as the backends name them (numpy names). ONNX Runtime's own name ("tensor(double)") is what
# convert records for a type edgemm does not map: accepted for outputs, which edgemm never has to make.
DTYPES = ("bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64")
_ORT_DTYPE = re.compile(r"tensor\([a-z0-9]+\)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # artifact keys name files and bench configurations
MAX_RANK = 16
MAX_DIM = 2**31 - 1
MAX_TENSORS = 4096  # inputs or outputs of one artifact
_FIELDS = ("file", "format", "precision", "size_bytes", "sha256", "inputs", "outputs")  # every artifact has them


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Artifact:
    name: str  # key in the manifest, e.g. "int8_tflite"
    file: str  # relative to the manifest's directory
    format: str
    precision: str
    size_bytes: int
    sha256: str
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    extra: dict  # anything else the converter recorded (quantization options, notes)


@dataclasses.dataclass(frozen=True)
class Manifest:
    directory: Path
    artifacts: dict[str, Artifact]
    spec: ModelSpec | None  # None for models converted without a spec (no live capture)
    data: dict  # the whole parsed document

    def perms(self, name: str, side: str = "inputs") -> dict[str, tuple[int, ...]]:
        """Inputs (or outputs) of artifact `name` laid out differently from the source model's (edgemm.layout)."""
        from edgemm.layout import read_perms

        return read_perms(self.artifacts[name].extra.get("layout"), side)

    def spec_for(self, name: str) -> ModelSpec | None:
        """The spec that feeds artifact `name`: the source's, with each transform writing the artifact's layout."""
        from edgemm.layout import adapt_spec

        if self.spec is None:
            return None
        shapes = {k: tuple(v) for k, v in (self.data.get("source") or {}).get("inputs", {}).items()}
        return adapt_spec(self.spec, self.perms(name), shapes)

    def artifact_path(self, name: str, verify: bool = True) -> Path:
        """The artifact's file; with `verify`, refuses it unless its sha256 matches."""
        if name not in self.artifacts:
            raise InputError(f"{self.directory / MANIFEST_NAME}: no artifact {name!r} (has {', '.join(self.artifacts)})")
        entry = self.artifacts[name]
        path = self.directory / entry.file
        if not path.is_file():
            raise InputError(f"{path}: artifact listed in the manifest is missing")
        if verify and sha256_file(path) != entry.sha256:
            raise InputError(f"{path}: sha256 does not match the manifest (file changed or tampered with); refusing it")
        return path


def _dims_agree(declared, actual) -> bool:
    return len(declared) == len(actual) and all(
        not isinstance(d, int) or not isinstance(a, int) or d < 0 or a < 0 or d == a for d, a in zip(declared, actual))


def check_inputs(declared, actual, where) -> None:
    """Refuses a model whose inputs (names, shapes, dtypes; `actual` as TensorInfo dicts) are not the ones
    its manifest declares: feeding it would fail on every frame, or silently feed the wrong tensor."""
    declared = {d.get("name"): d for d in declared if isinstance(d, dict)}
    actual = {t["name"]: t for t in actual}
    if set(declared) != set(actual):
        raise InputError(f"{where}: model inputs {sorted(actual)} do not match the manifest's {sorted(map(str, declared))}")
    for name, t in actual.items():
        shape, dtype = declared[name].get("shape"), declared[name].get("dtype")
        if dtype != t["dtype"] or not isinstance(shape, list) or not _dims_agree(shape, t["shape"]):
            raise InputError(f"{where}: input {name!r} is {t['dtype']} {list(t['shape'])} in the model but {dtype} {shape} "
                             "in the manifest")


def _require(cond: bool, where: Path, message: str) -> None:
    if not cond:
        raise InputError(f"{where}: {message}")


def load_manifest(path: str | Path) -> Manifest:
    """Reads and checks DIR/manifest.json (or the file itself), field by field: a manifest edited by hand, or
    cut short, is one line naming the field, never a KeyError or TypeError later in run or bench."""
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    data = read_json_object(file, "manifest", missing="no manifest (run `edgemm convert` to make one)")
    version = data.get("schema_version")
    _require(_is_int(version) and version in READABLE_SCHEMAS, file,
             f"schema_version {quote(version)} is not one of {READABLE_SCHEMAS}")
    _require(isinstance(data.get("artifacts"), dict) and len(data["artifacts"]) > 0, file,
             "'artifacts' missing, empty or not an object")
    _check_source(data.get("source"), file)
    artifacts = _artifacts(data, file)
    return Manifest(directory=file.parent, artifacts=artifacts, spec=_spec(data, artifacts, file), data=data)


def _spec(data: dict, artifacts: dict[str, Artifact], file: Path) -> ModelSpec | None:
    first = next(iter(artifacts.values()))
    names = [t["name"] for t in first.inputs], [t["name"] for t in first.outputs]
    try:
        if data["schema_version"] == 1:
            _require(isinstance(data.get("labels"), list), file, "'labels' missing or not a list")
            if data.get("preprocess") is None:
                return None
            return from_v1({"preprocess": data["preprocess"], "labels": data["labels"]}, *names, where="preprocess")
        return None if data.get("spec") is None else from_dict(data["spec"], None, "spec")
    except (InputError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"{file}: bad model spec ({e})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(shape: Any, file: Path, where: str) -> None:
    _require(isinstance(shape, list) and len(shape) <= MAX_RANK
             and all(_is_int(d) and (d == -1 or 1 <= d <= MAX_DIM) for d in shape), file,
             f"{where} must be a list of at most {MAX_RANK} sizes, each a positive integer or -1 (dynamic), "
             f"got {quote(shape)}")


def _check_tensors(tensors: Any, file: Path, where: str, fed: bool) -> None:
    """The inputs (`fed`) or outputs of an artifact, as the backends describe them (TensorInfo.to_dict)."""
    _require(isinstance(tensors, list) and 0 < len(tensors) <= MAX_TENSORS, file,
             f"{where} must be a list of 1 to {MAX_TENSORS} tensors")
    for i, t in enumerate(tensors):
        at = f"{where}[{i}]"
        _require(isinstance(t, dict), file, f"{at} must be an object with name, shape and dtype")
        _require(isinstance(t.get("name"), str) and t["name"] != "", file, f"{at}.name must be a non-empty string")
        _check_shape(t.get("shape"), file, f"{at}.shape")
        dtype = t.get("dtype")
        other = not fed and isinstance(dtype, str) and _ORT_DTYPE.fullmatch(dtype) is not None
        _require(dtype in DTYPES or other, file, f"{at}.dtype {quote(dtype)} is not one of {', '.join(DTYPES)}")
        scale, zero_point = t.get("scale"), t.get("zero_point")
        _require(scale is None or isinstance(scale, (int, float)) and not isinstance(scale, bool)
                 and math.isfinite(scale) and scale >= 0, file, f"{at}.scale must be a finite number >= 0 (0: not "
                 f"quantized), got {quote(scale)}")
        _require(zero_point is None or _is_int(zero_point), file, f"{at}.zero_point must be an integer")
    names = [t["name"] for t in tensors]
    _require(len(set(names)) == len(names), file, f"{where} names a tensor twice")


def _check_source(source: Any, file: Path) -> None:
    """The source model's description; its input shapes lay out constants for artifacts in another layout."""
    if source is None:
        return
    _require(isinstance(source, dict), file, "source must be an object")
    inputs = source.get("inputs", {})
    _require(isinstance(inputs, dict), file, "source.inputs must map input names to shapes")
    for name, shape in inputs.items():
        _check_shape(shape, file, f"source.inputs.{name}")


def _check_layout(layout, entry: dict, source: dict, file: Path, where: str) -> None:
    if layout is None:
        return
    _require(isinstance(layout, dict) and set(layout) <= {"inputs", "outputs"}, file,
             f"{where}.layout must be an object with 'inputs' and/or 'outputs'")
    for side, perms in layout.items():
        ranks = {t["name"]: len(t["shape"]) for t in entry[side]}
        _require(isinstance(perms, dict), file, f"{where}.layout.{side} must be an object")
        for name, value in perms.items():
            perm = value.get("perm") if isinstance(value, dict) else None
            _require(name in ranks, file,
                     f"{where}.layout.{side} names {quote(name)}, which the artifact does not have")
            is_perm = isinstance(perm, list) and all(map(_is_int, perm)) and sorted(perm) == list(range(ranks[name]))
            _require(is_perm, file,
                     f"{where}.layout.{side}.{name}.perm must be a permutation of its {ranks[name]} axes")
            _require(side == "outputs" or name in source.get("inputs", {}), file,
                     f"{where}.layout.inputs names {quote(name)}, which source.inputs lacks")


def _check_entry(name: str, entry: Any, file: Path) -> None:
    where = f"artifacts.{name}"
    _require(_KEY.fullmatch(name) is not None, file,
             f"artifact name {quote(name)} must be 1 to 100 letters, numbers, '_', '.' or '-'")
    _require(isinstance(entry, dict), file, f"{where} must be an object")
    missing = [k for k in _FIELDS if k not in entry]
    _require(not missing, file, f"{where} lacks {', '.join(missing)}")
    _require(entry["format"] in FORMATS, file, f"{where}.format {quote(entry['format'])} is not one of {FORMATS}")
    _require(entry["precision"] in PRECISIONS, file,
             f"{where}.precision {quote(entry['precision'])} is not one of {PRECISIONS}")
    plain = entry["file"]
    _require(isinstance(plain, str) and 0 < len(plain) <= 255 and not set(plain) & {"/", "\\", "\0"}
             and plain not in (".", ".."), file, f"{where}.file must be a plain file name in the manifest's directory, "
             f"got {quote(plain)}")
    _require(_is_int(entry["size_bytes"]) and entry["size_bytes"] >= 0, file,
             f"{where}.size_bytes must be an integer >= 0, got {quote(entry['size_bytes'])}")
    _require(isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"]) is not None, file,
             f"{where}.sha256 must be 64 lowercase hexadecimal characters, got {quote(entry['sha256'])}")
    _check_tensors(entry["inputs"], file, f"{where}.inputs", fed=True)
    _check_tensors(entry["outputs"], file, f"{where}.outputs", fed=False)


def _artifacts(data: dict, file: Path) -> dict[str, Artifact]:
    artifacts = {}
    for name, entry in data["artifacts"].items():
        _check_entry(name, entry, file)
        _check_layout(entry.get("layout"), entry, data.get("source") or {}, file, f"artifacts.{name}")
        artifacts[name] = Artifact(
            name=name, file=entry["file"], format=entry["format"], precision=entry["precision"],
            size_bytes=entry["size_bytes"], sha256=entry["sha256"],
            inputs=tuple(entry["inputs"]), outputs=tuple(entry["outputs"]),
            extra={k: v for k, v in entry.items() if k not in _FIELDS},
        )
    return artifacts
