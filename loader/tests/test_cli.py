import os
import subprocess
import sys
from pathlib import Path

import pytest

from loader.main import main

REPO = Path(__file__).resolve().parents[2]


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-flag"]) == 2
    assert main(["--timeout", "-1"]) == 2
    assert main(["--timeout", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("level=error") == 3 and "Traceback" not in err


def test_missing_preseed_dir_is_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--preseed-dir", str(tmp_path / "none")]) == 0
    assert "nothing to load" in capsys.readouterr().err


def test_preseed_path_that_is_a_file_is_bad_usage(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["--preseed-dir", str(tmp_path / "file")]) == 2


def test_unreachable_containerd_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pre" / "default").mkdir(parents=True)
    (tmp_path / "pre" / "default" / "a.tar").write_bytes(b"")
    rc = main(
        [
            "--address",
            str(tmp_path / "nope.sock"),
            "--preseed-dir",
            str(tmp_path / "pre"),
            "--timeout",
            "0.5",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "containerd unreachable" in err and "Traceback" not in err


def test_skips_are_warned_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stray.tar").write_bytes(b"")
    (tmp_path / "default" / "dir").mkdir(parents=True)
    assert main(["--preseed-dir", str(tmp_path), "--address", str(tmp_path / "x.sock")]) == 0
    err = capsys.readouterr().err
    assert f"path={tmp_path / 'stray.tar'} reason=\"not a namespace directory\"" in err
    assert (
        f"path={tmp_path / 'default' / 'dir'} reason=\"directory inside a namespace folder\"" in err
    )


@pytest.mark.parametrize("how", [["-m", "loader.main"], [str(REPO / "loader" / "main.py")]])
def test_runs_as_module_and_as_script(how: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, *how, "--preseed-dir", str(tmp_path / "none")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to load" in result.stderr


def subprocess_env() -> dict[str, str]:
    """Environment for running the loader in a child Python."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
