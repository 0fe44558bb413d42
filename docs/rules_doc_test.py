"""docs/rules.md stays in step with the rules: same reference, an example for every rule."""

import re
from pathlib import Path

import pytest

from rules.private.tools import docgen

ROOT = Path(__file__).absolute().parents[1]
DOC = ROOT / "docs" / "rules.md"


def test_reference_matches_the_rules():
    text = DOC.read_text()
    expected = docgen.splice(text, docgen.render(docgen.public_symbols(str(ROOT))))
    assert text == expected, "docs/rules.md is stale: run `bazel run //docs:update`"


def test_every_rule_has_an_example():
    text = DOC.read_text()
    written = text[:text.index(docgen.BEGIN)]
    examples = "\n".join(re.findall(r"```python\n(.*?)```", written, re.S))
    symbols = docgen.public_symbols(str(ROOT))
    rules = [s.name for s in symbols if s.kind in ("rule", "macro")]
    assert {"oci_image", "oci_image_index", "oci_layer", "preseed_bundle", "node_image",
            "go_static_binary"} <= set(rules)
    missing = [name for name in rules if not re.search(rf"\b{name}\(", examples)]
    assert not missing, f"no example in docs/rules.md for {missing}"


def test_every_attribute_is_documented():
    for symbol in docgen.public_symbols(str(ROOT)):
        assert symbol.doc.strip(), symbol.name
        for attr in symbol.attrs:
            assert attr.doc.strip(), f"{symbol.name}.{attr.name}"


def test_an_attribute_without_doc_is_an_error(tmp_path):
    (tmp_path / "rules" / "private").mkdir(parents=True)
    (tmp_path / "rules" / "defs.bzl").write_text(
        'load("//rules/private:r.bzl", _r = "r")\nr = _r\n')
    (tmp_path / "rules" / "private" / "r.bzl").write_text(
        'r = rule(implementation = _impl, doc = "R.", attrs = {"x": attr.string()})\n')
    with pytest.raises(ValueError, match="attribute x has no doc"):
        docgen.public_symbols(str(tmp_path))
