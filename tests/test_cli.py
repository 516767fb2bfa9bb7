"""The command-line dispatcher and the generated diagrams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2psc.cli import main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "diagrams" in capsys.readouterr().out


def test_python_dash_m_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "p2psc", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("p2psc ")


def test_committed_diagrams_are_current() -> None:
    assert main(["diagrams", "--check"]) == 0


def test_diagrams_check_detects_stale_files(tmp_path: Path) -> None:
    assert main(["diagrams", "--dir", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.md"))
    assert main(["diagrams", "--check", "--dir", str(tmp_path)]) == 0
    if files:
        files[0].write_text(files[0].read_text() + "edited by hand\n")
        assert main(["diagrams", "--check", "--dir", str(tmp_path)]) == 1


def test_a_reader_that_goes_away_is_not_a_traceback() -> None:
    """``p2psc ... | head``: stdout closes before we write; exit quietly with SIGPIPE's status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psc", "explore", "negotiator", "--protocols", "1", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the interpreter has even imported p2psc
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
