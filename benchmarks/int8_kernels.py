"""What one int8 convolution costs: adq_fx's kernel calls against torch.ao's, layer by layer.

    python benchmarks/int8_kernels.py                  # ~1 min on 2 CPU cores
    python benchmarks/int8_kernels.py --quick          # smoke run (not a measurement)

``inference_speed.py`` times whole models; this script takes them apart to say
what limits the int8 model against torch.ao's. For each 3x3 convolution shape
of ResNet-20 (32², batch 1 and 32) and ResNet-18 (224², batch 1 and 8), one
process, 2 threads, every variant timed in turn within each repeat, medians:

- ``adq_fp32``: the call an ``Int8Conv2d`` makes (uint8 codes in, float32 out,
  bias and ReLU in the kernel), and ``adq_fp32_sum`` with the float32 residual
  summed in the kernel. float32 outputs are what keep the int8 model equal to
  the trained one: the learned thresholds read them.
- ``onednn_u8`` / ``onednn_u8_sum``: the same oneDNN kernel writing a
  requantized uint8 output (and summing a uint8 residual), as an 8-bit
  activation path would. adq_fx does not do this; it is the cost of exactness.
- ``torch_ao`` / ``torch_ao_sum``: torch.ao's quantized conv (x86 engine,
  ``quantized::conv2d_relu``; for the residual, ``quantized::conv2d`` then
  ``quantized::add_relu``, as the anchor's converted ResNets call them).
- ``encode_fp32`` / ``encode_u8``: the library's compiled search
  encoder (``adq_fx.kernels.threshold_codes``, 3-bit, seven thresholds: a
  binary search) on the float32 output and on a uint8 one, and
  ``encode_fp32_every``: the same count comparing against every threshold
  (the library's encoder before the search).

Then the first convolution of ResNet-18 (7x7, stride 2, 3 channels), float32
(what the default mapping keeps) against torch.ao's int8 one. Writes
benchmarks/results/int8_kernels.json; results_page.py makes the table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _runner import record, write_json  # a sibling module
from inference_speed import int8_cpu_features

from adq_fx.environment import describe
from adq_fx.int8 import onednn
from adq_fx.kernels import pad_table, threshold_codes

OUT = Path(__file__).parent / "results" / "int8_kernels.json"
#: (model, batch, channels, height): the 3x3 stride-1 convolutions of each stage.
SHAPES = [
    *[("resnet20", batch, c, h) for batch in (1, 32) for c, h in ((16, 32), (32, 16), (64, 8))],
    *[("resnet18", batch, c, h) for batch in (1, 8) for c, h in ((64, 56), (128, 28), (256, 14), (512, 7))],
]
STEM_BATCHES = (1, 8)
THRESHOLDS = torch.tensor([0.1, 0.3, 0.5, 0.8, 1.1, 1.5, 2.0])
PAD = [1, 1]


def interleaved_medians(
    variants: dict[str, Callable[[], object]], repeats: int, calls: int
) -> dict[str, float]:
    """Median ms per call of each variant, the variants taking turns within every repeat."""
    for fn in variants.values():  # warm-up: oneDNN builds its primitive, inductor its kernel
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) * 1e3 / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def encoder(thresholds: torch.Tensor, *, search: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """The library's encoder as the compiled int8 model runs it (one vectorised pass): a binary
    search over the table padded to 2^d - 1 entries, or (``search=False``, one NaN more, as the
    library did before) a compare against every entry."""
    padded = pad_table(thresholds)
    if not search:
        padded = torch.cat([padded, padded.new_full((1,), float("nan"))])

    def encode(y: torch.Tensor) -> torch.Tensor:
        return threshold_codes(y, thresholds, padded)

    return torch.compile(encode, fullgraph=True, dynamic=False)


def conv_variants(batch: int, channels: int, height: int) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, channels, height, height)
    codes = channels_last(torch.randint(0, 8, shape, generator=generator, dtype=torch.uint8))
    weight = torch.randint(-100, 101, (channels, channels, 3, 3), generator=generator, dtype=torch.int8)
    w_scale = torch.rand(channels, generator=generator) * 0.01 + 1e-3
    w_zero = torch.zeros(channels, dtype=torch.long)
    bias = torch.randn(channels, generator=generator)
    packed = onednn.prepack_conv(weight, w_scale, 0.1, 0, [1, 1], PAD, [1, 1], 1)
    ops = onednn._ops()
    head = (codes, 0.1, 0, packed, w_scale, w_zero)
    geometry = ([1, 1], PAD, [1, 1], 1)
    residual_fp32 = channels_last(torch.randn(shape, generator=generator))
    residual_u8 = channels_last(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))
    output_fp32 = channels_last(torch.randn(shape, generator=generator))
    output_u8 = channels_last(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))
    u8_thresholds = torch.tensor([3.0, 10.0, 25.0, 40.0, 55.0, 75.0, 100.0])  # on the uint8 grid
    encode_fp32, encode_u8 = encoder(THRESHOLDS), encoder(u8_thresholds)
    encode_every = encoder(THRESHOLDS, search=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's quantized tensors are deprecated
        torch.backends.quantized.engine = "x86"
        q_codes = torch.quantize_per_tensor(codes.float(), 0.1, 0, torch.quint8)
        q_residual = torch.quantize_per_tensor(residual_fp32, 0.05, 128, torch.quint8)
        q_weight = torch.quantize_per_channel(
            (weight.float() * w_scale.view(-1, 1, 1, 1)), w_scale.double(), w_zero, 0, torch.qint8
        )
        ao_packed = torch.ops.quantized.conv2d_prepack(q_weight, bias, [1, 1], PAD, [1, 1], 1)

    return {
        # The kernel writes its sum into the accumulator; timing it in place is what a private one costs.
        "adq_fp32": lambda: ops["conv"](*head, bias, *geometry, 1.0, 0, torch.float32, "relu", [], ""),
        "adq_fp32_sum": lambda: ops["conv_binary"](
            *head, residual_fp32, bias, *geometry, 1.0, 0, torch.float32, 1.0, 0, "sum", 1.0, "relu", [], ""
        ),
        "onednn_u8": lambda: ops["conv"](*head, bias, *geometry, 0.05, 0, torch.uint8, "relu", [], ""),
        "onednn_u8_sum": lambda: ops["conv_binary"](
            *head, residual_u8, bias, *geometry, 0.05, 0, torch.uint8, 0.05, 0, "sum", 1.0, "relu", [], ""
        ),
        "torch_ao": lambda: torch.ops.quantized.conv2d_relu(q_codes, ao_packed, 0.05, 0),
        # torch.ao's converted ResNets run the conv, then quantized::add_relu on its uint8 output.
        "torch_ao_sum": lambda: torch.ops.quantized.add_relu(
            torch.ops.quantized.conv2d(q_codes, ao_packed, 0.05, 0), q_residual, 0.05, 0
        ),
        "encode_fp32": lambda: encode_fp32(output_fp32),
        "encode_u8": lambda: encode_u8(output_u8),
        "encode_fp32_every": lambda: encode_every(output_fp32),
    }


def stem_variants(batch: int) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    image = channels_last(torch.randn(batch, 3, 224, 224, generator=generator))
    weight = channels_last(torch.randn(64, 3, 7, 7, generator=generator) * 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        q_image = torch.quantize_per_tensor(image, 0.03, 128, torch.quint8)
        q_weight = torch.quantize_per_channel(
            weight, torch.full((64,), 0.003).double(), torch.zeros(64, dtype=torch.long), 0, torch.qint8
        )
        ao_packed = torch.ops.quantized.conv2d_prepack(q_weight, None, [2, 2], [3, 3], [1, 1], 1)
    return {
        "float32": lambda: F.conv2d(image, weight, None, 2, 3),
        "torch_ao": lambda: torch.ops.quantized.conv2d(q_image, ao_packed, 0.05, 0),
    }


def markdown(data: dict) -> str:
    lines = [
        "| model | conv input | adq fp32 out ms | adq fp32 + sum ms | oneDNN u8 out ms | oneDNN u8 + sum ms "
        "| torch.ao ms | torch.ao + sum ms | encoder on fp32 ms | encoder on u8 ms "
        "| every-compare encoder ms "
        "| adq / torch.ao (plain, sum) | u8 out / torch.ao (plain, sum) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["convs"]:
        m = r["median_ms"]
        lines.append(
            f"| {r['model']} | {tuple(r['input'])} | {m['adq_fp32']:.3f} | {m['adq_fp32_sum']:.3f} | "
            f"{m['onednn_u8']:.3f} | {m['onednn_u8_sum']:.3f} | {m['torch_ao']:.3f} | "
            f"{m['torch_ao_sum']:.3f} | {m['encode_fp32']:.3f} | {m['encode_u8']:.3f} | "
            f"{m['encode_fp32_every']:.3f} | "
            f"{m['adq_fp32'] / m['torch_ao']:.2f}×, {m['adq_fp32_sum'] / m['torch_ao_sum']:.2f}× | "
            f"{m['onednn_u8'] / m['torch_ao']:.2f}×, {m['onednn_u8_sum'] / m['torch_ao_sum']:.2f}× |"
        )
    lines += [
        "",
        "| first conv of ResNet-18 | float32 ms | torch.ao int8 ms | float32 / torch.ao |",
        "|---|---|---|---|",
    ]
    for r in data["stem"]:
        m = r["median_ms"]
        ratio = m["float32"] / m["torch_ao"]
        lines.append(f"| {tuple(r['input'])} | {m['float32']:.3f} | {m['torch_ao']:.3f} | {ratio:.2f}× |")
    s = data["settings"]
    quick = " **(--quick smoke run: not a measurement)**" if s["quick"] else ""
    lines.append(
        f"\n{describe(data['machine'])}; int8 features: {', '.join(data['cpu_features']) or 'none found'}; "
        f"{s['repeats']} interleaved repeats of {s['calls']} calls, medians per call; ratios are times "
        f"(> 1 = slower than torch.ao).{quick}"
    )
    return "\n".join(lines)


def measure(
    shapes: list[tuple[str, int, int, int]], stem_batches: tuple[int, ...], repeats: int, calls: int
) -> tuple[list[dict], list[dict]]:
    """The conv rows and the stem rows of the table."""
    convs, stem = [], []
    with torch.no_grad():
        for model, batch, channels, height in shapes:
            median = interleaved_medians(conv_variants(batch, channels, height), repeats, calls)
            convs.append({"model": model, "input": [batch, channels, height, height], "median_ms": median})
            print(model, convs[-1]["input"], {k: round(v, 3) for k, v in median.items()}, flush=True)
        for batch in stem_batches:
            median = interleaved_medians(stem_variants(batch), repeats, calls)
            stem.append({"input": [batch, 3, 224, 224], "median_ms": median})
            print("stem", batch, {k: round(v, 3) for k, v in median.items()}, flush=True)
    return convs, stem


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats per shape")
    parser.add_argument("--calls", type=int, default=5, help="calls per timed block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    onednn.require_kernels("benchmarks/int8_kernels.py")
    torch.set_num_threads(args.threads)
    # One compiled encoder per shape: let them all compile, and fail rather than fall back to eager.
    torch._dynamo.config.recompile_limit = 4 * len(SHAPES)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    repeats, calls = (3, 1) if args.quick else (args.repeats, args.calls)
    convs, stem = measure(SHAPES, STEM_BATCHES, repeats, calls)
    data = record(
        cpu_features=int8_cpu_features(),
        settings={"quick": args.quick, "repeats": repeats, "calls": calls, "threads": args.threads},
        convs=convs,
        stem=stem,
    )
    write_json(args.out, data)
    print(markdown(data))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
