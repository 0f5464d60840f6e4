"""One-shot `siqa sql`: a failed dot command and a run-reading macro on a run that is not there end in one line
naming the problem, with a non-zero exit (issue 26)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from toy_run import CONFIG, make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from blend.settings import settings_from
from cli import main
from featurestore.config import build_extractors
from featurestore.datasets import load_pairs
from featurestore.store import FeatureStore


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sqloneshot")
    root = tmp / "store"
    FeatureStore(root).extract(load_pairs(make_dataset(tmp / "data")),
                               build_extractors(settings_from(tomllib.loads(CONFIG)).extractors), progress=False)
    return root


def _sql(store: Path, query: str, capsys) -> tuple[int, str, str]:
    try:
        main(["sql", "--store", str(store), query])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_dot_command_is_one_line(store, capsys):
    code, out, err = _sql(store, ".nonsense", capsys)
    assert code == 1 and err.count("\n") == 1 and ".nonsense" in err, (out, err)


def test_a_macro_on_a_missing_run_is_one_line_naming_it(store, capsys, tmp_path):
    missing = tmp_path / "runs" / "nothere"
    missing.parent.mkdir()  # the runs folder is there, the run is not
    code, out, err = _sql(store, f"SELECT * FROM worst_pairs('{missing}')", capsys)
    assert code == 1 and err.count("\n") == 1, (out, err)
    assert err == f"siqa: error: sql: {missing}: no such file or folder\n"
