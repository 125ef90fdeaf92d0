"""`vq-benchmark embed --collection C --queries Q --out DIR`: embed MSMARCO-style text once, keep the vectors.

Writes DIR/embeddings.npy and DIR/query_embeddings.npy (float32, row i embeds line i of its TSV), DIR/pids.npy and
DIR/qids.npy, and a .json beside each embeddings file naming the model and the TSV's content hash. Interrupted, the
same command resumes at the first unfinished chunk; on finished output it computes nothing. The files can then be
declared as `embeddings` / `query_embeddings` of a `format = "msmarco"` dataset (the snippet is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vq_benchmark.fixtures.embedding import BATCH_SIZE, CHUNK_ROWS

INTERRUPTED_EXIT = 130  # what a shell reports for Ctrl-C


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `embed` on the `vq-benchmark` subcommands; `args.func` is `run`."""
    p = subparsers.add_parser(
        "embed",
        help="embed an MSMARCO-style collection and queries (TSV) with all-MiniLM-L6-v2, resumably",
        description="Embed pid<TAB>passage and qid<TAB>query files with all-MiniLM-L6-v2 (the msmarco extra: "
        "pip install torch==2.13.0 && pip install 'vq-benchmark[msmarco]'). Progress is saved in chunks: "
        "run the same command again to resume.",
    )
    p.add_argument("--collection", required=True, type=Path, metavar="TSV", help="pid<TAB>passage file")
    p.add_argument("--queries", required=True, type=Path, metavar="TSV", help="qid<TAB>query file")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the .npy files")
    p.add_argument(
        "--batch-size", type=_positive, default=BATCH_SIZE, metavar="N", help=f"texts per model call ({BATCH_SIZE})"
    )
    p.add_argument(
        "--chunk-rows",
        type=_positive,
        default=CHUNK_ROWS,
        metavar="N",
        help=f"texts per saved chunk, the unit of resumption ({CHUNK_ROWS})",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Embed both files; a DatasetError (bad TSV, missing model package, unwritable DIR) is reported by the CLI."""
    from vq_benchmark.fixtures.msmarco import embed_to_dir

    try:
        res = embed_to_dir(
            args.collection, args.queries, args.out, batch_size=args.batch_size, chunk_rows=args.chunk_rows
        )
    except KeyboardInterrupt:
        print(
            f"\nvq-benchmark embed: interrupted; finished chunks stay in {args.out}: run the same command to resume",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    for r, what in ((res.passages, "passages"), (res.queries, "queries")):
        how = f"{r.rows_computed:,} embedded in {r.seconds:.1f} s" if r.source == "computed" else "already there"
        print(f"{r.path}: {r.rows:,} {what} x {r.dim} ({how})")
    out = args.out.resolve()
    print(
        "declare them in a datasets file:\n"
        "[datasets.NAME]\n"
        'format = "msmarco"\n'
        f"collection = {_toml(args.collection.resolve())}\n"
        f"queries = {_toml(args.queries.resolve())}\n"
        f"embeddings = {_toml(out / res.passages.path.name)}\n"
        f"query_embeddings = {_toml(out / res.queries.path.name)}"
    )
    return 0


def _toml(path: Path) -> str:
    """A TOML basic string for a path."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
