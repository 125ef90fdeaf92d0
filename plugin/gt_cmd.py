"""`vq-benchmark precompute-gt` and `vq-benchmark merge-gt`: exact ground truth for big bases, once.

    precompute-gt --vectors-path BASE (--queries-path Q | --num-queries N) --output-path OUT.npy [--k 100]
                  [--metric l2|ip|cosine] [--shard i/N] [--batch-size ROWS] [--threads T] [--seed S] [--use-gpu]
    precompute-gt --dataset NAME [--output-path OUT.npy] [...]    (result also stored in the harness's GT cache)
    merge-gt PART.npy... --output-path OUT.npy                     (the --shard partials -> the unsharded result)

Files (fixtures.gt_files): OUT.npy ids (int64), OUT.distances.npy (float32; float64 in partials), or one big-ann
OUT.bin when the output ends in .bin; with --num-queries also OUT.queries.npy, OUT.holdout_ids.npy and the reduced
base OUT.base.npy (streamed, in the base file's dtype); and the sidecar OUT.json, written last. The engine lives in
fixtures.precompute; this module only wires options to it. Usage errors are one `vq-benchmark: error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vq_benchmark.plugin.settings import BY_NAME, SettingError, Settings, read_pyproject_ini, resolve_settings

USAGE_EXIT = 2
DEFAULT_K = 100
SETTING_OPTIONS = ("dataset", "dataset-limit", "datasets-file", "data-dir", "cache-dir", "threads")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else argparse's one-line usage error."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `precompute-gt` and `merge-gt` on the `vq-benchmark` subcommands."""
    p = subparsers.add_parser(
        "precompute-gt",
        help="exact ground truth of a base file or dataset, streamed (sharded, GPU optional)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in SETTING_OPTIONS:
        if name in BY_NAME:  # the same --NAME / --vq-NAME / env / ini resolution as pytest
            setting = BY_NAME[name]
            p.add_argument(f"--{name}", setting.option, dest=setting.dest, default=None, help=setting.help)
    p.add_argument("--vectors-path", type=Path, metavar="BASE", help="base vectors (.npy .fbin .fvecs ... streamed)")
    p.add_argument("--queries-path", type=Path, metavar="Q", help="query vectors (any vector format)")
    p.add_argument(
        "--num-queries",
        type=_positive,
        metavar="N",
        help="hold N seeded rows out of the base as queries (written as OUT.queries.npy; the rest as OUT.base.npy)",
    )
    p.add_argument("--output-path", type=Path, metavar="OUT.npy", help="ids file (.npy, or .bin for big-ann)")
    p.add_argument("--k", type=_positive, default=None, help=f"neighbours per query (default {DEFAULT_K})")
    p.add_argument("--metric", choices=("l2", "ip", "cosine"), help="default: l2, or the dataset's metric")
    p.add_argument(
        "--batch-size", type=_positive, metavar="ROWS", help="base rows per streamed chunk (default: 32 MiB)"
    )
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the --num-queries hold-out (default 0)")
    p.add_argument("--shard", metavar="i/N", help="compute a partial top-k over base slice i of N (join: merge-gt)")
    p.add_argument("--use-gpu", action="store_true", help="fast pass on a GPU with faiss (rescoring stays on the CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    _one_line_errors(p, "precompute-gt")
    p.set_defaults(func=run_precompute)

    m = subparsers.add_parser(
        "merge-gt",
        help="join precompute-gt --shard partials into the unsharded result",
        description="Join the N partials of `precompute-gt --shard i/N` into exactly the unsharded ground truth "
        "(ties included). Refuses partials of different computations, duplicates and missing shards.",
    )
    m.add_argument("parts", nargs="+", type=Path, metavar="PART", help="a partial's ids file (or its .json sidecar)")
    m.add_argument("--output-path", type=Path, required=True, metavar="OUT.npy", help="ids file (.npy or .bin)")
    _one_line_errors(m, "merge-gt")
    m.set_defaults(func=run_merge)


def _one_line_errors(parser: argparse.ArgumentParser, name: str) -> None:
    """argparse errors as one `vq-benchmark: error:` line; also keeps the exact arguments for the sidecar."""

    def error(message: str) -> NoReturn:
        print(f"vq-benchmark: error: {name}: {message}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)

    parse_known_args = parser.parse_known_args

    def parse_and_keep(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        parsed, extras = parse_known_args(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        parsed.gt_argv = [name, *(sys.argv[1:] if args is None else list(args))]
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_and_keep  # type: ignore[method-assign]


def _command(args: argparse.Namespace) -> str:
    return shlex.join(["vq-benchmark", *getattr(args, "gt_argv", [])])


def _settings(args: argparse.Namespace) -> Settings:
    cwd = Path.cwd()
    ini, ini_dir = read_pyproject_ini(cwd)
    options = {name: getattr(args, BY_NAME[name].dest, None) for name in BY_NAME}
    return resolve_settings(options, os.environ, ini, cwd=cwd, ini_dir=ini_dir)


def _check_gpu(use_gpu: bool) -> None:
    if not use_gpu:
        return
    from vq_benchmark.fixtures.ground_truth import gpu_count

    if gpu_count() == 0:
        raise SettingError(
            "--use-gpu: faiss reports no GPU (faiss.get_num_gpus() == 0: a faiss-cpu build or no CUDA device); "
            "install faiss-gpu on a GPU node, or drop --use-gpu to compute on the CPU"
        )


def run_precompute(args: argparse.Namespace) -> int:
    """Compute, write, report; DatasetError / SettingError reach cli.main as one line (exit 2)."""
    from vq_benchmark.fixtures import precompute
    from vq_benchmark.fixtures.gt_files import check_output_path
    from vq_benchmark.fixtures.gt_shards import parse_shard

    s = _settings(args)
    file_mode = args.vectors_path is not None
    if file_mode and getattr(args, BY_NAME["dataset"].dest, None) is not None:
        raise SettingError("precompute-gt: give either --vectors-path or --dataset, not both")
    shard = parse_shard(args.shard) if args.shard is not None else None
    if not file_mode and s.dataset is None:
        raise SettingError(
            "precompute-gt: give --vectors-path BASE (with --queries-path or --num-queries) or --dataset"
        )
    if (shard is not None or file_mode) and args.output_path is None:
        raise SettingError("precompute-gt: --output-path OUT.npy is required" + (" with --shard" if shard else ""))
    if args.output_path is not None:
        check_output_path(args.output_path, "--output-path", allow_bin=shard is None)
    _check_gpu(args.use_gpu)
    k = DEFAULT_K if args.k is None else args.k
    if file_mode:
        inputs = precompute.file_inputs(
            args.vectors_path,
            queries_path=args.queries_path,
            num_queries=args.num_queries,
            metric=args.metric or "l2",
            seed=args.seed,
        )
    else:
        if args.queries_path is not None or args.num_queries is not None:
            raise SettingError(
                "precompute-gt: --queries-path / --num-queries go with --vectors-path; a dataset has its own queries"
            )
        inputs = _dataset_inputs(s, args)
        k = min(k, inputs.base.shape[0]) if args.k is None else k
        if args.output_path is None and shard is None and inputs.info.get("given_ground_truth"):
            print(f"{s.dataset}: ground truth given by {inputs.info['given_ground_truth']}; nothing to compute")
            return 0
    run = precompute.compute_gt(
        inputs,
        k,
        shard=shard,
        batch_size=args.batch_size,
        threads=s.threads or None,
        use_gpu=args.use_gpu,
        show_progress=False if args.quiet else None,
        out=args.output_path,
    )
    n, d = inputs.base.shape
    where = []
    if args.output_path is not None:
        files = precompute.write_outputs(args.output_path, inputs, run, command=_command(args))
        where.append(f"wrote {', '.join(str(f) for f in files)}")
    if inputs.cache_dir is not None and shard is None:
        where.append(f"cached as {precompute.store_in_cache(inputs, run.ids, run.dists)}")
    part = f" shard {shard[0]}/{shard[1]} (rows {run.shard[2]}..{run.shard[3] - 1})" if shard and run.shard else ""
    name = s.dataset if not file_mode else str(args.vectors_path)
    print(
        f"{name}: {n} x {d} base, {inputs.queries.shape[0]} queries, k={run.k}, {inputs.metric}{part} "
        f"in {run.seconds:.1f} s; {'; '.join(where)}"
    )
    return 0


def _dataset_inputs(s: Settings, args: argparse.Namespace) -> Any:
    from vq_benchmark.fixtures import precompute
    from vq_benchmark.fixtures.registry import get_dataset, known_datasets

    spec = get_dataset(str(s.dataset), known_datasets(s.datasets_file, s.data_dir))
    if args.metric is not None and args.metric != spec.metric:
        raise SettingError(
            f"--metric {args.metric} contradicts dataset {spec.name}'s metric {spec.metric}; drop --metric"
        )
    return precompute.dataset_inputs(spec, s.cache_dir, limit=getattr(s, "dataset_limit", None))


def run_merge(args: argparse.Namespace) -> int:
    """Join partials, write the result (+ the harness cache when the partials came from --dataset)."""
    import numpy as np

    from vq_benchmark.fixtures.ground_truth import save_cached_gt
    from vq_benchmark.fixtures.gt_files import check_output_path, relative_to, write_ground_truth, write_gt_sidecar
    from vq_benchmark.fixtures.gt_shards import merge_partials

    out = check_output_path(args.output_path, "--output-path")
    ids, dists, parts = merge_partials(args.parts)
    first = parts[0].sidecar
    dists32 = dists.astype(np.float32)
    written = write_ground_truth(out, ids, dists32)
    doc = dict(first.raw)
    for key in ("format", "version", "versions", "created", "seconds", "command"):
        doc.pop(key, None)
    for key in ("queries_file", "holdout_ids_file", "base_file"):  # companions of the partials, found from out
        file = next((p.sidecar.raw.get(key) for p in parts if p.sidecar.raw.get(key)), None)
        holder = next((p.sidecar for p in parts if p.sidecar.raw.get(key)), first)
        doc[key] = relative_to(out.parent, holder.path.parent / file) if file else None
    doc |= {
        "shard": None,
        "ids_file": relative_to(out.parent, out),
        "distances_file": relative_to(out.parent, written[1]) if len(written) > 1 else None,
        "distances_dtype": "float32",
        "ids_format": "bigann-gt" if out.suffix.lower() == ".bin" else "npy",
        "merged_from": [str(p.sidecar.path.absolute()) for p in parts],
        "seconds": round(sum(float(p.sidecar.raw.get("seconds") or 0.0) for p in parts), 3),
        "command": _command(args),
        "cwd": str(Path.cwd()),
    }
    written.append(write_gt_sidecar(out, doc))
    cached = ""
    if first.raw.get("dataset") and first.raw.get("cache_dir"):
        path = save_cached_gt(Path(first.raw["cache_dir"]) / "gt", first.fingerprint, ids, dists32)
        cached = f"; cached as {path}"
    files = ", ".join(map(str, written))
    print(f"merged {len(parts)} partials: {ids.shape[0]} queries x k={ids.shape[1]}; wrote {files}{cached}")
    return 0
