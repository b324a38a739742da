"""The benchmark scripts' own logic: the results page and the ablation plan (nothing is trained)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_results_page_rewrites_only_marked_blocks() -> None:
    page = _script("results_page")
    text = (
        "intro\n<!-- results:demo -->\nold\n<!-- /results:demo -->\nmiddle\n<!-- results:convert -->\n"
        "<!-- /results:convert -->\nend"
    )
    out = page.fill(text, {"demo": "NEW TABLE", "convert": "X"})
    assert out == (
        "intro\n<!-- results:demo -->\nNEW TABLE\n<!-- /results:demo -->\nmiddle\n"
        "<!-- results:convert -->\nX\n<!-- /results:convert -->\nend"
    )
    assert page.fill(out, {"demo": "NEW TABLE", "convert": "X"}) == out  # idempotent
    with pytest.raises(SystemExit, match="unknown results block 'nope'"):
        page.fill("<!-- results:nope -->\n<!-- /results:nope -->", {"demo": ""})


def test_every_results_block_in_the_docs_is_one_the_page_knows() -> None:
    page = _script("results_page")
    root = BENCHMARKS.parent
    for doc in (root / "README.md", root / "docs" / "results.md"):
        text = doc.read_text()
        names = set(page.re.findall(r"<!-- results:([\w-]+) -->", text))
        assert names and names <= set(page.BLOCKS), doc
        # A marker the fill pattern cannot match (a dot in its name, say) would stay empty unnoticed.
        assert text.count("<!-- results:") == len(page.re.findall(r"<!-- results:[\w-]+ -->", text)), doc
    assert all(page.re.fullmatch(r"[\w-]+", name) for name in page.BLOCKS)


def test_every_image_the_docs_show_exists_where_their_link_points() -> None:
    """The page writes one block into docs/ and the root README: links must resolve from each."""
    page = _script("results_page")
    root = BENCHMARKS.parent
    assert page.relink_for_root("![p](../benchmarks/results/x.png)") == "![p](benchmarks/results/x.png)"
    for doc in (root / "README.md", root / "docs" / "results.md"):
        links = page.re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text())
        missing = [link for link in links if not (doc.parent / link).is_file()]
        assert links and not missing, (doc.name, missing)


def test_inference_speed_records_the_int8_cpu_features(monkeypatch) -> None:
    from adq_fx import environment

    bench = _script("inference_speed")

    class FakeCpuinfo:
        def __init__(self, _path: str) -> None:
            pass

        def read_text(self) -> str:
            return "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_int8 amx_tile\nbugs\t: x\n"

    monkeypatch.setattr(environment, "Path", FakeCpuinfo)
    assert bench.int8_cpu_features() == ["avx2", "avx512f", "amx_int8"]

    class Unreadable(FakeCpuinfo):
        def read_text(self) -> str:
            raise OSError("no /proc here")

    monkeypatch.setattr(environment, "Path", Unreadable)
    assert bench.int8_cpu_features() == []


@pytest.mark.parametrize("schedule", ["full", "reduced"])
def test_ablation_plans_valid_training_configs(schedule, tmp_path) -> None:
    """--dry-run builds and validates every TrainConfig of the table without training."""
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "ablation.py"),
            "--schedule",
            schedule,
            "--dry-run",
            "--results-dir",
            str(tmp_path / "results"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("A_s2", "C_s2", "E_s2", "F_s2", "LSQ-4_s0", "ADQ-2_s2", "N2UQ-4_s2"):
        assert name in done.stdout
    for study in ("D-fbinit_s0", "D-full_s0", "ADQw+LSQa-3_s0"):  # diagnostics run only when named
        assert study not in done.stdout


def _ablation_jobs(tmp_path: Path, *configs: str):  # type: ignore[no-untyped-def]
    ablation = _script("ablation")
    dirs = ["--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    args = ablation.parse_args(["--schedule", "smoke", "--configs", *configs, "--claim-seeds", "0", *dirs])
    float_job, jobs = ablation.plan(args)
    return ablation, float_job, jobs


def _record(ablation, job, **changed):  # type: ignore[no-untyped-def]
    """Write the JSON a finished run of ``job`` leaves, with some resolved settings changed."""
    job.result_path.parent.mkdir(parents=True, exist_ok=True)
    config = {**ablation.resolved_settings(job.train), **changed}
    job.result_path.write_text(ablation.json.dumps({"config": config}))


def test_ablation_reuses_a_result_that_differs_only_in_settings_the_run_never_reads(tmp_path) -> None:
    ablation, _, (uniform_weights,) = _ablation_jobs(tmp_path, "A")
    _record(ablation, uniform_weights, codebook_levels="alg1", commitment_beta=1.0)  # A has no codebook
    assert ablation.existing_result(uniform_weights) is not None
    _record(ablation, uniform_weights, lr=0.5)
    with pytest.raises(SystemExit, match=r"other settings .*'lr'"):
        ablation.existing_result(uniform_weights)
    _, _, (codebook,) = _ablation_jobs(tmp_path / "d", "D")
    _record(ablation, codebook, codebook_levels="alg1")  # D reads it: an older default is refused
    with pytest.raises(SystemExit, match="codebook_levels"):
        ablation.existing_result(codebook)


def test_a_record_made_before_a_field_existed_compares_as_the_behaviour_it_ran(tmp_path) -> None:
    ablation, _, (codebook,) = _ablation_jobs(tmp_path, "D")
    _record(ablation, codebook)
    record = ablation.json.loads(codebook.result_path.read_text())
    del record["config"]["commitment_units"]  # written before the field: it ran eq. (3) per channel
    codebook.result_path.write_text(ablation.json.dumps(record))
    with pytest.raises(SystemExit, match=r"other settings .*'commitment_units': \('channel', 'layer'\)"):
        ablation.existing_result(codebook)  # the default is layer units now: not this run
    per_channel = dataclasses.replace(codebook, train={**codebook.train, "commitment_units": "channel"})
    assert ablation.existing_result(per_channel) is not None  # the row that asks for what it ran
    _, _, (fixed,) = _ablation_jobs(tmp_path / "a", "A")
    _record(ablation, fixed, bit_allocation="min_loss")  # no mixed precision: the rule is never read
    assert ablation.existing_result(fixed) is not None


def test_ablation_refuses_pending_runs_whose_float_start_is_gone(tmp_path) -> None:
    ablation, float_job, jobs = _ablation_jobs(tmp_path, "D")
    float_job.result_path.parent.mkdir(parents=True)
    float_job.result_path.write_text('{"float_checkpoint_sha256": "0"}')
    with pytest.raises(SystemExit, match="--remake-float"):
        ablation.execute(float_job, jobs, {float_job.label}, 1, 1, [], [])
    float_job.out_dir.mkdir(parents=True)
    (float_job.out_dir / "float.pt").write_bytes(b"another float model")
    with pytest.raises(SystemExit, match=r"not the float model .* recorded"):
        ablation.execute(float_job, jobs, {float_job.label}, 1, 1, [], [])


def test_speed_table_names_the_kernel_backend_and_ratios_to_float() -> None:
    speed = _script("qat_speed")
    rows = [
        {
            "model": "m",
            "variant": "float",
            "precision": "fp32",
            "kernels": "eager",
            "batch": 2,
            "median_ms": 100.0,
            "iqr_ms": 1.0,
            "peak_rss_mib": 10.0,
            "warmup_times_ms": [300.0],
        },
        {
            "model": "m",
            "variant": "adq",
            "precision": "fp32",
            "kernels": "compiled",
            "batch": 2,
            "median_ms": 130.0,
            "iqr_ms": 2.0,
            "peak_rss_mib": 12.0,
            "warmup_times_ms": [4000.0],
        },
        {
            "model": "m",
            "variant": "adq",
            "precision": "fp32",
            "kernels": "eager",
            "batch": 2,
            "error": "exit 1",
        },
    ]
    table = speed.markdown(rows, "cpu").splitlines()
    assert table[0].startswith("| model | batch | variant | adq_fx kernels | median ms")
    assert table[2] == "| m | 2 | float | — | 100.0 | 1.0 | 1.00 | 300 | 10 |"
    assert table[3] == "| m | 2 | adq | compiled | 130.0 | 2.0 | 1.30 | 4000 | 12 |"
    assert table[4] == "| m | 2 | adq | eager | failed | — | — | — | — |"


def test_comparison_table_reports_differences_and_the_noise_rule() -> None:
    report = _script("ablation_report")

    def runs(values: list[float]) -> list[dict]:
        return [{"converted_accuracy": v, "ablation": {"seed": s}} for s, v in enumerate(values)]

    data = {"X": runs([71.0, 71.5, 72.0]), "Y": runs([70.0, 70.5, 71.0]), "Z": runs([69.0])}
    lines, rules = report.comparison_table(
        data, [("X − Y", "X", "Y", None), ("X − Z", "X", "Z", 1.5), ("X − W", "X", "W", None)]
    )
    assert lines[2].startswith("| X − Y | — | +1.00 | 3 vs 3 | 0.50 |")
    assert "1.00 ± 0.00" in lines[2]  # paired by seed: the same +1 for every seed
    assert lines[3] == "| X − Z | +1.50 | +2.50 | 3 vs 1 | — | — | — | — |"  # one seed: no test
    assert lines[4] == "| X − W | — | not run | | | | | |"
    assert "needs ≥ 2 seeds on each side" in rules


def test_loader_throughput_runs_small_and_its_table_reports_every_setting(tmp_path) -> None:
    out = tmp_path / "loader.json"
    command = [sys.executable, str(BENCHMARKS / "loader_throughput.py"), "--images", "8", "--repeats", "1"]
    command += ["--workers", "0", "1", "--batch-size", "4", "--image-size", "32", "--out", str(out)]
    command += ["--gpu-images-per-second", "1000", "--gpus", "2"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    data = __import__("json").loads(out.read_text())
    assert [(r["transform"], r["workers"]) for r in data["rows"]] == [
        ("train", 0),
        ("train", 1),
        ("eval", 0),
        ("eval", 1),
    ]
    assert all(r["images_per_second"] > 0 for r in data["rows"])
    one_worker = data["rows"][1]["per_worker"]
    assert data["advice"]["workers"] == pytest.approx(2 * 1000 / one_worker)
    table = _script("loader_throughput").markdown(data)
    assert table.count("\n| train |") == 2 and "need" in table


def test_the_step_profile_charges_quantizers_by_registered_class_not_by_file_path() -> None:
    from torch.profiler import profile

    from adq_fx import ADQConfig, ADQConfigMapping, prepare_adq
    from adq_fx.quantizers import CodebookWeightQuantizer
    from tests.models import TinyResNet, images

    qat_speed = _script("qat_speed")
    x = images(4)
    prepared = prepare_adq(TinyResNet(), ADQConfigMapping().set_global(ADQConfig.with_bits(3)), x)
    prepared(x)
    inherited = CodebookWeightQuantizer.quantize
    with qat_speed.weight_quantizer_ranges(), profile(with_stack=True) as prof:
        prepared(x).sum().backward()
    assert CodebookWeightQuantizer.quantize is inherited  # the profile leaves the classes as they were
    by_label, total = qat_speed.self_time_by_quantizer(prof.events())
    owners = {label.removeprefix("backward of ").split(" ")[0] for label in by_label}
    assert owners == {"CodebookWeightQuantizer", "ThresholdActivationQuantizer"}
    assert not any("conv" in label for label in by_label)  # the QAT layers' own convs are not overhead
    assert 0 < sum(by_label.values()) < total


def test_inference_speed_measures_a_point_and_its_table_names_every_variant() -> None:
    from adq_fx.environment import machine_info
    from adq_fx.int8 import kernel_problem

    if kernel_problem() is not None:
        pytest.skip(f"no int8 kernels here: {kernel_problem()}")
    bench = _script("inference_speed")
    bench.POINTS = [("resnet20", 32, 1)]
    row = bench.measure_point("resnet20", 32, 1, 3, repeats=1, compile_int8=False)
    assert set(row["median_ms"]) == {"float32", "adq_reference", "adq_int8", "torch_ao_int8"}
    assert row["top1_agreement_with_reference"]["adq_int8"] >= 0.0 and row["profile_int8_eager"]
    assert row["model_size_int8"]["weight_bits"] == 3
    data = {
        "rows": [row],
        "settings": {"repeats": 1, "bits": 3, "quick": True, "threads": 2, "allocator_env": {}},
        "machine": machine_info(),
        "cpu_capability": "TEST",
    }
    table = bench.markdown(data)
    assert (
        "| resnet20 W3A3 | (1, 3, 32, 32) |" in table and "glibc defaults" in table and "smoke run" in table
    )
    assert "int8 features: not recorded" in table  # a JSON from before the field existed
    assert "int8 features: avx2, amx_int8;" in bench.markdown({**data, "cpu_features": ["avx2", "amx_int8"]})


def test_int8_kernels_times_every_variant_of_a_layer_and_tables_them() -> None:
    from adq_fx.environment import machine_info
    from adq_fx.int8 import kernel_problem

    if kernel_problem() is not None:
        pytest.skip(f"no int8 kernels here: {kernel_problem()}")
    bench = _script("int8_kernels")
    convs, stem = bench.measure([("resnet20", 1, 16, 8)], (1,), repeats=1, calls=1)
    assert set(convs[0]["median_ms"]) == {
        "adq_fp32",
        "adq_fp32_sum",
        "onednn_u8",
        "onednn_u8_sum",
        "torch_ao",
        "torch_ao_sum",
        "encode_fp32",
        "encode_u8",
        "encode_fp32_every",
    }
    assert all(v > 0 for row in convs + stem for v in row["median_ms"].values())
    data = {
        "convs": convs,
        "stem": stem,
        "machine": machine_info(),
        "cpu_features": [],
        "settings": {"quick": True, "repeats": 1, "calls": 1, "threads": 2},
    }
    table = bench.markdown(data)
    assert "| resnet20 | (1, 16, 8, 8) |" in table and "| (1, 3, 224, 224) |" in table
    assert "int8 features: none found" in table and "smoke run" in table


def test_an_interrupted_parallel_run_starts_nothing_new() -> None:
    """ablation.py turns SIGTERM into an exit; the queued trainings must not start after it."""
    runner = _script("_runner")
    started: list[int] = []
    release = threading.Event()

    def one(item: int) -> int:
        started.append(item)
        if item:  # the first finishes at once, the others run until released
            release.wait(10)
        return item

    results = runner.run_parallel(range(8), one, 2)
    assert next(results) == 0
    threading.Timer(0.3, release.set).start()
    results.close()  # what an exception in the consuming loop does: waits for the running ones
    # 1 was running and 2 may have taken 0's place; 3-7 never start
    assert {0, 1} <= set(started) <= {0, 1, 2}, started


def test_lr_sweep_rows_are_their_claim_row_at_another_lr() -> None:
    """A sweep row changes the QAT lr and nothing else, and every choice row names defined configs."""
    table = _script("ablation_table")
    for name in ("C", "E", "F", "ADQ-2", "N2UQ-2", "ADQ-4", "N2UQ-4"):
        row = table.CONFIGS[f"{name}-lr0.02"]
        assert row.overrides == {**table.CONFIGS[name].overrides, "lr": 0.02}
        assert not row.table  # run only when named, so the headline table keeps one schedule
    assert table.CONFIGS["D-lr0.03"].overrides == {"target_bits": 3, "lr": 0.03}
    for _, left, right, _ in table.CHOICES:
        assert left in table.CONFIGS and right in table.CONFIGS


def test_adopt_run_takes_only_a_run_the_target_row_would_have_made(tmp_path) -> None:
    adopt = _script("adopt_run")
    ablation, float_job, (source_job,) = _ablation_jobs(tmp_path / "source", "D")
    float_job.result_path.parent.mkdir(parents=True)
    float_job.result_path.write_text('{"float_checkpoint_sha256": "abc"}')
    source = tmp_path / "D-lr-twin_s0.json"

    def write_source(sha: str, **changed: object) -> None:
        config = {**ablation.resolved_settings(source_job.train), **changed}
        record = {"config": config, "float_checkpoint_sha256": sha, "converted_accuracy": 80.0}
        record["ablation"] = {**source_job.meta, "seed": 0, "config": "D-twin", "written": "then"}
        source.write_text(ablation.json.dumps(record))

    dirs = ["--results-dir", str(float_job.result_path.parent), "--runs-dir", str(tmp_path / "runs")]
    args = ablation.parse_args(["--schedule", "smoke", "--configs", "D", "--claim-seeds", "0", *dirs])
    write_source("another float")
    with pytest.raises(SystemExit, match="not the same run"):
        adopt.adopt(source, "D", args)
    write_source("abc", lr=0.5)
    with pytest.raises(SystemExit, match=r"other settings .*'lr'"):
        adopt.adopt(source, "D", args)
    assert not (float_job.result_path.parent / "D_s0.json").exists()  # a refused record is not left
    write_source("abc")
    path = adopt.adopt(source, "D", args)
    record = ablation.json.loads(path.read_text())
    assert record["ablation"]["config"] == "D" and record["ablation"]["copied_from"].endswith(source.name)
    assert record["converted_accuracy"] == 80.0
    with pytest.raises(SystemExit, match="exists already"):
        adopt.adopt(source, "D", args)
