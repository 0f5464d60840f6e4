"""Run folders cannot be turned against the user (issue 12): no code is loaded from a run siqa did not sign,
a folder that is not a run is never replaced, a failed write keeps the old run, one writer per run."""
from __future__ import annotations

import os
import pickle
import shutil

import pytest

from blend import run as run_module
from blend.run import load_run, run_oof
from blend.runfolder import MARKER, run_lock, trust, write_run
from featurestore.errors import SiqaError
from test_tabular_run import SMALL, _synthetic


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("safe") / "run"
    run_oof(_synthetic(dense=False), SMALL, path, progress=False)
    return path


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
        before = _snapshot(folder)
        with pytest.raises(SiqaError, match=r"not empty and not a siqa run folder \(no siqa-run.json\)"):
            run_oof(_synthetic(dense=False), SMALL, folder, progress=False)
        assert _snapshot(folder) == before


def test_oof_refuses_a_link_as_its_run_folder(good_run, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(good_run)
    with pytest.raises(SiqaError, match="is a link; give the folder itself"):
        run_oof(_synthetic(dense=False), SMALL, link, progress=False)
    assert link.is_symlink()


def test_a_failed_write_keeps_the_old_run(good_run, tmp_path, monkeypatch):
    before = _snapshot(good_run)

    def full_disk(obj, handle, protocol=None):
        handle.write(b"\x80\x05partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module.pickle, "dump", full_disk)
    with pytest.raises(SiqaError, match="No space left on device.*previous run, if any, is unchanged"):
        run_oof(_synthetic(dense=False, seed=1), SMALL, good_run, progress=False)
    monkeypatch.undo()
    assert _snapshot(good_run) == before
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


def test_a_crafted_pickle_is_never_unpickled(good_run, tmp_path, monkeypatch):
    import cli

    evil = tmp_path / "evil"
    shutil.copytree(good_run, evil)
    proof = tmp_path / "executed"
    (evil / "models" / "pipeline.pkl").write_bytes(pickle.dumps(_Marker(proof)))
    with pytest.raises(SiqaError, match=r"pipeline.pkl: changed since the run was written"):
        load_run(evil)
    from PIL import Image

    from conftest import photo

    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.fromarray(photo()).save(ref)
    Image.fromarray(photo("coffee")).save(dist)
    for command in (["submit", "--run", str(evil), "--quiet"], ["report", "--run", str(evil), "--quiet"],
                    ["predict", "--run", str(evil), "--ref", str(ref), "--dist", str(dist), "--quiet",
                     "--store", str(tmp_path / "store")]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(command)
        assert exit_.value.code != 0, command
    assert not proof.exists()

    # the attacker re-writes the manifest with the right hashes: it is not signed with this user's key
    monkeypatch.setenv("SIQA_KEY_FILE", str(tmp_path / "attacker-key"))
    trust(evil)
    monkeypatch.undo()
    with pytest.raises(SiqaError, match=r"not signed with your siqa key .* run `siqa trust --run "):
        load_run(evil)
    (evil / MARKER).unlink()
    with pytest.raises(SiqaError, match=r"no siqa-run.json"):
        load_run(evil)
    assert not proof.exists()


def test_a_run_from_someone_else_loads_once_trusted(good_run, tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    monkeypatch.setenv("SIQA_KEY_FILE", str(tmp_path / "their-key"))
    shutil.copytree(good_run, theirs)
    trust(theirs)
    monkeypatch.undo()
    with pytest.raises(SiqaError, match="not signed with your siqa key"):
        load_run(theirs)
    trust(theirs)
    assert load_run(theirs).summary["final"] == load_run(good_run).summary["final"]


def test_the_key_is_private(tmp_path, monkeypatch):
    from blend.runfolder import user_key

    monkeypatch.setenv("SIQA_KEY_FILE", str(tmp_path / "cfg" / "siqa" / "key"))
    assert len(user_key()) == 64
    assert (tmp_path / "cfg" / "siqa" / "key").stat().st_mode & 0o777 == 0o600
