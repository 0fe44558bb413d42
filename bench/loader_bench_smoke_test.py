import os
import re

import pytest

from bench import loader_bench


def test_runs_at_a_tiny_scale(capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    assert loader_bench.main(["--scale", "0.01", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 application images + pause in k8s.io and system" in out
    assert re.search(r"^start to CRI running all +\d", out, re.M), out
    assert re.search(r"^second run, --manifest +\d", out, re.M), out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"cold_vs_ctr=\d+\.\d+ warm_vs_ctr=\d+\.\d+ loader_rss_mib=\d+", last), last
