"""engine.loader: the SPEC §10 stage keys `service`, `ready`, `restart` and `tty`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.loader import ConfigError, load
from engine.schema import SCHEMA
from engine.spec import Probe


def write(tmp_path: Path, stages: str) -> Path:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n" + textwrap.indent(textwrap.dedent(stages), "  "))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    return [str(p) for p in info.value.problems]


def test_service_keys_load_with_their_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        api:
          service: true
          run: python -m http.server 8000
          ready: {http: "http://127.0.0.1:8000/", interval: 200ms, timeout: 30s}
          restart: on_failure
          retries: 2
        db:
          service: yes
          run: ./db
          ready: {tcp: "127.0.0.1:5432"}
        plain:
          run: "true"
          tty: true
        """,
    )
    stages = load(path, environ={}).stages
    assert stages["api"].service is True
    assert stages["api"].ready == Probe("http", "http://127.0.0.1:8000/", 0.2, 30.0)
    assert stages["api"].restart == "on_failure"
    assert stages["db"].ready == Probe("tcp", "127.0.0.1:5432", 0.5, 60.0)
    assert stages["db"].restart == "never"
    assert (stages["plain"].service, stages["plain"].ready, stages["plain"].tty) == (
        False,
        None,
        True,
    )


def test_matrix_values_are_substituted_in_the_probe(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        api:
          service: true
          matrix: {port: ["8001", "8002"]}
          run: serve ${{ matrix.port }}
          ready: {tcp: "127.0.0.1:${{ matrix.port }}"}
        """,
    )
    stages = load(path, environ={}).stages
    assert [s.ready.target for s in stages.values() if s.ready] == [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
    ]


def test_bad_probes_are_reported_where_they_are(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        a:
          service: true
          run: x
          ready: {http: "localhost:8000"}
        b:
          service: true
          run: x
          ready: {tcp: "127.0.0.1", interval: soon}
        c:
          service: true
          run: x
          ready: {log: "listening (on"}
        d:
          service: true
          run: x
          ready: {tcp: "h:1", run: "true"}
        e:
          run: x
          ready: {run: "true"}
        f:
          service: true
          run: x
          ready: {htp: "http://x/"}
          restart: always
          tty: "yes"
        """,
    )
    assert problems(path) == [
        f"{path}:6:19: stages.a.ready.http: expected an http:// or https:// URL",
        f"{path}:10:18: stages.b.ready.tcp: expected HOST:PORT, got '127.0.0.1'",
        f"{path}:10:41: stages.b.ready.interval: bad duration 'soon'; "
        "use e.g. 90s, 5m, 1h30m, 100ms or seconds",
        f"{path}:14:18: stages.c.ready.log: not a valid regular expression: "
        "missing ), unterminated subpattern at position 10",
        f"{path}:18:12: stages.d.ready: needs exactly one of http, tcp, log, run; got tcp, run",
        f"{path}:21:12: stages.e.ready: only a stage with service: true has a ready probe",
        f"{path}:25:12: stages.f.ready: needs exactly one of http, tcp, log, run; got none",
        f"{path}:25:13: unknown key 'htp' in stages.f.ready; did you mean 'http'?",
        f"{path}:26:14: stages.f.restart: 'always' is not one of never, on_failure",
        f"{path}:27:10: stages.f.tty: expected true or false, got the string 'yes'",
    ]


def test_schema_describes_the_new_keys() -> None:
    stage = SCHEMA["$defs"]["stage"]["properties"]
    assert stage["service"]["type"] == "boolean"
    assert stage["tty"]["type"] == "boolean"
    assert stage["restart"]["enum"] == ["never", "on_failure"]
    assert stage["ready"]["$ref"] == "#/$defs/ready"
    ready = SCHEMA["$defs"]["ready"]
    assert set(ready["properties"]) == {"http", "tcp", "log", "run", "interval", "timeout"}
    assert {"required": ["http"]} in ready["oneOf"]
