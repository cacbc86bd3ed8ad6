"""Registrable domains by the Public Suffix List (ICANN section) that tldextract bundles.

tldextract's own lookup is exact but costs ~150 ms to import (it brings requests, urllib3 and filelock
for list updates this offline tool never makes), paid by every one-message process (the MTA pipe) whose
mail holds a URL. The same snapshot file is read here with the same matching rules (tldextract's
`suffix_index`: labels matched right to left, `*` wildcards, `!` exceptions, punycode labels decoded
first); tests/test_fast_paths.py holds the two to the same answers.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

_PRIVATE_SECTION = "// ===BEGIN PRIVATE DOMAINS==="
_RULE = re.compile(r"^(?P<suffix>[.*!]*\w[\S]*)", re.UNICODE | re.MULTILINE)  # tldextract's
_UNICODE_DOTS = ("\u3002", "\uff0e", "\uff61")


class _Node:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False


def snapshot_path() -> Path:
    """tldextract's bundled list, found without importing tldextract."""
    spec = importlib.util.find_spec("tldextract")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tldextract is not installed: it provides the public suffix list")
    return Path(next(iter(spec.submodule_search_locations))) / ".tld_set_snapshot"


class _TopLevel(dict[str, _Node]):
    """The root's children, each top-level label's subtree built on first lookup: building all ~7,000
    rules costs more than a one-message process spends on its handful of lookups."""

    def __init__(self, rules: dict[str, list[list[str]]]) -> None:
        super().__init__()
        self._rules = rules  # top-level label -> the rest of each of its rules, labels right to left

    def get(self, label: str, default: _Node | None = None) -> _Node | None:  # type: ignore[override]
        node = super().get(label)
        if node is None:
            rules = self._rules.get(label)  # kept: two threads at once both build the same subtree
            if rules is None:
                return default
            node = self[label] = _subtree(rules)
        return node

    def __contains__(self, label: object) -> bool:
        return super().__contains__(label) or label in self._rules


def _subtree(rules: list[list[str]]) -> _Node:
    top = _Node()
    for labels in rules:
        node = top
        for label in labels:
            child = node.children.get(label)
            if child is None:
                child = node.children[label] = _Node()
            node = child
        node.end = True
    return top


@cache
def _trie() -> _Node:
    text = snapshot_path().read_text(encoding="utf-8")
    rules: dict[str, list[list[str]]] = {}
    for match in _RULE.finditer(text.partition(_PRIVATE_SECTION)[0]):
        labels = match.group("suffix").split(".")
        labels.reverse()
        rules.setdefault(labels[0], []).append(labels[1:])
    root = _Node()
    root.children = _TopLevel(rules)
    return root


def _decode_punycode(label: str) -> str:
    lowered = label.lower()
    if lowered.startswith("xn--"):
        import idna  # noqa: PLC0415 - only for punycode labels

        try:
            return str(idna.decode(lowered))
        except (UnicodeError, IndexError):
            pass
    return lowered


def _suffix_index(labels: list[str]) -> int | None:
    """Index of the first label of the public suffix, or None when no rule matches."""
    node = _trie()
    suffix_index = label_index = len(labels)
    for label in reversed(labels):
        decoded = _decode_punycode(label)
        child = node.children.get(decoded)
        if child is not None:
            label_index -= 1
            node = child
            if node.end:
                suffix_index = label_index
            continue
        if "*" in node.children:
            return label_index if "!" + decoded in node.children else label_index - 1
        break
    return None if suffix_index == len(labels) else suffix_index


def registrable_domain_of(host: str) -> str | None:
    """`domain.suffix` of a host name as tldextract gives it, or None without a public suffix."""
    for dot in _UNICODE_DOTS:
        host = host.replace(dot, ".")
    host = host.strip().rstrip(".")
    labels = host.split(".")
    index = _suffix_index(labels)
    if index is None or index <= 0:
        return None
    domain = labels[index - 1]
    suffix = ".".join(labels[index:])
    if not domain or not suffix:
        return None
    return f"{domain}.{suffix}"
