"""The package passes `mypy --strict`, together with a user's script that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import typed_sample

HERE = Path(__file__).resolve().parent


def test_mypy_strict_accepts_the_package_and_a_sample(tmp_path: Path) -> None:
    from mypy import api  # develop.sh installs mypy and the stubs it needs

    package = HERE.parent / "python" / "shoal"
    out, err, status = api.run(
        ["--strict", "--cache-dir", str(tmp_path), str(package), str(HERE / "typed_sample.py")]
    )
    assert status == 0, out + err


def test_the_typed_sample_runs(capsys: pytest.CaptureFixture[str]) -> None:
    typed_sample.main()
    # One row from SQL; both zones pass the filter (b by fare, a by name); one slot.
    assert capsys.readouterr().out.split() == ["1", "2", "1"]
