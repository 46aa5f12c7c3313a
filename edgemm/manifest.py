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
from pathlib import Path

from edgemm.atomic import read_json_object
from edgemm.errors import InputError
from edgemm.spec import ModelSpec, from_dict, from_v1

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
FORMATS = ("tflite", "onnx")
PRECISIONS = ("float32", "float16", "int8", "mixed")


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
    """Reads and checks DIR/manifest.json (or the file itself)."""
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    data = read_json_object(file, "manifest", missing="no manifest (run `edgemm convert` to make one)")
    _require(data.get("schema_version") in READABLE_SCHEMAS, file,
             f"schema_version {data.get('schema_version')!r} is not one of {READABLE_SCHEMAS}")
    _require(isinstance(data.get("artifacts"), dict), file, "'artifacts' missing or not a dict")
    artifacts = _artifacts(data, file)
    return Manifest(directory=file.parent, artifacts=artifacts, spec=_spec(data, artifacts, file), data=data)


def _spec(data: dict, artifacts: dict[str, Artifact], file: Path) -> ModelSpec | None:
    first = next(iter(artifacts.values()), None)
    names = ([str(t.get("name")) for t in first.inputs if isinstance(t, dict)],
             [str(t.get("name")) for t in first.outputs if isinstance(t, dict)]) if first else ([], [])
    try:
        if data["schema_version"] == 1:
            _require(isinstance(data.get("labels"), list), file, "'labels' missing or not a list")
            if data.get("preprocess") is None:
                return None
            return from_v1({"preprocess": data["preprocess"], "labels": data["labels"]}, *names, where="preprocess")
        return None if data.get("spec") is None else from_dict(data["spec"], None, "spec")
    except (InputError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"{file}: bad model spec ({e})") from None


def _check_layout(layout, entry: dict, file: Path, where: str) -> None:
    if layout is None:
        return
    _require(isinstance(layout, dict) and set(layout) <= {"inputs", "outputs"}, file,
             f"{where}.layout must be an object with 'inputs' and/or 'outputs'")
    for side, perms in layout.items():
        ranks = {t.get("name"): len(t.get("shape") or ()) for t in entry[side] if isinstance(t, dict)}
        _require(isinstance(perms, dict), file, f"{where}.layout.{side} must be an object")
        for name, value in perms.items():
            perm = value.get("perm") if isinstance(value, dict) else None
            _require(name in ranks, file, f"{where}.layout.{side} names {name!r}, which the artifact does not have")
            _require(isinstance(perm, list) and sorted(perm) == list(range(ranks[name])), file,
                     f"{where}.layout.{side}.{name}.perm must be a permutation of its {ranks[name]} axes")


def _artifacts(data: dict, file: Path) -> dict[str, Artifact]:
    artifacts = {}
    for name, entry in data["artifacts"].items():
        where = f"artifacts.{name}"
        _require(isinstance(entry, dict), file, f"{where} must be an object")
        missing = [k for k in ("file", "format", "precision", "size_bytes", "sha256", "inputs", "outputs") if k not in entry]
        _require(not missing, file, f"{where} lacks {', '.join(missing)}")
        _require(entry["format"] in FORMATS, file, f"{where}.format {entry['format']!r} is not one of {FORMATS}")
        _require(entry["precision"] in PRECISIONS, file, f"{where}.precision {entry['precision']!r} unknown")
        _require(isinstance(entry["file"], str) and "/" not in entry["file"] and entry["file"] not in ("", ".", ".."),
                 file, f"{where}.file must be a plain file name in the manifest's directory")
        _check_layout(entry.get("layout"), entry, file, where)
        known = {"file", "format", "precision", "size_bytes", "sha256", "inputs", "outputs"}
        artifacts[name] = Artifact(
            name=name, file=entry["file"], format=entry["format"], precision=entry["precision"],
            size_bytes=int(entry["size_bytes"]), sha256=str(entry["sha256"]),
            inputs=tuple(entry["inputs"]), outputs=tuple(entry["outputs"]),
            extra={k: v for k, v in entry.items() if k not in known},
        )
    return artifacts
