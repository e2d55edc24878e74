"""The API's surface on a real server: every malformed request is a 4xx naming the field, never a
500; the local routes; the description in /openapi.json."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import Api

from kaio_spec import __version__, catalog
from kaio_spec.server import namespaces
from kaio_spec.server.sandbox import confinement, landlock_abi


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


GOOD_SPEC = {"instance_type": "ml.m5.large", "instance_count": 1, "entrypoint": "train.py"}


def _presign_body(**changes) -> dict:
    body = {"job_name": "ok", "job_spec": dict(GOOD_SPEC), "env": {}}
    for key, value in changes.items():
        if key.startswith("spec_"):
            body["job_spec"][key[5:]] = value
        else:
            body[key] = value
    return body


# (case, body, the field the error must name)
BAD_PRESIGNS = [
    ("no job_name", {"job_spec": GOOD_SPEC}, "job_name"),
    ("job_name not a string", _presign_body(job_name=5), "job_name"),
    ("job_name too long", _presign_body(job_name="a" * 64), "job_name"),
    ("job_name with a slash", _presign_body(job_name="a/b"), "job_name"),
    ("job_name starting with -", _presign_body(job_name="-a"), "job_name"),
    ("no job_spec", {"job_name": "a"}, "job_spec"),
    ("job_spec a list", _presign_body(job_spec=[1]), "job_spec"),
    ("unknown instance type", _presign_body(spec_instance_type="ml.m5.huge"), "instance_type"),
    ("no instance type", _presign_body(spec_instance_type=None), "instance_type"),
    ("instance_count 0", _presign_body(spec_instance_count=0), "instance_count"),
    ("instance_count text", _presign_body(spec_instance_count="2"), "instance_count"),
    ("instance_count bool", _presign_body(spec_instance_count=True), "instance_count"),
    ("instance_count huge", _presign_body(spec_instance_count=10**9), "instance_count"),
    ("volume 51", _presign_body(spec_volume_size_gb=51), "volume_size_gb"),
    ("volume 0", _presign_body(spec_volume_size_gb=0), "volume_size_gb"),
    ("entrypoint in a folder", _presign_body(spec_entrypoint="src/train.py"), "entrypoint"),
    ("entrypoint a shell script", _presign_body(spec_entrypoint="run.sh"), "entrypoint"),
    ("no entrypoint", _presign_body(spec_entrypoint=None), "entrypoint"),
    ("max runtime 0", _presign_body(spec_max_runtime_hours=0), "max_runtime_hours"),
    ("max runtime 1e308", _presign_body(spec_max_runtime_hours=1e308), "max_runtime_hours"),
    ("instance count 101", _presign_body(spec_instance_count=101), "instance_count"),
    ("max runtime text", _presign_body(spec_max_runtime_hours="1"), "max_runtime_hours"),
    ("image_uri overlong", _presign_body(spec_image_uri="x" * 5000), "image_uri"),
    ("image_uri a number", _presign_body(spec_image_uri=7), "image_uri"),
    ("env a list", _presign_body(env=["A"]), "env"),
    ("env reserved prefix", _presign_body(env={"SM_HOSTS": "x"}), "env.SM_HOSTS"),
    ("env PATH", _presign_body(env={"PATH": "/tmp"}), "env.PATH"),
    ("env bad name", _presign_body(env={"1A": "x"}), "env.1A"),
    ("env value a number", _presign_body(env={"A": 1}), "env.A"),
    ("env too many", _presign_body(env={f"V{i}": "x" for i in range(51)}), "env"),
    ("env too big", _presign_body(env={"A": "x" * 5000}), "env"),
    ("labels a string", _presign_body(labels="x"), "labels"),
    ("labels value a number", _presign_body(labels={"a": 1}), "labels.a"),
    ("labels too many", _presign_body(labels={f"k{i}": "v" for i in range(21)}), "labels"),
]


@pytest.mark.parametrize("case,body,field", BAD_PRESIGNS, ids=[c[0] for c in BAD_PRESIGNS])
def test_an_invalid_presign_names_the_field(api, case, body, field):
    r = api.post("/jobs/presign", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field + ":"), r.json()


def test_env_values_are_never_echoed_in_errors(api):
    r = api.post("/jobs/presign", json=_presign_body(env={"A": "x" * 5000}))
    assert r.status_code == 400 and "xxxx" not in r.text


RAW_BODIES = [
    ("text/plain", b'{"job_name": "a"}', 400, "Content-Type"),
    (None, b'{"job_name": "a"}', 400, "Content-Type"),
    ("application/json", b"\xff\xfe not utf-8", 400, "UTF-8"),
    ("application/json", b'{"job_name": ', 400, "JSON"),
    ("application/json", b"[1, 2]", 400, "object"),
    ("application/json", b'{"job_name": NaN}', 400, "JSON"),
    ("application/json", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested"),
    ("application/json", b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}", 400, "nested"),
    ("application/json", b'{"a": "' + b"x" * 200_000 + b'"}', 413, "body"),
    ("application/json; charset=utf-8", b"", 400, "JSON"),
]


@pytest.mark.parametrize("ctype,raw,status,words", RAW_BODIES)
def test_malformed_bodies_are_refused_with_a_reason(api, ctype, raw, status, words):
    headers = {"Content-Type": ctype} if ctype else {}
    for path in ("/jobs/presign", "/login"):
        r = api.session.post(api.url + path, data=raw, headers=headers)
        if ctype is None:
            r = requests.post(api.url + path, data=raw, headers={**api.session.headers})
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["error"]


BAD_REQUESTS = [
    ("GET", "/no/such/route", {}, 404, "no route"),
    ("DELETE", "/jobs", {}, 404, "no route"),
    ("GET", "/jobs?include_archived=maybe", {}, 400, "include_archived"),
    ("GET", "/jobs/status/" + "x" * 3000, {}, 404, "unique_job_name"),
    ("GET", "/jobs/status/%FF%FE", {}, 404, "unique_job_name"),
    ("POST", "/login", {"json": {"api_key": 5}}, 400, "api_key"),
    ("POST", "/login", {"json": {}}, 400, "api_key"),
]


@pytest.mark.parametrize("method,path,kw,status,words", BAD_REQUESTS)
def test_bad_requests_answer_json_4xx(api, method, path, kw, status, words):
    r = api.session.request(method, api.url + path, **kw)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_bad_log_queries_name_the_parameter(api):
    unique = api.submit({"train.py": "print('x')"}, job_name="logs")
    api.wait(unique)
    for params, field in [
        ({"offset": "-1"}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"host": "algo-9"}, "host"),
        ({"host": "x" * 100}, "host"),
        ({"stream": "both"}, "stream"),
    ]:
        r = api.get(f"/jobs/{unique}/logs", params=params)
        assert r.status_code == 400 and r.json()["error"].startswith(field), (params, r.text)
    past_the_end = api.get(f"/jobs/{unique}/logs", params={"offset": 10_000})
    assert past_the_end.status_code == 200 and past_the_end.content == b""
    assert past_the_end.headers["X-Next-Offset"] == "10000"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "job_name": json_values,
            "job_spec": st.fixed_dictionaries(
                {},
                optional={
                    k: json_values
                    for k in ("instance_type", "instance_count", "volume_size_gb", "entrypoint")
                },
            )
            | json_values,
            "env": json_values,
            "labels": json_values,
        },
    )
)
def test_no_presign_body_makes_a_500(api, body):
    r = api.post("/jobs/presign", json=body)
    assert r.status_code in (200, 400, 413), r.text
    assert ("error" in r.json()) == (r.status_code != 200)


JOB_KEYS = {
    "unique_job_name", "job_name", "status", "timestamp", "start_time", "end_time",
    "failure_reason", "status_history", "instance_type", "instance_count", "volume_size_gb",
    "entrypoint", "image_uri", "workflow", "env_names", "labels", "archived", "data_deleted",
}  # fmt: skip


def test_responses_have_exactly_the_protocols_fields(api):
    presigned = api.presign(job_name="shape", env={"A": "1"})
    assert set(presigned) == {"unique_job_name", "upload_url", "s3_uri", "env_names"}
    unique = presigned["unique_job_name"]
    job = api.job(unique)
    assert set(job) == JOB_KEYS
    assert job["status"] == "Pending" and job["start_time"] is None
    assert job["instance_count"] == 1 and job["volume_size_gb"] == 5
    assert job["workflow"] == "processing" and job["image_uri"] == "local"
    assert job["env_names"] == ["A"] and job["labels"] == {}
    assert job["timestamp"].endswith("+00:00")
    listed = api.get("/jobs").json()
    assert set(listed) == {"jobs", "count"} and set(listed["jobs"][0]) == JOB_KEYS
    assert set(api.login) == {"access_token", "exp", "project"}
    assert set(api.login["project"]) == {"id", "name"}
    stopped = api.post(f"/jobs/{unique}/stop").json()
    assert set(stopped) == JOB_KEYS and stopped["status"] in ("Stopping", "Stopped")


def test_local_routes_and_the_description(kaio_server, api):
    health = requests.get(kaio_server.url + "/healthz").json()
    isolation = "landlock" if confinement(True, landlock_abi())[0] else "none"
    if namespaces.unavailable() is None:
        isolation = "namespaces"
    assert health == {
        "status": "ok",
        "version": __version__,
        "features": [
            "base-packages",
            "inputs",
            "jobs-filters",
            "jobs-stop",
            "jobs-submit",
            "needs-links",
            "streamed-upload",
        ],
        # The fixture's server keeps the default: in namespaces where bwrap can make them,
        # else confined with Landlock where this kernel allows it.
        "jobs_confined": isolation != "none",
        "isolation": isolation,
    }
    rows = api.get("/instances").json()["jobs"]
    assert [r["instance_type"] for r in rows] == list(catalog.INSTANCE_TYPES)
    g4 = next(r for r in rows if r["instance_type"] == "ml.g4dn.xlarge")
    assert g4 == {
        "instance_type": "ml.g4dn.xlarge",
        "vcpus": 4,
        "memory_gb": 16,
        "gpus": 1,
        "gpu_memory_gb": 16,
        "on_your_plan": True,
    }
    spec = requests.get(kaio_server.url + "/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/login", "post"),
        ("/jobs/presign", "post"),
        ("/jobs", "get"),
        ("/jobs/status/{unique_job_name}", "get"),
        ("/jobs/{unique_job_name}/stop", "post"),
        ("/jobs/download/{unique_job_name}", "get"),
        ("/jobs/{unique_job_name}/data", "delete"),
        ("/jobs/{unique_job_name}/archive", "post"),
        ("/jobs/{unique_job_name}/restore", "post"),
        ("/instances", "get"),
        ("/healthz", "get"),
        ("/jobs/{unique_job_name}/logs", "get"),
        ("/jobs/submit", "post"),
    ]:
        assert method in paths[path], path
    submit_body = paths["/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]
    assert "job_spec" in submit_body["schema"]["properties"]["jobs"]["items"]["properties"]
    presign_body = paths["/jobs/presign"]["post"]["requestBody"]["content"]["application/json"]
    assert "job_spec" in presign_body["schema"]["properties"]
    assert json.dumps(spec)  # serialisable, no surprises
