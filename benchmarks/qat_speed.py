"""Cost of one QAT training step: float vs ADQ vs LSQ vs torch.ao's QAT, on the same network.

Measures the wall time of one training step (forward, cross-entropy, backward and
``SGD(lr=0.01, momentum=0.9).step()``) for four versions of the same network:

- ``float``: the plain model;
- ``adq``: ``adq_fx.prepare_adq(model, adq_fx.default_qconfig_mapping(3), (example,))``:
  3-bit ADQ weights and 3-bit N2UQ activations, first conv and last fc float; the loss
  adds ``adq_fx.commitment_loss(prepared)``, as users do;
- ``lsq``: the same, with 3-bit LSQ weight and activation quantizers
  (``ADQConfigMapping().set_global(ADQConfig(weight=LSQWeightConfig(bits=3),
  activation=LSQActivationConfig(bits=3)))``); ``commitment_loss`` is added as for adq (as
  the training engine does; LSQ layers contribute zero);
- ``asq_post``: the same with the ASQ paper's quantizers (POST weights, ASQ activations);
- ``torch_ao_qat``: PyTorch's ``prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), ...)``
  (8-bit fake quantization, conv+bn(+relu) fused into QAT modules), deprecation warnings silenced.

Networks: torchvision ResNet-18 (1000 classes) at 224x224, batch 8 on CPU / 256 on CUDA,
and CIFAR ResNet-20 (``adq_fx.train.models.build_model("resnet20", 10, 3)``) at 32x32,
batch 128 on CPU / 256 on CUDA. On CUDA every variant also gets a bf16-autocast row.
Inputs and labels are one fixed random batch (data loading is not timed).

Each (network, variant, precision) runs in its own subprocess (this script re-invoked with
``--child``; it prints one JSON line back), so its peak memory is its own: on CPU the
process's peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``, which includes building and
preparing the model), on CUDA ``torch.cuda.max_memory_allocated`` over the warm-up and
timed steps. After the warm-up steps, every one of ``--repeats`` steps is timed on its own
(on CUDA synchronized before and after); the table gives the median, the interquartile
range and the median's ratio to the float model's median at the same precision.

    python benchmarks/qat_speed.py                       # CPU, both networks, all variants
    python benchmarks/qat_speed.py --quick               # smoke run: 1 warm-up and 3 timed steps
    python benchmarks/qat_speed.py --device cuda         # batch 256, fp32 and bf16 autocast
    python benchmarks/qat_speed.py --models resnet20 --variants float adq --repeats 50 --threads 2
    python benchmarks/qat_speed.py --profile adq --models resnet18   # top ops of the adq step

Writes benchmarks/results/qat_speed_<device type>.json: machine, settings, and every
raw step time. ``--profile VARIANT`` instead runs torch.profiler over a few steps of that
variant in this process and prints the 15 ops with the most self CPU time, then the same
self CPU time summed by the registered quantizer class (adq_fx.registry) whose call ran each op.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _runner import RESULTS, marked_result, record, run_script, write_json  # a sibling module
from torch import Tensor, nn

import adq_fx
from adq_fx.environment import describe, machine_info
from adq_fx.train.models import build_model

BITS = 3
LR, MOMENTUM = 0.01, 0.9
MARKER = "QAT_SPEED_RESULT "
VARIANTS = ("float", "adq", "lsq", "asq_post", "torch_ao_qat")
KERNEL_VARIANTS = ("adq", "lsq", "asq_post")  # run once per adq_fx kernel backend
DEFAULT_REPEATS, DEFAULT_WARMUP = 20, 3
QUICK_REPEATS, QUICK_WARMUP = 3, 1
PROFILE_WARMUP, PROFILE_STEPS = 2, 3


@dataclass(frozen=True)
class Network:
    label: str
    num_classes: int
    size: int
    batch: dict[str, int]  # device type -> batch size


NETWORKS = {
    "resnet18": Network("ResNet-18 (torchvision, 1000 classes)", 1000, 224, {"cpu": 8, "cuda": 256}),
    "resnet20": Network("ResNet-20 (CIFAR, 10 classes)", 10, 32, {"cpu": 128, "cuda": 256}),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def prepare(variant: str, model: nn.Module, example: Tensor) -> tuple[nn.Module, bool]:
    """The model to train and whether its loss gets adq_fx.commitment_loss."""
    if variant == "float":
        return model, False
    if variant == "adq":
        return adq_fx.prepare_adq(model, adq_fx.default_qconfig_mapping(BITS), (example,)), True
    if variant in ("lsq", "asq_post"):
        config = (
            adq_fx.ADQConfig(
                weight=adq_fx.LSQWeightConfig(bits=BITS), activation=adq_fx.LSQActivationConfig(bits=BITS)
            )
            if variant == "lsq"
            else adq_fx.ADQConfig(
                weight=adq_fx.POSTWeightConfig(bits=BITS), activation=adq_fx.ASQActivationConfig(bits=BITS)
            )
        )
        return adq_fx.prepare_adq(model, adq_fx.ADQConfigMapping().set_global(config), (example,)), True
    if variant == "torch_ao_qat":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max")
            from torch.ao.quantization import get_default_qat_qconfig_mapping
            from torch.ao.quantization.quantize_fx import prepare_qat_fx

            return prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping("x86"), (example,)), False
    raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")


@dataclass
class Setup:
    model: nn.Module
    step: Any  # () -> None: one training step
    batch: int
    commitment: bool
    quantized_layers: int | None


def set_up(network: str, variant: str, bf16: bool, device: torch.device, channels_last: bool) -> Setup:
    torch.manual_seed(0)
    spec = NETWORKS[network]
    batch = spec.batch[device.type]
    model = build_model(network, spec.num_classes, 3).to(device).train()
    x = torch.randn(batch, 3, spec.size, spec.size, device=device)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    prepared, commitment = prepare(variant, model, x[:2])
    prepared.train()
    quantized = len(adq_fx.quantization_map(prepared)) if variant in KERNEL_VARIANTS else None
    optimizer = torch.optim.SGD(prepared.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(prepared(x).float(), y)
            if commitment:
                loss = loss + adq_fx.commitment_loss(prepared)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Setup(prepared, step, batch, commitment, quantized)


def timed(step: Any, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def time_steps(step: Any, device: torch.device, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """(warm-up step times, timed step times), ms. The first warm-up step includes any compiling."""
    warmup_times = [timed(step, device) for _ in range(warmup)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return warmup_times, [timed(step, device) for _ in range(repeats)]


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints one JSON line for the parent."""
    network, variant, precision, kernels = args.child
    device = torch.device(args.device)
    adq_fx.set_kernel_backend(kernels)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    setup = set_up(network, variant, precision == "bf16", device, args.channels_last)
    rss_setup = peak_rss_mib()
    warmup_times, times = time_steps(setup.step, device, args.warmup, args.repeats)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    row = {
        "model": network,
        "variant": variant,
        "precision": precision,
        "kernels": kernels,
        "batch": setup.batch,
        "warmup_times_ms": warmup_times,
        "input": [setup.batch, 3, NETWORKS[network].size, NETWORKS[network].size],
        "commitment_loss": setup.commitment,
        "quantized_layers": setup.quantized_layers,
        "threads": torch.get_num_threads(),
        "median_ms": statistics.median(times),
        "iqr_ms": q3 - q1,
        "times_ms": times,
    }
    if device.type == "cuda":
        row["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row["peak_rss_after_setup_mib"] = rss_setup
        row["peak_rss_mib"] = peak_rss_mib()
    print(MARKER + json.dumps(row), flush=True)


def run_child(
    args: argparse.Namespace, network: str, variant: str, precision: str, kernels: str
) -> dict[str, Any]:
    cmd = [
        "--child",
        network,
        variant,
        precision,
        kernels,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    proc = run_script(__file__, cmd)
    row = marked_result(proc.stdout, MARKER)
    if row is not None:
        return row
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    print(
        f"{network} / {variant} / {precision} / {kernels} kernels failed (exit {proc.returncode}):\n{tail}",
        file=sys.stderr,
    )
    return {
        "model": network,
        "variant": variant,
        "precision": precision,
        "kernels": kernels,
        "batch": NETWORKS[network].batch[torch.device(args.device).type],
        "error": f"exit {proc.returncode}: {tail}",
    }


def markdown(rows: list[dict[str, Any]], device_type: str) -> str:
    memory = "peak CUDA alloc MiB" if device_type == "cuda" else "peak RSS MiB"
    lines = [
        f"| model | batch | variant | adq_fx kernels | median ms | IQR ms | × float | first step ms "
        f"| {memory} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    float_median = {
        (r["model"], r["precision"]): r["median_ms"]
        for r in rows
        if r["variant"] == "float" and "error" not in r
    }
    for r in rows:
        variant = r["variant"] + (", bf16 autocast" if r["precision"] == "bf16" else "")
        kernels = r.get("kernels", "eager") if r["variant"] in KERNEL_VARIANTS else "—"
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {variant} | {kernels} | failed | — | — | — | — |")
            continue
        base = float_median.get((r["model"], r["precision"]))
        ratio = f"{r['median_ms'] / base:.2f}" if base else "—"
        peak = r.get("peak_cuda_allocated_mib", r.get("peak_rss_mib"))
        first = f"{r['warmup_times_ms'][0]:.0f}" if r.get("warmup_times_ms") else "—"
        lines.append(
            f"| {r['model']} | {r['batch']} | {variant} | {kernels} | {r['median_ms']:.1f} | "
            f"{r['iqr_ms']:.1f} | {ratio} | {first} | {peak:.0f} |"
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    variants = list(args.variants)
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    kernel_choices = args.kernels or (["eager", "compiled"] if device.type == "cpu" else ["eager"])
    for network in args.models:
        for precision in precisions:
            for variant in variants:
                for kernels in kernel_choices if variant in KERNEL_VARIANTS else ["eager"]:
                    row = run_child(args, network, variant, precision, kernels)
                    if "error" not in row:
                        print(
                            f"{network} / {variant} / {precision} / {kernels}: "
                            f"median {row['median_ms']:.1f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
                    rows.append(row)
    info = machine_info(device)
    result = record(
        device,
        **{
            "settings": {
                "models": {
                    name: {
                        "label": NETWORKS[name].label,
                        "input": [
                            NETWORKS[name].batch[device.type],
                            3,
                            NETWORKS[name].size,
                            NETWORKS[name].size,
                        ],
                    }
                    for name in args.models
                },
                "variants": variants,
                "precisions": precisions,
                "kernels": kernel_choices,
                "bits": BITS,
                "optimizer": {"name": "SGD", "lr": LR, "momentum": MOMENTUM},
                "torch_ao_qconfig": 'get_default_qat_qconfig_mapping("x86")',
                "warmup": args.warmup,
                "repeats": args.repeats,
                "threads": info["threads"],
                "channels_last": args.channels_last,
                "quick": args.quick,
                "memory": (
                    "torch.cuda.max_memory_allocated over warm-up and timed steps, per subprocess"
                    if device.type == "cuda"
                    else "peak RSS (ru_maxrss) of the measuring subprocess"
                ),
            },
            "rows": rows,
        },
    )
    out = write_json(Path(args.out) if args.out else RESULTS / f"qat_speed_{device.type}.json", result)
    print(markdown(rows, device.type))
    quick = " (--quick smoke run)" if args.quick else ""
    print(
        f"\n{describe(info)}; {args.warmup} warm-up + {args.repeats} timed steps per row{quick}; "
        f"written to {out}"
    )


MODULE_EVENT = "nn.Module: "  # the profiler's Python tracer names each module call "nn.Module: Class_i"
QUANTIZE_RANGE = "quantize: "  # the profiler range weight_quantizer_ranges() puts around each call
BACKWARD = "autograd::engine::evaluate_function: "
COMPILED_KERNEL = "adq_fx.kernels."  # the profiler range adq_fx.kernels puts around a compiled kernel


def quantizer_class_names() -> set[str]:
    """Every registered weight and activation quantizer class: what the profile attributes time to."""
    from adq_fx import registry

    return {
        entry.quantizer.__name__
        for role in ("weight", "activation")
        for entry in registry.entries(role).values()
    }


@contextlib.contextmanager
def weight_quantizer_ranges() -> Iterator[None]:
    """A QAT layer calls its weight quantizer's ``quantize`` method, not the module, so the profiler
    sees no module call: for the profile only, run each registered class's ``quantize`` in a range
    named after the class (the library's hot path carries no profiler ranges)."""
    from adq_fx import registry

    patched = []
    for entry in registry.entries("weight").values():
        cls, own = entry.quantizer, entry.quantizer.__dict__.get("quantize")
        inner = cls.quantize

        def ranged(self: Any, weight: Any, _inner: Any = inner, _name: str = cls.__name__) -> Any:
            with torch.profiler.record_function(QUANTIZE_RANGE + _name):
                return _inner(self, weight)

        cls.quantize = ranged
        patched.append((cls, own))
    try:
        yield
    finally:
        for cls, own in patched:
            if own is None:
                del cls.quantize
            else:
                cls.quantize = own


def owning_quantizer(event: Any, quantizers: set[str]) -> str | None:
    """The innermost registered quantizer whose call encloses ``event``, by class name."""
    while event is not None:
        name = event.name
        if name.startswith(QUANTIZE_RANGE):
            return name[len(QUANTIZE_RANGE) :]
        if name.startswith(MODULE_EVENT) and name[len(MODULE_EVENT) :].rsplit("_", 1)[0] in quantizers:
            return name[len(MODULE_EVENT) :].rsplit("_", 1)[0]
        event = event.cpu_parent
    return None


def backward_owner(event: Any, forward_owner: dict[int, str]) -> str | None:
    """For an op autograd runs, the quantizer label of the forward op that recorded its node."""
    while event is not None and not event.name.startswith(BACKWARD):
        event = event.cpu_parent
    owner = forward_owner.get(event.sequence_nr) if event is not None else None
    return f"backward of {owner}" if owner else None


def _inside_compiled_kernel(event: Any) -> bool:
    event = event.cpu_parent
    while event is not None:
        if event.name.startswith(COMPILED_KERNEL):
            return True
        event = event.cpu_parent
    return False


def self_time_by_quantizer(events: list[Any]) -> tuple[dict[str, float], float]:
    """Self CPU time (us) of the ops quantizers ran, by quantizer class and op, and the total.

    Forward ops (and the Python backward of adq_fx's autograd Functions) belong to the
    registered quantizer module whose call encloses them; autograd's own backward ops to
    the forward op that recorded the autograd node (same sequence number). A compiled
    kernel runs no aten op (its time sits in the generated code), so it counts by its
    whole ``adq_fx.kernels.*`` range. A QAT layer's own conv sits outside every quantizer
    and is not counted."""
    quantizers = quantizer_class_names()
    ops = [
        e
        for e in events
        if not e.is_python_function
        and not _inside_compiled_kernel(e)
        and not e.name.startswith(QUANTIZE_RANGE)
    ]
    forward_owner: dict[int, str] = {}
    for event in ops:
        if event.sequence_nr >= 0 and not event.name.startswith(BACKWARD):
            owner = owning_quantizer(event, quantizers)
            if owner is not None:
                forward_owner.setdefault(event.sequence_nr, f"{owner} {event.name}")
    by_label: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in ops:
        compiled = event.name.startswith(COMPILED_KERNEL)
        spent = event.cpu_time_total if compiled else event.self_cpu_time_total
        total += spent
        name = f"compiled {event.name}" if compiled else event.name
        owner = owning_quantizer(event, quantizers)
        label = f"{owner} {name}" if owner else backward_owner(event, forward_owner)
        if label is not None:
            by_label[label if owner or not compiled else f"{label}: {name}"] += spent
    return by_label, total


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    kernels = args.kernels[0] if args.kernels else ("compiled" if device.type == "cpu" else "eager")
    adq_fx.set_kernel_backend(kernels)
    for network in args.models:
        setup = set_up(network, args.profile, False, device, args.channels_last)
        for _ in range(PROFILE_WARMUP):
            setup.step()
        sync(device)
        with weight_quantizer_ranges(), torch_profile(activities=activities, with_stack=True) as prof:
            for _ in range(PROFILE_STEPS):
                setup.step()
            sync(device)
        print(
            f"\n### {network}, {args.profile} ({kernels} kernels), batch {setup.batch}, "
            f"{torch.get_num_threads()} threads: "
            f"{PROFILE_STEPS} steps after {PROFILE_WARMUP} warm-up\n"
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        by_label, total = self_time_by_quantizer(prof.events())
        if by_label:
            print(
                "\nself CPU time of the ops the quantizers ran (forward inside the quantizer module's call, "
                "autograd backward by its forward op), by quantizer class and op; compiled kernels by "
                "their whole time:\n"
            )
            print("| quantizer, op | self CPU ms / step | % of all self CPU |\n|---|---|---|")
            for label, us in sorted(by_label.items(), key=lambda item: -item[1])[:15]:
                print(f"| {label} | {us / 1e3 / PROFILE_STEPS:.1f} | {100 * us / total:.1f} |")
            quantizer_total = sum(by_label.values())
            print(
                f"| all quantizers | {quantizer_total / 1e3 / PROFILE_STEPS:.1f} | "
                f"{100 * quantizer_total / total:.1f} |"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed steps per row (default {DEFAULT_REPEATS}, --quick {QUICK_REPEATS})",
    )
    parser.add_argument(
        "--warmup", type=int, help=f"untimed steps first (default {DEFAULT_WARMUP}, --quick {QUICK_WARMUP})"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    parser.add_argument("--quick", action="store_true", help="smoke run: few warm-up and timed steps")
    parser.add_argument(
        "--out",
        help="JSON path (default benchmarks/results/qat_speed_<device>.json, the "
        "published table: use another path for partial or exploratory runs)",
    )
    parser.add_argument(
        "--profile",
        choices=VARIANTS,
        metavar="VARIANT",
        help="profile a few steps of this variant instead of timing",
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=["eager", "compiled"],
        help="adq_fx kernel backends to time the quantized variants with (default: both on "
        "CPU, eager on CUDA; see adq_fx.set_kernel_backend)",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("MODEL", "VARIANT", "PRECISION", "KERNELS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the IQR needs two times)")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
    elif args.profile:
        profile(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
