"""Device profiles (firmware_configs/*.yaml): what a board needs, validated against a strict schema.

A profile names the accelerator, the artifacts `edgemm convert --target` must produce, the backend
chain `edgemm run --profile` tries in order (with execution-provider / delegate options), threads,
the default camera and microphone, budgets, the libraries it needs, and where telemetry is read.
Unknown keys are errors; every error names the file, the key and the problem on one line.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import glob
import shutil
from pathlib import Path
from typing import Any

from edgemm.config import parse_yaml, read_text
from edgemm.errors import DependencyError, InputError, quote

PROFILE_DIR = Path(__file__).resolve().parents[1] / "firmware_configs"
ACCELERATORS = ("cpu", "gpu", "edgetpu")
ARTIFACTS = ("float_tflite", "int8_tflite", "float_onnx", "int8_onnx", "fp16_onnx")
BACKENDS = ("litert", "edgetpu", "ort-cpu", "ort-cuda", "ort-tensorrt")
MAX_PROFILE_BYTES = 64 << 10  # a profile is about 1 KB
MAX_PROFILE_VALUES = 10_000  # YAML values after aliases; a profile has about 50


@dataclasses.dataclass(frozen=True)
class Camera:
    uri: str = "0"
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclasses.dataclass(frozen=True)
class Microphone:
    device: str = "default"
    rate: int = 16000
    chunk: int = 320


@dataclasses.dataclass(frozen=True)
class Budgets:
    max_latency_ms: float | None = None  # p50 single inference on the target
    max_model_bytes: int | None = None  # each int8 artifact
    max_accuracy_drop: float | None = None  # points vs the float model
    max_memory_mb: float | None = None  # peak RSS of edgemm run


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Telemetry:
    thermal_zones: str | None = None  # glob of files holding millidegrees Celsius
    clocks: str | None = None  # glob of files holding kHz
    edgetpu_temperature: str | None = None  # glob (Coral PCIe/Dev Board apex driver)


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    accelerator: str
    artifacts: tuple[str, ...]
    backends: tuple[Backend, ...]
    threads: int
    camera: Camera
    microphone: Microphone
    budgets: Budgets
    telemetry: Telemetry
    libraries: tuple[str, ...] = ()  # shared libraries the accelerator needs, e.g. libedgetpu.so.1
    require_edgetpu_mappable: bool = False
    notes: str = ""
    path: Path | None = None


_SCALARS = {"name": str, "description": str, "accelerator": str, "threads": int, "notes": str,
            "require_edgetpu_mappable": bool}
_SECTIONS = {"camera": Camera, "microphone": Microphone, "budgets": Budgets, "telemetry": Telemetry}
_TOP = set(_SCALARS) | set(_SECTIONS) | {"artifacts", "backends", "libraries"}
_REQUIRED = ("name", "description", "accelerator", "artifacts", "backends")


def _fail(path: Path, key: str, problem: str):
    raise InputError(f"{path}: {key if len(key) <= 60 else key[:57] + '...'}: {problem}")  # keys may be users' too


def _type_ok(value: Any, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _section(path: Path, key: str, cls, data: Any):
    if not isinstance(data, dict):
        _fail(path, key, "must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in fields:
            _fail(path, f"{key}.{k}", f"unknown key (allowed: {', '.join(fields)})")
        kind = {"str": str, "int": int, "float": float}[fields[k].type.split(" ")[0].replace("|", "").strip()]
        if v is not None and not _type_ok(v, kind):
            _fail(path, f"{key}.{k}", f"must be {kind.__name__}, got {type(v).__name__} {quote(v)}")
        if kind in (int, float) and v is not None and v <= 0:
            _fail(path, f"{key}.{k}", f"must be positive, got {v}")
    return cls(**data)


def parse_profile(data: Any, path: Path) -> Profile:
    if not isinstance(data, dict):
        _fail(path, "(top level)", "a profile must be a YAML mapping")
    for key in data:
        if key not in _TOP:
            _fail(path, str(key), f"unknown key (allowed: {', '.join(sorted(_TOP))})")
    for key in _REQUIRED:
        if key not in data:
            _fail(path, key, "missing")
    for key, kind in _SCALARS.items():
        if key in data and not _type_ok(data[key], kind):
            _fail(path, key, f"must be {kind.__name__}, got {type(data[key]).__name__} {quote(data[key])}")
    if data["accelerator"] not in ACCELERATORS:
        _fail(path, "accelerator", f"{quote(data['accelerator'])} is not one of {', '.join(ACCELERATORS)}")
    if data.get("threads", 1) < 1:
        _fail(path, "threads", "must be >= 1")
    arts = data["artifacts"]
    if not isinstance(arts, list) or not arts or any(a not in ARTIFACTS for a in arts):
        _fail(path, "artifacts", f"must be a non-empty list of {', '.join(ARTIFACTS)}, got {quote(arts)}")
    chain = []
    if not isinstance(data["backends"], list) or not data["backends"]:
        _fail(path, "backends", "must be a non-empty list")
    for i, b in enumerate(data["backends"]):
        b = {"name": b} if isinstance(b, str) else b
        if not isinstance(b, dict) or set(b) - {"name", "options"} or "name" not in b:
            _fail(path, f"backends[{i}]", "must be a backend name or {name, options}")
        if b["name"] not in BACKENDS:
            _fail(path, f"backends[{i}].name", f"{quote(b['name'])} is not one of {', '.join(BACKENDS)}")
        if not isinstance(b.get("options", {}), dict):
            _fail(path, f"backends[{i}].options", "must be a mapping")
        chain.append(Backend(b["name"], dict(b.get("options") or {})))
    libs = data.get("libraries", [])
    if not isinstance(libs, list) or not all(isinstance(x, str) for x in libs):
        _fail(path, "libraries", "must be a list of library names")
    sections = {key: _section(path, key, cls, data.get(key) or {}) for key, cls in _SECTIONS.items()}
    return Profile(name=data["name"], description=data["description"], accelerator=data["accelerator"],
                   artifacts=tuple(arts), backends=tuple(chain), threads=int(data.get("threads", 1)),
                   libraries=tuple(libs), require_edgetpu_mappable=bool(data.get("require_edgetpu_mappable", False)),
                   notes=data.get("notes", ""), path=path, **sections)


def load_profile_file(path: Path) -> Profile:
    path = Path(path)
    data = parse_yaml(read_text(path, "profile", MAX_PROFILE_BYTES), str(path), MAX_PROFILE_VALUES)
    profile = parse_profile(data, path)
    if profile.name != path.stem:
        _fail(path, "name", f"{quote(profile.name)} must match the file name {quote(path.stem)}")
    return profile


def available(directory: Path = PROFILE_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_profile(name_or_path: str, directory: Path = PROFILE_DIR) -> Profile:
    """A profile by name (firmware_configs/NAME.yaml) or by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_profile_file(path)
    candidate = Path(directory) / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise InputError(f"unknown device profile {quote(name_or_path)} (known: {', '.join(available(directory))})")
    return load_profile_file(candidate)


def find_library(name: str) -> str | None:
    """The library's path if the dynamic loader can find it (ctypes), else None."""
    base = name.split(".so")[0].removeprefix("lib")
    found = ctypes.util.find_library(base)
    if found:
        return found
    for pattern in (f"/usr/lib/*/{name}*", f"/usr/lib/{name}*", f"/usr/local/lib/{name}*"):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    return None


def read_telemetry(t: Telemetry) -> dict:
    """Current readings where the files exist: temperatures in °C, clocks in MHz."""
    out: dict[str, Any] = {}

    def read(pattern: str | None, scale: float) -> dict:
        values = {}
        for f in sorted(glob.glob(pattern or "")):
            try:
                values[f] = round(int(Path(f).read_text().split()[0]) / scale, 1)
            except (OSError, ValueError, IndexError):
                pass
        return values

    if t.thermal_zones:
        out["temperature_c"] = read(t.thermal_zones, 1000.0)
    if t.clocks:
        out["clock_mhz"] = read(t.clocks, 1000.0)
    if t.edgetpu_temperature:
        out["edgetpu_temperature_c"] = read(t.edgetpu_temperature, 1000.0)
    return {k: v for k, v in out.items() if v}


def check(profile: Profile) -> list[tuple[str, str, str]]:
    """(item, "ok" | "missing" | "warning", detail or how to fix) for this machine against the profile.

    Required: the profile's libraries and the first backend of its chain (the accelerator); the other
    backends are fallbacks, the camera and microphone can be replaced by --camera/--mic: warnings.
    """
    rows = []
    for lib in profile.libraries:
        where = find_library(lib)
        fix = ("install the Edge TPU runtime: https://coral.ai/software/#debian-packages (apt install libedgetpu1-std)"
               if "edgetpu" in lib else f"install {lib}")
        rows.append((f"library {lib}", "ok" if where else "missing", where or fix))
    try:
        import onnxruntime as ort

        providers = set(ort.get_available_providers())
    except ImportError:
        providers = set()
    try:
        import ai_edge_litert  # noqa: F401

        litert = True
    except ImportError:
        litert = False
    need = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
            "ort-tensorrt": "TensorrtExecutionProvider"}
    for i, b in enumerate(profile.backends):
        if b.name in need:
            ok = need[b.name] in providers
            detail = "available" if ok else (f"ONNX Runtime here lacks {need[b.name]} (has {', '.join(sorted(providers)) or 'none'}); "
                                              "on Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack")
        elif b.name == "litert":
            ok, detail = litert, "available" if litert else "pip install ai-edge-litert"
        else:  # edgetpu
            ok = litert and find_library("libedgetpu.so.1") is not None
            detail = "available" if ok else "needs ai-edge-litert and libedgetpu.so.1 (the Edge TPU runtime)"
        role = "accelerator" if i == 0 else "fallback"
        rows.append((f"backend {b.name} ({role})", "ok" if ok else ("missing" if i == 0 else "warning"), detail))
    cam = profile.camera.uri
    if cam.isdecimal() or cam.startswith("/dev/video"):
        dev = cam if cam.startswith("/dev/") else f"/dev/video{cam}"
        rows.append((f"camera {cam}", "ok" if Path(dev).exists() else "warning", dev if Path(dev).exists() else
                     f"no {dev}: connect a camera, or pass --camera with a file or URL"))
    elif cam.startswith("csi://"):
        ok = shutil.which("nvargus-daemon") is not None or Path("/usr/sbin/nvargus-daemon").exists()
        rows.append((f"camera {cam}", "ok" if ok else "warning", "nvargus-daemon present" if ok else
                     "no nvargus-daemon: CSI cameras need JetPack's Argus stack"))
    try:
        from edgemm.capture.audio import open_pyaudio

        pa = open_pyaudio()
        try:
            inputs = [pa.get_device_info_by_index(i)["name"] for i in range(pa.get_device_count())
                      if pa.get_device_info_by_index(i)["maxInputChannels"] > 0]
        finally:
            pa.terminate()
        rows.append(("microphone", "ok" if inputs else "warning", ", ".join(inputs) if inputs else
                     "no audio input device: connect one or start PulseAudio; --mic FILE.wav works without"))
    except (ImportError, DependencyError):
        rows.append(("microphone", "warning", "PyAudio not importable: apt install portaudio19-dev; pip install pyaudio"))
    readings = read_telemetry(profile.telemetry)
    rows.append(("telemetry", "ok" if readings else "warning",
                 ", ".join(f"{k}: {len(v)} readable" for k, v in readings.items()) or "nothing readable here"))
    return rows
