from pathlib import Path

from loader.discover import find_bundles, valid_namespace


def test_finds_bundles_sorted_and_skips_the_rest(tmp_path: Path) -> None:
    (tmp_path / "k8s.io" / "nested").mkdir(parents=True)
    (tmp_path / "default").mkdir()
    (tmp_path / "bad ns").mkdir()
    (tmp_path / "README").write_text("x")
    (tmp_path / "k8s.io" / "b.tar").write_bytes(b"")
    (tmp_path / "k8s.io" / "a.tar").write_bytes(b"")
    (tmp_path / "k8s.io" / "c.tar.zst").write_bytes(b"")
    (tmp_path / "k8s.io" / "d.tgz").write_bytes(b"")
    (tmp_path / "k8s.io" / "notes.txt").write_text("x")
    (tmp_path / "default" / "c.tar").write_bytes(b"")
    bundles, skipped = find_bundles(tmp_path)
    assert [(b.namespace, b.path.name) for b in bundles] == [
        ("default", "c.tar"),
        ("k8s.io", "a.tar"),
        ("k8s.io", "b.tar"),
        ("k8s.io", "c.tar.zst"),
        ("k8s.io", "d.tgz"),
    ]
    reasons = {s.path.relative_to(tmp_path).as_posix(): s.reason for s in skipped}
    assert reasons == {
        "README": "not a namespace directory",
        "bad ns": "not a valid containerd namespace name",
        "k8s.io/nested": "directory inside a namespace folder",
        "k8s.io/notes.txt": "not a bundle (.tar, .tar.gz, .tgz, .tar.zst, .tzst)",
    }


def test_namespace_names() -> None:
    assert valid_namespace("k8s.io") and valid_namespace("default") and valid_namespace("a-b_c")
    assert not valid_namespace("") and not valid_namespace(".x") and not valid_namespace("a" * 77)
