"""Run folders cannot be turned against the user (issues 12, 23): a run holds data only and loading one executes
no code from it (no pickle, no key to trust), a changed file is refused, a folder that is not a run is never
replaced, a failed write keeps the old run, one writer per run."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from conftest import file_bytes
from blend import run as run_module
from blend.run import load_run, run_oof
from blend import compiled
from blend.runfolder import MARKER, run_lock, sign, write_run
from featurestore.errors import SiqaError
from test_tabular_run import SMALL, _synthetic


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("safe") / "run"
    run_oof(_synthetic(dense=False), SMALL, path, progress=False)
    return path


class _Marker:
    """Unpickling this writes a file: the proof that a run's pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('pwned')",)


def test_oof_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "models").mkdir()
    (folder / "models" / "weights.bin").write_bytes(b"user data")
    (folder / "config.json").write_text("{}")
    with pytest.raises(SiqaError, match=r"not empty and not a siqa run folder \(no siqa-run.json\)"):
        run_oof(_synthetic(dense=False), SMALL, folder, progress=False)
    assert (folder / "models" / "weights.bin").read_bytes() == b"user data"
    assert (folder / "config.json").read_text() == "{}"


def test_a_folder_is_a_run_by_its_manifest_only_not_by_file_names_a_user_may_have(good_run, tmp_path):
    """Issue 23 finding 3: the user's own run.json, config.json and leaderboard.csv are not a run; nor is a run
    of a siqa older than the manifest (it held only such names): both are refused, byte for byte unchanged."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("run.json", '{"my": "notes"}'), ("config.json", "{}"), ("leaderboard.csv", "team,score\n")):
        (mine / name).write_text(text)
    old = tmp_path / "old"
    shutil.copytree(good_run, old)
    (old / MARKER).unlink()
    for name in ("inference.json", "inference.npz"):  # written since siqa-run.json: an older run has neither
        (old / "models" / name).unlink()
    for folder in (mine, old):
        before = file_bytes(folder)
        with pytest.raises(SiqaError, match=r"not empty and not a siqa run folder \(no siqa-run.json\)"):
            run_oof(_synthetic(dense=False), SMALL, folder, progress=False)
        assert file_bytes(folder) == before


def test_oof_refuses_a_link_as_its_run_folder(good_run, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(good_run)
    with pytest.raises(SiqaError, match="is a link; give the folder itself"):
        run_oof(_synthetic(dense=False), SMALL, link, progress=False)
    assert link.is_symlink()


def test_a_failed_write_keeps_the_old_run(good_run, tmp_path, monkeypatch):
    before = file_bytes(good_run)

    def full_disk(folder, exported):
        (folder / compiled.INFERENCE_JSON).write_text('{"partial')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module.compiled, "write", full_disk)
    with pytest.raises(SiqaError, match="No space left on device.*previous run, if any, is unchanged"):
        run_oof(_synthetic(dense=False, seed=1), SMALL, good_run, progress=False)
    monkeypatch.undo()
    assert file_bytes(good_run) == before
    assert load_run(good_run).pipeline is not None
    assert not list(good_run.parent.glob(f".{good_run.name}.siqa-*-*"))  # no staging folder left behind


def test_a_writer_killed_between_the_renames_is_repaired(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    os.rename(run, tmp_path / ".run.siqa-old-0123")  # what a kill after the first rename leaves
    write_run(run, lambda folder: (folder / "run.json").write_text("{}"), "0" * 32)
    assert (run / "run.json").read_text() == "{}"
    with pytest.raises(SiqaError):  # the new (incomplete) run is in place; the old one was recovered, then replaced
        load_run(run)
    assert not (tmp_path / ".run.siqa-old-0123").exists()


def test_a_second_writer_of_one_run_is_refused(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(SiqaError, match=r"another siqa is writing this run \(lock .*\.run\.siqa-lock is held\)"):
            run_oof(_synthetic(dense=False), SMALL, run, progress=False)
    assert not run.exists()


def test_a_run_holds_data_only_and_a_planted_pickle_is_never_loaded(good_run, tmp_path):
    import cli

    files = sorted(p.relative_to(good_run).as_posix() for p in good_run.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib", ".pt"))], files
    evil = tmp_path / "evil"
    shutil.copytree(good_run, evil)
    proof = tmp_path / "executed"
    (evil / "models" / "pipeline.pkl").write_bytes(pickle.dumps(_Marker(proof)))
    sign(evil, "0" * 32)  # even listed in the manifest with the right hash, nothing reads it
    assert load_run(evil).summary["final"] == load_run(good_run).summary["final"]
    from PIL import Image

    from conftest import photo

    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.fromarray(photo()).save(ref)
    Image.fromarray(photo("coffee")).save(dist)
    for command in (["submit", "--run", str(evil), "--quiet"], ["report", "--run", str(evil), "--quiet"],
                    ["predict", "--run", str(evil), "--ref", str(ref), "--dist", str(dist), "--quiet",
                     "--store", str(tmp_path / "store")]):
        try:  # the report is written; a table run has no test split to submit nor images to score
            cli.main(command)
        except SystemExit:
            pass
    assert not proof.exists()


def test_a_changed_file_is_refused_and_a_run_of_the_pickling_siqa_too(good_run, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(good_run, changed)
    (changed / compiled.INFERENCE_NPZ).write_bytes(b"")
    with pytest.raises(SiqaError, match=r"inference.npz: changed since the run was written .* run `siqa oof` again"):
        load_run(changed)
    old = tmp_path / "old"
    shutil.copytree(good_run, old)
    manifest = json.loads((old / MARKER).read_text())
    (old / MARKER).write_text(json.dumps({**manifest, "siqa_run": 1, "signature": "00"}))
    with pytest.raises(SiqaError, match=r"a run of an older siqa \(run format 1, this siqa reads 2: data only, no "
                                        r"pickled models\); fit it again"):
        load_run(old)
    (old / MARKER).unlink()
    with pytest.raises(SiqaError, match=r"no siqa-run.json"):
        load_run(old)


def test_a_run_from_someone_else_loads_with_no_key_and_no_home(good_run, tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    shutil.copytree(good_run, theirs)
    monkeypatch.setenv("HOME", "/proc/nonexistent")
    assert load_run(theirs).summary["final"] == load_run(good_run).summary["final"]


def test_the_written_pipeline_scores_as_the_fitted_one(good_run):
    assert load_run(good_run).summary["compiled_gap"] <= run_module.COMPILED_TOLERANCE
