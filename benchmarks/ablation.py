"""The ADQ paper's Table 4.4 ablation (CIFAR-10, ResNet-20) plus LSQ and fixed-bit ADQ baselines.

    python benchmarks/ablation.py --schedule reduced --jobs 2   # CPU: ~50 min on 2 cores (~60 with --jobs 1)
    python benchmarks/ablation.py --schedule full --jobs 4      # GPU: paper-length, 4 trainings per card
    python benchmarks/ablation.py --schedule smoke --configs D E --claim-seeds 0 1   # end-to-end check
    python benchmarks/ablation.py --schedule reduced --dry-run  # print the plan, run nothing
    python benchmarks/ablation_report.py --schedule reduced     # the tables and the plot

Run from the repository root (relative paths are taken from there). The data
default, ``imagefolder:data``, is the CIFAR-10 JPEG copy unpacked into ./data
(``mkdir -p data && tar -xJf ../shared/data/cifar10-jpeg.tar.xz -C data``);
results are labelled "CIFAR-10 (JPEG q75 copy)".

What runs:
- one float pre-training (seed 0) per schedule, in ``runs/ablation/<schedule>/FP_s0``;
  every QAT run starts from its ``float.pt`` through ``TrainConfig.float_checkpoint``,
  so the seeds vary the QAT phase only (the quantizer init, data order and
  augmentation), never the float model or the images. The FP row is that float model's accuracy.
- each configuration x seed in its own ``runs/ablation/<schedule>/<config>_s<seed>``,
  with ``resume=True`` so an interrupted run continues from its last epoch;
- one JSON per run in ``benchmarks/results/ablation_<schedule>/`` (the smoke
  schedule writes under ``runs/`` instead, so it is never committed); a run whose
  JSON exists is skipped, so the table can be run in pieces. A JSON written with
  other settings (another ``--epochs``, say) is refused rather than mixed in:
  use another ``--results-dir``/``--runs-dir`` for a variant.
- every invocation appends its wall time to ``sessions.json`` in the results dir.

Schedules (``--float-epochs`` etc. override single knobs):
- ``full``: float 200 epochs at lr 0.1; QAT 120 epochs at lr 0.3 (ADQ paper §4.1:
  "SGD ... initial learning rate of 0.3, decayed to zero using a cosine annealing
  schedule over 120 epochs" for all models; the paper gives no batch size, we use
  128); the whole train and test sets. Meant for a GPU.
- ``reduced`` (CPU): float 8 epochs on 20,000 train images; QAT 3 epochs at lr
  0.02 (not tuned) on 10,000 train images; 2,000 test images. Sized from measured
  costs on a 2-core EPYC (torch 2.14.1): float 1.95 ms/image, ADQ/N2UQ QAT 4.4
  ms/image, LSQ QAT 2.8 ms/image, 4-5 s per 2,000-image QAT evaluation: about
  60 min with --jobs 1, 50 with --jobs 2 (two 1-thread trainings beat one
  2-thread training by ~20% here). Every output says "reduced schedule (CPU)";
  its numbers are not comparable to the paper's.
- ``smoke``: 512 / 256 images, 1 epoch; checks the pipeline, measures nothing.

All schedules: SGD with Nesterov momentum 0.9, weight decay 5e-4, cosine to 0
(TrainConfig's recipe); first conv and last FC float; weights and activations
share each layer's bit-width; no KD (Table 4.4 does not say it was used;
``--kd`` distils from the float model with N2UQ's loss). Subset schedules draw
their train/test images with one fixed data seed (``TrainConfig.data_seed``):
every run, float and QAT, every seed, is evaluated on the same test images and
QAT trains on a subset of the float model's train images; the seed varies the
quantizer init, data order and augmentation only.

Seeds: ``--claim-seeds`` (default 0 1 2) for A, C, D, E, F, the configurations
behind the claims E > A, F > D and E > C; ``--seeds`` (default 0) for the rest.
``--jobs N`` runs N trainings at once as subprocesses (a GPU holds several
ResNet-20 trainings well); each gets cores // N torch threads.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _runner import code_version, run_parallel, run_script, write_json  # a sibling module

REPO = Path(__file__).resolve().parents[1]
MODEL = "resnet20"
DEFAULT_DATA = "imagefolder:data"
FLOAT_NAME = "FP"
FLOAT_SEED = 0
PRETRAINED = "../shared/data/resnet20-cifar10-akamaster.th"  # relative to the repo root
DATA_SEED = 0  # every run draws the same train/test subsets: seeds vary training, not the test set
# Settings that may differ between two invocations of the same table without changing its numbers.
VOLATILE = {"out_dir", "progress", "plots", "resume", "device", "stop_after_epochs", "float_checkpoint"}


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    overrides: dict[str, Any]
    paper: float | None  # top-1 %, CIFAR-10 ResNet-20
    paper_source: str = "ADQ Table 4.4"
    claim: bool = False  # part of a claim: gets --claim-seeds


def _lsq(bits: int) -> Ablation:
    paper = {2: 91.0, 3: 92.0, 4: 92.4}[bits]
    return Ablation(
        f"LSQ-{bits}",
        f"LSQ weights + LSQ activations, fixed {bits}-bit",
        {"weight_quantizer": "lsq", "activation_quantizer": "lsq", "target_bits": bits},
        paper,
        "ASQ paper's LSQ re-run (as cited)",
    )


CONFIGS: dict[str, Ablation] = {
    a.name: a
    for a in [
        Ablation(
            "A",
            "N2UQ baseline: uniform weights + LTQ activations, fixed 3-bit",
            {"weight_quantizer": "n2uq", "activation_quantizer": "n2uq", "target_bits": 3},
            88.21,
            claim=True,
        ),
        Ablation(
            "B",
            "ADQ, codebook init N(0,1), learned, mixed 2.8-bit",
            {"codebook_init": "normal", "mixed_precision": True, "target_bits": 2.8},
            90.26,
        ),
        Ablation(
            "C",
            "ADQ, quantile codebook kept static (no EMA), mixed 2.8-bit",
            {"learn_codebook": False, "mixed_precision": True, "target_bits": 2.8},
            89.95,
            claim=True,
        ),
        Ablation("D", "ADQ, quantile init, learned, fixed 3-bit", {"target_bits": 3}, 90.98, claim=True),
        Ablation(
            "E", "full ADQ, mixed 2.8-bit", {"mixed_precision": True, "target_bits": 2.8}, 90.45, claim=True
        ),
        Ablation(
            "F", "full ADQ, mixed 3.0-bit", {"mixed_precision": True, "target_bits": 3.0}, 91.26, claim=True
        ),
        _lsq(2),
        _lsq(3),
        _lsq(4),
        Ablation("ADQ-2", "ADQ, quantile init, learned, fixed 2-bit", {"target_bits": 2}, None, "—"),
        Ablation("ADQ-4", "ADQ, quantile init, learned, fixed 4-bit", {"target_bits": 4}, None, "—"),
        Ablation(
            "ASQ-3",
            "LSQ weights + ASQ activations, fixed 3-bit",
            {"weight_quantizer": "lsq", "activation_quantizer": "asq", "target_bits": 3},
            91.7,
            "ASQ paper (as cited)",
        ),
        Ablation(
            "ASQ+POST-3",
            "POST weights + ASQ activations, fixed 3-bit",
            {"weight_quantizer": "post", "activation_quantizer": "asq", "target_bits": 3},
            92.3,
            "ASQ paper (as cited)",
        ),
        # Diagnostics, not in any paper: D and LSQ-3 with their weight or activation halves swapped,
        # to locate which half of the quantizer a gap between them comes from.
        Ablation(
            "ADQw+LSQa-3",
            "diagnostic: ADQ weights + LSQ activations, fixed 3-bit",
            {"activation_quantizer": "lsq", "target_bits": 3},
            None,
            "—",
        ),
        Ablation(
            "LSQw+N2UQa-3",
            "diagnostic: LSQ weights + N2UQ (LTQ) activations, fixed 3-bit",
            {"weight_quantizer": "lsq", "activation_quantizer": "n2uq", "target_bits": 3},
            None,
            "—",
        ),
        # D and E with the thresholds always scaled to the first batch by LSQ's rule (threshold_init="auto"
        # keeps N2UQ's fixed [0, 2] where the data fits it).
        Ablation(
            "D-fbinit",
            "diagnostic: D with the threshold start from LSQ's rule on the first batch",
            {"target_bits": 3, "threshold_init": "first_batch"},
            None,
            "—",
        ),
        Ablation(
            "E-fbinit",
            "diagnostic: E with first-batch threshold init",
            {"mixed_precision": True, "target_bits": 2.8, "threshold_init": "first_batch"},
            None,
            "—",
        ),
        # What each of ADQ's defaults buys (each row is D with one default set back to the paper's).
        Ablation(
            "D-alg1",
            "D with Alg. 1's codebook as written (no k-means steps at init)",
            {"target_bits": 3, "codebook_kmeans_steps": 0},
            None,
            "—",
        ),
        Ablation(
            "D-uniform",
            "D with N2UQ's fixed [0, 2] threshold start",
            {"target_bits": 3, "threshold_init": "uniform"},
            None,
            "—",
        ),
        Ablation(
            "D-kd",
            "D with distillation from the float model (N2UQ's loss)",
            {"target_bits": 3, "kd": True},
            None,
            "—",
        ),
        Ablation(
            "N2UQ-2",
            "N2UQ baseline, fixed 2-bit",
            {"weight_quantizer": "n2uq", "activation_quantizer": "n2uq", "target_bits": 2},
            None,
            "—",
        ),
        Ablation(
            "N2UQ-4",
            "N2UQ baseline, fixed 4-bit",
            {"weight_quantizer": "n2uq", "activation_quantizer": "n2uq", "target_bits": 4},
            None,
            "—",
        ),
        Ablation(
            "ADQ-2-full",
            "ADQ at 2 bits with all 4 codes (levels='full')",
            {"target_bits": 2, "codebook_levels": "full"},
            None,
            "—",
        ),
    ]
}
FLOAT_DESCRIPTION = "float ResNet-20 (the start of every QAT run)"
FLOAT_PAPER = (92.6, "ASQ paper, LSQ's FP (as cited)")  # the ADQ paper gives no FP figure for ResNet-20
# (name, minuend, subtrahend, the paper's difference)
CLAIMS: list[tuple[str, str, str, float | None]] = [
    ("E − A", "E", "A", 90.45 - 88.21),
    ("F − D", "F", "D", 91.26 - 90.98),
    ("E − C", "E", "C", 90.45 - 89.95),
]
# Where a gap comes from: swap one half of a quantizer pair, or change one init (no paper figure).
DIAGNOSTICS: list[tuple[str, str, str, float | None]] = [
    ("activations LSQ instead of N2UQ, ADQ weights (ADQw+LSQa-3 − D)", "ADQw+LSQa-3", "D", None),
    ("weights LSQ instead of ADQ, N2UQ activations (LSQw+N2UQa-3 − D)", "LSQw+N2UQa-3", "D", None),
    ("weights LSQ instead of ADQ, LSQ activations (LSQ-3 − ADQw+LSQa-3)", "LSQ-3", "ADQw+LSQa-3", None),
    ("first-batch threshold init, fixed 3-bit (D-fbinit − D)", "D-fbinit", "D", None),
    ("first-batch threshold init, mixed 2.8 (E-fbinit − E)", "E-fbinit", "E", None),
    ("E-fbinit − A (the E − A claim with the data init)", "E-fbinit", "A", None),
]

# The pre-trained schedule's questions. Read on the validation split: what each of ADQ's defaults
# buys (the choices were made there; the test set only scores the final table) ...
CHOICES: list[tuple[str, str, str, float | None]] = [
    ("k-means steps at codebook init (D − D-alg1)", "D", "D-alg1", None),
    ("auto threshold start instead of LSQ's first-batch rule (D − D-fbinit)", "D", "D-fbinit", None),
    ("auto threshold start instead of always N2UQ's fixed one (D − D-uniform)", "D", "D-uniform", None),
    ("distillation from the float model (D-kd − D)", "D-kd", "D", None),
    ("2-bit with all 4 codes (ADQ-2-full − ADQ-2)", "ADQ-2-full", "ADQ-2", None),
]
# ... and, on the test set, ADQ against each baseline at the same bits.
BASELINES: list[tuple[str, str, str, float | None]] = [
    ("2-bit: ADQ − N2UQ (ADQ-2 − N2UQ-2)", "ADQ-2", "N2UQ-2", None),
    ("2-bit: ADQ − LSQ (ADQ-2 − LSQ-2)", "ADQ-2", "LSQ-2", None),
    ("3-bit: ADQ − N2UQ (D − A)", "D", "A", 90.98 - 88.21),
    ("3-bit: ADQ − LSQ (D − LSQ-3)", "D", "LSQ-3", None),
    ("4-bit: ADQ − N2UQ (ADQ-4 − N2UQ-4)", "ADQ-4", "N2UQ-4", None),
    ("4-bit: ADQ − LSQ (ADQ-4 − LSQ-4)", "ADQ-4", "LSQ-4", None),
]


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    float_settings: dict[str, Any]  # TrainConfig fields of the float pre-training
    qat_settings: dict[str, Any]  # TrainConfig fields shared by every QAT run
    per_run_plots: bool = False


SCHEDULES = {
    "full": Schedule(
        "full",
        "full schedule (paper-length)",
        {"float_epochs": 200, "float_lr": 0.1, "batch_size": 128},
        {"epochs": 120, "lr": 0.3, "batch_size": 128},
        per_run_plots=True,
    ),
    "reduced": Schedule(
        "reduced",
        "reduced schedule (CPU)",
        {"float_epochs": 8, "float_lr": 0.1, "batch_size": 128, "train_subset": 20000, "test_subset": 2000},
        {"epochs": 3, "lr": 0.02, "batch_size": 128, "train_subset": 10000, "test_subset": 2000},
    ),
    # From the pre-trained ResNet-20 in ../shared/data (akamaster, BSD-2), fine-tuned 3 epochs in
    # float on the JPEG copy's training set less the validation split (the last 500 images of each
    # class), then one QAT epoch on those 45,000 images. Choices are read on the validation split.
    "pretrained": Schedule(
        "pretrained",
        "pre-trained start (CPU)",
        {
            "float_checkpoint": PRETRAINED,
            "float_checkpoint_rename": ["linear.=fc."],
            "finetune_epochs": 3,
            "finetune_lr": 0.02,
            "batch_size": 128,
            "validation": 5000,
        },
        {"epochs": 1, "lr": 0.01, "batch_size": 128, "validation": 5000},
    ),
    "smoke": Schedule(
        "smoke",
        "smoke test (tiny; not a result)",
        {"float_epochs": 1, "float_lr": 0.1, "batch_size": 128, "train_subset": 512, "test_subset": 256},
        {"epochs": 1, "lr": 0.02, "batch_size": 128, "train_subset": 512, "test_subset": 256},
    ),
}


def default_results_dir(schedule: str) -> Path:
    if schedule == "smoke":
        return REPO / "runs" / "ablation" / "smoke" / "results"
    return REPO / "benchmarks" / "results" / f"ablation_{schedule}"


def data_variant(spec: str) -> str:
    kind = spec.partition(":")[0]
    return {"imagefolder": "CIFAR-10 (JPEG q75 copy)", "cifar10": "CIFAR-10"}.get(kind, spec)


@dataclass
class Job:
    name: str  # FP or a CONFIGS key
    seed: int
    train: dict[str, Any]  # TrainConfig keyword arguments
    result_path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}_s{self.seed}"

    @property
    def out_dir(self) -> Path:
        return Path(self.train["out_dir"])


# -- planning -------------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> tuple[Job, list[Job]]:
    schedule = SCHEDULES[args.schedule]
    runs_dir = Path(args.runs_dir) if args.runs_dir else REPO / "runs" / "ablation" / args.schedule
    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir(args.schedule)
    common = {
        "dataset": args.data,
        "model": MODEL,
        "device": args.device,
        "progress": args.progress,
        "plots": schedule.per_run_plots if args.plots is None else args.plots,
        "resume": True,
        "data_seed": DATA_SEED,
    }
    knobs = {"float_epochs": args.float_epochs, "float_lr": args.float_lr}
    float_settings = {**schedule.float_settings, **{k: v for k, v in knobs.items() if v is not None}}
    if args.float_train_subset is not None:
        float_settings["train_subset"] = args.float_train_subset or None
    if args.test_subset is not None:
        float_settings["test_subset"] = args.test_subset or None
    qat_knobs = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
    qat_settings = {**schedule.qat_settings, **{k: v for k, v in qat_knobs.items() if v is not None}}
    for key in ("train_subset", "test_subset"):
        if getattr(args, key) is not None:
            qat_settings[key] = getattr(args, key) or None  # 0 = the whole split
    if args.kd:
        qat_settings["kd"] = True
    meta = {
        "schedule": schedule.name,
        "schedule_label": schedule.label,
        "data_variant": args.data_label or data_variant(args.data),
        "model": MODEL,
    }

    float_dir = runs_dir / f"{FLOAT_NAME}_s{FLOAT_SEED}"
    float_job = Job(
        FLOAT_NAME,
        FLOAT_SEED,
        {**common, **float_settings, "seed": FLOAT_SEED, "out_dir": str(float_dir)},
        results_dir / f"{FLOAT_NAME}_s{FLOAT_SEED}.json",
        {
            **meta,
            "config": FLOAT_NAME,
            "description": FLOAT_DESCRIPTION,
            "seed": FLOAT_SEED,
            "paper_accuracy": FLOAT_PAPER[0],
            "paper_source": FLOAT_PAPER[1],
        },
    )
    jobs = []
    names = args.configs or list(CONFIGS)
    seeds_of = {n: (args.claim_seeds if CONFIGS[n].claim else args.seeds) for n in names}
    for seed in sorted({s for n in names for s in seeds_of[n]}):  # seed-major: a partial table is balanced
        for name in names:
            if seed not in seeds_of[name]:
                continue
            config = CONFIGS[name]
            out = runs_dir / f"{name}_s{seed}"
            train = {
                **common,
                **qat_settings,
                **config.overrides,
                "seed": seed,
                "out_dir": str(out),
                "float_checkpoint": str(float_dir / "float.pt"),
            }
            jobs.append(
                Job(
                    name,
                    seed,
                    train,
                    results_dir / f"{name}_s{seed}.json",
                    {
                        **meta,
                        "config": name,
                        "description": config.description,
                        "seed": seed,
                        "paper_accuracy": config.paper,
                        "paper_source": config.paper_source,
                        "claim_config": config.claim,
                    },
                )
            )
    return float_job, jobs


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in VOLATILE}


def check_train_configs(jobs: list[Job]) -> None:
    """Build every TrainConfig before training anything, so a missing field fails in a second."""
    from adq_fx.train.config import TrainConfig

    for job in jobs:
        try:
            TrainConfig(**job.train)
        except TypeError as err:
            raise SystemExit(
                f"{job.label}: this adq_fx's TrainConfig does not take these settings ({err}). "
                f"The N2UQ/LSQ baselines need TrainConfig.weight_quantizer/activation_quantizer; "
                f"leave them out with --configs, e.g. --configs B C D E F ADQ-2 ADQ-4."
            ) from err
        except ValueError as err:
            raise SystemExit(f"{job.label}: {err}") from err


def resolved_settings(train: dict[str, Any]) -> dict[str, Any]:
    """Every TrainConfig field the run uses, defaults included, as results.json stores them."""
    from adq_fx.train.config import TrainConfig

    return comparable(json.loads(json.dumps(asdict(TrainConfig(**train)))))


def unused_setting(key: str, settings: dict[str, Any]) -> bool:
    """A setting the run never reads: the threshold quantizer's fields without n2uq activations."""
    return key.startswith("threshold_") and settings.get("activation_quantizer") != "n2uq"


def existing_result(job: Job) -> dict[str, Any] | None:
    """The run's JSON if it exists and was made with the same settings; refuse a mismatch.

    Compares the resolved config (defaults included), so a changed library default
    cannot pass an old result off as the new one. Fields the record lacks came
    after it and default to the older behaviour. The float start is compared on
    the settings it was given: the quantization defaults do not reach it.
    """
    if not job.result_path.exists():
        return None
    record = json.loads(job.result_path.read_text())
    if job.name == FLOAT_NAME:
        want, had = comparable(job.train), record["ablation"]["train_settings"]
    else:
        want, had = resolved_settings(job.train), comparable(record["config"])
    keys = sorted(k for k in set(had) & set(want) if not unused_setting(k, want))
    diff = {k: (had.get(k), want.get(k)) for k in keys if had.get(k) != want.get(k)}
    if diff:
        raise SystemExit(
            f"{job.result_path} was made with other settings {diff} (had, now). Use another "
            "--results-dir and --runs-dir for a variant, or delete it to redo the run."
        )
    return record


# -- running --------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_job(job: Job, *, threads: int, log: bool) -> tuple[Job, int, float]:
    """Run one job in a subprocess (fresh torch, its own thread count); return its exit code."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    spec = write_json(
        job.out_dir / "job.json",
        {
            "name": job.name,
            "seed": job.seed,
            "train": job.train,
            "result_path": str(job.result_path),
            "meta": job.meta,
            "threads": threads,
        },
    )
    began = time.perf_counter()
    output = job.out_dir / "log.txt" if log else "inherit"  # one job alone talks to this terminal
    code = run_script(__file__, ["--worker", str(spec)], threads=threads, output=output).returncode
    return job, code, time.perf_counter() - began


def worker(spec_path: Path) -> None:
    """Inside the subprocess: train, then write the run's JSON (results + what produced them)."""
    import torch

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    train = spec["train"]
    if spec["name"] == FLOAT_NAME:
        results = train_float(train)
    else:
        from adq_fx.train.config import TrainConfig
        from adq_fx.train.engine import run_training

        results = run_training(TrainConfig(**train))
        if results.get("stopped"):
            raise SystemExit(f"{spec['name']}_s{spec['seed']} stopped early: {results['reason']}")
        checkpoint = Path(train["float_checkpoint"])
        results["float_checkpoint_sha256"] = sha256(checkpoint)
    results["torch"] = torch.__version__
    results["code"] = code_version()
    record = {
        "ablation": {
            **spec["meta"],
            "train_settings": comparable(train),
            "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        **results,
    }
    write_json(spec["result_path"], record)


def train_float(train: dict[str, Any]) -> dict[str, Any]:
    """Float pre-training only: run_training's float phase, stopped after its last epoch.

    ``stop_after_epochs`` counts epochs of this process, so a resumed run is
    given the epochs still missing; a float phase already complete is not rerun.
    """
    import torch

    from adq_fx.environment import machine_info
    from adq_fx.train.config import TrainConfig
    from adq_fx.train.engine import run_training

    out = Path(train["out_dir"])
    last = out / "float_last.pt"
    total = train["finetune_epochs"] if train.get("float_checkpoint") else train["float_epochs"]
    done = torch.load(last, weights_only=True, map_location="cpu")["epoch"] + 1 if last.exists() else 0
    started = time.perf_counter()
    if done < total:
        results = run_training(TrainConfig(**train, stop_after_epochs=total - done))
        if not results.get("stopped"):
            raise SystemExit(f"float pre-training did not stop after its {total} epochs: {results}")
    state = torch.load(last, weights_only=True, map_location="cpu")
    if state["epoch"] + 1 != total:
        raise SystemExit(f"{last} holds epoch {state['epoch'] + 1} of {total}; delete {out} and rerun.")
    torch.save({"model": state["model"]}, out / "float.pt")
    history = state["history"]
    device = train.get("device", "auto")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    return {
        "config": asdict(TrainConfig(**train)),
        "machine": machine_info(device),
        "data": {
            "name": train["dataset"],
            "train": train.get("train_subset") or "whole split",
            "test": train.get("test_subset") or "whole split",
        },
        "float_accuracy": history[-1]["test_acc"],
        "validation_accuracy": {"float": history[-1].get("val_acc")},
        "average_bits": 32.0,
        "parameter_weighted_bits": 32.0,
        "history": {"float": history},
        "seconds": sum(r["seconds"] for r in history),
        "seconds_this_invocation": time.perf_counter() - started,
        "float_checkpoint_sha256": sha256(out / "float.pt"),
    }


def record_session(results_dir: Path, entry: dict[str, Any]) -> None:
    path = results_dir / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append(entry)
    write_json(path, sessions)


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedule", choices=list(SCHEDULES), default="reduced")
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        metavar="NAME",
        help=f"QAT configurations to run (default all: {' '.join(CONFIGS)}); FP always runs",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of B, LSQ-*, ADQ-2/4")
    parser.add_argument(
        "--claim-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of A, C, D, E, F"
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="TrainConfig.dataset, relative to the repo root")
    parser.add_argument("--data-label", help="how outputs name the data (default from --data)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (subprocesses)")
    parser.add_argument("--threads", type=int, help="torch threads per job (default cores // jobs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--kd", action="store_true", help="QAT with knowledge distillation from the float model"
    )
    parser.add_argument("--runs-dir", help="default runs/ablation/<schedule>")
    parser.add_argument("--results-dir", help="default benchmarks/results/ablation_<schedule>")
    group = parser.add_argument_group("schedule knobs (override the schedule's values)")
    group.add_argument("--float-epochs", type=int)
    group.add_argument("--float-lr", type=float)
    group.add_argument("--float-train-subset", type=int, help="0 = whole train split")
    group.add_argument("--epochs", type=int, help="QAT epochs")
    group.add_argument("--lr", type=float, help="QAT learning rate")
    group.add_argument("--batch-size", type=int, help="QAT batch size")
    group.add_argument("--train-subset", type=int, help="QAT train images; 0 = whole train split")
    group.add_argument("--test-subset", type=int, help="test images (float and QAT); 0 = whole test split")
    parser.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-run plots (default on for the full schedule only)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: on with --jobs 1 on a terminal)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.progress is None:
        args.progress = args.jobs == 1 and sys.stdout.isatty()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    kind, _, where = args.data.partition(":")
    if kind == "imagefolder" and not (REPO / where).is_dir() and not args.dry_run:
        raise SystemExit(
            f"no {REPO / where}: unpack the data first, e.g. "
            "mkdir -p data && tar -xJf ../shared/data/cifar10-jpeg.tar.xz -C data"
        )
    float_job, jobs = plan(args)
    source = float_job.train.get("float_checkpoint")
    if source and not (REPO / source).is_file() and not args.dry_run:
        raise SystemExit(
            f"no {REPO / source}: the {args.schedule} schedule starts from that pre-trained "
            "model (see ../shared/data/README.md)."
        )
    check_train_configs([float_job, *jobs])
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    done = {job.label for job in [float_job, *jobs] if existing_result(job) is not None}
    pending = [job for job in jobs if job.label not in done]
    schedule = SCHEDULES[args.schedule]
    print(
        f"ADQ ablation, {schedule.label}: {len(jobs)} QAT runs planned, {len(jobs) - len(pending)} done; "
        f"float pre-training {'done' if float_job.label in done else 'to run'}; "
        f"{args.jobs} job(s) x {threads} thread(s); results in {float_job.result_path.parent}"
    )
    for job in [float_job, *pending]:
        if job.label not in done:
            overrides = {k: v for k, v in job.train.items() if k not in VOLATILE | {"dataset", "model"}}
            print(f"  {job.label:9s} {overrides}")
    if args.dry_run:
        return 0

    began, started_at = time.perf_counter(), datetime.datetime.now().astimezone()
    ran: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        execute(float_job, pending, done, args.jobs, threads, ran, failed)
    finally:  # an interrupted invocation still counts its wall time and finished runs
        wall = time.perf_counter() - began
        record_session(
            float_job.result_path.parent,
            {
                "schedule": schedule.name,
                "schedule_label": schedule.label,
                "started": started_at.isoformat(timespec="seconds"),
                "wall_seconds": wall,
                "jobs": args.jobs,
                "threads_per_job": threads,
                "ran": ran,
                "failed": failed,
                "completed": len(ran) + len(failed) == len(pending) + (float_job.label not in done),
                "argv": sys.argv[1:],
                "host": platform.node(),
                "cores": os.cpu_count(),
            },
        )
    print(
        f"{len(ran)} run(s) in {wall / 60:.1f} min; {len(failed)} failed. "
        f"Report: python benchmarks/ablation_report.py --schedule {schedule.name}"
        + (f" --results-dir {float_job.result_path.parent}" if args.results_dir else "")
    )
    return 1 if failed else 0


def execute(
    float_job: Job,
    pending: list[Job],
    done: set[str],
    jobs: int,
    threads: int,
    ran: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """The float pre-training if missing, then the pending QAT runs, ``jobs`` at a time."""
    float_pt = float_job.out_dir / "float.pt"
    if float_job.label not in done:
        job, code, seconds = run_job(float_job, threads=max(1, os.cpu_count() or 1), log=False)
        if code != 0:
            failed.append({"run": job.label, "seconds": seconds, "exit": code})
            raise SystemExit(f"float pre-training failed (exit {code}); nothing else was run")
        ran.append({"run": job.label, "seconds": seconds})
        record = json.loads(float_job.result_path.read_text())
        print(f"FP_s0: float accuracy {record['float_accuracy']:.2f}%, {seconds:.0f} s", flush=True)
    elif pending and not float_pt.exists():
        raise SystemExit(
            f"{float_job.result_path} exists but {float_pt} does not: the pending runs must "
            "start from the same float model. Restore the runs dir, or delete the results dir "
            "to redo the table."
        )
    if pending:
        want = json.loads(float_job.result_path.read_text())["float_checkpoint_sha256"]
        if sha256(float_pt) != want:
            raise SystemExit(f"{float_pt} is not the float model {float_job.result_path} recorded.")
    finished = run_parallel(pending, lambda job: run_job(job, threads=threads, log=jobs > 1), jobs)
    for count, (job, code, seconds) in enumerate(finished, 1):
        if code == 0:
            ran.append({"run": job.label, "seconds": seconds})
            record = json.loads(job.result_path.read_text())
            status = (
                f"converted {record['converted_accuracy']:.2f}% (float "
                f"{record['float_accuracy']:.2f}%), {record['average_bits']:.3g} bits"
            )
        else:
            failed.append({"run": job.label, "seconds": seconds, "exit": code})
            status = f"FAILED (exit {code}; log in {job.out_dir})"
        print(f"[{count}/{len(pending)}] {job.label}: {status}, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
