"""Generates the reference part of docs/rules.md from the rules' Starlark sources.

It reads rules/defs.bzl, follows its load() statements to rules/private/*.bzl, and writes one
section per public rule or provider with its doc and a table of its attributes or fields.
Starlark is parsed with Python's own parser (the files use the common subset).

    docgen.py ROOT                   # prints the reference
    docgen.py ROOT --update DOC.md   # rewrites the part of DOC.md between the markers
    bazel run //docs:update          # the same for docs/rules.md of the workspace
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

BEGIN = "<!-- BEGIN GENERATED REFERENCE: bazel run //docs:update -->"
END = "<!-- END GENERATED REFERENCE -->"

ATTR_TYPES = {
    "label": "label",
    "label_list": "list of labels",
    "label_keyed_string_dict": "dict: label → string",
    "string": "string",
    "string_list": "list of strings",
    "string_dict": "dict: string → string",
    "int": "int",
    "bool": "bool",
}


@dataclass
class Attr:
    name: str
    type: str
    doc: str
    default: str
    mandatory: bool


@dataclass
class Symbol:
    name: str
    kind: str  # "rule", "provider" or "macro"
    doc: str
    attrs: list[Attr] = field(default_factory=list)


class Module:
    """One parsed .bzl file and its top-level assignments."""

    def __init__(self, root: str, label: str) -> None:
        self.root = root
        self.path = _label_path(root, label)
        with open(self.path, encoding="utf-8") as f:
            self.source = f.read()
        self.tree = ast.parse(self.source, self.path)
        self.values: dict[str, ast.expr] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.loads: dict[str, tuple[str, str]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name):
                self.values[node.targets[0].id] = node.value
            elif isinstance(node, ast.FunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.Expr) and _is_call(node.value, "load"):
                call = node.value
                target = ast.literal_eval(call.args[0])
                for arg in call.args[1:]:
                    name = ast.literal_eval(arg)
                    self.loads[name] = (target, name)
                for kw in call.keywords:
                    self.loads[kw.arg] = (target, ast.literal_eval(kw.value))

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or ""


def _label_path(root: str, label: str) -> str:
    package, _, name = label.lstrip("/").partition(":")
    return os.path.join(root, *package.split("/"), name)


def _resolve_label(current: str, label: str) -> str:
    if label.startswith(":"):
        package = current.lstrip("/").partition(":")[0]
        return f"//{package}{label}"
    return label


def _is_call(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == name))


def _kwargs(call: ast.Call) -> dict[str, ast.expr]:
    return {kw.arg: kw.value for kw in call.keywords if kw.arg}


class Reader:
    def __init__(self, root: str) -> None:
        self.root = root
        self.modules: dict[str, Module] = {}

    def module(self, label: str) -> Module:
        if label not in self.modules:
            self.modules[label] = Module(self.root, label)
        return self.modules[label]

    def lookup(self, label: str, name: str) -> tuple[str, ast.AST]:
        """Follows load() statements to where name is defined."""
        module = self.module(label)
        if name in module.values:
            return label, module.values[name]
        if name in module.functions:
            return label, module.functions[name]
        if name in module.loads:
            target, symbol = module.loads[name]
            return self.lookup(_resolve_label(label, target), symbol)
        raise ValueError(f"{module.path}: {name} is not defined")

    def attrs_dict(self, label: str, node: ast.expr) -> list[tuple[str, ast.Call, str]]:
        """(name, attr.*() call, defining label) of an attrs expression."""
        if isinstance(node, ast.Dict):
            out = []
            for key, value in zip(node.keys, node.values):
                if key is None:
                    out += self.attrs_dict(label, value)
                else:
                    out.append((ast.literal_eval(key), value, label))
            return out
        if isinstance(node, ast.Name):
            where, value = self.lookup(label, node.id)
            return self.attrs_dict(where, value)
        if _is_call(node, "dict"):
            out = []
            for arg in node.args:
                out += self.attrs_dict(label, arg)
            for kw in node.keywords:
                if kw.arg is None:
                    out += self.attrs_dict(label, kw.value)
                else:
                    raise ValueError(f"{label}: use dict(**{{...}}) for attrs")
            return out
        raise ValueError(f"{label}: cannot read attrs {ast.dump(node)[:60]}")

    def symbol(self, public: str, label: str, name: str) -> Symbol:
        where, node = self.lookup(label, name)
        module = self.module(where)
        if isinstance(node, ast.FunctionDef):
            return Symbol(public, "macro", ast.get_docstring(node) or "")
        if _is_call(node, "rule"):
            kwargs = _kwargs(node)
            symbol = Symbol(public, "rule", _doc(kwargs.get("doc")))
            symbol.attrs.append(Attr("name", "name", "A unique name for this target.", "", True))
            if "attrs" in kwargs:
                for attr_name, call, attr_where in self.attrs_dict(where, kwargs["attrs"]):
                    if attr_name.startswith("_"):
                        continue
                    symbol.attrs.append(self._attr(attr_name, call, attr_where))
            return symbol
        if _is_call(node, "provider"):
            kwargs = _kwargs(node)
            symbol = Symbol(public, "provider", _doc(kwargs.get("doc")))
            fields = kwargs.get("fields")
            if isinstance(fields, ast.Dict):
                for key, value in zip(fields.keys, fields.values):
                    symbol.attrs.append(Attr(ast.literal_eval(key), "", ast.literal_eval(value), "", False))
            return symbol
        raise ValueError(f"{module.path}: {name} is not a rule, provider or macro")

    def _attr(self, name: str, call: ast.Call, label: str) -> Attr:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            raise ValueError(f"{label}: attribute {name} is not an attr.*() call")
        kind = call.func.attr
        kwargs = _kwargs(call)
        if "doc" not in kwargs:
            raise ValueError(f"{label}: attribute {name} has no doc")
        mandatory = "mandatory" in kwargs and ast.literal_eval(kwargs["mandatory"]) is True
        default = self.module(label).text(kwargs["default"]) if "default" in kwargs else ""
        return Attr(name, ATTR_TYPES.get(kind, kind), _doc(kwargs["doc"]), default, mandatory)


def _doc(node: ast.expr | None) -> str:
    if node is None:
        return ""
    return ast.literal_eval(node)


def public_symbols(root: str) -> list[Symbol]:
    reader = Reader(root)
    defs = "//rules:defs.bzl"
    module = reader.module(defs)
    symbols = []
    for name, value in module.values.items():
        if name.startswith("_"):
            continue
        if not isinstance(value, ast.Name):
            raise ValueError(f"{module.path}: {name} must be an alias of a loaded symbol")
        symbols.append(reader.symbol(name, defs, value.id))
    for name in module.functions:
        if not name.startswith("_"):
            symbols.append(reader.symbol(name, defs, name))
    return symbols


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(symbols: Sequence[Symbol]) -> str:
    lines = [BEGIN, "", "## Reference", ""]
    for s in symbols:
        lines += [f"### `{s.name}`", "", f"*{s.kind}* — "
                  f"`load(\"//rules:defs.bzl\", \"{s.name}\")`", "", s.doc.strip(), ""]
        if s.kind == "rule":
            lines += ["| attribute | type | default | description |",
                      "| --- | --- | --- | --- |"]
            for a in s.attrs:
                default = "required" if a.mandatory else (f"`{_cell(a.default)}`" if a.default else "empty")
                lines.append(f"| `{a.name}` | {a.type} | {default} | {_cell(a.doc)} |")
            lines.append("")
        elif s.kind == "provider":
            lines += ["| field | description |", "| --- | --- |"]
            lines += [f"| `{a.name}` | {_cell(a.doc)} |" for a in s.attrs]
            lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(document: str, reference: str) -> str:
    """Replaces the generated part of document (from BEGIN to END) by reference."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError("the document has no generated reference markers")
    return document[:start] + reference + document[end + len(END) + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docgen", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="workspace root (default: BUILD_WORKSPACE_DIRECTORY)")
    parser.add_argument("--update", metavar="DOC", help="rewrite DOC's generated reference")
    args = parser.parse_args(argv)
    root = args.root or os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if not root:
        parser.error("give the workspace root")
    reference = render(public_symbols(root))
    if not args.update:
        sys.stdout.write(reference)
        return 0
    doc = args.update if os.path.isabs(args.update) else os.path.join(root, args.update)
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    with open(doc, "w", encoding="utf-8") as f:
        f.write(splice(text, reference))
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, SyntaxError) as e:
        sys.exit(f"docgen: {e}")
