"""`inputs:` as a user runs them: a dataset folder and a file beside the code, applied through a
counting proxy to a real local platform, with real job processes that read (and try to write)
their inputs. Then the platform as a hostile tenant sees it: another tenant's hash, crafted names."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap

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
    for target in ("inputs/train/a.bin", "inputs/train/new.txt", os.environ["KAIO_INPUT_TRAIN"] + "/b/c.txt"):
        try:
            with open(target, "ab") as f:
                f.write(b"x")
            writes.append("written")
        except OSError as e:
            writes.append(type(e).__name__)
    json.dump({"seen": seen, "writes": writes, "var": os.environ["KAIO_INPUT_TRAIN"],
               "var_ok": os.path.isdir(os.environ["KAIO_INPUT_LABELS"])}, open("seen.json", "w"))
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
        before = len(proxy.sent)
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        sent = [s for m, p, s in proxy.sent[before:] if m == "PUT" and "/files/" in p]
        assert sent == [len(b"rows, more\n")]
        assert seen_of(manifest)["seen"]["inputs/train/b/c.txt"] == sha(b"rows, more\n")
