import subprocess
import sys

import pytest

from trustlab.cli import main
from trustlab.registry import SYSTEMS

from . import toy_system  # noqa: F401


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trustlab.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_list_env():
    for args in (["--help"], ["list"], ["env"], ["env", "--json"]):
        p = run_cli(*args)
        assert p.returncode == 0, (args, p.stderr)
    assert "reproduce" in run_cli("--help").stdout
    assert "nadafd" in run_cli("list").stdout
    assert '"torch"' in run_cli("env", "--json").stdout


def test_unknown_system_did_you_mean_exit_2():
    p = run_cli("run", "nadafx")
    assert p.returncode == 2
    assert p.stderr.strip() == "error: unknown system 'nadafx'; did you mean 'nadafd'?"
    assert "Traceback" not in p.stderr


def test_nosuch_exit_2_one_line():
    p = run_cli("run", "nosuch")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "unknown system 'nosuch'" in p.stderr


def test_unknown_option_exit_2():
    p = run_cli("run", "nadafd", "--bogus")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--bogus" in p.stderr


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SYSTEMS._targets, "toy", "core.toy_system:SYSTEM")
    yield
    SYSTEMS._cache.pop("toy", None)


def test_run_and_report_in_process(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "toy", "--scale", "smoke", "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").is_file()
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "| default | ours | 1 |" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize(
    "args, match",
    [
        (["run", "toy", "--set", "nn=1"], "unknown key 'nn'"),
        (["run", "toy", "--set", "novalue"], "bad override"),
        (["run", "toy", "--config", "/nonexistent/c.yaml"], "does not exist"),
        (["run", "toy", "--scale", "huge"], "unknown scale"),
        (["run", "toy", "--seeds", "0"], "--seeds 0 must be >= 1"),
        (["run", "toy", "--model", "m"], "no single model setting"),
        (["report", "/nonexistent/dir"], "neither a run folder"),
        (["reproduce"], "either a SYSTEM or --all"),
    ],
)
def test_bad_input_exit_2(toy, tmp_path, capsys, args, match):
    assert main(args + (["--out", str(tmp_path / "o")] if args[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def test_unwritable_out_exit_2(toy, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["run", "toy", "--scale", "smoke", "--out", str(f / "x")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_bad_config_file_exit_2(toy, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: [1\n")
    assert main(["run", "toy", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "malformed" in capsys.readouterr().err
