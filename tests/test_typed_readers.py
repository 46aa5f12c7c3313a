"""Typed readers: every file a user hands edgemm (manifest, bench report, device profile, model spec) is
checked field by field when read, with bounds on size, depth and expansion; bad input is exactly one
`Error: ...` line (exit 3), never a traceback, a hang or a huge allocation. Real files, real readers."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemm import spec as specs
from edgemm.atomic import MAX_JSON_BYTES, MAX_JSON_DEPTH, read_json_object
from edgemm.bench.report import load_report
from edgemm.binding import Tensor, bind
from edgemm.cli import main
from edgemm.errors import InputError, quote
from edgemm.manifest import load_manifest
from edgemm.profiles import load_profile

REFERENCE_REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_report" / "report.json"
_DELETE = object()  # a key to remove, in the tables below
PROFILE = "name: {name}\ndescription: x\naccelerator: cpu\nartifacts: [int8_tflite]\nbackends: [litert]\n"


def _one_error_line(result, *expected: str) -> str:
    """The CLI's single `Error:` line (exit 3, no traceback), which must contain every `expected` text."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert result.exit_code == 3 and len(errors) == 1 and "Traceback" not in result.output, result.output[:2000]
    assert all(text in errors[0] for text in expected), errors[0]
    assert len(errors[0]) < 1000
    return errors[0]


def _alias_bomb(levels: int) -> str:
    """A YAML flow list whose last item expands to 2**(levels + 1) ones (a billion laughs), in ~20 bytes a level."""
    items = ["&a0 [1, 1]"] + [f"&a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


# -- 1. JSON readers: depth and size ------------------------------------------------------------------------

def test_deeply_nested_json_report_is_one_line_through_compare(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = CliRunner().invoke(main, ["bench", "--compare", str(deep), str(REFERENCE_REPORT)])
    _one_error_line(result, str(deep), f"nested deeper than {MAX_JSON_DEPTH} levels")


def test_json_nested_beyond_the_bound_but_within_the_parser_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"x": ' + "[" * (MAX_JSON_DEPTH + 10) + "]" * (MAX_JSON_DEPTH + 10) + "}")
    with pytest.raises(InputError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        read_json_object(path, "manifest")


def test_oversized_json_is_refused_before_it_is_read(tmp_path):
    huge = tmp_path / "report.json"
    with open(huge, "wb") as f:  # sparse: no disk used, but a reader that reads it whole allocates 64 MiB+
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(InputError, match=f"too large for a report \\(more than {MAX_JSON_BYTES} bytes\\)"):
        load_report(huge)


# -- 2. Manifest: field by field ----------------------------------------------------------------------------

def _manifest() -> dict:
    tensor = {"scale": 0.0, "zero_point": 0, "dtype": "float32"}
    return {
        "schema_version": 2,
        "artifacts": {"int8_tflite": {
            "file": "model_int8.tflite", "format": "tflite", "precision": "int8", "size_bytes": 4,
            "sha256": hashlib.sha256(b"fake").hexdigest(),
            "inputs": [{"name": "x", "shape": [1, 4], **tensor}], "outputs": [{"name": "y", "shape": [1, 3], **tensor}],
        }},
        "spec": {"version": 2, "inputs": {"x": {"source": "constant", "value": [0, 0, 0, 0]}},
                 "outputs": {"y": {"head": "classify", "labels": ["a", "b", "c"]}}},
        "source": {"inputs": {"x": [1, 4]}, "outputs": {"y": [1, 3]}},
    }


def _write_manifest(directory: Path, keys: tuple, value) -> Path:
    data = _manifest()
    target = data
    for key in keys[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    (directory / "manifest.json").write_text(json.dumps(data))
    (directory / "model_int8.tflite").write_bytes(b"fake")
    return directory


_ART = ("artifacts", "int8_tflite")
A = "artifacts.int8_tflite"  # the artifact in messages


def test_a_well_formed_manifest_loads(tmp_path):
    manifest = load_manifest(_write_manifest(tmp_path, ("schema_version",), 2))
    art = manifest.artifacts["int8_tflite"]
    assert art.size_bytes == 4 and art.inputs[0]["shape"] == [1, 4]
    assert manifest.spec.outputs["y"].labels == ("a", "b", "c")
    assert manifest.artifact_path("int8_tflite").name == "model_int8.tflite"


def test_an_output_type_edgemm_does_not_map_is_accepted_as_onnx_runtime_names_it(tmp_path):
    output = {"name": "y", "shape": [1, 3], "dtype": "tensor(double)", "scale": 0.0, "zero_point": 0}
    manifest = load_manifest(_write_manifest(tmp_path, _ART + ("outputs",), [output]))
    assert manifest.artifacts["int8_tflite"].outputs[0]["dtype"] == "tensor(double)"


@pytest.mark.parametrize("keys, value, field", [
    (("schema_version",), True, "schema_version"),
    (("artifacts",), {}, "'artifacts' missing, empty"),
    (("artifacts",), {"../evil": _manifest()["artifacts"]["int8_tflite"]}, "artifact name '../evil'"),
    (_ART + ("size_bytes",), "12", A + ".size_bytes"),
    (_ART + ("size_bytes",), -5, A + ".size_bytes"),
    (_ART + ("size_bytes",), 4.5, A + ".size_bytes"),
    (_ART + ("sha256",), 123, A + ".sha256"),
    (_ART + ("sha256",), "../../etc", A + ".sha256"),
    (_ART + ("file",), "..\\model.tflite", A + ".file"),
    (_ART + ("file",), ["model.tflite"], A + ".file"),
    (_ART + ("inputs",), "abc", A + ".inputs"),
    (_ART + ("outputs",), [], A + ".outputs"),
    (_ART + ("inputs",), [{"name": "x", "shape": "1x4", "dtype": "float32"}], A + ".inputs[0].shape"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 0], "dtype": "float32"}], A + ".inputs[0].shape"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, -2], "dtype": "float32"}], A + ".inputs[0].shape"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 2.5], "dtype": "float32"}], A + ".inputs[0].shape"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1] * 40, "dtype": "float32"}], A + ".inputs[0].shape"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 4], "dtype": "float33"}], A + ".inputs[0].dtype"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 4], "dtype": 5}], A + ".inputs[0].dtype"),
    (_ART + ("inputs",), [{"name": 7, "shape": [1, 4], "dtype": "float32"}], A + ".inputs[0].name"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 4], "dtype": "tensor(double)"}], A + ".inputs[0].dtype"),
    (_ART + ("inputs",), [{"name": "x", "shape": [1, 4], "dtype": "int8", "scale": "0.1"}],
     A + ".inputs[0].scale"),
    (_ART + ("layout",), {"inputs": {"x": {"perm": ["a", 0]}}}, A + ".layout.inputs.x.perm"),
    (("source",), {"inputs": {"x": "abc"}}, "source.inputs.x"),
    (("spec", "outputs", "y", "labels"), "/etc/hostname", "bad model spec (outputs.y.labels must be a list"),
])
def test_malformed_manifest_fields_are_one_line_errors_naming_the_field(tmp_path, keys, value, field):
    directory = _write_manifest(tmp_path, keys, value)
    with pytest.raises(InputError) as err:
        load_manifest(directory)
    message = str(err.value)
    assert field in message and "\n" not in message and str(tmp_path / "manifest.json") in message, message


def test_a_manifest_with_a_malformed_tensor_fails_bench_in_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    _write_manifest(model, _ART + ("inputs",), "abc")  # today: a TypeError traceback when bench makes inputs
    result = CliRunner().invoke(main, ["bench", str(model), "--report", str(tmp_path / "out"), "--runs", "1"])
    _one_error_line(result, "artifacts.int8_tflite.inputs must be a list")


# -- 3. Bench reports and --compare -------------------------------------------------------------------------

def _report_with(tmp_path: Path, change) -> Path:
    report = json.loads(REFERENCE_REPORT.read_text())
    change(report["results"][1], report)
    path = tmp_path / "new.json"
    path.write_text(json.dumps(report))  # NaN is written as NaN, as json.dumps (and write_json) does
    return path


def _set(path: tuple, value):
    def change(row, report):
        target = row
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


def test_the_reference_report_compares_with_itself():
    result = CliRunner().invoke(main, ["bench", "--compare", str(REFERENCE_REPORT), str(REFERENCE_REPORT)])
    assert result.exit_code == 0 and result.output.count("ok ") == 8, result.output


@pytest.mark.parametrize("change, problem", [
    (_set(("latency_ms", "p50"), math.nan), "latency_ms.p50"),
    (_set(("latency_ms", "p50"), 0.0), "latency_ms.p50"),
    (_set(("latency_ms", "p50"), -1.5), "latency_ms.p50"),
    (_set(("latency_ms", "p50"), math.inf), "latency_ms.p50"),
    (_set(("latency_ms", "p50"), "1.2"), "latency_ms.p50"),
    (_set(("latency_ms", "p50"), _DELETE), "latency_ms.p50"),
    (_set(("latency_ms",), [1, 2]), "latency_ms must be an object"),
    (_set(("accuracy",), math.nan), "accuracy"),
    (_set(("accuracy",), 1.5), "accuracy"),
    (_set(("accuracy",), "0.9"), "accuracy"),
])
def test_compare_refuses_a_bad_figure_naming_the_report_and_configuration(tmp_path, change, problem):
    new = _report_with(tmp_path, change)
    config_id = json.loads(REFERENCE_REPORT.read_text())["results"][1]["id"]
    result = CliRunner().invoke(main, ["bench", "--compare", str(REFERENCE_REPORT), str(new)])
    _one_error_line(result, str(new), config_id, problem)


@pytest.mark.parametrize("change, problem", [
    (lambda row, report: report.update(results="x"), "'results' missing or not a list"),
    (lambda row, report: report["results"].append(7), "results[8] must be an object"),
    (lambda row, report: report["results"].append(copy.deepcopy(row)), "appears twice"),
    (lambda row, report: row.pop("id"), "results[1] must be an object with a configuration 'id'"),
    (lambda row, report: row.pop("latency_ms"), "neither 'latency_ms' nor an 'error'"),
    (lambda row, report: report.update(schema_version=True), "schema_version True"),
])
def test_malformed_reports_are_one_line_errors(tmp_path, change, problem):
    bad = _report_with(tmp_path, change)
    for old, new in ((bad, REFERENCE_REPORT), (REFERENCE_REPORT, bad)):  # either side: KeyError/ZeroDivision today
        _one_error_line(CliRunner().invoke(main, ["bench", "--compare", str(old), str(new)]), str(bad), problem)


def test_compare_refuses_an_old_median_of_zero_instead_of_dividing_by_it(tmp_path):
    old = _report_with(tmp_path, _set(("latency_ms", "p50"), 0))
    result = CliRunner().invoke(main, ["bench", "--compare", str(old), str(REFERENCE_REPORT)])
    _one_error_line(result, str(old), "latency_ms.p50 (the median) must be positive")


# -- 4. YAML: alias bombs, depth, size; quoted values truncated ---------------------------------------------

def test_quote_is_short_and_never_builds_a_huge_repr():
    bomb = [1, 1]
    for _ in range(60):  # 2**61 leaves: repr() would never finish
        bomb = [bomb, bomb]
    assert len(quote(bomb)) <= 60 and len(quote("x" * 10**6)) <= 60 and quote(3) == "3"
    assert "\n" not in str(InputError("a\nb")) and len(str(InputError("x" * 10**6))) <= 2000


def test_profile_alias_bomb_is_refused_in_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(PROFILE.format(name="bomb") + f"notes: {_alias_bomb(18)}\n")
    assert len(path.read_text()) < 600
    result = CliRunner().invoke(main, ["profiles", "show", str(path)])
    _one_error_line(result, str(path), "expands to more than")


@pytest.mark.parametrize("tail, problem", [
    ("notes: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("notes: &a [*a]\n", "an alias refers to a collection that contains it"),
    ("notes: " + "x" * (80 << 10) + "\n", "too large for a profile"),
])
def test_profile_depth_recursion_and_size_are_bounded(tmp_path, tail, problem):
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE.format(name="p") + tail)
    with pytest.raises(InputError, match=problem) as err:
        load_profile(str(path))
    assert str(err.value).startswith(str(path)) and len(str(err.value)) < 300


def test_spec_alias_bomb_is_refused_before_it_is_built(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(f"bomb: {_alias_bomb(22)}\ninputs: {{x: {{source: camera, layout: *a21}}}}\n")
    with pytest.raises(InputError, match="expands to more than") as err:
        specs.read_spec_file(path)
    assert len(str(err.value)) < 300


def test_spec_recursive_alias_is_one_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("inputs: {x: {source: constant, value: &v [1, *v]}}\n")
    with pytest.raises(InputError, match="an alias refers to a collection that contains it"):
        specs.read_spec_file(path)


def test_oversized_labels_file_is_refused(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"label\n" * ((specs.MAX_LABELS_BYTES // 6) + 10))
    path = tmp_path / "m.yaml"
    path.write_text("inputs: {x: {source: constant, value: 0}}\noutputs: {y: {labels: labels.txt}}\n")
    with pytest.raises(InputError, match="outputs.y.labels: .*too large for a labels file"):
        specs.read_spec_file(path)


# -- 5. Spec sizes and windows --------------------------------------------------------------------------------

CAMERA = "inputs: {{x: {{source: camera, {fields}}}}}\n"
MIC = "inputs: {{x: {{source: mic, {fields}}}}}\n"


@pytest.mark.parametrize("template, fields, field, bound", [
    (CAMERA, "size: [1000000000, 1000000000]", "inputs.x.size", f"1..{specs.MAX_IMAGE_SIDE} pixels"),
    (CAMERA, "frames: 100000", "inputs.x.frames", f"1..{specs.MAX_FRAMES} frames"),
    (MIC, "n_mels: 1000000000", "inputs.x.n_mels", f"1..{specs.MAX_N_MELS} bands"),
    (MIC, "n_fft: 1000000000", "inputs.x.n_fft", f"1..{specs.MAX_STFT} samples"),
    (MIC, "hop_length: 1000000000", "inputs.x.hop_length", f"1..{specs.MAX_STFT} samples"),
    (MIC, "window: 10000000.0", "inputs.x.window", f"0..{specs.MAX_WINDOW_S} seconds"),
    (MIC, "window: 1.0e+308", "inputs.x.window", f"0..{specs.MAX_WINDOW_S} seconds"),  # an OverflowError today
    (MIC, "sample_rate: 4000000000", "inputs.x.sample_rate", "1000..768000 Hz"),
    (MIC, "sample_rate: 500", "inputs.x.sample_rate", "1000..768000 Hz"),
])
def test_unbounded_preprocessing_sizes_are_refused_naming_field_and_bound(tmp_path, template, fields, field, bound):
    path = tmp_path / "m.yaml"
    path.write_text(template.format(fields=fields))
    with pytest.raises(InputError) as err:
        specs.read_spec_file(path)
    message = str(err.value)
    assert field in message and bound in message and "\n" not in message, message


def test_sizes_within_bounds_whose_product_is_too_large_are_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MIC.format(fields="sample_rate: 768000, window: 600.0, n_fft: 1024, hop_length: 1, n_mels: 1024"))
    with pytest.raises(InputError, match=f"inputs.x: the input would hold .* more than {specs.MAX_INPUT_VALUES}"):
        specs.read_spec_file(path)


def test_v1_sidecar_sizes_are_bounded_too(tmp_path):
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps({"preprocess": {"audio": {"sample_rate": 4_000_000_000}}, "labels": []}))
    with pytest.raises(InputError, match="preprocess.audio.sample_rate: 4000000000 is outside 1000..768000 Hz"):
        specs.read_spec_file(path, ["audio"], ["y"])


def test_the_largest_sizes_within_bounds_are_accepted(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("inputs:\n"
                    f"  cam: {{source: camera, size: [{specs.MAX_IMAGE_SIDE}, {specs.MAX_IMAGE_SIDE}]}}\n"
                    f"  mic: {{source: mic, sample_rate: {specs.MAX_SAMPLE_RATE}, window: 2.0, n_fft: {specs.MAX_STFT},"
                    f" hop_length: 16384, n_mels: {specs.MAX_N_MELS}}}\n")
    spec = specs.read_spec_file(path)
    assert spec.inputs["cam"].transform.size == (specs.MAX_IMAGE_SIDE,) * 2
    assert spec.inputs["mic"].transform.n_mels == specs.MAX_N_MELS


# -- 6. Labels against the classify head --------------------------------------------------------------------

def test_fewer_labels_than_classes_is_refused_when_the_spec_is_bound(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    path = tmp_path / "m.yaml"
    path.write_text("inputs: {x: {source: constant, value: 0}}\noutputs: {y: {head: classify, labels: labels.txt}}\n")
    spec = specs.read_spec_file(path)
    with pytest.raises(InputError) as err:
        bind(spec, [Tensor("x", (1, 4), "float32")], [Tensor("y", (1, 10), "float32")], str(path))
    message = str(err.value)
    assert "y" in message and "2 labels" in message and "10 values" in message and "\n" not in message

