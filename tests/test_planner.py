"""The planner: templates and their types, re-validation at the template's line, params, names,
job identity, limits, and the typed PlannedJob the executor consumes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kaio_spec
from kaio_spec import Action, ManifestError, Plan, PlannedJob, load_manifest, plan
from kaio_spec.catalog import JOB_NAME_RE
from kaio_spec.packaging import build_package, folder_content_hash
from kaio_spec.planner import SPEC_KEYS
from kaio_spec.planner.identity import identity_digest, job_name, slug

VALID = Path(__file__).parent / "manifests" / "valid"


def write(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {"train.py": "print('hi')\n"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    path = folder / "kaio.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def errors(path: Path) -> list[str]:
    """Every error of planning `path`, as `line:column: path: message`."""
    with pytest.raises(ManifestError) as caught:
        plan(path)
    return [f"{d.line}:{d.column}: {d.dotted_path}: {d.message}" for d in caught.value.errors]


# ---- the issue's example, as `kaio plan -o json` shows it ---------------------------------------


def test_the_issue_example_plans_to_the_documented_shape():
    p = plan(VALID / "cifar" / "kaio.yaml")
    doc = p.to_json()
    assert doc["manifest"] == "cifar"
    assert doc["file"] == str(VALID / "cifar" / "kaio.yaml")
    assert [j["key"] for j in doc["jobs"]] == ["prep"] + ["train"] * 4 + ["search"] * 20
    train = doc["jobs"][1]
    assert list(train) == ["key", "name", "job_name", "matrix", "spec", "action"]
    assert re.fullmatch(r"cifar-train-lr0-1-bs32-[0-9a-f]{8}", train["job_name"])
    assert train == {
        "key": "train",
        "name": "train-lr0.1-bs32",
        "job_name": train["job_name"],
        "matrix": {"lr": 0.1, "batch_size": 32},
        "spec": {
            "directory": str((VALID / "cifar" / "train").resolve()),
            "entrypoint": "train.py",
            "instance_type": "ml.g4dn.xlarge",
            "instance_count": 1,
            "volume_size_gb": 10,
            "framework": "pytorch",
            "framework_version": "2.1.0",
            "max_runtime_hours": 2,
            "env": {"DATASET": "cifar10"},
            # the cell's values, then the job's own params (issue 13: a cell is never lost)
            "params": {"lr": 0.1, "batch_size": 32},
            "retries": 1,
        },
        "action": "create",
    }
    assert list(train["spec"]) == list(SPEC_KEYS)
    assert doc["jobs"][0]["matrix"] == {} and doc["jobs"][0]["name"] == "prep"
    assert [j["name"] for j in doc["jobs"][1:5]] == [
        "train-lr0.1-bs32",
        "train-lr0.01-bs32",
        "train-lr0.01-bs64",
        "train-lr0.001-bs128",
    ]
    json.dumps(doc, allow_nan=False)  # plain JSON data throughout


def test_plan_takes_a_path_or_a_loaded_manifest_and_is_public():
    m = load_manifest(VALID / "cifar" / "kaio.yaml")
    by_manifest = plan(m)
    assert isinstance(by_manifest, Plan) and by_manifest.manifest is m
    assert [j.job_name for j in by_manifest] == [j.job_name for j in plan(m.path)]
    assert len(by_manifest) == 25
    assert all(isinstance(j, PlannedJob) and j.action is Action.CREATE for j in by_manifest)
    for name in ("plan", "Plan", "PlannedJob", "Action"):
        assert name in kaio_spec.__all__


# ---- templates -------------------------------------------------------------------------------------


TYPES = """\
    version: 1
    name: types
    vars: {ds: cifar, rate: 0.00001}
    jobs:
      t:
        name: "t-lr{{ matrix.lr }}-{{ matrix.s }}"
        instance_count: "{{ matrix.n }}"
        max_runtime_hours: "{{ matrix.h }}"
        env:
          LR: "{{ matrix.lr }}"
          N: "{{ matrix.n }}"
          RATE: "{{ vars.rate }}"
        params:
          lr: "{{ matrix.lr }}"
          s: "{{ matrix.s }}"
          n: "{{ matrix.n }}"
          text: "n={{ matrix.n }}"
          list: ["{{ matrix.n * 2 }}", "{{ vars.ds }}", 3]
          whole: "{{ matrix }}"
          none: "{{ none }}"
        matrix:
          lr: [0.00001]
          n: [2]
          h: [0.5]
          s: ["007"]
    """


def test_a_whole_template_keeps_the_type_of_what_it_renders(tmp_path):
    [job] = plan(write(tmp_path, TYPES)).jobs
    assert job.spec["instance_count"] == 2 and type(job.spec["instance_count"]) is int
    assert job.spec["max_runtime_hours"] == 0.5
    params = job.params
    assert params["lr"] == 1e-05 and type(params["lr"]) is float
    assert params["s"] == "007"  # a string stays a string, even one that looks like a number
    assert params["n"] == 2
    assert params["text"] == "n=2"  # text around a template makes a string
    assert params["list"] == [4, "cifar", 3]
    assert params["whole"] == {"lr": 1e-05, "n": 2, "h": 0.5, "s": "007"}
    assert params["none"] is None
    assert type(params["whole"]) is dict  # plain data, for params.json
    json.loads(job.params_json())


def test_env_values_are_text_and_floats_print_as_written(tmp_path):
    [job] = plan(write(tmp_path, TYPES)).jobs
    assert job.env == {"LR": "0.00001", "N": "2", "RATE": "0.00001"}
    assert job.name == "t-lr0.00001-007"


def test_the_template_context(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: ctx
        vars: {dataset: {name: cifar10, splits: [train, test]}}
        settings: {outputs: "results/{{ job.key }}/{{ job.index }}-{{ job.name }}"}
        jobs:
          first: {}
          t:
            env:
              MANIFEST: "{{ manifest.name }}"
              KEY: "{{ job.key }}"
              INDEX: "{{ job.index }}"
              NAME: "{{ job.name }}"
              DATA: "{{ vars.dataset.name }}-{{ vars.dataset.splits | join('+') }}"
              ITEMS: "{{ matrix.items }}"
            matrix:
              items: [a, b]
        """,
    )
    jobs = plan(path).jobs
    assert jobs[0].outputs == tmp_path / "results" / "first" / "0-first"
    t1 = jobs[2]
    assert t1.env == {
        "MANIFEST": "ctx",
        "KEY": "t",
        "INDEX": "1",
        "NAME": "t-itemsb",
        "DATA": "cifar10-train+test",
        "ITEMS": "b",  # a matrix key named like a dict method is the value
    }
    assert t1.outputs == tmp_path / "results" / "t" / "1-t-itemsb"


def test_default_outputs_are_per_manifest_and_job_name(tmp_path):
    [job] = plan(write(tmp_path, "version: 1\nname: o\njobs:\n  t: {}\n")).jobs
    assert job.outputs == tmp_path / "outputs" / "o" / "t"


def test_an_undefined_name_points_at_the_template_line(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: undef
        jobs:
          train:
            name: "train-lr{{ matrix.lrr }}"
            env: {WHO: "{{ user }}"}
            matrix:
              lr: [0.1, 0.01]
        """,
    )
    assert errors(path) == [
        "5:11: jobs.train.name: matrix has no 'lrr'; did you mean 'lr'? "
        "(in 'train-lr{{ matrix.lrr }}' for lr=0.1)",
        "6:16: jobs.train.env.WHO: 'user' is undefined (templates can use 'matrix', 'vars', "
        "'manifest' and 'job') (in '{{ user }}' for lr=0.1)",
    ]


def test_a_syntax_error_points_at_the_template(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: syntax
        jobs:
          t:
            params: {x: "{{ matrix.a + }}"}
            matrix: {a: [1]}
        """,
    )
    [message] = errors(path)
    # the column of the '}}' the parser refused, inside the quoted template (issue 13)
    assert message.startswith("5:32: jobs.t.params.x: template syntax error: ")


def test_a_syntax_error_in_a_block_or_plain_template_points_inside_it(tmp_path):
    path = write(
        tmp_path,
        """        version: 1
        name: syntax
        jobs:
          t:
            name: lr{{ matrix.a }}{{ 'x }}
            env:
              A: |
                first line {{ matrix.a }}
                  second {{ matrix.a | }}
            matrix: {a: [1]}
        """,
    )
    assert [m.split(" template")[0] for m in errors(path)] == [
        "5:30: jobs.t.name:",  # where the lexer met the unclosed quote
        "9:32: jobs.t.env.A:",  # the '}}' where a filter's name should be
    ]


def test_the_sandbox_refuses_what_a_manifest_has_no_business_doing(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: sandbox
        jobs:
          t:
            env:
              A: "{{ matrix.a.__class__.__mro__ }}"
              B: "{{ 'x' * 10000000 }}"
              C: "{{ matrix.l.append(1) }}"
            matrix: {a: [1], l: [[1]]}
        """,
    )
    found = errors(path)
    assert len(found) == 3
    assert found[0].startswith("6:10: jobs.t.env.A: ") and "unsafe" in found[0]
    assert found[1].startswith("7:10: jobs.t.env.B: not allowed in a template: the result")
    assert found[2].startswith("8:10: jobs.t.env.C: ") and "unsafe" in found[2]


def test_rendered_values_are_validated_again_at_the_template_line(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: revalid
        jobs:
          t:
            instance_count: "{{ matrix.n }}"
            retries: "{{ matrix.r }}"
            directory: "{{ matrix.d }}"
            instance_type: "{{ matrix.it }}"
            matrix:
              n: [1, 0]
              r: [1, "two"]
              d: [src, nowhere]
              it: [ml.m5.large, ml.g4dn.xlarg]
        """,
        files={"src/train.py": ""},
    )
    found = errors(path)
    by_field = {m.split(": ")[1]: m for m in found}
    assert by_field["jobs.t.instance_count"].startswith(
        "5:21: jobs.t.instance_count: 0 is less than the minimum of 1 (rendered from "
        "'{{ matrix.n }}' for n=0, "
    )
    assert by_field["jobs.t.retries"].startswith(
        "6:14: jobs.t.retries: expected an integer, got 'two' (rendered from '{{ matrix.r }}' for "
    )
    assert by_field["jobs.t.directory"].startswith(
        "7:16: jobs.t.directory: 'nowhere' is not an existing folder (relative to the manifest's "
        "folder) (rendered from '{{ matrix.d }}' for "
    )
    assert by_field["jobs.t.instance_type"].startswith(
        "8:20: jobs.t.instance_type: unknown instance type 'ml.g4dn.xlarg'; did you mean "
        "'ml.g4dn.xlarge'? (rendered from '{{ matrix.it }}' for "
    )
    assert len(found) == 4


def test_a_template_inherited_from_defaults_is_reported_where_defaults_wrote_it(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: inherit
        defaults:
          volume_size_gb: "{{ matrix.gb }}"
        jobs:
          t:
            matrix: {gb: [10, 80]}
        """,
    )
    assert errors(path) == [
        "4:19: defaults.volume_size_gb: 80 is greater than the maximum of 50 "
        "(rendered from '{{ matrix.gb }}' for gb=80)"
    ]


def test_rendered_env_is_checked_against_the_platform_limits(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: envsize
        jobs:
          t:
            env: {BIG: "{{ 'x' * matrix.n }}"}
            matrix: {n: [10, 5000]}
        """,
    )
    assert errors(path) == ["5:5: jobs.t.env: at most 4096 bytes in all, got 5003 (for n=5000)"]


def test_params_must_render_to_json_data(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: pj
        jobs:
          t:
            params: {r: "{{ range(3) }}"}
        """,
    )
    assert errors(path) == [
        "5:17: jobs.t.params.r: renders to a range, which is not JSON data (in '{{ range(3) }}')"
    ]


def test_an_error_repeated_by_every_cell_is_reported_once(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: once
        jobs:
          t:
            env: {X: "{{ matrix.nope }}"}
            matrix: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
        """,
    )
    assert len(errors(path)) == 1


def test_every_error_of_every_job_at_once_in_file_order(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: many
        jobs:
          b:
            name: "{{ nope }}"
            instance_count: "{{ matrix.n }}"
            matrix: {n: [0]}
          a:
            params: {x: "{{ 1 / 0 }}"}
        """,
    )
    found = errors(path)
    assert [m.split(":")[0] for m in found] == ["5", "6", "9"]
    assert (
        found[2] == "9:17: jobs.a.params.x: ZeroDivisionError: division by zero (in '{{ 1 / 0 }}')"
    )


# ---- params ------------------------------------------------------------------------------------


def test_params_default_to_the_cell_merged_over_defaults_params(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: params
        defaults:
          params: {epochs: 10, lr: 1}
        jobs:
          plain: {}
          swept:
            matrix: {lr: [0.1]}
          own:
            params: {bs: "{{ matrix.bs }}"}
            matrix: {bs: [32]}
        """,
    )
    plain, swept, own = plan(path).jobs
    assert plain.params == {"epochs": 10, "lr": 1}
    assert swept.params == {"epochs": 10, "lr": 0.1}  # the cell wins over defaults
    assert own.params == {"epochs": 10, "lr": 1, "bs": 32}  # own params: no cell merged in
    assert plan(write(tmp_path / "x", "version: 1\nname: e\njobs:\n  t: {}\n")).jobs[0].params == {}


# ---- names ---------------------------------------------------------------------------------------


def test_default_names_are_the_key_and_the_values_as_written(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: names
        jobs:
          plain: {}
          train:
            matrix:
              lr: [0.00001, 1.0e-3, .5]
              flag: [true]
              model: ["org/bert"]
        """,
    )
    assert [j.name for j in plan(path).jobs] == [
        "plain",
        "train-lr0.00001-flagtrue-modelorg_bert",
        "train-lr1.0e-3-flagtrue-modelorg_bert",
        "train-lr.5-flagtrue-modelorg_bert",
    ]
    assert [j.matrix_text for j in plan(path).jobs][1] == "lr=0.00001 flag=true model=org/bert"


def test_two_jobs_with_one_name_is_an_error_naming_both(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: dup
        jobs:
          train:
            name: "train-{{ matrix.lr }}"
            matrix:
              lr: [0.1, 0.2]
              bs: [16, 32]
          other:
            name: train-0.2
        """,
    )
    assert errors(path) == [
        "5:11: jobs.train.name: two jobs are named 'train-0.1': jobs.train[0] (lr=0.1, bs=16) "
        "and jobs.train[1] (lr=0.1, bs=32); give each job its own name",
        "5:11: jobs.train.name: two jobs are named 'train-0.2': jobs.train[2] (lr=0.2, bs=16) "
        "and jobs.train[3] (lr=0.2, bs=32); give each job its own name",
        "10:11: jobs.other.name: two jobs are named 'train-0.2': jobs.train[2] (lr=0.2, bs=16) "
        "and jobs.other; give each job its own name",
    ]


def test_identical_include_entries_collide_on_their_default_name(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: dup
        jobs:
          t:
            matrix:
              include: [{a: 1}, {a: 1}]
        """,
    )
    assert errors(path) == [
        "4:3: jobs.t: two jobs are named 't-a1': jobs.t[0] (a=1) and jobs.t[1] (a=1); "
        "give each job its own name"
    ]


def test_a_name_cannot_be_a_path(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: slash
        jobs:
          t:
            name: "{{ matrix.m }}"
            matrix: {m: [a/b]}
        """,
    )
    assert errors(path) == [
        "5:11: jobs.t.name: 'a/b' cannot be a job name: it names the job's outputs folder, "
        "so no '/' or '\\'"
    ]


def test_two_jobs_downloading_to_one_folder_is_an_error(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: outs
        settings: {outputs: "out/{{ job.key }}"}
        jobs:
          t:
            matrix: {a: [1, 2]}
        """,
    )
    [message] = errors(path)
    assert message.startswith("3:21: settings.outputs: two jobs would download their outputs to ")
    assert message.endswith(
        "jobs.t[0] (a=1) and jobs.t[1] (a=2); settings.outputs must tell jobs apart "
        "(use {{ job.name }})"
    )


# ---- job names and identity ----------------------------------------------------------------------


def test_job_names_follow_the_protocol_and_end_in_a_hash(tmp_path):
    long_value = "x" * 80
    path = write(
        tmp_path,
        f"""\
        version: 1
        name: a-rather-long-manifest-n
        jobs:
          t:
            matrix:
              v: ["{long_value}-one", "{long_value}-two", "Mixed_Case.Value"]
        """,
    )
    jobs = plan(path).jobs
    for job in jobs:
        assert JOB_NAME_RE.match(job.job_name) and len(job.job_name) <= 63
        assert job.job_name.startswith("a-rather-long-manifest-n-")
        assert re.search(r"-[0-9a-f]{8}$", job.job_name)
    # Cut in the middle: the tail keeps what tells the cells apart.
    assert jobs[0].job_name[:-9].endswith("-one") and jobs[1].job_name[:-9].endswith("-two")
    assert jobs[2].job_name.startswith("a-rather-long-manifest-n-t-vmixed-case-value-")


def test_golden_job_name_and_slug():
    assert slug("Train_LR=0.1 / bs32!") == "train-lr-0-1-bs32"
    digest = identity_digest({"manifest": "cifar", "name": "train-lr0.1-bs32", "n": [1, 0.5]})
    assert digest == "5d9e6b06a9d80c326612486935ba1400270d79ab093cfc39fa5212c45c22be81"
    assert job_name("cifar", "train-lr0.1-bs32", digest) == "cifar-train-lr0-1-bs32-5d9e6b06"
    long = job_name("m", "n" * 100, digest)
    assert len(long) == 63 and long.startswith("m-nnn") and long.endswith("-5d9e6b06")


IDENTITY = """\
    version: 1
    name: ident
    jobs:
      a:
        directory: a
        retries: {retries}
        env: {{SECRET: "{secret}"}}
        matrix: {{lr: [{lrs}]}}
      b:
        directory: b
    """


def _job_names(path: Path) -> dict[str, str]:
    return {j.name: j.job_name for j in plan(path).jobs}


def _identity_project(folder: Path, **values) -> Path:
    fields = {"retries": 0, "secret": "s3cret", "lrs": "0.1, 0.01"} | values
    return write(
        folder,
        IDENTITY.format(**fields),
        files={"a/train.py": "print('a')\n", "b/train.py": "print('b')\n"},
    )


def test_the_same_manifest_and_code_give_the_same_job_names_even_elsewhere(tmp_path):
    path = _identity_project(tmp_path / "one")
    first = _job_names(path)
    assert _job_names(path) == first
    shutil.copytree(tmp_path / "one", tmp_path / "clone" / "deeper")
    assert _job_names(tmp_path / "clone" / "deeper" / "kaio.yaml") == first


def test_changing_a_value_changes_only_the_jobs_it_affects(tmp_path):
    before = _job_names(_identity_project(tmp_path / "one"))
    after = _job_names(_identity_project(tmp_path / "two", lrs="0.1, 0.02"))
    assert after["a-lr0.1"] == before["a-lr0.1"] and after["b"] == before["b"]
    assert "a-lr0.01" not in after and "a-lr0.02" in after


def test_changing_code_changes_the_jobs_over_that_folder_only(tmp_path):
    path = _identity_project(tmp_path)
    before = _job_names(path)
    (tmp_path / "a" / "train.py").write_text("print('a, changed')\n")
    after = _job_names(path)
    assert after["b"] == before["b"]
    assert after["a-lr0.1"] != before["a-lr0.1"] and after["a-lr0.01"] != before["a-lr0.01"]


def test_env_values_count_but_never_show_and_retries_do_not_count(tmp_path):
    before = _job_names(_identity_project(tmp_path / "one"))
    secret = _job_names(_identity_project(tmp_path / "two", secret="other"))
    retries = _job_names(_identity_project(tmp_path / "three", retries=3))
    assert secret["a-lr0.1"] != before["a-lr0.1"] and secret["b"] == before["b"]
    assert retries == before  # more retries must not resubmit what already ran
    assert all("s3cret" not in name for name in before.values())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.from_regex(r"[A-Za-z0-9 ._-]{1,30}", fullmatch=True).filter(lambda s: s.strip() == s),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    st.lists(st.integers(-5, 1000), min_size=1, max_size=4, unique=True),
)
def test_names_and_job_names_are_unique_and_valid(words, numbers):
    words_yaml = ", ".join(json.dumps(w) for w in words)
    text = f"""\
        version: 1
        name: prop
        jobs:
          t:
            matrix:
              w: [{words_yaml}]
              n: {numbers}
        """
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), text)
        try:
            jobs = plan(path).jobs
        except ManifestError as e:
            # Only an honest collision may fail ("a-n1" with n=2 and ... ), reported as such.
            assert all(d.message.startswith("two jobs ") for d in e.errors)
            return
        again = [j.job_name for j in plan(path).jobs]
    assert len(jobs) == len(words) * len(numbers)
    assert len({j.name for j in jobs}) == len(jobs)
    assert len({j.job_name for j in jobs}) == len(jobs)
    assert [j.job_name for j in jobs] == again
    assert all(JOB_NAME_RE.match(j.job_name) for j in jobs)


# ---- limits -------------------------------------------------------------------------------------


def test_more_jobs_than_max_jobs_is_refused_before_anything_is_rendered(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: limit
        settings: {max_jobs: 3}
        jobs:
          ok: {}
          big:
            env: {X: "{{ undefined_here }}"}
            matrix: {a: [1, 2, 3]}
        """,
    )
    # Only the limit is reported: the broken template was never rendered.
    assert errors(path) == [
        "6:3: jobs.big: this job makes 3 jobs, 4 with the 1 before it; settings.max_jobs is 3; "
        "raise max_jobs or make fewer combinations"
    ]


def test_the_default_limit_is_1000_and_a_huge_matrix_is_refused_at_once(tmp_path):
    values = list(range(1000))
    path = write(
        tmp_path,
        f"""\
        version: 1
        name: huge
        jobs:
          t:
            matrix: {{a: {values}, b: {values}, c: {values}, d: {values}}}
        """,
    )
    assert errors(path) == [
        "4:3: jobs.t: this job makes 1000000000000 jobs; settings.max_jobs is 1000 (the default); "
        "raise max_jobs or make fewer combinations"
    ]


def test_exactly_max_jobs_is_fine(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: exact
        settings: {max_jobs: 4}
        jobs:
          t:
            matrix: {a: [1, 2], b: [1, 2]}
        """,
    )
    assert len(plan(path)) == 4


# ---- content hash --------------------------------------------------------------------------------


def test_folder_content_hash_is_what_build_package_reports(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "train.py").write_text("print('x')\n")
    (tmp_path / "pkg" / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "pkg" / "requirements.txt").write_text("numpy==1.26.0\n")
    (tmp_path / "pkg" / ".kaioignore").write_text("*.log\n")
    (tmp_path / "pkg" / "run.log").write_text("ignored\n")
    (tmp_path / "pkg" / "tool.sh").write_text("#!/bin/sh\n")
    (tmp_path / "pkg" / "tool.sh").chmod(0o755)
    (tmp_path / "pkg" / "link.py").symlink_to("train.py")
    with build_package(tmp_path / "pkg", "train.py") as package:
        assert folder_content_hash(tmp_path / "pkg", "train.py") == package.content_hash
    [job] = plan(write(tmp_path, "version: 1\nname: h\njobs:\n  t: {directory: pkg}\n")).jobs
    assert job.content_hash == folder_content_hash(tmp_path / "pkg")
    (tmp_path / "pkg" / "run.log").write_text("ignored, and changed\n")
    [again] = plan(tmp_path / "kaio.yaml").jobs
    assert again.job_name == job.job_name  # an ignored file is not part of the job


def test_an_entrypoint_left_out_by_kaioignore_is_an_error_at_the_entrypoint(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: ignored
        jobs:
          t:
            entrypoint: main.py
        """,
        files={"main.py": "", ".kaioignore": "main.py\n"},
    )
    [message] = errors(path)
    assert message.startswith("5:17: jobs.t.entrypoint: 'main.py' is left out of the package")


# ---- what the executor gets ------------------------------------------------------------------------


def test_a_planned_job_gives_the_executor_what_it_submits(tmp_path):
    [job] = plan(write(tmp_path, TYPES)).jobs
    assert job.directory == tmp_path and job.entrypoint == "train.py"
    assert job.retries == 0
    assert job.labels == {
        "manifest": "types",
        "key": "t",
        "name": "t-lr0.00001-007",
        "cell": '{"lr":1e-05,"n":2,"h":0.5,"s":"007"}',
    }
    args = job.submit_arguments()
    assert args == {
        "job_name": job.job_name,
        "instance_type": "ml.m5.large",
        "instance_count": 2,
        "volume_size_gb": 5,
        "entrypoint": "train.py",
        "framework": None,
        "framework_version": None,
        "env": job.env,
        "labels": job.labels,
        "max_runtime_hours": 0.5,
    }
    assert json.loads(job.params_json()) == job.params
    assert job.to_json()["action"] == "create" and str(Action.CREATE) == "create"


def test_labels_stay_within_the_protocol_limits(tmp_path):
    big = "y" * 5000
    path = write(
        tmp_path,
        f"""\
        version: 1
        name: labels
        jobs:
          t:
            name: "t-{{{{ job.index }}}}"
            matrix: {{v: ["{big}", "{big}z"]}}
        """,
    )
    for job in plan(path).jobs:
        assert len(json.dumps(job.labels).encode()) <= 4096
        assert job.labels["cell"].startswith("sha256:")


def test_the_executor_can_set_actions_on_frozen_jobs(tmp_path):
    p = plan(write(tmp_path, TYPES))
    job = p.jobs[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "other"  # type: ignore[misc]
    retried = dataclasses.replace(job, action=Action.RETRY)
    assert retried.to_json()["action"] == "retry" and retried.job_name == job.job_name


def test_mappings_in_templates_serialise_and_iterate(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: maps
        jobs:
          t:
            env:
              JSON: "{{ matrix | tojson }}"
              KEYS: "{% for k, v in matrix.items() %}{{ k }}={{ v }};{% endfor %}"
              HAS: "{{ 'a' in matrix }}-{{ matrix | length }}"
            matrix: {a: [1], b: [0.00001]}
        """,
    )
    [job] = plan(path).jobs
    assert json.loads(job.env["JSON"]) == {"a": 1, "b": 1e-05}
    assert job.env["KEYS"] == "a=1;b=0.00001;"
    assert job.env["HAS"] == "True-2"


def test_the_sandbox_caps_ranges(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: ranges
        jobs:
          t:
            params: {r: "{{ range(1000000) | list }}"}
        """,
    )
    [message] = errors(path)
    assert message.startswith("5:17: jobs.t.params.r: OverflowError: Range too big.")
