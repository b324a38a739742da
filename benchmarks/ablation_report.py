"""Tables and a plot from the JSONs that benchmarks/ablation.py writes.

    python benchmarks/ablation_report.py --schedule reduced > docs/results_ablation_reduced.md
    python benchmarks/ablation_report.py --schedule full --markdown docs/results_ablation_full.md
    python benchmarks/ablation_report.py --schedule smoke        # reads runs/ablation/smoke/results

Prints Markdown to stdout: (1) one row per configuration: bits (the unweighted
mean over quantized layers, and the parameter-weighted mean), seeds, mean ± std
over seeds of the converted (reference) model's, the QAT model's and the int8
model's top-1 accuracy and the int8 model's top-1 agreement with the converted
one, the paper's figure and our difference to it; (2) the claims E − A, F − D,
E − C: mean difference, and whether it exceeds the seed-to-seed noise (Welch's t-test
with scipy, two-sided, p < 0.05; without scipy, |diff| > 2 x pooled std). Also
writes benchmarks/results/<results dir name>.png (accuracy vs average bits, ours
beside the paper's points). The std is the sample std (n - 1) over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_table import (
    BASELINES,
    CHOICES,
    CLAIMS,
    CONFIGS,
    DIAGNOSTICS,
    FLOAT_NAME,
    REPO,
    default_results_dir,
)

ORDER = [FLOAT_NAME, *CONFIGS]
ALPHA = 0.05


def load(results_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "ablation" in record:
            runs[record["ablation"]["config"]].append(record)
    sessions_path = results_dir / "sessions.json"
    sessions = json.loads(sessions_path.read_text()) if sessions_path.exists() else []
    for records in runs.values():
        records.sort(key=lambda r: r["ablation"]["seed"])
    return dict(runs), sessions


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def accuracy(record: dict[str, Any]) -> float:
    """The converted model's accuracy; the float model's for the FP row."""
    return record["converted_accuracy"] if "converted_accuracy" in record else record["float_accuracy"]


def validation_accuracy(record: dict[str, Any]) -> float:
    """Top-1 on the validation split held out of train: the converted model's (the float model's for FP)."""
    held = record.get("validation_accuracy") or {}
    value = held.get("converted", held.get("float"))
    if value is None:
        raise KeyError(f"{record['ablation']['config']}: no validation accuracy in this run")
    return value


def has_validation(runs: dict[str, list[dict[str, Any]]]) -> bool:
    return any(
        (r.get("validation_accuracy") or {}).get("float") is not None
        for records in runs.values()
        for r in records
    )


def config_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    with_val = has_validation(runs)
    lines = [
        "| config | description | avg bits | param-weighted bits | seeds | top-1 % converted "
        "(mean ± std) | top-1 % QAT model | top-1 % int8 kernels | int8 agrees with converted % "
        "| paper % | ours − paper |" + (" validation top-1 % |" if with_val else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_val else ""),
    ]
    for name in [n for n in ORDER if n in runs] + sorted(set(runs) - set(ORDER)):
        records = runs[name]
        meta = records[0]["ablation"]
        accs = [accuracy(r) for r in records]
        qat = [r["qat_accuracy"] for r in records if "qat_accuracy" in r]
        # The deployed model: int8 kernels with the codebook snapped to the int8 grid (None where
        # the run's CPU had no int8 kernels, or in JSONs written before the engine measured it).
        int8 = [r["int8_accuracy"] for r in records if r.get("int8_accuracy") is not None]
        agreement = [r["int8_agreement"] for r in records if r.get("int8_agreement") is not None]
        paper = meta.get("paper_accuracy")
        source = meta.get("paper_source", "")
        paper_cell = "—" if paper is None else f"{paper:.2f}" + ("" if source == "ADQ Table 4.4" else " ¹")
        delta = "—" if paper is None else f"{statistics.fmean(accs) - paper:+.2f}"
        seeds = ",".join(str(r["ablation"]["seed"]) for r in records)
        description = meta["description"] + ("; float model's accuracy" if name == FLOAT_NAME else "")
        val = f" {fmt([validation_accuracy(r) for r in records])} |" if with_val else ""
        lines.append(
            f"| {name} | {description} | {bits_cell(records, 'average_bits')} | "
            f"{bits_cell(records, 'parameter_weighted_bits')} | {seeds} | {fmt(accs)} | "
            f"{fmt(qat)} | {fmt(int8)} | {fmt(agreement)} | {paper_cell} | {delta} |{val}"
        )
    return lines


def bits_cell(records: list[dict[str, Any]], key: str) -> str:
    """The mean; with its range where the seeds' bit plans differ (mixed precision)."""
    values = [r[key] for r in records]
    low, high = min(values), max(values)
    if high - low < 5e-4:
        return f"{low:.3g}"
    return f"{statistics.fmean(values):.3g} ({low:.3g}–{high:.3g})"


def noise_test(a: list[float], b: list[float]) -> tuple[str, str, bool | None, str]:
    """(pooled std, test statistic, beyond noise?, the rule used)."""
    if len(a) < 2 or len(b) < 2:
        return "—", "—", None, "needs ≥ 2 seeds on each side"
    va, vb = statistics.variance(a), statistics.variance(b)
    pooled = math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2))
    diff = statistics.fmean(a) - statistics.fmean(b)
    try:
        from scipy import stats
    except ImportError:
        return f"{pooled:.2f}", "—", abs(diff) > 2 * pooled, "|diff| > 2 × pooled std (scipy not installed)"
    if va == 0 and vb == 0:
        return f"{pooled:.2f}", "—", diff != 0, "no spread on either side"
    test = stats.ttest_ind(a, b, equal_var=False)
    return (
        f"{pooled:.2f}",
        f"t = {test.statistic:.2f}, p = {test.pvalue:.3f}",
        bool(test.pvalue < ALPHA),
        f"Welch's t-test (scipy), two-sided, p < {ALPHA}",
    )


def paired(runs: dict[str, list[dict[str, Any]]], first: str, second: str, metric: Any = None) -> str:
    """Per-seed differences: seed s of both configs shares the data subsets and the float start."""
    metric = metric or accuracy
    a = {r["ablation"]["seed"]: metric(r) for r in runs[first]}
    b = {r["ablation"]["seed"]: metric(r) for r in runs[second]}
    common = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in common]
    if len(diffs) < 2:
        return "—"
    text = fmt(diffs)
    try:
        from scipy import stats
    except ImportError:
        return text
    if statistics.pstdev(diffs) == 0:
        return text
    return f"{text} (p = {stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue:.3f})"


def comparison_table(
    runs: dict[str, list[dict[str, Any]]], rows: list[tuple[str, str, str, float | None]], metric: Any = None
) -> tuple[list[str], set[str]]:
    """One line per (label, minuend, subtrahend, the paper's difference or None), on ``metric``."""
    metric = metric or accuracy
    lines = [
        "| comparison | paper Δ | ours Δ (mean) | seeds | pooled std | Welch's t-test | beyond noise? | "
        "paired Δ by seed (paired t) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rules = set()
    for label, first, second, paper in rows:
        paper_cell = "—" if paper is None else f"{paper:+.2f}"
        if first not in runs or second not in runs:
            lines.append(f"| {label} | {paper_cell} | not run | | | | | |")
            continue
        a = [metric(r) for r in runs[first]]
        b = [metric(r) for r in runs[second]]
        pooled, statistic, beyond, rule = noise_test(a, b)
        rules.add(rule)
        verdict = {None: "—", True: "yes", False: "no"}[beyond]
        lines.append(
            f"| {label} | {paper_cell} | {statistics.fmean(a) - statistics.fmean(b):+.2f} | "
            f"{len(a)} vs {len(b)} | {pooled} | {statistic} | {verdict} | "
            f"{paired(runs, first, second, metric)} |"
        )
    return lines, rules


def tables(runs: dict[str, list[dict[str, Any]]], sessions: list[dict[str, Any]]) -> list[str]:
    """The configuration table, the claims, the diagnostics that ran, and the footnotes."""
    claims, rules = comparison_table(runs, CLAIMS)
    lines = [*config_table(runs), "", "**Claims**", "", *claims]
    diagnostics = [row for row in DIAGNOSTICS if row[1] in runs and row[2] in runs]
    if diagnostics:
        table, more_rules = comparison_table(runs, diagnostics)
        rules |= more_rules
        lines += ["", "**Diagnostics** (not in the papers: where a gap comes from)", "", *table]
    baselines = [row for row in BASELINES if row[1] in runs and row[2] in runs]
    if baselines:
        table, more_rules = comparison_table(runs, baselines)
        rules |= more_rules
        lines += ["", "**ADQ against the baselines at the same bits** (test set)", "", *table]
    choices = [row for row in CHOICES if row[1] in runs and row[2] in runs]
    if choices and has_validation(runs):
        table, more_rules = comparison_table(runs, choices, validation_accuracy)
        rules |= more_rules
        lines += [
            "",
            "**What each ADQ default buys** (validation split, where the defaults were chosen)",
            "",
            *table,
        ]
    if has_validation(runs) and FLOAT_NAME in runs:
        lines += ["", "**Targets** (issue 10; test set, mean over seeds)", "", *targets(runs)]
    return [*lines, *footer(runs, sessions, rules)]


def targets(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each target: the two sides, the margin, met or not."""

    def mean(name: str) -> float | None:
        return statistics.fmean(accuracy(r) for r in runs[name]) if name in runs else None

    def best(*names: str) -> tuple[str, float | None]:
        present = [(n, mean(n)) for n in names if n in runs]
        return max(present, key=lambda p: p[1]) if present else ("—", None)

    fp = mean(FLOAT_NAME)
    rows = [
        ("ADQ W3A3 ≥ float − 1.0", "D", mean("D"), "float − 1.0", None if fp is None else fp - 1.0),
        ("ADQ W2A2 ≥ float − 3.0", "ADQ-2", mean("ADQ-2"), "float − 3.0", None if fp is None else fp - 3.0),
    ]
    a = mean("A")
    rows.append(("E (mixed 2.8) ≥ A + 1.0", "E", mean("E"), "A + 1.0", None if a is None else a + 1.0))
    for bits, adq in ((2, "ADQ-2"), (3, "D"), (4, "ADQ-4")):
        name, value = best(
            *(["N2UQ-2", "LSQ-2"] if bits == 2 else ["A", "LSQ-3"] if bits == 3 else ["N2UQ-4", "LSQ-4"])
        )
        rows.append(
            (
                f"ADQ ≥ best baseline + 0.5 at {bits} bits",
                adq,
                mean(adq),
                f"{name} + 0.5",
                None if value is None else value + 0.5,
            )
        )
    lines = ["| target | ours | value % | needed % | margin | met? |", "|---|---|---|---|---|---|"]
    for label, name, value, needed_label, needed in rows:
        if value is None or needed is None:
            lines.append(f"| {label} | {name} | not run | {needed_label} | | |")
            continue
        margin = value - needed
        lines.append(
            f"| {label} | {name} | {value:.2f} | {needed:.2f} ({needed_label}) | {margin:+.2f} | "
            f"{'yes' if margin >= 0 else 'no'} |"
        )
    return lines


def header(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    any_record = next(iter(runs.values()))[0]
    meta = any_record["ablation"]
    lines = [f"## ADQ Table 4.4 ablation, CIFAR-10 ResNet-20 — {meta['schedule_label']}", ""]
    floats = runs.get(FLOAT_NAME, [])
    qat = [r for name, records in runs.items() if name != FLOAT_NAME for r in records]
    parts = [f"Data: {meta['data_variant']}."]
    if floats and floats[0]["config"].get("float_checkpoint"):
        cfg = floats[0]["config"]
        parts.append(
            f"Float start: the pre-trained {Path(cfg['float_checkpoint']).name} (see "
            "../shared/data/README.md), fine-tuned once in float for "
            f"{cfg['finetune_epochs']} epochs "
            f"at lr {cfg['finetune_lr']} (batch {cfg['batch_size']}) on the training set less the "
            f"validation split ({cfg.get('validation', 0):,} images: the last of each class); every "
            "QAT run starts from that model, so seeds vary the QAT phase only."
        )
    elif floats:
        cfg = floats[0]["config"]
        parts.append(
            f"Float pre-training once (seed 0): {cfg['float_epochs']} epochs, lr {cfg['float_lr']}, "
            f"batch {cfg['batch_size']}, {_images(cfg['train_subset'])} train images; every QAT run "
            "starts from this float.pt, so seeds vary the QAT phase only."
        )
    if qat:
        # The schedule is a table row's; a study row (D-lr0.02, D-2ep) states its own change.
        table_rows = [r for r in qat if getattr(CONFIGS.get(r["ablation"]["config"]), "table", False)]
        cfg = (table_rows or qat)[0]["config"]
        parts.append(
            f"QAT: {cfg['epochs']} epochs, SGD (Nesterov) lr {cfg['lr']} cosine to 0, batch "
            f"{cfg['batch_size']}, weight decay {cfg['weight_decay']}, "
            f"{_images(cfg['train_subset'])} train / {_images(cfg['test_subset'])} test images, "
            f"KD {'on' if cfg['kd'] else 'off'}; "
            "first conv and last FC float; weights and activations share each layer's bits."
        )
        if cfg["train_subset"] or cfg["test_subset"]:
            parts.append(
                f"Subsets are drawn with one data seed ({cfg.get('data_seed')}) for every run: all "
                "runs are evaluated on the same test images and the seed varies only the quantizer "
                "init, data order and augmentation (seed s of two configurations also shares them, "
                "hence the paired column)."
            )
    records = [r for group in runs.values() for r in group]
    devices = sorted({r["machine"].get("gpu") or r["machine"]["cpu"] for r in records})
    threads = sorted({r["machine"]["threads"] for r in records})
    torches = sorted({r.get("torch", r["machine"]["torch"]) for r in records})
    commits = sorted({(r.get("code") or {}).get("commit") or "?" for r in records})
    dirty = any((r.get("code") or {}).get("adq_fx_dirty") for r in records)
    parts.append(
        f"Machine: {', '.join(devices)}; {'/'.join(map(str, threads))} torch threads per run; "
        f"torch {', '.join(torches)}. Code: adq_fx at {', '.join(commits)}"
        + (" (some runs with uncommitted changes)." if dirty else ".")
    )
    copied = sorted(
        f"{r['ablation']['config']}_s{r['ablation']['seed']} ({r['ablation']['copied_from']})"
        for r in records
        if r["ablation"].get("copied_from")
    )
    if copied:
        parts.append(
            "Runs made for another table with the same settings and float start, copied in: "
            + "; ".join(copied)
            + "."
        )
    lines.append(" ".join(parts))
    return [*lines, ""]


def _images(subset: int | None) -> str:
    return "all" if not subset else f"{subset:,}"


def footer(
    runs: dict[str, list[dict[str, Any]]], sessions: list[dict[str, Any]], rules: set[str]
) -> list[str]:
    compute = sum(r["seconds"] for records in runs.values() for r in records)
    wall = sum(s["wall_seconds"] for s in sessions)
    lines = [
        "",
        "¹ Not from the ADQ paper: the LSQ figures (and FP 92.6) are the ASQ paper's LSQ re-run on "
        "CIFAR-10 ResNet-20, and the ASQ and ASQ+POST figures that paper's own, as cited in our "
        "reference notes (not re-checked against the paper text); the ADQ paper reports no FP "
        "accuracy for ResNet-20. "
        "Paper figures are on the lossless CIFAR-10; ours on the data named above.",
        f"Noise rule: {'; '.join(sorted(rules)) or '—'}. With few seeds a test has little power: "
        "'no' means not shown at this noise level, not 'no effect'.",
        f"Time: {compute / 60:.1f} min of training summed over the runs; {wall / 60:.1f} min wall "
        f"time over {len(sessions)} invocation(s) of benchmarks/ablation.py.",
    ]
    return lines


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Two panels with their own y-axes: ours (mean ± std over seeds) and the paper's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = next(iter(runs.values()))[0]["ablation"]
    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [n for n in CONFIGS if n in runs] + [n for n in CONFIGS if n not in runs]
    at_bits: dict[float, int] = defaultdict(int)  # spread points that share a bit-width a little
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        if name in runs:
            records = runs[name]
            mean, std = mean_std([accuracy(r) for r in records])
            bits = statistics.fmean(r["average_bits"] for r in records)
            x = bits + 0.02 * at_bits[round(bits, 2)]
            at_bits[round(bits, 2)] += 1
            ours_ax.errorbar(x, mean, yerr=std or 0, fmt="o", color=color, capsize=3, label=name)
            ours_ax.annotate(name, (x, mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if CONFIGS[name].paper is not None:
            nominal = float(CONFIGS[name].overrides.get("target_bits", 3))
            paper_ax.plot(nominal, CONFIGS[name].paper, "o", mfc="none", color=color, label=name)
            paper_ax.annotate(
                name, (nominal, CONFIGS[name].paper), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
    if FLOAT_NAME in runs:
        ours_ax.axhline(
            statistics.fmean(accuracy(r) for r in runs[FLOAT_NAME]), ls="--", color="grey", label="FP (ours)"
        )
    paper_ax.axhline(92.6, ls=":", color="grey", label="FP 92.6 (ASQ, as cited)")
    ours_ax.set_title(
        f"ours: {meta['schedule_label']}, {meta['data_variant']}\n"
        "mean ± std over seeds; measured average bits",
        fontsize=9,
    )
    paper_ax.set_title(
        "paper: ADQ Table 4.4; LSQ from the ASQ paper (as cited)\nlossless CIFAR-10; nominal bits", fontsize=9
    )
    for ax in (ours_ax, paper_ax):
        ax.set_xlabel("average bits (unweighted over quantized layers)")
        ax.set_ylabel("top-1 % (converted model)" if ax is ours_ax else "top-1 %")
        ax.margins(x=0.08, y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=2)
    fig.suptitle("CIFAR-10 ResNet-20: accuracy vs bits (separate y-axes: the schedules differ)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedule", default="reduced", help="full, reduced or smoke")
    parser.add_argument("--results-dir", help="default the schedule's (ablation_table.default_results_dir)")
    parser.add_argument(
        "--plot", help="default benchmarks/results/<results dir name>.png (smoke: in its results dir)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--markdown", help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir) if args.results_dir else default_results_dir(args.schedule)
    runs, sessions = load(results_dir)
    if not runs:
        raise SystemExit(f"no ablation results in {results_dir}; run benchmarks/ablation.py first.")
    schedules = {r["ablation"]["schedule"] for records in runs.values() for r in records}
    if len(schedules) > 1:
        raise SystemExit(f"{results_dir} mixes schedules {sorted(schedules)}; keep one schedule per dir.")
    lines = [*header(runs), *tables(runs, sessions)]
    if not args.no_plot:
        if args.plot:
            path = Path(args.plot)
        elif args.results_dir or args.schedule == "smoke":
            path = results_dir / f"ablation_{args.schedule}.png"
        else:
            path = REPO / "benchmarks" / "results" / f"{results_dir.name}.png"  # as results_page names it
        plot(runs, path)
        lines += ["", f"![accuracy vs bits]({_relative(path)})"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
