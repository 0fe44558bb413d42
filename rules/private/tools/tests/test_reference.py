import pytest

from rules.private.tools import reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("ref, expected", [
    ("hello", "docker.io/library/hello:latest"),
    ("hello:1.0", "docker.io/library/hello:1.0"),
    ("hello:V1_x-y.z", "docker.io/library/hello:V1_x-y.z"),
    ("me/hello:1", "docker.io/me/hello:1"),
    ("me/team/hello", "docker.io/me/team/hello:latest"),
    ("docker.io/hello", "docker.io/library/hello:latest"),
    ("docker.io/library/hello:latest", "docker.io/library/hello:latest"),
    ("index.docker.io/hello", "docker.io/library/hello:latest"),
    ("index.docker.io/me/hello:2", "docker.io/me/hello:2"),
    ("registry.example.com:5000/x/y", "registry.example.com:5000/x/y:latest"),
    ("registry.example.com/y:3", "registry.example.com/y:3"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/x:dev", "localhost:5000/x:dev"),
    ("Registry.Example.com/x", "Registry.Example.com/x:latest"),
    ("Upper/x", "Upper/x:latest"),
    ("my-app__x/a.b-c", "docker.io/my-app__x/a.b-c:latest"),
    ("a--b/c", "docker.io/a--b/c:latest"),
    (f"hello@{DIGEST}", f"docker.io/library/hello@{DIGEST}"),
    (f"hello:1@{DIGEST}", f"docker.io/library/hello@{DIGEST}"),
    (f"ghcr.io/o/r@{DIGEST}", f"ghcr.io/o/r@{DIGEST}"),
    ("hello@sha512:" + "ab" * 64, "docker.io/library/hello@sha512:" + "ab" * 64),
])
def test_normalize(ref, expected):
    assert reference.normalize(ref) == expected
    assert reference.normalize(expected) == expected


@pytest.mark.parametrize("ref, message", [
    ("", "empty"),
    ("Hello", "lowercase"),
    ("me/Hello", "lowercase"),
    ("docker.io/Me/hello", "lowercase"),
    ("example.com/x/Y:1", "lowercase"),
    ("hello:", "format"),
    ("hello:a:b", "format"),
    ("hello:" + "t" * 129, "format"),
    (":tag", "format"),
    ("-hello", "format"),
    ("hello-", "format"),
    ("hello/", "format"),
    ("a//b", "format"),
    ("a b", "format"),
    ("hello:tag with space", "format"),
    ("http://example.com/x", "format"),
    ("hello@sha256:abc", "format"),
    ("hello@sha256:" + "A" * 64, "lowercase hex"),
    ("hello@sha256:" + "a" * 63, "64 lowercase hex"),
    ("hello@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("a" * 64, "64-character hexadecimal"),
    ("x/" + "a" * 250, "255 characters"),
])
def test_invalid(ref, message):
    with pytest.raises(ValueError, match=message) as exc:
        reference.normalize(ref)
    assert repr(ref) in str(exc.value)


@pytest.mark.parametrize("ref, expected", [
    ("hello", "latest"),
    ("me/hello:1", "1"),
    ("localhost:5000/x:dev", "dev"),
    ("registry.example.com:5000/x/y", "latest"),
    (f"hello@{DIGEST}", f"@{DIGEST}"),
    (f"hello:1@{DIGEST}", f"@{DIGEST}"),
])
def test_tag_of(ref, expected):
    assert reference.tag_of(ref) == expected


def test_parse():
    assert reference.parse("me/hello:1") == ("docker.io/me/hello", "1", "")
    assert reference.parse(f"x@{DIGEST}") == (
        "docker.io/library/x", "", DIGEST)
