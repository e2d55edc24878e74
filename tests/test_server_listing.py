"""GET /jobs's local filters and paging (feature `jobs-filters`): a tenant's executor polls only
its manifest's jobs, and a long history is read a page at a time."""

from __future__ import annotations

import json

import pytest
import requests
from server_support import Api

from kaio_spec import Client


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def names(r: requests.Response) -> list[str]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["jobs"])
    return [j["unique_job_name"] for j in body["jobs"]]


def test_the_server_says_it_has_the_filters(kaio_server):
    features = requests.get(kaio_server.url + "/healthz", timeout=10).json()["features"]
    assert "jobs-filters" in features


def test_jobs_are_listed_by_label_and_name_a_page_at_a_time(api, kaio_server, api_key):
    made = {}
    for i in range(7):
        name, manifest = ("alpha", "m1") if i % 2 else ("beta", "m2")
        presigned = api.presign(job_name=name, labels={"manifest": manifest, "i": str(i)})
        made[presigned["unique_job_name"]] = (name, manifest)
    everything = names(api.get("/jobs"))
    assert sorted(everything) == sorted(made)
    assert names(api.get("/jobs", params={"label": "manifest=m1"})) == [
        u for u in everything if made[u][1] == "m1"
    ]
    assert names(api.get("/jobs", params={"job_name": "beta"})) == [
        u for u in everything if made[u][0] == "beta"
    ]
    both = {"label": ["manifest=m2", "i=2"]}  # every label given must match
    assert [made[u] for u in names(api.get("/jobs", params=both))] == [("beta", "m2")]
    assert names(api.get("/jobs", params={"label": "manifest=none"})) == []

    pages, after = [], None
    while True:
        page = names(api.get("/jobs", params={"limit": 3, "after": after}))
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [u for page in pages for u in page] == everything

    # The same ETag behaviour as the whole list: 304 while the filtered list is unchanged.
    r = api.get("/jobs", params={"label": "manifest=m1"})
    again = api.get(
        "/jobs", params={"label": "manifest=m1"}, headers={"If-None-Match": r.headers["ETag"]}
    )
    assert again.status_code == 304

    client = Client(kaio_server.url).login(api_key)
    listed = client.query_jobs(labels=["manifest=m1"], limit=2)["jobs"]
    assert [j["unique_job_name"] for j in listed] == [u for u in everything if made[u][1] == "m1"][
        :2
    ]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"label": "no-equals-sign"}, "label"),
        ({"label": "=value"}, "label"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"after": "20990101-000000000-nobody"}, "after"),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(api, params, field):
    r = api.get("/jobs", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field), r.text


def test_another_tenants_job_is_no_page_marker(api, kaio_server):
    other = Api(kaio_server.url, kaio_server.add_user())
    theirs = other.presign(job_name="theirs")["unique_job_name"]
    r = api.get("/jobs", params={"after": theirs})
    assert r.status_code == 400 and "no job" in r.json()["error"]


def test_a_manifest_label_filter_reads_only_that_manifests_jobs(tmp_path):
    """The executor's poll (label=manifest=NAME) is an index lookup, not a scan of the tenant's
    jobs: the query plan uses jobs_by_manifest, and it lists what the label says."""
    from kaio_spec.server.store import JobFilter, Store

    store = Store(tmp_path)
    user, _ = store.add_user("many")
    fields = {"instance_type": "ml.m5.large", "instance_count": 1, "volume_size_gb": 5}
    fields |= {"entrypoint": "train.py", "max_runtime_hours": 1.0}
    made = {}
    for i in range(6):
        manifest = "m1" if i % 3 == 0 else "m2"
        job = store.create_job(user["id"], f"j{i}", {**fields, "labels": {"manifest": manifest}})
        made[job["unique_job_name"]] = manifest
    listed = store.jobs_json(user["id"], only=JobFilter(labels=(("manifest", "m1"),)))
    assert sorted(json.loads(j)["unique_job_name"] for j in listed) == sorted(
        u for u, m in made.items() if m == "m1"
    )
    where, args = store._job_filter(user["id"], False, JobFilter(labels=(("manifest", "m1"),)))
    plan = store._query(f"EXPLAIN QUERY PLAN SELECT unique_job_name FROM jobs WHERE {where}", args)
    assert any("jobs_by_manifest" in row["detail"] for row in plan), [dict(r) for r in plan]
    store.close()
