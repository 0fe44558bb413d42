import os
import re

import pytest

from bench import loader_bench


def test_runs_at_a_tiny_scale(capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    assert loader_bench.main(["--scale", "0.01", "--images", "2", "--layers", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"cold_vs_ctr=\d+\.\d+ warm_vs_ctr=\d+\.\d+ loader_rss_mib=\d+", last), last
