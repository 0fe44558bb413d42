"""Running the loader in-process against a test containerd, and reading its JSON log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loader.main import main
from testutil.containerd import Containerd, StateReader
from testutil.oci_archive import chain_ids


def load(
    ctrd: Containerd, preseed: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, list[dict[str, Any]]]:
    """Run the loader with JSON logs; returns (exit code, log records)."""
    argv = ["--address", ctrd.address, "--preseed-dir", str(preseed), "--timeout", "10"]
    rc = main([*argv, "--log-format=json", *extra])
    err = capsys.readouterr().err
    return rc, [json.loads(line) for line in err.splitlines()]


def bundle_records(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The per-bundle records by file name."""
    return {Path(r["file"]).name: r for r in records if r["msg"] == "bundle"}


def assert_unpacked(
    state: StateReader, namespace: str, diff_ids: list[str], snapshotter: str = "overlayfs"
) -> None:
    chain = chain_ids(diff_ids)
    for i, chain_id in enumerate(chain):
        snap = state.snapshot(namespace, chain_id, snapshotter)
        assert snap is not None and snap.kind == 3, chain_id  # COMMITTED
        assert snap.parent == (chain[i - 1] if i else "")
