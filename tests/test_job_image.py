"""Which image a job of a manifest runs in (issue 13, section 7): its own requirements.txt pins
first, then the manifest's framework, then what is installed here; a nearest-version notice is
one plain line per apply. On a real platform whose Python has the pinned torch (a stand-in
distribution: only its metadata, so the job installs nothing)."""

from __future__ import annotations

import textwrap

from apply_support import list_jobs, run_apply

DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


def fake_torch(site) -> None:
    info = site / "torch-2.5.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.5.0\n")


def test_requirements_pins_pick_the_image_and_the_nearest_version_is_one_plain_line(
    tmp_path, server_factory
):
    site = tmp_path / "site"
    fake_torch(site)
    server = server_factory(env={"PYTHONPATH": str(site)}, max_instances=4)
    api_key = server.add_user()
    for folder, requirements in (("pinned", "torch==2.5.0  # the model's\n"), ("plain", None)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.py").write_text("print('ok')\n")
        if requirements:
            (tmp_path / folder / "requirements.txt").write_text(requirements)
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            version: 1
            name: images
            settings: {poll_seconds: 0.3}
            jobs:
              torch:
                directory: pinned
                framework: tensorflow   # the pin wins: the job installs torch
                matrix: {n: [1, 2]}
              tf:
                directory: plain
                framework: tensorflow
                framework_version: "2.16.2"
            """
        )
    )
    r = run_apply(manifest, server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    images = {
        job["job_name"].split("-")[1]: job["image_uri"] for job in list_jobs(server.url, api_key)
    }
    assert images["torch"] == f"{DLC}/pytorch-training:2.5.1-cpu-py311-ubuntu22.04-sagemaker"
    assert images["tf"] == f"{DLC}/tensorflow-training:2.16.2-cpu-py310-ubuntu20.04-sagemaker"
    notice = "pytorch 2.5.0 (pinned in requirements.txt) has no SageMaker image; using the nearest, 2.5.1"
    assert (r.stdout + r.stderr).count(notice) == 1  # two jobs, one line
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr
