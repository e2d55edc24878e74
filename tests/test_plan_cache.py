"""The plan kept between commands (kaio_spec/planner/cache.py, issue 18): `kaio status` of a sweep
after `kaio apply` reuses the plan apply made, and whatever changed since (the code, the manifest,
a var file) is seen as if there were no cache; a torn or foreign cache file is ignored."""

from __future__ import annotations

import json
from pathlib import Path

from apply_support import run_apply, run_kaio, write_project

from kaio_spec.planner import plan
from kaio_spec.planner.cache import cached_plan, plans_folder


def status(manifest: Path, url: str, api_key: str, *args: str) -> dict:
    result = run_kaio(manifest, api_key, "status", str(manifest), "--api", url, "-o", "json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def statuses(doc: dict) -> dict[str, str | None]:
    return {j["name"]: j["status"] for j in doc["jobs"]}


def kept(manifest: Path) -> list[Path]:
    return sorted((manifest.parent / "home" / ".kaio" / "plans").glob("*.json"))


def test_status_reuses_the_plan_and_sees_every_change(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=3)
    result = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    done = {f"train-{i}": "Completed" for i in range(3)}
    assert statuses(status(manifest, kaio_server.url, api_key)) == done
    [cache] = kept(manifest)  # in the user's home, not in the project
    assert not list((tmp_path / ".kaio").glob("*plan*"))
    assert statuses(status(manifest, kaio_server.url, api_key)) == done  # from the cache

    # The code changed: new job_names, never submitted.
    train = tmp_path / "code" / "train.py"
    code = train.read_text()
    train.write_text(code + "# changed\n")
    assert set(statuses(status(manifest, kaio_server.url, api_key)).values()) == {None}
    train.write_text(code)
    assert statuses(status(manifest, kaio_server.url, api_key)) == done

    # The manifest changed: one more cell.
    text = manifest.read_text()
    manifest.write_text(text.replace("i: [0, 1, 2]", "i: [0, 1, 2, 3]"))
    assert statuses(status(manifest, kaio_server.url, api_key)) == {**done, "train-3": None}
    manifest.write_text(text)

    # A torn or foreign cache: planned again, and kept anew.
    for junk in ("{", "[]", json.dumps({"key": "x", "jobs": []}), "\0" * 10):
        cache.write_text(junk)
        assert statuses(status(manifest, kaio_server.url, api_key)) == done
    assert json.loads(cache.read_text())["jobs"]


def code_project(tmp_path: Path, monkeypatch, text: str) -> Path:
    """kaio.yaml (`text`) beside ./code/train.py; KAIO_HOME in tmp_path/home."""
    monkeypatch.setenv("KAIO_HOME", str(tmp_path / "home"))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print(1)\n")
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(text)
    return manifest


def test_a_var_file_is_part_of_the_plans_key(tmp_path, monkeypatch):
    manifest = code_project(
        tmp_path,
        monkeypatch,
        "version: 1\nname: v\nvars: {lr: 0.1}\njobs:\n"
        "  t: {directory: code, entrypoint: train.py, params: {lr: '{{ vars.lr }}'}}\n",
    )
    values = tmp_path / "vars.yaml"
    values.write_text("lr: 0.5\n")
    first = cached_plan(str(manifest), (), (str(values),), None)
    assert first.jobs[0].params == {"lr": 0.5}
    values.write_text("lr: 0.00001\n")
    again = cached_plan(str(manifest), (), (str(values),), None)
    assert again.jobs[0].params == {"lr": 1e-05}
    assert again.jobs[0].job_name != first.jobs[0].job_name
    assert cached_plan(str(manifest), ("lr=2",), (), None).jobs[0].params == {"lr": 2}


def test_no_plan_is_kept_inside_a_jobs_folder(tmp_path, monkeypatch):
    """A job folder that holds KAIO_HOME (the project is the home folder): writing the cache
    there would change the folder's content, and so every job's identity, at each command."""
    monkeypatch.setenv("KAIO_HOME", str(tmp_path / ".kaio"))
    (tmp_path / "train.py").write_text("print(1)\n")
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text("version: 1\nname: h\njobs:\n  t: {entrypoint: train.py}\n")
    first = cached_plan(str(manifest), (), (), None)
    assert not plans_folder().exists()
    assert cached_plan(str(manifest), (), (), None).jobs == first.jobs


def test_a_kept_plan_is_the_plan(tmp_path, monkeypatch):
    """Every field of every job, read back from the cache, is what planning gives."""
    manifest = code_project(
        tmp_path,
        monkeypatch,
        "version: 1\nname: k\nsettings: {outputs: 'code/out/{{ job.name }}'}\n"
        "defaults: {directory: ./code}\njobs:\n"
        "  t:\n    entrypoint: train.py\n    env: {A: '1', TOKEN: {secret: tok}}\n"
        "    params: {lr: '{{ matrix.lr }}', deep: {x: [1, 2.5, null, true]}}\n"
        "    matrix: {lr: [0.00001, 1e-3, 2], opt: [adam, 'sgd momentum']}\n"
        "  plain: {entrypoint: train.py, instance_count: 2, max_runtime_hours: 0.5}\n",
    )
    fresh = plan(manifest)
    assert cached_plan(str(manifest), (), (), None, reuse=False).jobs == fresh.jobs
    [kept_file] = plans_folder().glob("*.json")
    written = kept_file.stat().st_mtime_ns
    reused = cached_plan(str(manifest), (), (), None)
    assert kept_file.stat().st_mtime_ns == written  # read, not planned and written again
    assert reused.jobs == fresh.jobs
    assert reused.manifest.name == "k"
    assert kept_file.stat().st_mode & 0o077 == 0
