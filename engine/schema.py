"""The pipeline file's key tables, read by the loader, and the JSON Schema made from them.

Each section of the file (top level, `defaults`, a host, `watch`, a stage) is a table of
`Key`s. The loader validates with these tables and `SCHEMA` (JSON Schema draft 2020-12, for
editors; `pipedeck schema` prints it) is generated from them, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from engine.spec import PROBE_KINDS, RESTART_VALUES, WHEN_VALUES

NAME_PATTERN = r"[A-Za-z0-9_.-]+"  # stage and host names
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"  # env and secret names
AXIS_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]*"  # matrix axis names
MEMORY_PATTERN = r"[0-9]+[KMGT]?"  # Slurm's --mem: a number of megabytes, or with a unit
DURATION_PATTERN = r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+|[0-9]+(?:\.[0-9]+)?"
MATRIX_EXCLUDE = "exclude"  # the matrix key listing combinations to leave out, not an axis
EXTENSION_PREFIX = "x-"  # keys starting with it are ignored (a place for YAML anchors)


GLOB_KEYS = ("inputs", "outputs")  # stage globs (engine.globs), inside the workspace
PATH_KEYS = ("cwd", "metrics", *GLOB_KEYS)  # stage paths, inside the workspace
SECTION_KINDS = frozenset({"defaults", "hosts", "watch", "stages", "matrix", "ready"})


class Key(NamedTuple):
    """One key of a section: its kind (how it is checked), its doc, and its constraints.

    Kinds: version, string, integer, boolean, duration, strings (a list of strings, or one
    string), env (a mapping of names to strings), choice, and the sections (checked by the
    loader's own code) in SECTION_KINDS, and table (a nested mapping checked against `keys`).
    A string key with a `pattern` must match it whole.
    """

    kind: str
    doc: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    keys: Mapping[str, Key] | None = None  # kind "table": its keys
    pattern: str | None = None  # kind "string": the whole value must match


SYNC_KEYS: dict[str, Key] = {
    "exclude": Key("strings", "Globs of workspace paths never sent to this host.", default=[]),
}

SLURM_KEYS: dict[str, Key] = {
    "partition": Key("string", "Slurm partition (sbatch --partition)."),
    "account": Key("string", "Slurm account (sbatch --account)."),
    "qos": Key("string", "Slurm QOS (sbatch --qos)."),
    "extra_args": Key("strings", "Further sbatch arguments, one per item."),
    "env": Key("env", "Environment of the Slurm commands themselves (SLURM_CONF...)."),
}

RESOURCE_KEYS: dict[str, Key] = {
    "cpus": Key("integer", "CPUs of the job's task (--cpus-per-task).", minimum=1),
    "memory": Key("string", "Memory (--mem): megabytes, or 512M, 32G...", pattern=MEMORY_PATTERN),
    "gpus": Key("integer", "GPUs (--gpus).", minimum=0),
    "time": Key("duration", "Slurm time limit (--time)."),
}


DEFAULTS_KEYS: dict[str, Key] = {
    "timeout": Key("duration", "Default stage timeout (none when unset or 0)."),
    "retries": Key("integer", "Default extra attempts after a failure.", minimum=0, default=0),
    "kill_grace": Key("duration", "Default time between SIGTERM and SIGKILL.", default="10s"),
}

HOST_KEYS: dict[str, Key] = {
    "address": Key("string", "Address or ~/.ssh/config alias; default: the host's name."),
    "port": Key("integer", "SSH port.", minimum=1, maximum=65535),
    "user": Key("string", "SSH user."),
    "identity_file": Key("string", "Private key file."),
    "known_hosts": Key(
        "string",
        'known_hosts file, or "accept-new" to trust first-seen keys.',
        default="~/.ssh/known_hosts",
    ),
    "workdir": Key("string", "Remote workspace root."),
    "slots": Key("integer", "At most this many stages at once on this host.", minimum=1, default=4),
    "executor": Key("choice", "How stages run there.", choices=("ssh", "slurm"), default="ssh"),
    "slurm": Key("table", "Slurm options (executor: slurm).", keys=SLURM_KEYS),
    "sync": Key("table", "What the workspace sync to this host leaves out.", keys=SYNC_KEYS),
}

WATCH_KEYS: dict[str, Key] = {
    "paths": Key("strings", "Paths watched for changes.", default=["."]),
    "ignore": Key("strings", "Gitignore-style globs of changes to ignore.", default=[]),
    "debounce": Key("duration", "Quiet time that ends a burst of changes.", default="100ms"),
}

STAGE_KEYS: dict[str, Key] = {
    "run": Key("string", "The shell script to run.", required=True),
    "needs": Key("strings", "Stages that must finish first (a matrix stage: all instances)."),
    "env": Key("env", "Environment, merged over the pipeline env."),
    "cwd": Key(
        "string", "Working directory, relative to the pipeline file's directory.", default="."
    ),
    "shell": Key("string", "Command prefix the script is appended to (split like a shell)."),
    "timeout": Key("duration", "Kill the stage after this long (0: never); it is then timed_out."),
    "kill_grace": Key("duration", "Time between SIGTERM and SIGKILL.", default="10s"),
    "retries": Key(
        "integer", "Extra attempts after a failed or timed-out attempt.", minimum=0, default=0
    ),
    "when": Key("choice", "When the stage runs.", choices=WHEN_VALUES, default="on_success"),
    "allow_failure": Key("boolean", "A failure does not fail the run.", default=False),
    "inputs": Key("strings", "Globs of files the stage reads (caching, watch mode)."),
    "outputs": Key("strings", "Globs of files the stage makes (artifacts, caching)."),
    "host": Key("string", 'Host name, or "local".', default="local"),
    "matrix": Key("matrix", "Axis -> values: one stage instance per combination."),
    "metrics": Key("string", "A JSON file of numbers the stage writes."),
    "resources": Key("table", "What a Slurm job asks for.", keys=RESOURCE_KEYS),
    "service": Key("boolean", "A long-running stage; needs on it wait for ready.", default=False),
    "ready": Key("ready", "A service's readiness probe: http, tcp, log or run."),
    "restart": Key(
        "choice", "When a service exits on its own.", choices=RESTART_VALUES, default="never"
    ),
    "tty": Key("boolean", "Run under a pseudo-terminal.", default=False),
}

READY_KEYS: dict[str, Key] = {
    "http": Key("string", "A URL that answers 2xx or 3xx when ready."),
    "tcp": Key("string", "HOST:PORT that accepts connections when ready."),
    "log": Key("string", "A regex matched against each line the service prints."),
    "run": Key("string", "A command that exits 0 when ready (run where the stage runs)."),
    "interval": Key("duration", "Time between tries.", default="500ms"),
    "timeout": Key("duration", "Give up (the service fails) after this long.", default="60s"),
}

TOP_KEYS: dict[str, Key] = {
    "version": Key("version", "The file format version: the integer 1.", required=True),
    "name": Key("string", "Pipeline name; default: the file's stem."),
    "env": Key("env", "Pipeline-wide environment."),
    "color": Key(
        "boolean",
        "Make stage tools colour their output without a terminal (FORCE_COLOR, CLICOLOR_FORCE, "
        "PY_COLORS, CARGO_TERM_COLOR, MYPY_FORCE_COLOR).",
        default=False,
    ),
    "secrets": Key("strings", "Env var names read from the environment or .env, masked."),
    "defaults": Key("defaults", "Per-stage defaults."),
    "hosts": Key("hosts", "Remote build boxes, by name."),
    "watch": Key("watch", "Watch mode settings."),
    "stages": Key("stages", "The stages, by name.", required=True),
}

_SCALAR = {"type": ["string", "number"]}


def _section(table: Mapping[str, Key]) -> dict[str, Any]:
    """A closed object schema for one section table."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _key_schema(key) for name, key in table.items()},
        "patternProperties": {f"^{EXTENSION_PREFIX}": {}},
        "additionalProperties": False,
    }
    required = [name for name, key in table.items() if key.required]
    if required:
        schema["required"] = required
    return schema


def _named(ref: str, min_properties: int = 0) -> dict[str, Any]:
    """An object of name -> `$defs/ref` with names matching NAME_PATTERN."""
    schema: dict[str, Any] = {
        "type": "object",
        "propertyNames": {"pattern": f"^{NAME_PATTERN}$"},
        "additionalProperties": {"$ref": f"#/$defs/{ref}"},
    }
    if min_properties:
        schema["minProperties"] = min_properties
    return schema


def _key_schema(key: Key) -> dict[str, Any]:
    """The JSON Schema of one key."""
    kind = key.kind
    if kind == "version":
        schema: dict[str, Any] = {"const": 1}
    elif kind == "string":
        schema = {"type": "string"}
        if key.pattern:
            schema["pattern"] = f"^(?:{key.pattern})$"
    elif kind == "integer":
        schema = {"type": "integer"}
        if key.minimum is not None:
            schema["minimum"] = key.minimum
        if key.maximum is not None:
            schema["maximum"] = key.maximum
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "duration":
        schema = {
            "oneOf": [
                {"type": "string", "pattern": f"^(?:{DURATION_PATTERN})$"},
                {"type": "number", "minimum": 0},
            ]
        }
    elif kind == "strings":
        schema = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    elif kind == "env":
        schema = {
            "type": "object",
            "propertyNames": {"pattern": f"^{ENV_NAME_PATTERN}$"},
            "additionalProperties": _SCALAR,
        }
    elif kind == "choice":
        schema = {"enum": list(key.choices)}
    elif kind == "table":
        schema = _section(key.keys or {})
    elif kind == "matrix":
        schema = {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": f"^{AXIS_PATTERN}$"},
            "properties": {
                MATRIX_EXCLUDE: {
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": _SCALAR},
                    "description": "Combinations to leave out: each a mapping of axes to values.",
                }
            },
            "additionalProperties": {"type": "array", "minItems": 1, "items": _SCALAR},
        }
    elif kind in ("defaults", "watch", "ready"):
        schema = {"$ref": f"#/$defs/{kind}"}
    elif kind == "hosts":
        schema = _named("host")
    elif kind == "stages":
        schema = _named("stage", min_properties=1)
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    schema["description"] = key.doc
    if key.default is not None:
        schema["default"] = key.default
    return schema


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pipedeck pipeline",
    **_section(TOP_KEYS),
    "$defs": {
        "stage": _section(STAGE_KEYS),
        "host": _section(HOST_KEYS),
        "defaults": _section(DEFAULTS_KEYS),
        "watch": _section(WATCH_KEYS),
        "ready": {**_section(READY_KEYS), "oneOf": [{"required": [k]} for k in PROBE_KINDS]},
    },
}
