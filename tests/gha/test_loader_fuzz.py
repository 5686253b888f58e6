"""Any workflow-shaped YAML loads or fails with a ConfigError, never a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.gha.loader import load_workflow
from engine.loader import ConfigError

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 400),
    st.sampled_from(["ubuntu-latest", "macos-14", "${{ matrix.os }}", "${{ bad ==", "x", "",
                     "${{ needs.a.outputs.m }}", "${{ fromJSON('[1,2]') }}", "./act", "a/b@v1",
                     "actions/checkout@v4", "docker://x", "${{ secrets.T }}", "3.x", "always()"]),
)  # fmt: skip
KEYS = st.sampled_from(
    ["runs-on", "steps", "needs", "if", "strategy", "matrix", "include", "exclude", "env",
     "outputs", "uses", "run", "with", "shell", "timeout-minutes", "continue-on-error", "os",
     "services", "container", "defaults", "name", "id", "fail-fast", "max-parallel", "a", "b"]
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
JOBS = st.dictionaries(st.sampled_from(["a", "b", "c", "bad id"]), VALUES, min_size=1, max_size=3)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(jobs=JOBS, top=st.dictionaries(st.sampled_from(["env", "defaults", "on", "name"]), VALUES))
def test_fuzzed_workflows_load_or_raise_config_error(tmp_path: Path, jobs: dict, top: dict) -> None:
    path = tmp_path / "wf.yml"
    path.write_text(yaml.safe_dump({**top, "jobs": jobs}))
    try:
        load_workflow(path)
    except ConfigError as err:
        assert err.problems


STEP = st.fixed_dictionaries(
    {"run": SCALARS},
    optional={"if": SCALARS, "env": VALUES, "with": VALUES, "id": SCALARS, "shell": SCALARS,
              "timeout-minutes": SCALARS, "continue-on-error": SCALARS, "uses": SCALARS},
)  # fmt: skip
JOB = st.fixed_dictionaries(
    {"runs-on": VALUES, "steps": st.lists(STEP, max_size=3)},
    optional={
        "needs": st.sampled_from(["a", "b", ["a"], ["c"], 3]),
        "strategy": st.fixed_dictionaries({}, optional={"matrix": VALUES, "fail-fast": SCALARS,
                                                         "max-parallel": SCALARS}),
        "env": VALUES, "outputs": VALUES, "if": SCALARS, "timeout-minutes": SCALARS,
        "continue-on-error": SCALARS, "defaults": VALUES, "uses": SCALARS, "with": VALUES,
    },
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(jobs=st.dictionaries(st.sampled_from(["a", "b", "c"]), JOB, min_size=1, max_size=3))
def test_fuzzed_jobs_load_or_raise_config_error(tmp_path: Path, jobs: dict) -> None:
    path = tmp_path / "wf.yml"
    path.write_text(yaml.safe_dump({"on": "push", "jobs": jobs}))
    try:
        load_workflow(path)
    except ConfigError as err:
        assert err.problems
