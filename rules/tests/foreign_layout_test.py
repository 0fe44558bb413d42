"""preseed_bundle takes a plain OCI layout directory as well as an oci_image."""

from pathlib import Path

HERE = Path(__file__).absolute().parent


def test_same_bundle_from_a_layout_directory():
    direct = (HERE / "ok_bundle.tar").read_bytes()
    assert len(direct) > 1024
    assert (HERE / "from_foreign_layout.tar").read_bytes() == direct
