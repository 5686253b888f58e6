"""engine.loadcache: an unchanged pipeline loads from `.pipedeck/loaded/` without PyYAML; any
change to what it was made of is seen at once; what the cache holds cannot lie or leak."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from engine import loadcache
from engine.loader import ConfigError, load

PIPELINE = "version: 1\nstages:\n  a: {run: echo one}\n  b: {needs: [a], run: echo two}\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A pipeline file beside an existing `.pipedeck/` (the cache is only written into one)."""
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    return tmp_path


def entries(workspace: Path) -> list[Path]:
    return sorted((workspace / ".pipedeck" / loadcache.FOLDER).glob("*.pickle"))


def modules_of_a_second_load(path: Path) -> set[str]:
    """The modules of a fresh interpreter that loaded `path` through the cache after another
    one did (and stored it)."""
    load_it = "import sys; from engine import loadcache; loadcache.load(sys.argv[1]); "
    subprocess.run([sys.executable, "-c", load_it, str(path)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", load_it + "print(' '.join(sys.modules))", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return set(done.stdout.split())


def test_an_unchanged_file_loads_from_the_cache_without_yaml(workspace: Path) -> None:
    path = workspace / "pipedeck.yaml"
    modules = modules_of_a_second_load(path)
    assert "yaml" not in modules and "engine.loader" not in modules
    assert len(entries(workspace)) == 1
    assert loadcache.load(str(path)) == load(path)


def test_without_a_state_folder_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    assert loadcache.load(str(path)) == load(path)
    assert not (tmp_path / ".pipedeck").exists()


def test_an_edit_is_seen_at_once_even_with_the_same_size_and_mtime(workspace: Path) -> None:
    path = workspace / "pipedeck.yaml"
    assert loadcache.load(str(path)).stages["a"].run == "echo one"
    before = path.stat()
    path.write_text(PIPELINE.replace("echo one", "echo 111"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert loadcache.load(str(path)).stages["a"].run == "echo 111"


def test_an_edit_making_the_file_invalid_reports_file_line_col(workspace: Path) -> None:
    path = workspace / "pipedeck.yaml"
    loadcache.load(str(path))
    path.write_text(PIPELINE.replace("needs: [a]", "neeeds: [a]"))
    with pytest.raises(ConfigError) as err:
        loadcache.load(str(path))
    assert str(err.value).startswith(f"{path}:4:")
    assert "did you mean 'needs'" in str(err.value)


def test_an_invalid_file_is_never_cached(workspace: Path) -> None:
    path = workspace / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a: {run: echo, needs: [zz]}\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match=rf"^{path}:3:\d+: .*zz"):
            loadcache.load(str(path))
    assert entries(workspace) == []


@pytest.fixture
def with_secret(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pipeline, with a secret TOKEN that the environment does not hold."""
    monkeypatch.delenv("TOKEN", raising=False)
    path = workspace / "pipedeck.yaml"
    path.write_text(PIPELINE + "secrets: [TOKEN]\n")
    return path


def test_secret_values_are_looked_up_on_each_load_and_never_stored(
    workspace: Path, with_secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = with_secret
    (workspace / ".env").write_text("TOKEN=from-dotenv-1\n")
    assert loadcache.load(str(path)).secrets == {"TOKEN": "from-dotenv-1"}
    (workspace / ".env").write_text("TOKEN=from-dotenv-2\n")
    assert loadcache.load(str(path)).secrets == {"TOKEN": "from-dotenv-2"}
    monkeypatch.setenv("TOKEN", "from-environ")
    assert loadcache.load(str(path)).secrets == {"TOKEN": "from-environ"}
    [entry] = entries(workspace)
    assert b"from-dotenv" not in entry.read_bytes() and b"from-environ" not in entry.read_bytes()


def test_a_broken_dotenv_is_reported_with_its_position_after_a_cached_load(
    workspace: Path, with_secret: Path
) -> None:
    path = with_secret
    (workspace / ".env").write_text("TOKEN=ok\n")
    loadcache.load(str(path))
    (workspace / ".env").write_text("TOKEN=ok\nOTHER='unterminated\n")
    with pytest.raises(ConfigError, match=rf"{workspace / '.env'}:2:\d+: .*quote"):
        loadcache.load(str(path))


def test_a_damaged_entry_is_ignored_and_replaced(workspace: Path) -> None:
    path = workspace / "pipedeck.yaml"
    expected = loadcache.load(str(path))
    [entry] = entries(workspace)
    good = entry.read_bytes()
    for damage in (b"", b"not a pickle at all", good[: len(good) // 2]):
        entry.write_bytes(damage)
        assert loadcache.load(str(path)) == expected
        assert entry.read_bytes() == good  # stored again


class Trap:
    """Unpickling it runs a command: what a crafted entry would try."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("touch pwned",))


def test_an_entry_naming_anything_but_the_model_runs_nothing(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    path = workspace / "pipedeck.yaml"
    expected = loadcache.load(str(path))
    [entry] = entries(workspace)
    entry.write_bytes(pickle.dumps(Trap()))
    assert loadcache.load(str(path)) == expected
    assert not (workspace / "pwned").exists()


def test_a_host_known_only_from_ssh_config_is_not_cached(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = workspace / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host box\n  HostName 127.0.0.1\n")
    monkeypatch.setenv("HOME", str(home))
    path = workspace / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a: {run: echo, host: box}\n")
    assert loadcache.load(str(path)).stages["a"].host == "box"
    assert entries(workspace) == []
    (home / ".ssh" / "config").write_text("")
    with pytest.raises(ConfigError, match="unknown host 'box'"):
        loadcache.load(str(path))


def test_the_key_covers_the_engine_code(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry written by other pipedeck code (another loader or model) is not read."""
    path = workspace / "pipedeck.yaml"
    loadcache.load(str(path))
    [entry] = entries(workspace)
    key, names, pipeline = pickle.loads(entry.read_bytes())
    stale = pipeline.__class__(**{**pipeline.__dict__, "name": "stale"})
    entry.write_bytes(pickle.dumps((key, names, stale)))
    assert loadcache.load(str(path)).name == "stale"  # the same key: the entry is trusted
    monkeypatch.setattr(loadcache, "__version__", "0.0.0-other")
    assert loadcache.load(str(path)).name == "pipedeck"
