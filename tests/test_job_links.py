"""A job's needs and dependents, as the dashboard's job page shows them (issue 16): a user applies a
2-stage pipeline (prep, then a 2-cell train grid that needs it) against a real local platform,
and GET /jobs/<unique>/links names each job's needs and the jobs that need it. A hostile tenant's
labels naming another tenant's jobs link nothing."""

from __future__ import annotations

import json
import textwrap

from apply_support import list_jobs, run_apply
from faultproxy import FaultProxy
from server_support import Api

PIPELINE = textwrap.dedent(
    """\
    version: 1
    name: links
    settings:
      poll_seconds: 0.3
    jobs:
      prep:
        entrypoint: prep.py
      train:
        entrypoint: train.py
        needs: prep
        matrix:
          lr: [0.1, 0.5]
    """
)


def apply_pipeline(folder, url, api_key) -> dict[str, dict]:
    """Applies the pipeline; its jobs by name (prep, train-lr0.1, train-lr0.5)."""
    (folder / "prep.py").write_text("open('rows.txt', 'w').write('3')\n")
    (folder / "train.py").write_text("print(open('inputs/prep/rows.txt').read())\n")
    manifest = folder / "kaio.yaml"
    manifest.write_text(PIPELINE)
    result = run_apply(manifest, url, api_key, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    return {j["labels"]["name"]: j for j in list_jobs(url, api_key)}


def link(job: dict) -> dict:
    return {k: job[k] for k in ("unique_job_name", "job_name", "status")}


def links(api: Api, job: dict) -> dict:
    r = api.get(f"/jobs/{job['unique_job_name']}/links")
    assert r.status_code == 200, r.text
    return r.json()


def test_each_job_links_what_it_needs_and_what_needs_it(tmp_path, kaio_server, api_key):
    jobs = apply_pipeline(tmp_path, kaio_server.url, api_key)
    api = Api(kaio_server.url, api_key)
    prep, cells = jobs["prep"], [jobs["train-lr0.1"], jobs["train-lr0.5"]]
    assert json.loads(cells[0]["labels"]["needs"]) == [prep["job_name"]]

    for cell in cells:
        assert links(api, cell) == {"needs": [link(prep)], "needed_by": []}
    by_name = sorted(cells, key=lambda j: j["job_name"])
    assert links(api, prep) == {"needs": [], "needed_by": [link(j) for j in by_name]}


def test_links_hold_on_a_server_without_the_local_extensions(tmp_path, kaio_server, api_key):
    """The hosted fallback (no /healthz features: needs travel in the packages): the label still
    says what each job needs."""
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", "/healthz").status(404, "no route GET /healthz", times=None)
        jobs = apply_pipeline(tmp_path, proxy.url, api_key)
    api = Api(kaio_server.url, api_key)
    assert [j["job_name"] for j in links(api, jobs["prep"])["needed_by"]] == sorted(
        jobs[n]["job_name"] for n in ("train-lr0.1", "train-lr0.5")
    )


def test_another_tenants_jobs_are_never_linked(tmp_path, kaio_server, api_key):
    victim = apply_pipeline(tmp_path, kaio_server.url, api_key)
    prep = victim["prep"]
    attacker = Api(kaio_server.url, kaio_server.add_user())
    # Needs crafted to name the victim's prep, by its job_name and by its manifest and key.
    crafted = {"needs": json.dumps([prep["job_name"], "prep"]), "manifest": "links", "key": "x"}
    mine = attacker.submit({"train.py": "print(1)\n"}, job_name=prep["job_name"], labels=crafted)
    assert links(attacker, attacker.job(mine)) == {"needs": [], "needed_by": []}
    victim_api = Api(kaio_server.url, api_key)
    assert mine not in json.dumps(links(victim_api, prep))
    # Another tenant's job is no job of theirs: 404, as a missing one.
    r = attacker.get(f"/jobs/{prep['unique_job_name']}/links")
    assert r.status_code == 404, r.text
    # Labels that are not a list of names link nothing, and break nothing.
    for bad in ("{", '{"a": 1}', "[1, null]", '"prep"'):
        odd = attacker.submit({"train.py": "print(1)\n"}, job_name="odd", labels={"needs": bad})
        assert links(attacker, attacker.job(odd)) == {"needs": [], "needed_by": []}


def test_a_job_after_a_large_sweep_is_labelled_with_the_needed_key(tmp_path):
    """200 cells' job_names would not fit the labels' 4096 bytes: the label names the key."""
    from kaio_spec import plan

    (tmp_path / "train.py").write_text("print(1)\n")
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(
        "version: 1\nname: big\njobs:\n"
        "  train: {entrypoint: train.py, matrix: {seed: ["
        + ", ".join(map(str, range(200)))
        + "]}}\n"
        "  best: {entrypoint: train.py, needs: train}\n"
        "  small: {entrypoint: train.py, needs: best}\n"
    )
    jobs = {j.name: j for j in plan(manifest).jobs}
    assert json.loads(jobs["best"].labels["needs"]) == ["train"]
    assert json.loads(jobs["small"].labels["needs"]) == [jobs["best"].job_name]
    assert "needs" not in jobs["train-seed0"].labels


def test_needs_named_by_key_link_the_jobs_of_that_key_in_the_same_manifest(kaio_server, api_key):
    api = Api(kaio_server.url, api_key)
    code = {"train.py": "print(1)\n"}
    cell = api.submit(code, job_name="big-train-1", labels={"manifest": "big", "key": "train"})
    api.submit(code, job_name="other-train-1", labels={"manifest": "other", "key": "train"})
    best = api.submit(
        code, job_name="big-best", labels={"manifest": "big", "key": "best", "needs": '["train"]'}
    )
    assert [j["unique_job_name"] for j in links(api, api.job(best))["needs"]] == [cell]
    assert [j["unique_job_name"] for j in links(api, api.job(cell))["needed_by"]] == [best]


def test_links_read_the_jobs_own_manifest_among_many_others(kaio_server, api_key):
    """A tenant with many jobs of other manifests (the dashboard polls links every few seconds):
    the links come from the job's own manifest only. A newer job of another manifest that happens
    to share the needed job_name is not the one needed, nor is another tenant's job of the same
    manifest and job_name."""
    api = Api(kaio_server.url, api_key)
    code = {"train.py": "print(1)\n"}
    prep = api.submit(code, job_name="prep", labels={"manifest": "mine", "key": "prep"})
    needs = {"manifest": "mine", "key": "train", "needs": '["prep"]'}
    train = api.submit(code, job_name="mine-train", labels=needs)
    for i in range(150):  # presigned only: listed, never run
        api.presign(job_name=f"other-{i}", labels={"manifest": f"other{i % 3}", "key": "x"})
    # Newer than `prep`, same job_name, another manifest: another sweep's own prep.
    api.presign(job_name="prep", labels={"manifest": "other0", "key": "prep"})
    stranger = Api(kaio_server.url, kaio_server.add_user())
    stranger.presign(job_name="prep", labels={"manifest": "mine", "key": "prep"})
    stranger.presign(job_name="mine-train2", labels=needs)

    assert [j["unique_job_name"] for j in links(api, api.job(train))["needs"]] == [prep]
    assert [j["unique_job_name"] for j in links(api, api.job(prep))["needed_by"]] == [train]
