"""Reading a cohort spec from YAML, with every problem located by line and key path."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from data_schemas import (
    MODALITY_KINDS,
    AudioModality,
    CohortSpec,
    ImageModality,
    OutcomeSpec,
    Problem,
    SensorModality,
    SplitSpec,
    TabularModality,
    TextModality,
)

_KIND_MODELS: dict[str, type[BaseModel]] = {
    "tabular": TabularModality,
    "text": TextModality,
    "image": ImageModality,
    "audio": AudioModality,
    "sensor": SensorModality,
}
_SECTION_MODELS: dict[str, type[BaseModel]] = {"outcome": OutcomeSpec, "split": SplitSpec}
MAX_SPEC_BYTES = 1_000_000
# libyaml's parser when PyYAML was built with it: the pure-Python one takes seconds on a large file.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecError(ValueError):
    """A cohort spec that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_spec(path: str | Path) -> tuple[CohortSpec | None, list[Problem]]:
    """Parse and validate ``path``; returns the spec and every problem found.

    The spec is usable only when there are no problems. With problems it is None, or, when the only
    faults are unknown keys, the spec without them (so that validation can go on to the table).
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        return None, [Problem(file=name, expected="an existing cohort spec file (YAML)")]
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        return None, [
            Problem(
                file=name,
                value=f"{size} bytes",
                expected=f"a cohort spec of at most {MAX_SPEC_BYTES // 1_000_000} MB (specs are a few KB)",
            )
        ]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return None, [Problem(file=name, value=f"byte {error.start}", expected="UTF-8 text")]
    try:
        alias = _first_alias(text, name)
        if alias is not None:
            return None, [alias]
        root = yaml.compose(text, Loader=_LOADER)
        data = None if root is None else _LOADER("").construct_document(root)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        return None, [
            Problem(
                file=name,
                line=mark.line + 1 if mark else None,
                value=str(getattr(error, "problem", "")),
                expected="valid YAML",
            )
        ]
    if not isinstance(data, dict):
        return None, [Problem(file=name, value=type(data).__name__, expected="a YAML mapping of keys")]
    problems = _duplicate_keys(root, name)
    try:
        spec = CohortSpec.model_validate(data)
    except ValidationError as error:
        nodes = _NodeIndex(root)
        problems += [_to_problem(e, data, nodes, name) for e in error.errors()]
        spec = _without_unknown_keys(data, error)
    return spec, problems


def _first_alias(text: str, name: str) -> Problem | None:
    """A problem for the first YAML anchor or alias, found in one pass over the parse events.

    Specs are plain data: an alias adds nothing a spec needs, and a few nested ones expand into
    billions of nodes (the "billion laughs" file) in anything that walks the document.
    """
    for event in yaml.parse(text, Loader=_LOADER):
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            return Problem(
                file=name,
                line=event.start_mark.line + 1,
                value=("*" if isinstance(event, yaml.AliasEvent) else "&") + str(anchor)[:40],
                expected="a spec without YAML anchors or aliases (& and *); write each value out",
            )
    return None


def _without_unknown_keys(data: dict[str, Any], error: ValidationError) -> CohortSpec | None:
    """The spec with its unknown keys dropped, when those were its only faults.

    Lets ``deepwe validate`` go on to check the table and files in the same run; the problems
    already found still make the spec unusable for training or prediction.
    """
    if any(e["type"] != "extra_forbidden" for e in error.errors()):
        return None
    cleaned = copy.deepcopy(data)
    for e in error.errors():
        keys = _spec_loc(e["loc"])
        parent = cleaned
        for key in keys[:-1]:
            parent = parent[key]
        parent.pop(keys[-1], None)
    try:
        return CohortSpec.model_validate(cleaned)
    except ValidationError:
        return None


def _duplicate_keys(node: yaml.Node | None, name: str, prefix: str = "") -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            key_path = f"{prefix}.{key.value}" if prefix else str(key.value)
            if key.value in seen:
                problems.append(
                    Problem(
                        file=name,
                        line=key.start_mark.line + 1,
                        column=key_path,
                        expected="each key once",
                    )
                )
            seen.add(key.value)
            problems += _duplicate_keys(value, name, key_path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, name, prefix)
    return problems


class _NodeIndex:
    """Key lookups in the YAML node tree, each mapping indexed once (a spec with many unknown keys
    would otherwise be scanned once per key)."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root
        self._entries: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    def entry(self, node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
        """(key node, value node) of the first entry named ``key`` in ``node``."""
        index = self._entries.get(id(node))
        if index is None:
            index = {}
            for k, v in node.value:
                index.setdefault(str(k.value), (k, v))
            self._entries[id(node)] = index
        return index.get(key)


def _node_at(nodes: _NodeIndex, keys: list[Any]) -> yaml.Node | None:
    """The YAML node (the key node for a mapping entry) at ``keys``; the deepest one found."""
    node = found = nodes.root
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = nodes.entry(node, str(key))
            if match is None:
                return found
            found, node = match[0], match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = found = node.value[key]
        else:
            return found
    return found


def _spec_loc(loc: tuple[Any, ...]) -> list[Any]:
    """Drop pydantic's discriminator tag from a location: ``modalities.labs.tabular.x`` -> ``modalities.labs.x``."""
    keys = list(loc)
    if len(keys) >= 3 and keys[0] == "modalities" and keys[2] in MODALITY_KINDS:
        del keys[2]
    return keys


def _allowed_keys(keys: list[Any], data: dict[str, Any]) -> list[str]:
    if len(keys) == 1:
        return list(CohortSpec.model_fields)
    if len(keys) == 2 and keys[0] in _SECTION_MODELS:
        return list(_SECTION_MODELS[keys[0]].model_fields)
    if len(keys) == 3 and keys[0] == "modalities":
        entry = data.get("modalities", {}).get(keys[1], {})
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind in _KIND_MODELS:
            return list(_KIND_MODELS[kind].model_fields)
    return []


def _to_problem(error: dict[str, Any], data: dict[str, Any], nodes: _NodeIndex, name: str) -> Problem:
    keys = _spec_loc(error["loc"])
    node = _node_at(nodes, keys)
    line = node.start_mark.line + 1 if node is not None and keys else None
    column = ".".join(str(k) for k in keys) or None
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(keys, data)
        return Problem(
            file=name,
            line=line,
            column=column,
            value=str(keys[-1]),
            expected=f"a known key{did_you_mean(keys[-1], allowed)} Known here: {', '.join(allowed)}",
        )
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag", "")
        node = _node_at(nodes, [*keys, "kind"])
        return Problem(
            file=name,
            line=node.start_mark.line + 1 if node is not None else line,
            column=f"{column}.kind",
            value=str(tag),
            expected=f"a modality kind{did_you_mean(tag, MODALITY_KINDS)} One of: {', '.join(MODALITY_KINDS)}",
        )
    if kind == "union_tag_not_found":
        return Problem(
            file=name,
            line=line,
            column=f"{column}.kind",
            expected=f"a kind: one of {', '.join(MODALITY_KINDS)}",
        )
    if kind == "missing":
        return Problem(file=name, line=line, column=column, expected="this required key")
    value = error.get("input")
    shown = None if isinstance(value, dict | list) else str(value)
    message = error["msg"].removeprefix("Value error, ")
    return Problem(file=name, line=line, column=column, value=shown, expected=message)
