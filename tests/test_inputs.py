"""`inputs:` as a user runs them: a dataset folder and a file beside the code, applied through a
counting proxy to a real local platform, with real job processes that read (and try to write)
their inputs. Then the platform as a hostile tenant sees it: another tenant's hash, crafted names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import textwrap
import time

import requests
from apply_support import run_apply, run_kaio
from faultproxy import FaultProxy

# The job: what it sees of its inputs (contents' hashes, the variable), and whether it could
# change them.
TRAIN = textwrap.dedent(
    """\
    import hashlib, json, os
    seen = {}
    for root, _dirs, files in os.walk("inputs", followlinks=True):
        for n in files:
            p = os.path.join(root, n)
            seen[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    writes = []
    for target in ("inputs/train/a.bin", "inputs/train/new.txt", os.environ.get("KAIO_INPUT_TRAIN", "inputs/train") + "/b/c.txt"):
        try:
            if os.path.exists(target):  # its owner could make it writable, were it not read-only
                os.chmod(target, 0o644)
                os.chmod(os.path.dirname(target), 0o755)
            else:
                os.chmod(os.path.dirname(target), 0o755)
            with open(target, "ab") as f:
                f.write(b"x")
            writes.append("written")
        except OSError as e:
            writes.append(type(e).__name__)
    json.dump({"seen": seen, "writes": writes, "var": os.environ.get("KAIO_INPUT_TRAIN", "inputs/train"),
               "var_ok": os.path.isdir(os.environ.get("KAIO_INPUT_LABELS", "inputs/labels"))}, open("seen.json", "w"))
    """
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_project(folder, data_inside=False):
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(TRAIN)
    data = folder / ("code/data" if data_inside else "data")
    (data / "train" / "b").mkdir(parents=True)
    (data / "train" / "a.bin").write_bytes(os.urandom(300_000))
    (data / "train" / "b" / "c.txt").write_text("rows\n")
    (data / "labels.csv").write_text("id,label\n1,cat\n")
    rel = "./code/data" if data_inside else "./data"
    manifest = folder / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: ds
            settings:
              poll_seconds: 0.3
            defaults:
              inputs: {{train: {rel}/train}}
            jobs:
              train:
                directory: ./code
                entrypoint: train.py
                inputs: {{labels: {rel}/labels.csv}}
            """
        )
    )
    return manifest, data


def seen_of(manifest):
    return json.loads((manifest.parent / "outputs" / "ds" / "train" / "seen.json").read_text())


def file_puts(proxy):
    return [size for method, path, size in proxy.sent if method == "PUT" and "/files/" in path]


def test_inputs_upload_once_read_only_and_replace_on_data_change(kaio_server, api_key, tmp_path):
    manifest, data = write_project(tmp_path)
    with FaultProxy(kaio_server.url) as proxy:
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        seen = seen_of(manifest)
        files = {
            "inputs/train/a.bin": (data / "train" / "a.bin").read_bytes(),
            "inputs/train/b/c.txt": b"rows\n",
            "inputs/labels/labels.csv": (data / "labels.csv").read_bytes(),
        }
        assert seen["seen"] == {p: sha(b) for p, b in files.items()}
        assert "written" not in seen["writes"], seen["writes"]  # read-only through the sandbox
        assert seen["var"].endswith("/inputs/train") and seen["var_ok"]
        # Each file once, the data never in the code package.
        assert sorted(file_puts(proxy)) == sorted(len(b) for b in files.values())
        package = [s for m, p, s in proxy.sent if m == "PUT" and p.startswith("/objects/")]
        assert package and max(package) < 100_000

        # Nothing changed: nothing submitted, no data sent.
        before = len(proxy.sent)
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not [p for m, p, _ in proxy.sent[before:] if m in ("PUT", "POST")][1:], proxy.sent

        # A code edit: a new job, no data sent again.
        (manifest.parent / "code" / "train.py").write_text(TRAIN + "\n# edited\n")
        before = len(proxy.sent)
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert [s for m, p, s in proxy.sent[before:] if m == "PUT" and "/files/" in p] == []

        # One data file changed: the job is replaced, plan says why, only that file travels.
        (data / "train" / "b" / "c.txt").write_text("rows, more\n")
        plan = run_kaio(manifest, api_key, "plan", str(manifest), "--api", proxy.url)
        assert "inputs.train" in plan.stdout, plan.stdout + plan.stderr
        assert "input train (" in plan.stdout and "uploaded once per content" in plan.stdout
        before = len(proxy.sent)
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        sent = [s for m, p, s in proxy.sent[before:] if m == "PUT" and "/files/" in p]
        assert sent == [len(b"rows, more\n")]
        assert seen_of(manifest)["seen"]["inputs/train/b/c.txt"] == sha(b"rows, more\n")
    # Stored once, however many jobs (three here) used it.
    stored = list((kaio_server.data_dir / "files").glob(f"*/*/{sha(files['inputs/train/a.bin'])}"))
    assert len(stored) == 1 and stored[0].stat().st_nlink == 4  # the store's and 3 jobs' links


def bearer(client) -> dict[str, str]:
    return client._bearer()


def presign(url, headers, inputs):
    body = {
        "job_name": "probe",
        "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "main.py"},
    }
    if inputs is not None:
        body["inputs"] = inputs
    return requests.post(f"{url}/jobs/presign", json=body, headers=headers, timeout=10)


def test_a_tenant_cannot_use_or_read_another_tenants_file_knowing_its_hash(kaio_server, client):
    from kaio_spec import Client

    secret = b"tenant A's private data\n"
    digest = sha(secret)
    url = kaio_server.url
    owner = bearer(client)
    put = requests.put(f"{url}/files/{digest}", data=secret, headers=owner, timeout=10)
    assert put.status_code == 200 and put.json() == {"sha256": digest, "size": len(secret)}

    attacker = bearer(Client(url).login(kaio_server.add_user("mallory")))
    asked = requests.post(f"{url}/files/missing", json={"sha256": [digest]}, headers=attacker)
    assert asked.json() == {"missing": [digest]}  # never "present": that would tell
    r = presign(url, attacker, {"loot": {"secret.txt": digest}})
    assert r.status_code == 409 and "not on the platform" in r.json()["error"]
    # Other bytes under the hash are refused; no route serves a stored file.
    r = requests.put(f"{url}/files/{digest}", data=b"forged", headers=attacker, timeout=10)
    assert r.status_code == 400 and "SHA-256" in r.json()["error"]
    for path in (f"/files/{digest}", f"/files/{digest}/content"):
        assert requests.get(url + path, headers=attacker, timeout=10).status_code == 404
    # The owner's own presign takes it.
    assert presign(url, owner, {"data": {"secret.txt": digest}}).status_code == 200


def test_crafted_input_names_and_paths_are_refused_with_the_field(kaio_server, client):
    url, headers = kaio_server.url, bearer(client)
    digest = sha(b"x")
    requests.put(f"{url}/files/{digest}", data=b"x", headers=headers, timeout=10)
    crafted = {
        "../up": {"a": digest},
        "Upper": {"a": digest},
        "ok": {"../../etc/passwd": digest},
        "ok2": {"/abs": digest},
        "ok3": {"a//b": digest},
        "ok4": {"a/./b": digest},
        "ok5": {"a": "not-a-hash"},
        "ok6": {"a": digest, "a/b": digest},
    }
    for name, files in crafted.items():
        r = presign(url, headers, {name: files})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"].startswith("inputs"), r.text
    r = requests.post(f"{url}/files/missing", json={"sha256": ["../x"]}, headers=headers)
    assert r.status_code == 400
    assert requests.put(f"{url}/files/..%2Fx", data=b"x", headers=headers).status_code in (400, 404)


def test_a_manifest_with_a_bad_input_name_or_missing_path_is_invalid(tmp_path, api_key):
    manifest, _ = write_project(tmp_path)
    text = manifest.read_text()
    manifest.write_text(text.replace("{labels:", "{Labels:"))
    r = run_kaio(manifest, api_key, "validate", str(manifest))
    assert r.returncode == 2 and "Labels" in r.stdout + r.stderr, r.stdout + r.stderr
    manifest.write_text(text.replace("labels.csv}", "nothing.csv}"))
    r = run_kaio(manifest, api_key, "plan", str(manifest), "--offline")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "nothing.csv" in out and "inputs.labels" in out, out


def test_a_server_without_input_storage_gets_the_inputs_in_the_package(
    kaio_server, api_key, tmp_path
):
    manifest, data = write_project(tmp_path)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", "/healthz").status(404, times=None)  # as the hosted API answers
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert not [p for _, p, _ in proxy.sent if p.startswith("/files")]
        package = [s for m, p, s in proxy.sent if m == "PUT" and p.startswith("/objects/")]
        assert max(package) > 300_000  # the data travelled in the package
        plan = run_kaio(manifest, api_key, "plan", str(manifest), "--api", proxy.url)
        assert "input train (" in plan.stdout and "packaged with each job" in plan.stdout
    seen = seen_of(manifest)
    assert seen["seen"]["inputs/train/a.bin"] == sha((data / "train" / "a.bin").read_bytes())
    assert seen["seen"]["inputs/labels/labels.csv"] == sha((data / "labels.csv").read_bytes())
    assert seen["var"] == "inputs/train" and seen["var_ok"]


def test_s3_inputs_from_a_real_s3_server(kaio_server, api_key, tmp_path, monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="corpus")
        s3.put_object(Bucket="corpus", Key="ds/a.bin", Body=b"alpha" * 1000)
        s3.put_object(Bucket="corpus", Key="ds/b/c.txt", Body=b"rows\n")
        manifest, _ = write_project(tmp_path)
        manifest.write_text(manifest.read_text().replace("./data/train", "s3://corpus/ds"))
        r = run_apply(manifest, kaio_server.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        seen = seen_of(manifest)["seen"]
        assert seen["inputs/train/a.bin"] == sha(b"alpha" * 1000)
        assert seen["inputs/train/b/c.txt"] == sha(b"rows\n")
        # Changed in S3 (a new ETag): the job is replaced and sees the new bytes.
        s3.put_object(Bucket="corpus", Key="ds/b/c.txt", Body=b"rows v2\n")
        r = run_apply(manifest, kaio_server.url, api_key, "--yes")
        assert r.returncode == 0 and "replace" in r.stdout, r.stdout + r.stderr
        assert seen_of(manifest)["seen"]["inputs/train/b/c.txt"] == sha(b"rows v2\n")
    finally:
        server.stop()


PREP_BIG = (
    "import os\n"
    "open('big.bin', 'wb').write(os.urandom(2_000_000))\n"
    "os.makedirs('sub', exist_ok=True)\n"
    "open('sub/stats.json', 'w').write('{\"rows\": 3}')\n"
)
USE = (
    "import hashlib, json, os\n"
    "big = hashlib.sha256(open('inputs/prep/big.bin', 'rb').read()).hexdigest()\n"
    "stats = json.load(open('inputs/prep/sub/stats.json'))\n"
    "try:\n"
    "    open('inputs/prep/big.bin', 'ab').write(b'x')\n"
    "    wrote = True\n"
    "except OSError:\n"
    "    wrote = False\n"
    "json.dump({'big': big, 'stats': stats, 'wrote': wrote, 'needs': json.load(open('needs.json'))},\n"
    "          open('used.json', 'w'))\n"
)


def test_a_needed_jobs_outputs_are_linked_by_the_platform_not_uploaded(
    kaio_server, api_key, tmp_path
):
    for key, code in (("prep", PREP_BIG), ("use", USE)):
        (tmp_path / key).mkdir()
        (tmp_path / key / "main.py").write_text(code)
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(
        "version: 1\nname: link\nsettings: {poll_seconds: 0.3}\njobs:\n"
        "  prep: {directory: ./prep, entrypoint: main.py}\n"
        "  use: {directory: ./use, entrypoint: main.py, needs: prep}\n"
    )
    with FaultProxy(kaio_server.url) as proxy:
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        uploads = [s for m, p, s in proxy.sent if m == "PUT" and p.startswith("/objects/")]
    downloaded = tmp_path / "outputs" / "link" / "prep" / "big.bin"
    used = json.loads((tmp_path / "outputs" / "link" / "use" / "used.json").read_text())
    assert used["big"] == sha(downloaded.read_bytes()) and used["stats"] == {"rows": 3}
    assert used["needs"]["prep"][0]["files"] == ["big.bin", "sub/stats.json"]
    assert not used["wrote"]
    assert max(uploads) < 100_000, uploads  # 2 MB of prep's outputs never went up again


def test_needs_name_only_the_callers_completed_jobs(kaio_server, client):
    from kaio_spec import Client

    url = kaio_server.url
    other = Client(url).login(kaio_server.add_user("victim"))
    theirs = presign(url, bearer(other), None).json()["unique_job_name"]  # Pending, not ours
    mine = presign(url, bearer(client), None).json()["unique_job_name"]  # ours, Pending

    def ask(needs):
        body = {
            "job_name": "probe",
            "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "main.py"},
            "needs": needs,
        }
        return requests.post(f"{url}/jobs/presign", json=body, headers=bearer(client), timeout=10)

    r = ask({"prep": theirs})
    assert r.status_code == 409 and "no job" in r.json()["error"]
    r = ask({"prep": mine})
    assert r.status_code == 409 and "not completed" in r.json()["error"]
    for crafted in ({"../up": mine}, {"a//b": mine}, {"prep": "../../x"}, {"prep": 3}):
        r = ask(crafted)
        assert r.status_code == 400 and r.json()["error"].startswith("needs"), r.text


def test_an_upload_cut_short_stores_nothing(kaio_server, client):
    data = os.urandom(3_000_000)
    digest = sha(data)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("PUT", "/files/.*").cut(1_000_000)
        with contextlib.suppress(requests.RequestException):
            requests.put(f"{proxy.url}/files/{digest}", data=data, headers=bearer(client))
    asked = requests.post(
        f"{kaio_server.url}/files/missing", json={"sha256": [digest]}, headers=bearer(client)
    )
    assert asked.json() == {"missing": [digest]}
    tmp = list((kaio_server.data_dir / "files").glob("*/.tmp/*"))
    deadline = time.monotonic() + 10
    while tmp and time.monotonic() < deadline:  # the server notices the cut as it reads
        time.sleep(0.1)
        tmp = list((kaio_server.data_dir / "files").glob("*/.tmp/*"))
    assert not any(p.is_file() for p in tmp)


def test_a_job_whose_upload_failed_is_uploaded_by_the_next_apply_without_its_data(
    kaio_server, api_key, tmp_path
):
    manifest, data = write_project(tmp_path)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("PUT", "/objects/.*").reset(times=None)  # presigned, never uploaded
        with contextlib.suppress(subprocess.TimeoutExpired):  # killed while it retries
            run_apply(manifest, proxy.url, api_key, "--yes", timeout=12)
        assert any(p == "/jobs/presign" for _, p, _ in proxy.sent)
        proxy.clear()  # the same address: the next apply finds the state the first one left
        proxy.sent.clear()
        try:
            r = run_apply(manifest, proxy.url, api_key, "--yes", timeout=40)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{e.stdout}{e.stderr}{proxy.sent}") from None
        assert r.returncode == 0, r.stdout + r.stderr
        package = [s for m, p, s in proxy.sent if m == "PUT" and p.startswith("/objects/")]
        assert package and max(package) < 100_000  # the data is linked, not in the package
    seen = seen_of(manifest)
    assert seen["seen"]["inputs/train/a.bin"] == sha((data / "train" / "a.bin").read_bytes())


def test_a_jobs_data_with_read_only_inputs_is_deleted_whole(kaio_server, client):
    url, headers = kaio_server.url, bearer(client)
    requests.put(f"{url}/files/{sha(b'd')}", data=b"d", headers=headers, timeout=10)
    unique = presign(url, headers, {"data": {"a/b.txt": sha(b"d")}}).json()["unique_job_name"]
    folder = kaio_server.data_dir / "jobs" / unique
    assert (folder / "inputs" / "data" / "a" / "b.txt").read_bytes() == b"d"
    requests.post(f"{url}/jobs/{unique}/stop", headers=headers, timeout=10).raise_for_status()
    r = requests.delete(f"{url}/jobs/{unique}/data", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert not (folder / "inputs").exists()
    assert list((kaio_server.data_dir / "files").glob(f"*/*/{sha(b'd')}"))  # the store keeps it
