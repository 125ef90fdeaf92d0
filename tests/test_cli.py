"""The `vq-benchmark` command: dataset listing and its error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vq_benchmark.plugin.cli import main


@pytest.mark.smoke
def test_datasets_lists_builtin_and_file_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsfile = tmp_path / "ds.toml"
    dsfile.write_text('[datasets.mine]\nbase = "b.npy"\nqueries = "q.npy"\nmetric = "ip"\n')
    assert main(["datasets", "--datasets-file", str(dsfile)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(lines) == {"dummy", "dummy-small", "glove-50d", "mine"}
    assert lines["mine"][1] == "ip" and lines["dummy"][1] == "l2"


@pytest.mark.smoke
def test_datasets_file_from_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    dsfile = tmp_path / "ds.toml"
    dsfile.write_text('[datasets.fromenv]\nbase = "b.npy"\nqueries = "q.npy"\n')
    monkeypatch.setenv("VQ_DATASETS_FILE", str(dsfile))
    monkeypatch.chdir(tmp_path)
    assert main(["datasets"]) == 0
    assert "fromenv" in capsys.readouterr().out


@pytest.mark.smoke
def test_bad_datasets_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["datasets", "--datasets-file", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vq-benchmark: error:") and str(missing) in err and "\n" not in err
