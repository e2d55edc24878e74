"""The corpus of invalid manifests: each case is a kaio.yaml and the exact errors it must give,
as `kaio validate` prints them (file:line:column: path: message), all of them, in file order.

Every case runs in a folder holding `train.py` (the default entrypoint) and an empty `code/`
folder, so that only what the case means to break is broken."""

from __future__ import annotations

import pytest

from kaio_spec import ManifestError, load_manifest

H = "version: 1\nname: demo\n"


def case(case_id: str, text: str, *errors: str):
    return pytest.param(text, list(errors), id=case_id)


CASES = [
    case(
        "yaml_syntax_unclosed_flow",
        H + "jobs:\n  train: {entrypoint: train.py\n",
        "kaio.yaml:5:1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow mapping at line 4, column 10)",
    ),
    case(
        "yaml_tab_indent",
        H + "jobs:\n\ttrain: {}\n",
        "kaio.yaml:4:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token); indent with spaces, not tabs",
    ),
    case(
        "yaml_bad_indent",
        H + "jobs:\n  train:\n    retries: 1\n   volume_size_gb: 5\n",
        "kaio.yaml:6:4: invalid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping at line 4, column 3); check the indentation",
    ),
    case(
        "yaml_two_documents",
        H + "jobs: {train: {}}\n---\nversion: 1\n",
        "kaio.yaml:4:1: invalid YAML: expected a single document in the stream, but found another document (the first starts at line 1, column 1)",
    ),
    case(
        "yaml_undefined_alias",
        H + "jobs:\n  train: *base\n",
        "kaio.yaml:4:10: invalid YAML: found undefined alias 'base'",
    ),
    case(
        "empty_file",
        "",
        "kaio.yaml:1:1: the file is empty; a manifest needs version, name and jobs",
    ),
    case(
        "comments_only",
        "# nothing here yet\n",
        "kaio.yaml:1:1: the file is empty; a manifest needs version, name and jobs",
    ),
    case(
        "top_level_list",
        "- version: 1\n",
        "kaio.yaml:1:1: a manifest must be a mapping (version, name, jobs), got a list",
    ),
    case(
        "top_level_scalar",
        "hello\n",
        "kaio.yaml:1:1: a manifest must be a mapping (version, name, jobs), got 'hello'",
    ),
    case(
        "missing_required_keys",
        "version: 1\n",
        "kaio.yaml:1:1: missing required key 'name'",
        "kaio.yaml:1:1: missing required key 'jobs'",
    ),
    case(
        "unknown_top_key_typo",
        H + "job:\n  train: {}\n",
        "kaio.yaml:1:1: missing required key 'jobs'",
        "kaio.yaml:3:1: job: unknown key 'job'; did you mean 'jobs'?",
    ),
    case(
        "unsupported_version",
        "version: 2\nname: demo\njobs: {train: {}}\n",
        "kaio.yaml:1:10: version: 2 is not a supported version: this kaio reads version 1",
    ),
    case(
        "version_as_string",
        "version: '1'\nname: demo\njobs: {train: {}}\n",
        "kaio.yaml:1:10: version: '1' is not a supported version: this kaio reads version 1",
    ),
    case(
        "name_uppercase",
        "version: 1\nname: Demo_1\njobs: {train: {}}\n",
        "kaio.yaml:2:7: name: 'Demo_1' must be lowercase letters, digits and '-', starting with a letter or digit",
    ),
    case(
        "name_too_long",
        "version: 1\nname: a-very-long-manifest-name-indeed\njobs: {train: {}}\n",
        "kaio.yaml:2:7: name: 'a-very-long-manifest-name-indeed' is longer than 24 characters",
    ),
    case(
        "name_number",
        "version: 1\nname: 123\njobs: {train: {}}\n",
        'kaio.yaml:2:7: name: expected a string, got 123; quote it: "123"',
    ),
    case(
        "job_key_uppercase",
        H + "jobs:\n  Train: {}\n",
        "kaio.yaml:4:3: jobs.Train: 'Train' is not a valid job key: use lowercase letters, digits, '_' and '-', starting with a letter or digit",
    ),
    case(
        "job_key_leading_underscore",
        H + "jobs:\n  _train: {}\n",
        "kaio.yaml:4:3: jobs._train: '_train' is not a valid job key: use lowercase letters, digits, '_' and '-', starting with a letter or digit",
    ),
    case(
        "jobs_empty",
        H + "jobs: {}\n",
        "kaio.yaml:3:1: jobs: must not be an empty mapping",
    ),
    case(
        "jobs_null",
        H + "jobs:\n",
        "kaio.yaml:3:1: jobs: expected a mapping, got null (an empty value)",
    ),
    case(
        "job_null",
        H + "jobs:\n  train:\n",
        "kaio.yaml:4:3: jobs.train: expected a mapping, got null (an empty value)",
    ),
    case(
        "job_unknown_key_typo",
        H + "jobs:\n  train:\n    instnace_type: ml.m5.large\n",
        "kaio.yaml:5:5: jobs.train.instnace_type: unknown key 'instnace_type'; did you mean 'instance_type'?",
    ),
    case(
        "job_unknown_key_far",
        H + "jobs:\n  train:\n    gpus: 1\n",
        "kaio.yaml:5:5: jobs.train.gpus: unknown key 'gpus' (expected 'name', 'directory', 'entrypoint', 'instance_type', 'instance_count', 'volume_size_gb', 'framework', 'framework_version', 'max_runtime_hours', 'retries', 'env', 'params', 'inputs', 'matrix', 'sweep', 'metric' or 'needs')",
    ),
    case(
        "instance_type_typo",
        H + "jobs:\n  train:\n    instance_type: ml.g4dn.xlarg\n",
        "kaio.yaml:5:20: jobs.train.instance_type: unknown instance type 'ml.g4dn.xlarg'; did you mean 'ml.g4dn.xlarge'?",
    ),
    case(
        "instance_type_unknown_family",
        H + "jobs:\n  train:\n    instance_type: ml.p4d.24xlarge\n",
        "kaio.yaml:5:20: jobs.train.instance_type: unknown instance type 'ml.p4d.24xlarge'; did you mean 'ml.g4dn.4xlarge', 'ml.g4dn.2xlarge' or 'ml.p3.2xlarge'?",
    ),
    case(
        "instance_type_not_string",
        H + "jobs:\n  train:\n    instance_type: 5\n",
        "kaio.yaml:5:20: jobs.train.instance_type: expected an instance type such as 'ml.m5.large', got 5",
    ),
    case(
        "instance_count_zero",
        H + "jobs:\n  train:\n    instance_count: 0\n",
        "kaio.yaml:5:21: jobs.train.instance_count: 0 is less than the minimum of 1",
    ),
    case(
        "instance_count_word",
        H + "jobs:\n  train:\n    instance_count: abc\n",
        "kaio.yaml:5:21: jobs.train.instance_count: expected an integer, got 'abc'",
    ),
    case(
        "instance_count_bool",
        H + "jobs:\n  train:\n    instance_count: true\n",
        "kaio.yaml:5:21: jobs.train.instance_count: expected an integer, got true",
    ),
    case(
        "volume_too_big",
        H + "jobs:\n  train:\n    volume_size_gb: 80\n",
        "kaio.yaml:5:21: jobs.train.volume_size_gb: 80 is greater than the maximum of 50",
    ),
    case(
        "volume_zero",
        H + "jobs:\n  train:\n    volume_size_gb: 0\n",
        "kaio.yaml:5:21: jobs.train.volume_size_gb: 0 is less than the minimum of 1",
    ),
    case(
        "volume_fraction",
        H + "jobs:\n  train:\n    volume_size_gb: 10.5\n",
        "kaio.yaml:5:21: jobs.train.volume_size_gb: expected an integer, got 10.5",
    ),
    case(
        "max_runtime_zero",
        H + "jobs:\n  train:\n    max_runtime_hours: 0\n",
        "kaio.yaml:5:24: jobs.train.max_runtime_hours: 0 must be greater than 0",
    ),
    case(
        "max_runtime_infinite",
        H + "jobs:\n  train:\n    max_runtime_hours: .inf\n",
        "kaio.yaml:5:24: jobs.train.max_runtime_hours: '.inf' is not a finite number",
    ),
    case(
        "retries_negative",
        H + "jobs:\n  train:\n    retries: -1\n",
        "kaio.yaml:5:14: jobs.train.retries: -1 is less than the minimum of 0",
    ),
    case(
        "framework_typo",
        H + "jobs:\n  train:\n    framework: pytroch\n",
        "kaio.yaml:5:16: jobs.train.framework: 'pytroch' is not one of 'pytorch', 'tensorflow' or 'sklearn'; did you mean 'pytorch'?",
    ),
    case(
        "framework_version_number",
        H + "jobs:\n  train:\n    framework: pytorch\n    framework_version: 2.1\n",
        'kaio.yaml:6:24: jobs.train.framework_version: expected a string, got 2.1; quote it: "2.1"',
    ),
    case(
        "entrypoint_with_folder",
        H + "jobs:\n  train:\n    entrypoint: src/train.py\n",
        "kaio.yaml:5:17: jobs.train.entrypoint: 'src/train.py' must be a .py or .ipynb file name at the top of directory, with no folder part",
    ),
    case(
        "entrypoint_shell_script",
        H + "jobs:\n  train:\n    entrypoint: run.sh\n",
        "kaio.yaml:5:17: jobs.train.entrypoint: 'run.sh' must be a .py or .ipynb file name at the top of directory, with no folder part",
    ),
    case(
        "entrypoint_missing_file",
        H + "jobs:\n  train:\n    entrypoint: trian.py\n",
        "kaio.yaml:5:17: jobs.train.entrypoint: 'trian.py' is not in folder '.'; did you mean 'train.py'?",
    ),
    case(
        "entrypoint_default_missing",
        H + "defaults:\n  directory: code\njobs:\n  train: {}\n",
        "kaio.yaml:6:3: jobs.train: no entrypoint given, and the default 'train.py' is not in folder 'code'",
    ),
    case(
        "entrypoint_from_defaults_missing",
        H + "defaults:\n  entrypoint: prep.py\njobs:\n  train: {}\n",
        "kaio.yaml:4:15: defaults.entrypoint: 'prep.py' is not in folder '.' (for job 'train')",
    ),
    case(
        "directory_missing",
        H + "jobs:\n  train:\n    directory: ./trian\n",
        "kaio.yaml:5:16: jobs.train.directory: './trian' is not an existing folder (relative to the manifest's folder)",
    ),
    case(
        "directory_is_file",
        H + "jobs:\n  train:\n    directory: train.py\n",
        "kaio.yaml:5:16: jobs.train.directory: 'train.py' is a file; directory must be a folder",
    ),
    case(
        "directory_with_nul_byte",
        H + 'jobs:\n  train:\n    directory: "a\\0b"\n',
        "kaio.yaml:5:16: jobs.train.directory: 'a\\x00b' is not an existing folder (relative to the manifest's folder)",
    ),
    case(
        "env_reserved_prefix",
        H + "jobs:\n  train:\n    env:\n      SM_HOSTS: a\n",
        "kaio.yaml:6:7: jobs.train.env.SM_HOSTS: 'SM_HOSTS' starts with a reserved prefix (SM_, SAGEMAKER_, KAIO_)",
    ),
    case(
        "env_reserved_name",
        H + "jobs:\n  train:\n    env:\n      PATH: /bin\n",
        "kaio.yaml:6:7: jobs.train.env.PATH: 'PATH' is reserved by the platform; choose another name",
    ),
    case(
        "env_bad_name",
        H + "jobs:\n  train:\n    env:\n      1LR: '0.1'\n",
        "kaio.yaml:6:7: jobs.train.env.1LR: '1LR' is not a valid variable name: use letters, digits and '_', not starting with a digit",
    ),
    case(
        "env_number_value",
        H + "jobs:\n  train:\n    env:\n      LR: 0.00001\n",
        'kaio.yaml:6:11: jobs.train.env.LR: expected a string, got 0.00001; quote it: "0.00001"',
    ),
    case(
        "env_not_mapping",
        H + "jobs:\n  train:\n    env: [LR=1]\n",
        "kaio.yaml:5:5: jobs.train.env: expected a mapping, got a list",
    ),
    case(
        "settings_unknown_key",
        H + "settings:\n  max_paralel: 2\njobs: {train: {}}\n",
        "kaio.yaml:4:3: settings.max_paralel: unknown key 'max_paralel'; did you mean 'max_parallel'?",
    ),
    case(
        "settings_yes_is_not_bool",
        H + "settings:\n  fail_fast: yes\njobs: {train: {}}\n",
        "kaio.yaml:4:14: settings.fail_fast: expected true or false, got 'yes'",
    ),
    case(
        "settings_bounds",
        H + "settings:\n  max_parallel: 0\n  poll_seconds: 0\n  max_jobs: -5\njobs: {train: {}}\n",
        "kaio.yaml:4:17: settings.max_parallel: 0 is less than the minimum of 1",
        "kaio.yaml:5:17: settings.poll_seconds: 0 must be greater than 0",
        "kaio.yaml:6:13: settings.max_jobs: -5 is less than the minimum of 1",
    ),
    case(
        "settings_template_not_allowed",
        H + "settings:\n  max_parallel: '{{ vars.n }}'\njobs: {train: {}}\n",
        "kaio.yaml:4:17: settings.max_parallel: expected an integer, got '{{ vars.n }}'",
    ),
    case(
        "defaults_name_not_allowed",
        H + "defaults:\n  name: x\n  matrix: {a: [1]}\njobs: {train: {}}\n",
        "kaio.yaml:4:3: defaults.name: unknown key 'name': name belongs to each job (jobs.<key>.name), not to defaults",
        "kaio.yaml:5:3: defaults.matrix: unknown key 'matrix': matrix belongs to each job (jobs.<key>.matrix), not to defaults",
    ),
    case(
        "duplicate_job_key",
        H + "jobs:\n  train: {}\n  train: {retries: 1}\n",
        "kaio.yaml:5:3: jobs.train: duplicate key 'train' (first at line 4, column 3)",
    ),
    case(
        "duplicate_nested_key",
        H + "jobs:\n  train:\n    retries: 1\n    volume_size_gb: 5\n    retries: 2\n",
        "kaio.yaml:7:5: jobs.train.retries: duplicate key 'retries' (first at line 5, column 5)",
    ),
    case(
        "python_tag",
        H + "jobs:\n  train:\n    env: !!python/object/apply:os.system ['echo hi']\n",
        "kaio.yaml:5:10: jobs.train.env: tag !!python/object/apply:os.system is not allowed: manifests are loaded as plain data only (safe loading)",
    ),
    case(
        "custom_tag",
        H + "vars:\n  when: !now\njobs: {train: {}}\n",
        "kaio.yaml:4:9: vars.when: tag !now is not allowed: manifests hold plain values: strings, numbers, true/false, lists and mappings",
    ),
    case(
        "binary_tag",
        H + "vars:\n  blob: !!binary aGVsbG8=\njobs: {train: {}}\n",
        "kaio.yaml:4:9: vars.blob: tag !!binary is not allowed: manifests hold plain values: strings, numbers, true/false, lists and mappings",
    ),
    case(
        "merge_not_mapping",
        H + "jobs:\n  train:\n    <<: 5\n",
        "kaio.yaml:5:9: jobs.train: '<<' merges a mapping or a list of mappings",
    ),
    case(
        "alias_cycle",
        H + "vars: &v\n  self: *v\njobs: {train: {}}\n",
        "kaio.yaml:4:3: vars.self: an alias refers to a value that contains it (a cycle)",
    ),
    case(
        "complex_key",
        H + "vars:\n  ? [a, b]\n  : 1\njobs: {train: {}}\n",
        "kaio.yaml:4:5: vars: a key must be a plain value, not a list",
    ),
    case(
        "matrix_list",
        H + "jobs:\n  train:\n    matrix: [lr, bs]\n",
        "kaio.yaml:5:5: jobs.train.matrix: expected a mapping, got a list",
    ),
    case(
        "matrix_empty",
        H + "jobs:\n  train:\n    matrix: {}\n",
        "kaio.yaml:5:5: jobs.train.matrix: must not be an empty mapping",
    ),
    case(
        "matrix_value_not_list",
        H + "jobs:\n  train:\n    matrix:\n      lr: 0.1\n",
        "kaio.yaml:6:11: jobs.train.matrix.lr: expected a list, got 0.1",
    ),
    case(
        "matrix_value_empty_list",
        H + "jobs:\n  train:\n    matrix:\n      lr: []\n",
        "kaio.yaml:6:7: jobs.train.matrix.lr: must not be an empty list",
    ),
    case(
        "matrix_duplicate_value",
        H + "jobs:\n  train:\n    matrix:\n      lr: [0.1, 0.01, 0.1]\n",
        "kaio.yaml:6:23: jobs.train.matrix.lr[2]: 0.1 is already in the list at [0]",
    ),
    case(
        "matrix_exclude_not_mapping",
        H + "jobs:\n  train:\n    matrix:\n      lr: [0.1]\n      exclude: [lr]\n",
        "kaio.yaml:7:17: jobs.train.matrix.exclude[0]: expected a mapping, got 'lr'",
    ),
    case(
        "matrix_exclude_unknown_key",
        H
        + "jobs:\n  train:\n    matrix:\n      lr: [0.1, 0.2]\n      exclude:\n        - {lrr: 0.1}\n",
        "kaio.yaml:8:12: jobs.train.matrix.exclude[0].lrr: 'lrr' is not a key of the matrix; did you mean 'lr'?",
    ),
    case(
        "matrix_exclude_without_keys",
        H + "jobs:\n  train:\n    matrix:\n      include: [{lr: 1}]\n      exclude: [{lr: 1}]\n",
        "kaio.yaml:7:18: jobs.train.matrix.exclude[0].lr: 'lr' is not a key of the matrix, which has only include entries",
    ),
    case(
        "matrix_include_empty_entry",
        H + "jobs:\n  train:\n    matrix:\n      lr: [1]\n      include: [{}]\n",
        "kaio.yaml:7:17: jobs.train.matrix.include[0]: must not be an empty mapping",
    ),
    case(
        "matrix_include_not_list",
        H + "jobs:\n  train:\n    matrix:\n      lr: [1]\n      include: {lr: 2}\n",
        "kaio.yaml:7:7: jobs.train.matrix.include: expected a list, got a mapping",
    ),
    case(
        "matrix_no_jobs",
        H + "jobs:\n  train:\n    matrix:\n      exclude: []\n",
        "kaio.yaml:5:5: jobs.train.matrix: the matrix has no keys and no include entries, so it makes no jobs",
    ),
    case(
        "sweep_missing_count",
        H + "jobs:\n  train:\n    sweep:\n      parameters:\n        lr: {values: [1, 2]}\n",
        "kaio.yaml:5:5: jobs.train.sweep: missing required key 'count' (how many random draws to make)",
    ),
    case(
        "sweep_missing_parameters",
        H + "jobs:\n  train:\n    sweep:\n      count: 3\n",
        "kaio.yaml:5:5: jobs.train.sweep: missing required key 'parameters'",
    ),
    case(
        "sweep_unknown_method",
        H
        + "jobs:\n  train:\n    sweep:\n      method: bayes\n      count: 3\n      parameters:\n        lr: {values: [1, 2]}\n",
        "kaio.yaml:6:15: jobs.train.sweep.method: 'bayes' is not one of 'random' or 'grid'",
    ),
    case(
        "sweep_grid_with_count",
        H
        + "jobs:\n  train:\n    sweep:\n      method: grid\n      count: 3\n      parameters:\n        lr: {values: [1, 2]}\n",
        "kaio.yaml:7:7: jobs.train.sweep.count: 'count' applies to random sweeps; a grid sweep runs every combination",
    ),
    case(
        "sweep_log_uniform_missing_max",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {distribution: log_uniform, min: -9}\n",
        "kaio.yaml:8:9: jobs.train.sweep.parameters.lr: missing required key 'max' (distribution log_uniform needs 'min' and 'max')",
    ),
    case(
        "sweep_mu_sigma_without_distribution",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {mu: 0, sigma: 1}\n",
        "kaio.yaml:8:9: jobs.train.sweep.parameters.lr: give 'values', 'value', or a distribution with its bounds (mu and sigma need a distribution such as normal; a and b need beta or q_beta)",
    ),
    case(
        "sweep_probabilities_length",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        opt:\n          values: [adam, sgd, rmsprop]\n          probabilities: [0.5, 0.5]\n",
        "kaio.yaml:10:11: jobs.train.sweep.parameters.opt.probabilities: 2 probabilities for 3 values; give one per value",
    ),
    case(
        "sweep_probabilities_sum",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        opt:\n          values: [adam, sgd]\n          probabilities: [0.5, 0.6]\n",
        "kaio.yaml:10:11: jobs.train.sweep.parameters.opt.probabilities: the probabilities sum to 1.1, not 1",
    ),
    case(
        "sweep_probabilities_with_uniform",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {min: 0.1, max: 0.2, probabilities: [1]}\n",
        "kaio.yaml:8:34: jobs.train.sweep.parameters.lr.probabilities: 'probabilities' does not apply to distribution uniform",
    ),
    case(
        "sweep_int_uniform_float_bound",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        layers: {distribution: int_uniform, min: 1.5, max: 4}\n",
        "kaio.yaml:8:50: jobs.train.sweep.parameters.layers.min: expected an integer for int_uniform, got 1.5",
    ),
    case(
        "sweep_bounds_reversed",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {min: 0.1, max: 0.01}\n",
        "kaio.yaml:8:29: jobs.train.sweep.parameters.lr.max: max (0.01) must be greater than min (0.1)",
    ),
    case(
        "sweep_log_uniform_zero_min",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {distribution: log_uniform_values, min: 0, max: 0.1}\n",
        "kaio.yaml:8:53: jobs.train.sweep.parameters.lr.min: min (0) must be greater than 0 for log_uniform_values",
    ),
    case(
        "sweep_q_uniform_zero_q",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        bs: {distribution: q_uniform, min: 8, max: 64, q: 0}\n",
        "kaio.yaml:8:59: jobs.train.sweep.parameters.bs.q: 0 must be greater than 0",
    ),
    case(
        "sweep_unknown_parameter_key",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {vals: [1, 2]}\n",
        "kaio.yaml:8:14: jobs.train.sweep.parameters.lr.vals: unknown key 'vals'; did you mean 'values'?",
    ),
    case(
        "sweep_unknown_distribution",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {distribution: loguniform, min: 1, max: 2}\n",
        "kaio.yaml:8:28: jobs.train.sweep.parameters.lr.distribution: 'loguniform' is not one of 'constant', 'categorical', 'int_uniform', 'uniform', 'q_uniform', 'log_uniform_values', 'q_log_uniform_values', 'inv_log_uniform_values', 'log_uniform', 'q_log_uniform', 'inv_log_uniform', 'normal', 'q_normal', 'log_normal', 'q_log_normal', 'beta' or 'q_beta'; did you mean 'log_uniform_values'?",
    ),
    case(
        "sweep_grid_needs_values",
        H
        + "jobs:\n  train:\n    sweep:\n      method: grid\n      parameters:\n        lr: {min: 0.1, max: 0.2}\n",
        "kaio.yaml:8:9: jobs.train.sweep.parameters.lr: a grid sweep needs 'values' or 'value'; 'lr' has distribution uniform",
    ),
    case(
        "sweep_parameter_is_matrix_key",
        H
        + "jobs:\n  train:\n    matrix:\n      lr: [1, 2]\n    sweep:\n      count: 2\n      parameters:\n        lr: {values: [3, 4]}\n",
        "kaio.yaml:10:9: jobs.train.sweep.parameters.lr: 'lr' is also a matrix key; give each value one name",
    ),
    case(
        "sweep_sigma_negative",
        H
        + "jobs:\n  train:\n    sweep:\n      count: 3\n      parameters:\n        lr: {distribution: normal, mu: 0, sigma: -1}\n",
        "kaio.yaml:8:50: jobs.train.sweep.parameters.lr.sigma: -1 must be greater than 0",
    ),
    case(
        "many_errors_in_file_order",
        "version: 1\nname: Demo\nsettings:\n  fail_fast: no\njobs:\n  train:\n    volume_size_gb: 80\n    instance_type: ml.m5.larg\n  eval:\n    entrypoint: eval.sh\n    instnace_count: 2\n",
        "kaio.yaml:2:7: name: 'Demo' must be lowercase letters, digits and '-', starting with a letter or digit",
        "kaio.yaml:4:14: settings.fail_fast: expected true or false, got 'no'",
        "kaio.yaml:7:21: jobs.train.volume_size_gb: 80 is greater than the maximum of 50",
        "kaio.yaml:8:20: jobs.train.instance_type: unknown instance type 'ml.m5.larg'; did you mean 'ml.m5.large'?",
        "kaio.yaml:10:17: jobs.eval.entrypoint: 'eval.sh' must be a .py or .ipynb file name at the top of directory, with no folder part",
        "kaio.yaml:11:5: jobs.eval.instnace_count: unknown key 'instnace_count'; did you mean 'instance_count'?",
    ),
]


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "code").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def errors_of(path: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [str(d) for d in caught.value.errors]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_invalid_manifest(project, text, expected):
    (project / "kaio.yaml").write_text(text)
    assert errors_of("kaio.yaml") == expected


# ---- whole-file problems: cases a YAML literal cannot hold, or that need a large file ----------


def alias_bomb() -> str:
    # "Billion laughs": each level is ten aliases of the one before; six levels would be 10**6.
    text = "version: 1\nname: demo\nvars:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for prev, name in zip("abcde", "bcdef", strict=True):
        text += f"  {name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    return text + "jobs: {train: {}}\n"


def test_alias_bomb_is_refused_quickly(project):
    (project / "kaio.yaml").write_text(alias_bomb())
    assert errors_of("kaio.yaml") == [
        "kaio.yaml:8:3: vars.e: the document expands to more than 100,000 values "
        "(aliases nested too many times?)"
    ]


def test_deep_nesting_is_refused(project):
    nested = "[" * 70 + "]" * 70
    (project / "kaio.yaml").write_text(f"version: 1\nname: demo\nvars:\n  x: {nested}\n")
    assert errors_of("kaio.yaml") == ["kaio.yaml:4:3: vars.x: nested more than 64 levels deep"]
    # Deeper than PyYAML's own recursive composer can go: still an error, not a traceback.
    (project / "kaio.yaml").write_text("vars: " + "[" * 5000 + "]" * 5000 + "\n")
    assert errors_of("kaio.yaml") == ["kaio.yaml:1:1: the document is nested too deeply"]


def test_file_over_the_size_cap_is_refused_unread(project):
    (project / "kaio.yaml").write_text("version: 1\n" + "#" * 1_000_000 + "\n")
    assert errors_of("kaio.yaml") == [
        "kaio.yaml: the file is 1,000,012 bytes; manifests are limited to 1,000,000"
    ]


def test_bytes_that_are_not_utf8_are_pointed_at(project):
    (project / "kaio.yaml").write_bytes(b"version: 1\nname: d\xe9mo\njobs: {train: {}}\n")
    assert errors_of("kaio.yaml") == ["kaio.yaml:2:8: the file is not UTF-8 text (byte 0xe9)"]


def test_control_characters_are_pointed_at(project):
    (project / "kaio.yaml").write_text("version: 1\nname: demo\x07\njobs: {train: {}}\n")
    assert errors_of("kaio.yaml") == [
        "kaio.yaml:2:11: invalid YAML: the character U+0007 is not allowed"
    ]


def test_a_utf8_byte_order_mark_is_fine(project):
    (project / "kaio.yaml").write_bytes(b"\xef\xbb\xbfversion: 1\nname: demo\njobs: {train: {}}\n")
    assert load_manifest("kaio.yaml").name == "demo"


def test_missing_file_and_folder(project):
    assert errors_of("nope.yaml") == ["nope.yaml: no such file"]
    assert errors_of("code") == ["code: is a folder, not a manifest file"]
