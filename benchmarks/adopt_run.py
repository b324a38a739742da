"""Adopt a finished ablation run into another table, under another row name, without training it again.

    python benchmarks/adopt_run.py --schedule pretrained \\
        benchmarks/results/ablation_pretrained_xeon/D-lr0.02_s0.json D

A validation row of one table (``D-lr0.02`` of the lr-0.01 table, say) can be exactly the run that a
row of another table would make (``D`` of the lr-0.02 table): same settings, same seed, same float
start. This script plans the target row as ``ablation.py`` would (same ``--schedule`` and
``--results-dir`` flags), refuses unless the source run's resolved settings and float-start sha256
equal the target's, and writes the source record under the target's name with a ``copied_from``
field, so the table's header names where each run came from. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ablation  # sibling scripts
import ablation_report
from _runner import write_json


def adopt(source: Path, target_name: str, args: argparse.Namespace) -> Path:
    """Write ``source``'s record as row ``target_name`` of the table ``args`` plans; return its path."""
    record = json.loads(source.read_text())
    seed = record["ablation"]["seed"]
    float_job, jobs = ablation.plan(args)
    job = next((j for j in jobs if j.name == target_name and j.seed == seed), None)
    if job is None:
        raise SystemExit(
            f"{target_name}_s{seed} is not in the planned table; name it with --configs and a seed"
        )
    if job.result_path.exists():
        raise SystemExit(f"{job.result_path} exists already; delete it first to replace it")
    if not float_job.result_path.exists():
        raise SystemExit(f"{float_job.result_path} is missing: copy the float start's record there first")
    want_sha = json.loads(float_job.result_path.read_text())["float_checkpoint_sha256"]
    if record.get("float_checkpoint_sha256") != want_sha:
        raise SystemExit(
            f"{source} started from float sha256 {record.get('float_checkpoint_sha256')}, the target table "
            f"from {want_sha}: not the same run"
        )
    adopted = {
        **record,
        "ablation": {
            **job.meta,
            "train_settings": ablation.comparable(job.train),
            "written": record["ablation"]["written"],
            "copied_from": ablation_report._relative(source),  # as the header prints paths
        },
    }
    write_json(job.result_path, adopted)
    try:
        ablation.existing_result(job)  # the check ablation.py applies to every result it reads
    except SystemExit:
        job.result_path.unlink()
        raise
    return job.result_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a run's JSON written by ablation.py")
    parser.add_argument("target", help="the row name it becomes in the target table")
    known, rest = parser.parse_known_args(argv)
    seed = json.loads(known.source.read_text())["ablation"]["seed"]
    table_args = ablation.parse_args(
        [*rest, "--configs", known.target, "--seeds", str(seed), "--claim-seeds", str(seed)]
    )
    print(adopt(known.source, known.target, table_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
