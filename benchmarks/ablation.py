"""The ADQ paper's Table 4.4 ablation (CIFAR-10, ResNet-20) plus LSQ and fixed-bit ADQ baselines.

    python benchmarks/ablation.py --schedule reduced --jobs 2   # CPU: ~50 min on 2 cores (~60 with --jobs 1)
    python benchmarks/ablation.py --schedule full --jobs 4      # GPU: paper-length, 4 trainings per card
    python benchmarks/ablation.py --schedule smoke --configs D E --claim-seeds 0 1   # end-to-end check
    python benchmarks/ablation.py --schedule reduced --dry-run  # print the plan, run nothing
    python benchmarks/ablation_report.py --schedule reduced     # the tables and the plot

What each configuration, claim and schedule is lives in ablation_table.py; this script
plans, runs and records them. Run from the repository root (relative paths are taken from there). The data
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
behind the claims E > A, F > D and E > C, and for ADQ and N2UQ at 2 and 4 bits (ADQ
against its best baseline at each bit-width); ``--seeds`` (default 0) for the rest.
Without ``--configs`` the table's rows run (Table 4.4 and the baselines); the
diagnostics and the validation rows behind each default run when named.
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
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from _runner import code_version, run_parallel, run_script, write_json  # a sibling module
from ablation_table import (  # what is measured: configurations, claims, schedules
    CONFIGS,
    DATA_SEED,
    DEFAULT_DATA,
    FLOAT_DESCRIPTION,
    FLOAT_NAME,
    FLOAT_PAPER,
    FLOAT_SEED,
    MODEL,
    REPO,
    SCHEDULES,
    VOLATILE,
    data_variant,
    default_results_dir,
)


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
    names = args.configs or [name for name, config in CONFIGS.items() if config.table]
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


# TrainConfig fields added after runs were recorded, with the behaviour a record without them ran
# under, so that changing such a field's default later cannot pass an old run off as a new one.
BEFORE_THE_FIELD: dict[str, Any] = {"commitment_units": "channel", "bit_allocation": "eq9"}

# The TrainConfig fields the engine passes to the adq weight quantizer only (Engine.base_config).
CODEBOOK_SETTINGS = frozenset(
    {
        "codebook_levels",
        "codebook_init",
        "codebook_kmeans_steps",
        "learn_codebook",
        "commitment_beta",
        "commitment_units",
        "codebook_ema_decay",
        "codebook_warm_start",
        "int8_grid",
    }
)


def unused_setting(key: str, settings: dict[str, Any]) -> bool:
    """A setting the run never reads: the threshold quantizer's fields without n2uq activations,
    the codebook's without ADQ weights (TrainConfig passes them to the adq weight quantizer only),
    the allocation rule without mixed precision."""
    if key.startswith("threshold_"):
        return settings.get("activation_quantizer") != "n2uq"
    if key == "bit_allocation":
        return not settings.get("mixed_precision")
    return key in CODEBOOK_SETTINGS and settings.get("weight_quantizer") != "adq"


def existing_result(job: Job) -> dict[str, Any] | None:
    """The run's JSON if it exists and was made with the same settings; refuse a mismatch.

    Compares the resolved config (defaults included), so a changed library default
    cannot pass an old result off as the new one. Fields the record lacks came
    after it: those in ``BEFORE_THE_FIELD`` compare as the behaviour the record ran
    under, the rest are skipped (they were added with the older behaviour as their
    default). The float start is compared on the settings it was given: the
    quantization defaults do not reach it.
    """
    if not job.result_path.exists():
        return None
    record = json.loads(job.result_path.read_text())
    if job.name == FLOAT_NAME:
        want, had = comparable(job.train), record["ablation"]["train_settings"]
    else:
        want, had = resolved_settings(job.train), {**BEFORE_THE_FIELD, **comparable(record["config"])}
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
        help="QAT configurations to run (default the table's: "
        f"{' '.join(n for n, c in CONFIGS.items() if c.table)}); FP always runs",
    )
    claimed = " ".join(n for n, c in CONFIGS.items() if c.claim)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the other rows")
    parser.add_argument("--claim-seeds", type=int, nargs="+", default=[0, 1, 2], help=f"seeds of {claimed}")
    parser.add_argument("--data", default=DEFAULT_DATA, help="TrainConfig.dataset, relative to the repo root")
    parser.add_argument("--data-label", help="how outputs name the data (default from --data)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (subprocesses)")
    parser.add_argument("--threads", type=int, help="torch threads per job (default cores // jobs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--kd", action="store_true", help="QAT with knowledge distillation from the float model"
    )
    parser.add_argument("--runs-dir", help="default runs/ablation/<schedule>")
    parser.add_argument(
        "--results-dir",
        help="default benchmarks/results/ablation_<schedule> (pretrained: ablation_pretrained_xeon_v3)",
    )
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
    parser.add_argument(
        "--remake-float",
        action="store_true",
        help="train a float start whose runs dir is gone again; used only if bit-identical to the record",
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
    # A kill (SIGTERM) unwinds like Ctrl-C, so the session below still records its wall time.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ran: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        execute(float_job, pending, done, args.jobs, threads, ran, failed, remake_float=args.remake_float)
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
    *,
    remake_float: bool = False,
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
        if not remake_float:
            raise SystemExit(
                f"{float_job.result_path} exists but {float_pt} does not: the pending runs must "
                "start from the same float model. Restore the runs dir, pass --remake-float to "
                "train it again (accepted only if it is bit-identical to the recorded one), or "
                "delete the results dir to redo the table."
            )
        remade = replace(float_job, result_path=float_job.out_dir / "remade.json")
        job, code, seconds = run_job(remade, threads=max(1, os.cpu_count() or 1), log=False)
        if code != 0:
            raise SystemExit(f"re-making the float start failed (exit {code}); nothing else was run")
        print(f"FP_s0: float start re-made in {seconds:.0f} s", flush=True)
    if pending:
        want = json.loads(float_job.result_path.read_text())["float_checkpoint_sha256"]
        if sha256(float_pt) != want:
            raise SystemExit(
                f"{float_pt} is not the float model {float_job.result_path} recorded (sha256 "
                f"{want[:12]}…): another machine or library version trains a different one. Use "
                "another --results-dir and --runs-dir."
            )
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
