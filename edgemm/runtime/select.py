"""Choosing a backend and an artifact from the manifest, by name or `auto`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgemm.backends import Backend, registry
from edgemm.errors import DependencyError, EdgemmError, InputError
from edgemm.manifest import Manifest, check_inputs


@dataclasses.dataclass
class Selected:
    backend: Backend
    name: str
    artifact: str
    path: Path
    tried: list[str]  # "name: why it was not used", for auto


def _edgetpu_model(manifest: Manifest, artifact: str) -> Path:
    manifest.artifact_path(artifact)  # the int8 model it was compiled from must be intact
    compiled = manifest.directory / (Path(manifest.artifacts[artifact].file).stem + "_edgetpu.tflite")
    if not compiled.is_file():
        raise InputError(f"{compiled.name} not found in {manifest.directory}: compile int8.tflite with edgetpu_compiler "
                         "(edgemm convert runs it when it is on PATH)")
    return compiled


def check_io(selected: "Selected", manifest: Manifest) -> "Selected":
    """Refuses a model whose inputs are not the ones its manifest declares (see manifest.check_inputs)."""
    check_inputs(manifest.artifacts[selected.artifact].inputs, [t.to_dict() for t in selected.backend.inputs],
                 selected.path)
    return selected


def open_named(manifest: Manifest, name: str, artifact: str | None = None, threads: int | None = None,
               trt_cache: Path | None = None, options: dict | None = None, note=None) -> Selected:
    """Opens backend `name` on its artifact and checks its inputs against the manifest; `options` come from
    a device profile (delegate path, execution-provider options)."""
    return check_io(_open_named(manifest, name, artifact, threads, trt_cache, options, note), manifest)


def _open_named(manifest: Manifest, name: str, artifact: str | None, threads: int | None, trt_cache: Path | None,
                options: dict | None, note) -> Selected:
    options = dict(options or {})
    artifact = artifact or options.pop("artifact", None)  # a profile may pin the artifact (e.g. fp16 on Jetson Nano)
    kind = registry.kind(name)
    candidates = (artifact,) if artifact else tuple(a for a in kind.artifacts if a in manifest.artifacts)
    if not candidates:
        raise InputError(f"the manifest has no artifact for {name} (needs one of {', '.join(kind.artifacts)})")
    key = candidates[0]
    fmt = manifest.artifacts[key].format if key in manifest.artifacts else None
    if fmt != kind.format:
        raise InputError(f"backend {name} cannot run artifact {key} ({fmt})")
    if name == "edgetpu":
        path = _edgetpu_model(manifest, key)
    else:
        path = manifest.artifact_path(key)
    if name == "ort-tensorrt":
        from edgemm.backends.onnxrt import available_providers
        from edgemm.runtime.trt_cache import engine_cache_dir, has_engine

        cache = engine_cache_dir(trt_cache or manifest.directory / "trt_cache", manifest.artifacts[key].sha256)
        options = {"provider_options": registry.tensorrt_options(manifest.artifacts[key].precision, cache, options)}
        cache.mkdir(parents=True, exist_ok=True)
        if note is not None and not has_engine(cache) and "TensorrtExecutionProvider" in available_providers():
            note(f"building the TensorRT engine for {path.name}: this can take several minutes on a Jetson; "
                 f"it is cached in {cache} for the next start")
    elif name.startswith("ort-") and options:
        options = {"provider_options": options}
    return Selected(registry.open_backend(name, path, threads, **options), name, key, path, [])


def open_backend_for(manifest: Manifest, name: str = "auto", artifact: str | None = None, threads: int | None = None,
                     trt_cache: Path | None = None, order: tuple[str, ...] = registry.AUTO_ORDER, profile=None,
                     note=None) -> Selected:
    """Opens `name`, or with "auto" the first of `order` (or of the profile's backend chain) that works,
    saying why the others did not."""
    chain = [(b, {}) for b in order]
    if profile is not None:
        chain = [(b.name, b.options) for b in profile.backends]
        threads = threads or profile.threads
    if name != "auto":
        options = next((o for b, o in chain if b == name), {})
        return open_named(manifest, name, artifact, threads, trt_cache, options, note)
    tried = []
    for candidate, options in chain:
        try:
            selected = open_named(manifest, candidate, artifact, threads, trt_cache, options, note)
        except EdgemmError as e:
            tried.append(f"{candidate}: {e}")
            continue
        selected.tried = tried
        return selected
    raise DependencyError("no backend could run this model: " + "; ".join(tried))
