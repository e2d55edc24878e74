"""Every example of the seed client's README (shared/seed/kaio-client-README.md) runs against
the local platform with only its import line changed (`from kaio import Client` ->
`from kaio_spec import Client`).

The examples are copied here as literal code (CI runs from a clone where the seed may not be
beside the repo); each is the README's block, under the README's heading (its blank lines without their trailing
spaces, which the linter refuses).
What `run_example` substitutes, and only that:

- the API base "https://api.kaion5.com" -> this test's server, and "your-api-key" -> a real key;
- the placeholder job name "unique-job-name-123" -> a real job's unique name;
- the Complete Job Workflow's poll interval, time.sleep(30) -> time.sleep(0.2) (the job takes
  well under a second; 30 s per poll would only slow the suite).

The folders the examples name (./my_code, ./pytorch_training, ...) are made in a temporary
working directory with small scripts; the README's own job-side examples (multi-instance code
structure and processing) are used as the scripts of the multi-instance job.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import pytest
from support import wait_for_job

WAIT_S = 120.0

# ---- the README's client examples, verbatim ---------------------------------------------------

QUICK_START = """
from kaio import Client

# Initialize client
client = Client("https://api.kaion5.com")

# Login with your API key
client.login("your-api-key")

# Submit a job
result = client.submit_job(
    directory="./my_code",
    job_name="training-job",
    instance_type="ml.g4dn.xlarge",
    entrypoint="train.py"
)
"""

CLIENT_VERBOSE = """
client = Client("https://api.kaion5.com", verbose=True)
"""

GET_JOBS_COUNT = """
jobs = client.get_jobs()
print(f"Total jobs: {jobs['count']}")
"""

GET_JOB_STATUS = """
job = client.get_job("unique-job-name-123")
print(f"Status: {job['status']}")
"""

DOWNLOAD_OUTPUT = """
files = client.download_output("unique-job-name-123", "./results")
for file_path in files:
    print(f"Downloaded: {file_path}")
"""

SINGLE_INSTANCE_TRAINING = """
from kaio import Client

client = Client("https://api.kaion5.com")
client.login("your-api-key")

# Training a model using Processing jobs
result = client.submit_job(
    directory="./pytorch_training",  # Contains train.py, data/, and requirements.txt
    job_name="pytorch-model-training",
    instance_type="ml.g4dn.xlarge",
    entrypoint="train.py",  # Your training script
    volume_size_gb=10
)
"""

MULTI_INSTANCE = """
# Submit job with 4 instances for parallel processing with SM_HOSTS and your custom parallelization logic
result = client.submit_job(
    directory="./image_classification_model",  # Contains processing code and data
    job_name="multi-instance-image-processing",
    instance_type="ml.m5.2xlarge",
    instance_count=4,  # 4 instances for parallel processing
    entrypoint="process_images.py",  # Your parallel processing script using SM_HOSTS
    volume_size_gb=50
)
"""

FRAMEWORK_SPECIFIC = """
result = client.submit_job(
    directory="./tensorflow_processing",
    job_name="tf-data-prep",
    instance_type="ml.p3.2xlarge",
    framework="tensorflow",
    framework_version="2.13.0",
    entrypoint="preprocess.py"
)
"""

NOTEBOOK = """
result = client.submit_job(
    directory="./notebooks",
    job_name="data-analysis",
    instance_type="ml.m5.xlarge",
    entrypoint="analysis.ipynb"
)
"""

GETTING_ALL_JOBS = """
# Get list of all your jobs
jobs = client.get_jobs()
print(f"Total jobs: {jobs['count']}")
for job in jobs['jobs']:
    print(f"Job: {job['job_name']} - Status: {job['status']}")
"""

GETTING_JOB_STATUS = """
# Get specific job details (use unique_job_name from submit_job response)
job_details = client.get_job("unique-job-name-123")
print(f"Status: {job_details['status']}")
print(f"Started: {job_details['start_time']}")
if job_details['status'] == 'Completed':
    print(f"Completed: {job_details['end_time']}")
"""

DOWNLOADING_OUTPUTS = """
# Download all output files from a completed job
downloaded_files = client.download_output("unique-job-name-123", "./results")
for file_path in downloaded_files:
    print(f"Downloaded: {file_path}")
"""

COMPLETE_WORKFLOW = """
# Submit job
result = client.submit_job(
    directory="./my_training",
    job_name="model-training",
    instance_type="ml.g4dn.xlarge"
)

unique_job_name = result['unique_job_name']
print(f"Job submitted: {unique_job_name}")

# Monitor job status
import time
while True:
    job = client.get_job(unique_job_name)
    status = job['status']
    print(f"Job status: {status}")

    if status in ['Completed', 'Failed', 'Stopped']:
        break

    time.sleep(30)  # Check every 30 seconds

# Download results if completed
if status == 'Completed':
    files = client.download_output(unique_job_name, "./results")
    print(f"Downloaded {len(files)} files")
"""

ERROR_HANDLING = """
import requests

try:
    result = client.submit_job(
        directory="./code",
        job_name="my-job",
        instance_type="ml.g4dn.xlarge"
    )
except requests.HTTPError as e:
    if e.response.status_code == 403:
        print("Access denied - check your API key")
    else:
        print(f"API error: {e}")
except ValueError as e:
    print(f"Configuration error: {e}")
except FileNotFoundError as e:
    print(f"File not found: {e}")
"""

# The README's job-side examples ("Multi-Instance Code Structure", "Multi-Instance Processing
# Example"): they call process_data_partition and read `dataset`, which the README leaves to the
# reader; PRELUDE defines them so the blocks run as they are.
MULTI_INSTANCE_CODE_STRUCTURE = """
import os

def main():
    # Get SageMaker environment variables
    current_host = os.environ.get('SM_CURRENT_HOST', 'algo-1')
    all_hosts = os.environ.get('SM_HOSTS', 'algo-1').split(',')

    # Determine this instance's role
    host_rank = all_hosts.index(current_host)
    total_hosts = len(all_hosts)

    print(f"Running on {current_host} (rank {host_rank}/{total_hosts})")

    # Implement data partitioning logic
    process_data_partition(host_rank, total_hosts)

if __name__ == "__main__":
    main()
"""

MULTI_INSTANCE_PROCESSING_EXAMPLE = """
import os

# Get instance information
current_host = os.environ.get('SM_CURRENT_HOST', 'algo-1')
all_hosts = os.environ.get('SM_HOSTS', 'algo-1').split(',')
host_rank = all_hosts.index(current_host)
total_hosts = len(all_hosts)

print(f"Instance {host_rank + 1} of {total_hosts} (Host: {current_host})")

# Partition data based on host rank
data_partition_size = len(dataset) // total_hosts
start_idx = host_rank * data_partition_size
end_idx = start_idx + data_partition_size if host_rank < total_hosts - 1 else len(dataset)

# Process assigned data partition
my_data = dataset[start_idx:end_idx]
process_data_partition(my_data)
"""

PRELUDE = """
import json, os
dataset = [f"image-{i}.png" for i in range(10)]

def process_data_partition(*args):
    with open("partition.json", "w") as f:
        json.dump({"host": os.environ["SM_CURRENT_HOST"], "args": [list(a) if isinstance(a, list) else a for a in args]}, f)
"""

TRAIN = "import os\nos.makedirs('model', exist_ok=True)\nopen('model/weights.txt', 'w').write('trained')\n"
NOTEBOOK_JSON = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": ["total = sum(range(10))\n", "open('analysis.txt', 'w').write(str(total))"],
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def make_folders(root: Path) -> None:
    files = {
        "my_code/train.py": TRAIN,
        "pytorch_training/train.py": TRAIN,
        "pytorch_training/data/train.csv": "x,y\n1,2\n",
        "pytorch_training/requirements.txt": "requests\n",
        "image_classification_model/process_images.py": PRELUDE + MULTI_INSTANCE_PROCESSING_EXAMPLE,
        "image_classification_model/structure.py": PRELUDE + MULTI_INSTANCE_CODE_STRUCTURE,
        "tensorflow_processing/preprocess.py": "open('prepared.txt', 'w').write('ok')\n",
        "notebooks/analysis.ipynb": json.dumps(NOTEBOOK_JSON),
        "my_training/train.py": TRAIN,
        "code/train.py": TRAIN,
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


class Seed:
    def __init__(self, url: str, key: str):
        self.url = url
        self.key = key
        self.ns: dict = {}

    def run(self, example: str, job: str | None = None) -> dict:
        code = textwrap.dedent(example)
        code = code.replace(
            "from kaio import Client", "from kaio_spec import Client"
        )  # the one change
        code = code.replace("https://api.kaion5.com", self.url).replace("your-api-key", self.key)
        if job is not None:
            code = code.replace("unique-job-name-123", job)
        code = code.replace("time.sleep(30)", "time.sleep(0.2)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "nearest version" notes
            exec(compile(code, "<seed README example>", "exec"), self.ns)
        return self.ns

    def wait(self, unique: str) -> dict:
        return wait_for_job(self.ns["client"], unique, wait_s=WAIT_S)


@pytest.fixture
def seed(kaio_server, api_key, tmp_path, monkeypatch) -> Seed:
    monkeypatch.chdir(tmp_path)
    make_folders(tmp_path)
    s = Seed(kaio_server.url, api_key)
    s.run(
        'from kaio import Client\nclient = Client("https://api.kaion5.com")\nclient.login("your-api-key")\n'
    )
    return s


def run_and_wait(seed: Seed, example: str) -> dict:
    ns = seed.run(example)
    job = seed.wait(ns["result"]["unique_job_name"])
    assert job["status"] == "Completed", job["failure_reason"]
    return job


def test_quick_start(seed):
    job = run_and_wait(seed, QUICK_START)
    assert job["job_name"] == "training-job" and job["instance_type"] == "ml.g4dn.xlarge"


def test_client_verbose(seed, capfd):
    seed.run(CLIENT_VERBOSE)
    seed.run('client.login("your-api-key")\n' + GET_JOBS_COUNT)
    out, err = capfd.readouterr()
    assert "Total jobs: 0" in out and "/login -> 200" in err


def test_api_reference_job_examples(seed, tmp_path, capsys):
    job = run_and_wait(seed, QUICK_START)
    seed.run(GET_JOBS_COUNT)
    seed.run(GET_JOB_STATUS, job["unique_job_name"])
    seed.run(DOWNLOAD_OUTPUT, job["unique_job_name"])
    out = capsys.readouterr().out
    assert "Total jobs: 1" in out and "Status: Completed" in out
    assert "Downloaded: results/model/weights.txt" in out
    assert (tmp_path / "results/model/weights.txt").read_text() == "trained"


def test_single_instance_model_training(seed):
    job = run_and_wait(seed, SINGLE_INSTANCE_TRAINING)
    assert (job["job_name"], job["volume_size_gb"]) == ("pytorch-model-training", 10)


def test_multi_instance_data_processing(seed, tmp_path):
    job = run_and_wait(seed, MULTI_INSTANCE)
    assert job["instance_count"] == 4 and job["volume_size_gb"] == 50
    seed.run(DOWNLOADING_OUTPUTS, job["unique_job_name"])
    parts = {
        json.loads((tmp_path / f"results/algo-{i}/partition.json").read_text())["host"]
        for i in range(1, 5)
    }
    assert parts == {"algo-1", "algo-2", "algo-3", "algo-4"}
    first = json.loads((tmp_path / "results/algo-1/partition.json").read_text())
    assert first["args"] == [["image-0.png", "image-1.png"]]


def test_multi_instance_code_structure(seed, tmp_path):
    ns = seed.run(
        MULTI_INSTANCE.replace('entrypoint="process_images.py"', 'entrypoint="structure.py"')
    )
    job = seed.wait(ns["result"]["unique_job_name"])
    assert job["status"] == "Completed", job["failure_reason"]
    seed.run(DOWNLOADING_OUTPUTS, job["unique_job_name"])
    last = json.loads((tmp_path / "results/algo-4/partition.json").read_text())
    assert last["args"] == [3, 4]


def test_framework_specific_processing(seed):
    job = run_and_wait(seed, FRAMEWORK_SPECIFIC)
    assert job["image_uri"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:"
        "2.13.0-gpu-py310-cu118-ubuntu20.04-sagemaker"
    )


def test_jupyter_notebook_processing(seed, tmp_path):
    job = run_and_wait(seed, NOTEBOOK)
    seed.run(DOWNLOADING_OUTPUTS, job["unique_job_name"])
    assert (tmp_path / "results/analysis.txt").read_text() == "45"


def test_job_management(seed, capsys):
    job = run_and_wait(seed, NOTEBOOK)
    seed.run(GETTING_ALL_JOBS)
    seed.run(GETTING_JOB_STATUS, job["unique_job_name"])
    seed.run(DOWNLOADING_OUTPUTS, job["unique_job_name"])
    out = capsys.readouterr().out
    assert "Job: data-analysis - Status: Completed" in out
    assert "Started: " in out and "Completed: " in out
    assert "Downloaded: results/analysis.txt" in out


def test_complete_job_workflow(seed, tmp_path, capsys):
    ns = seed.run(COMPLETE_WORKFLOW)
    out = capsys.readouterr().out
    assert ns["status"] == "Completed"
    assert "Job status: Completed" in out and f"Downloaded {len(ns['files'])} files" in out
    assert (tmp_path / "results/model/weights.txt").read_text() == "trained"


def test_error_handling(seed, capsys):
    ns = seed.run(ERROR_HANDLING)
    assert seed.wait(ns["result"]["unique_job_name"])["status"] == "Completed"


def test_error_handling_catches_each_documented_error(seed, capsys, kaio_server):
    seed.run(
        ERROR_HANDLING.replace('instance_type="ml.g4dn.xlarge"', 'instance_type="ml.g4dn.huge"')
    )
    train = Path("code") / "train.py"
    train.unlink()
    seed.run(ERROR_HANDLING)
    train.write_text(TRAIN)
    revoke(kaio_server, seed.key)  # the token dies with the key; logging in again is refused
    seed.run(ERROR_HANDLING)
    out = capsys.readouterr().out
    assert "Configuration error: instance_type: unknown instance type 'ml.g4dn.huge'" in out
    assert "File not found: entrypoint 'train.py' not found in './code'" in out
    assert "Access denied - check your API key" in out


def revoke(server, key: str) -> None:
    from kaio_spec.server.auth import DISPLAY_PREFIX_LEN
    from kaio_spec.server.store import Store

    store = Store(server.data_dir)
    try:
        store.revoke_key(key[:DISPLAY_PREFIX_LEN])
    finally:
        store.close()
