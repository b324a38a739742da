"""Inference latency and size: float32 vs adq_fx's converted models vs PyTorch's own int8 flow.

    python benchmarks/inference_speed.py            # ~10 min on 2 CPU cores
    python benchmarks/inference_speed.py --quick    # smoke run (few repeats; not a measurement)

One process, 2 threads, every variant of a (model, batch) point timed in turn
within each repeat (interleaved, so machine noise hits all alike), medians over
repeats. Variants: float32 eager; adq_fx converted ``backend="reference"``
(float LUT math); ``backend="int8"`` eager; the int8 model through
``adq_fx.compile_converted`` (one graph, C++ wrapper: the encoders fuse with the
ReLUs and adds before them); and the anchor, torch.ao's FX int8 flow (``prepare_fx``/``convert_fx``,
x86 backend, calibrated on random data). All 4-D inputs are channels_last.
Sizes are the bytes of ``torch.save(model.state_dict())``. Profiles of the
int8 models, eager and compiled, give each op's share of the time. Writes
benchmarks/results/inference_speed.json; results_page.py makes the tables.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from _runner import record, write_json  # a sibling module
from torch import nn

import adq_fx
from adq_fx.environment import cpuinfo_field, describe
from adq_fx.train.models import build_model

OUT = Path(__file__).parent / "results" / "inference_speed.json"
POINTS = [("resnet20", 32, 1), ("resnet20", 32, 32), ("resnet18", 224, 1), ("resnet18", 224, 8)]


def float_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet20":
        model = build_model("resnet20", 10)
    else:
        model = torchvision.models.resnet18(num_classes=1000)
    # BatchNorm statistics of real-looking activations (fresh ones saturate every quantizer).
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32 if name == "resnet20" else 96, 32 if name == "resnet20" else 96))
    return model.eval()


def adq_models(model: nn.Module, size: int, bits: int) -> tuple[nn.Module, nn.Module]:
    example = torch.randn(4, 3, size, size)
    mapping = adq_fx.default_qconfig_mapping(bits)
    prepared = adq_fx.prepare_adq(model, mapping, (example,))
    # The threshold and step quantizers start from the first batch they see: calibrate them on it.
    adq_fx.calibrate(prepared, (example,)).eval()
    return adq_fx.convert_adq(prepared, backend="reference"), adq_fx.convert_adq(prepared, backend="int8")


def anchor_model(model: nn.Module, size: int) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = (torch.randn(1, 3, size, size),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's own deprecation notices
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
        with torch.no_grad():
            for _ in range(4):
                prepared(torch.randn(4, 3, size, size))
        return convert_fx(prepared)


def serialized_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def time_block(fn: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations


def profile_shares(model: Callable, x: torch.Tensor) -> list[dict]:
    """Self CPU time per op of one int8 forward (after warm-up), largest first."""
    with torch.no_grad():
        for _ in range(3):
            model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(x)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events)
    top = sorted(events, key=lambda e: -e[1])[:10]
    return [{"op": k, "share": t / total} for k, t in top]


def measure_point(name: str, size: int, batch: int, bits: int, repeats: int, compile_int8: bool) -> dict:
    model = float_model(name)
    reference, int8 = adq_models(model, size, bits)
    anchor = anchor_model(model, size)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    variants: dict[str, nn.Module | Callable] = {
        "float32": model.to(memory_format=torch.channels_last),
        "adq_reference": reference,
        "adq_int8": int8,
        "torch_ao_int8": anchor,
    }
    compile_seconds = None
    if compile_int8:
        started = time.perf_counter()
        compiled = adq_fx.compile_converted(int8, x)
        compile_seconds = time.perf_counter() - started
        variants["adq_int8_compiled"] = compiled
    with torch.no_grad():
        expected = reference(x)
        agreement = {
            k: float((v(x).argmax(1) == expected.argmax(1)).float().mean())
            for k, v in variants.items()
            if k.startswith("adq_int8")
        }
        single = time_block(lambda: model(x), 1)
        iterations = max(1, min(50, int(0.2 / max(single, 1e-4))))
        for fn in variants.values():  # warm-up
            time_block(lambda fn=fn: fn(x), max(2, iterations // 4))
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for key, fn in variants.items():
                samples[key].append(time_block(lambda fn=fn: fn(x), iterations))
    median = {k: statistics.median(v) for k, v in samples.items()}
    sizes = {
        "float32": serialized_bytes(model),
        "adq_reference": serialized_bytes(reference),
        "adq_int8": serialized_bytes(int8),
        "torch_ao_int8": serialized_bytes(anchor),
    }
    size_int8 = adq_fx.model_size(int8)
    return {
        "model": name,
        "input": [batch, 3, size, size],
        "bits": bits,
        "iterations": iterations,
        "median_ms": {k: 1e3 * v for k, v in median.items()},
        "ratio_to_float": {k: median["float32"] / v for k, v in median.items()},
        "ratio_to_anchor": {k: median["torch_ao_int8"] / v for k, v in median.items()},
        "serialized_bytes": sizes,
        "model_size_int8": size_int8,
        "top1_agreement_with_reference": agreement,
        "compile_seconds": compile_seconds,
        "profile_int8_eager": profile_shares(int8, x),
        # Profiled with inductor's Python wrapper: under the C++ one the kernel calls are invisible.
        "profile_int8_compiled": (
            profile_shares(adq_fx.compile_converted(int8, x, cpp_wrapper=False), x) if compile_int8 else None
        ),
    }


#: The CPU features that decide which int8 kernels run fast (oneDNN uses AMX where it exists; fbgemm
#: does not), recorded because two machines with the same "CPU capability" can differ in them.
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def int8_cpu_features() -> list[str]:
    """Which of INT8_FEATURES this CPU has (Linux /proc/cpuinfo; empty where that is not readable)."""
    flags = (cpuinfo_field("flags") or "").split()
    return [f for f in INT8_FEATURES if f in flags]


def markdown(data: dict) -> str:
    keys = [
        k
        for k in ("float32", "adq_reference", "adq_int8", "adq_int8_compiled", "torch_ao_int8")
        if any(k in r["median_ms"] for r in data["rows"])
    ]
    lines = [
        "| model | input | "
        + " | ".join(f"{k} ms" for k in keys)
        + " | int8 vs float | int8 vs torch.ao | best int8 vs torch.ao |",
        "|---|---|" + "---|" * (len(keys) + 3),
    ]
    for r in data["rows"]:
        cells = [f"{r['median_ms'][k]:.2f}" if k in r["median_ms"] else "—" for k in keys]
        best = max(v for k, v in r["ratio_to_anchor"].items() if k.startswith("adq_int8"))
        ratios = (
            f"{r['ratio_to_float']['adq_int8']:.2f}× | {r['ratio_to_anchor']['adq_int8']:.2f}× | {best:.2f}×"
        )
        lines.append(
            f"| {r['model']} W{r['bits']}A{r['bits']} | {tuple(r['input'])} | "
            + " | ".join(cells)
            + f" | {ratios} |"
        )
    lines += [
        "",
        "| model | float32 KiB | adq reference KiB | adq int8 KiB | torch.ao int8 KiB "
        "| int8 bits/weight (quantized layers) | code bits |",
        "|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in data["rows"]:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        b = r["serialized_bytes"]
        lines.append(
            f"| {r['model']} W{r['bits']}A{r['bits']} | {b['float32'] / 1024:.0f} | "
            f"{b['adq_reference'] / 1024:.0f} | {b['adq_int8'] / 1024:.0f} | "
            f"{b['torch_ao_int8'] / 1024:.0f} | {r['model_size_int8']['bits_per_weight']:.2f} | "
            f"{r['model_size_int8']['weight_bits']:.0f} |"
        )
    s = data["settings"]
    quick = " **(--quick smoke run: not a measurement)**" if s["quick"] else ""
    lines.append(
        f"\n{describe(data['machine'])}; CPU capability {data['cpu_capability']}; "
        f"int8 features: {', '.join(data['cpu_features']) if 'cpu_features' in data else 'not recorded'}; "
        f"{s['repeats']} interleaved repeats, medians; allocator: "
        f"{', '.join(f'{k}={v}' for k, v in s.get('allocator_env', {}).items()) or 'glibc defaults'}; "
        "ratios > 1 mean faster than the anchor; "
        f"sizes are `torch.save(state_dict)` bytes.{quick}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few repeats, no compile: a smoke run")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats per point")
    parser.add_argument("--bits", type=int, default=3, help="weight and activation bits of the adq models")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the compiled int8 variant (adq_fx.compile_converted; ~15 s of compiling per point)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats = 2 if args.quick else args.repeats
    rows = []
    for name, size, batch in POINTS:
        print(f"{name} {size}x{size} batch {batch} ...", flush=True)
        rows.append(
            measure_point(name, size, batch, args.bits, repeats, compile_int8=args.compile and not args.quick)
        )
    data = record(
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_features=int8_cpu_features(),
        settings={
            "repeats": repeats,
            "bits": args.bits,
            "quick": args.quick,
            "threads": 2,
            # The allocator shapes the float intermediates' cost (fresh pages per large tensor).
            "allocator_env": {
                k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"
            },
        },
        rows=rows,
    )
    write_json(args.out, data)
    print(markdown(data))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
