"""The ``sessionkit`` command line, in-process through `main` and as real processes."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from sessionkit import SessionManager
from sessionkit.cli import main
from sessionkit.codec import IdSigner

KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
OLD = "o" * 43
OLDER = "p" * 43
OLDEST = "q" * 43
DOCS = Path(__file__).resolve().parents[1] / "docs" / "key-rotation.md"


def decoded(key: str) -> bytes:
    assert KEY_RE.fullmatch(key), key
    assert "=" not in key and "," not in key
    return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def console_script() -> Path:
    script = Path(sys.executable).parent / "sessionkit"
    if not script.exists():
        pytest.fail(f"{script} is missing: run .venv/bin/pip install -e . to install the console script",
                    pytrace=False)
    return script


def run_process(command: Sequence[str | Path], env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key != "SESSIONKIT_SECRET_KEYS"}
    environ.update(env or {})
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, env=environ,
                          timeout=60, check=False)


# -- keygen, in-process ---------------------------------------------------------


def test_keygen_prints_one_43_char_key_of_32_random_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_main(capsys, "keygen")
    assert code == 0 and err == ""
    assert len(lines) == 1
    assert len(lines[0]) == 43
    assert len(decoded(lines[0])) == 32


def test_keygen_bytes_sets_the_key_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_main(capsys, "keygen", "--bytes", "64")
    assert code == 0
    assert len(decoded(lines[0])) == 64 and len(lines[0]) == 86


def test_keygen_count_prints_distinct_keys_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_main(capsys, "keygen", "--count", "5", "--bytes", "40")
    assert code == 0
    assert len(lines) == 5
    assert len(set(lines)) == 5
    assert all(len(decoded(key)) == 40 for key in lines)


def test_keys_differ_between_runs(capsys: pytest.CaptureFixture[str]) -> None:
    first = run_main(capsys, "keygen")[1]
    second = run_main(capsys, "keygen")[1]
    assert first != second


def test_generated_key_is_accepted_by_the_manager_and_signs(capsys: pytest.CaptureFixture[str]) -> None:
    key = run_main(capsys, "keygen")[1][0]
    manager = SessionManager("memory://", secret_keys=[key])
    session = manager.open(None)
    session["user"] = "alice"
    cookie = next(value for name, value in manager.save(session) if name == "Set-Cookie")
    assert cookie.split(";")[0] == f"session={IdSigner([key.encode()]).sign(session.id)}"
    assert manager.open(cookie.split(";")[0])["user"] == "alice"


def test_generated_keys_fit_the_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    keys = run_main(capsys, "keygen", "--count", "2")[1]
    manager = SessionManager.from_env({"SESSIONKIT_SECRET_KEYS": ",".join(keys), "SESSIONKIT_URL": "memory://"})
    assert len(manager.codec.signer._keys) == 2


@pytest.mark.parametrize("value", ["16", "31", "0", "-32"])
def test_keygen_refuses_fewer_than_32_bytes(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, lines, err = run_main(capsys, "keygen", "--bytes", value)
    assert code == 2
    assert lines == []
    assert "--bytes" in err and "minimum is 32" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["keygen", "--bytes", "lots"], "'lots' is not a whole number"),
    (["keygen", "--count", "0"], "--count: 0 is too small"),
    (["keygen", "--keep", "1"], "--keep only applies with --rotate"),
    (["keygen", "--rotate", "--count", "2"], "--rotate prints one value"),
    ([], "required: COMMAND"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_usage_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], message: str) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", OLD)
    code, lines, err = run_main(capsys, *argv)
    assert code == 2
    assert lines == []
    assert message in err
    assert "Traceback" not in err


def test_help_and_version_return_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_main(capsys, "keygen", "--help")
    assert code == 0 and "--rotate" in "\n".join(lines)
    code, lines, _ = run_main(capsys, "--version")
    assert code == 0 and lines[0].startswith("sessionkit ")


# -- keygen --rotate --------------------------------------------------------------


def test_rotate_puts_the_new_key_first_and_keeps_every_old_key(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", f"{OLD},{OLDER}")
    code, lines, err = run_main(capsys, "keygen", "--rotate")
    assert code == 0 and err == ""
    assert len(lines) == 1
    new, *rest = lines[0].split(",")
    assert rest == [OLD, OLDER]
    assert len(decoded(new)) == 32 and new not in (OLD, OLDER)


def test_rotate_reads_the_variable_as_services_do(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", f" {OLD} ,, {OLDER},")
    value = run_main(capsys, "keygen", "--rotate")[1][0]
    assert value.split(",")[1:] == [OLD, OLDER]
    manager = SessionManager.from_env({"SESSIONKIT_SECRET_KEYS": value})
    assert len(manager.codec.signer._keys) == 3


@pytest.mark.parametrize(("keep", "kept"), [("0", []), ("1", [OLD]), ("2", [OLD, OLDER]), ("9", [OLD, OLDER, OLDEST])])
def test_rotate_keep_keeps_at_most_n_newest_old_keys(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, keep: str, kept: list[str]) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", f"{OLD},{OLDER},{OLDEST}")
    code, lines, _ = run_main(capsys, "keygen", "--rotate", "--keep", keep)
    assert code == 0
    assert lines[0].split(",")[1:] == kept
    assert len(decoded(lines[0].split(",")[0])) == 32


def test_rotate_with_bytes_makes_a_bigger_new_key(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", OLD)
    value = run_main(capsys, "keygen", "--rotate", "--bytes", "48")[1][0]
    assert len(decoded(value.split(",")[0])) == 48


@pytest.mark.parametrize("value", [None, "", " , "])
def test_rotate_without_keys_in_the_environment_is_refused(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("SESSIONKIT_SECRET_KEYS", raising=False)
    else:
        monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", value)
    code, lines, err = run_main(capsys, "keygen", "--rotate")
    assert code == 2
    assert lines == []
    assert "SESSIONKIT_SECRET_KEYS is not set or empty" in err
    assert "Traceback" not in err


def test_rotate_refuses_to_print_a_value_services_would_refuse(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONKIT_SECRET_KEYS", f"{OLD},tooshort")
    code, lines, err = run_main(capsys, "keygen", "--rotate")
    assert code == 2 and lines == []
    assert "key 2 in SESSIONKIT_SECRET_KEYS is 8 bytes" in err and "--keep 1" in err
    code, lines, _ = run_main(capsys, "keygen", "--rotate", "--keep", "1")
    assert code == 0 and lines[0].split(",")[1:] == [OLD]


# -- as real processes ------------------------------------------------------------


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_keygen_runs_as_a_program(how: str) -> None:
    command: list[str | Path] = [sys.executable, "-m", "sessionkit"] if how == "python -m" else [console_script()]
    result = run_process([*command, "keygen", "--count", "3", "--bytes", "33"])
    assert result.returncode == 0, result.stderr
    keys = result.stdout.splitlines()
    assert len(keys) == 3 and len(set(keys)) == 3
    assert all(len(decoded(key)) == 33 for key in keys)
    assert result.stderr == ""


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_programs_refuse_short_keys_with_exit_2_and_no_traceback(how: str) -> None:
    command: list[str | Path] = [sys.executable, "-m", "sessionkit"] if how == "python -m" else [console_script()]
    result = run_process([*command, "keygen", "--bytes", "16"])
    assert result.returncode == 2
    assert result.stdout == ""
    assert "minimum is 32" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_programs_rotate_from_the_environment(how: str) -> None:
    command: list[str | Path] = [sys.executable, "-m", "sessionkit"] if how == "python -m" else [console_script()]
    result = run_process([*command, "keygen", "--rotate", "--keep", "1"],
                         env={"SESSIONKIT_SECRET_KEYS": f"{OLD},{OLDER}"})
    assert result.returncode == 0, result.stderr
    new, *rest = result.stdout.strip().split(",")
    assert rest == [OLD] and len(decoded(new)) == 32
    missing = run_process([*command, "keygen", "--rotate"])
    assert missing.returncode == 2 and missing.stdout == ""
    assert "SESSIONKIT_SECRET_KEYS is not set" in missing.stderr and "Traceback" not in missing.stderr




def test_a_closed_pipe_ends_quietly() -> None:
    script = console_script()
    result = subprocess.run(f"'{script}' keygen --count 200000 | head -n 1", shell=True, capture_output=True,
                            text=True, timeout=60, check=False)
    assert len(decoded(result.stdout.strip())) == 32
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


# -- the guide's commands ---------------------------------------------------------


def test_the_guides_rotation_snippet_gives_the_three_phase_values() -> None:
    """Run the shell block of docs/key-rotation.md with the real console script on PATH."""
    blocks = re.findall(r"```sh\n(.*?)```", DOCS.read_text(), flags=re.S)
    snippet = next(block for block in blocks if "sessionkit keygen --rotate" in block and "PHASE1=" in block)
    script = snippet + 'printf "%s\\n" "$PHASE1" "$PHASE2" "$PHASE3"\n'
    env = {"PATH": f"{console_script().parent}{os.pathsep}{os.environ['PATH']}",
           "SESSIONKIT_SECRET_KEYS": f" {OLD} "}
    result = run_process(["bash", "-euc", script], env=env)
    assert result.returncode == 0, result.stderr
    phase1, phase2, phase3 = result.stdout.splitlines()
    new = phase3
    assert len(decoded(new)) == 32
    assert phase1 == f"{OLD},{new}"
    assert phase2 == f"{new},{OLD}"
