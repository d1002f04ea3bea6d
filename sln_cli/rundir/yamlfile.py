"""Bounded YAML: `yaml.SafeLoader` (no tags run code) with a size cap and a cap on nodes after alias expansion.

A "billion laughs" document (nested aliases) is tiny on disk and small once composed, since an alias shares
its node; but anything that walks the result (merging, printing, an error message) expands it. So every
alias is charged the size of the subtree it repeats, and a document past the budget is refused while it is
still being composed, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sln_cli.errors import SlnError
from sln_cli.rundir import readers

MAX_BYTES = 1 << 20  # 1 MiB: a resolved config is ~2 KiB
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion; a resolved config has ~100


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str, max_nodes: int) -> None:
        super().__init__(stream)
        self.budget = max_nodes
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size, so shared subtrees are sized once

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchored = self.anchors.get(self.peek_event().anchor)
            self._spend(1 if anchored is None else self._size(anchored))
        else:
            self._spend(1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key written twice in one mapping is an error (PyYAML keeps the last one silently); `<<` merges may
        still be overridden, as YAML intends."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {str(key)[:80]!r}",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _spend(self, nodes: int) -> None:
        self.budget -= nodes
        if self.budget < 0:
            raise _TooLarge

    def _size(self, node: yaml.Node) -> int:
        if id(node) not in self.sizes:
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else []
            self.sizes[id(node)] = 1 + sum(self._size(child) for child in children)
        return self.sizes[id(node)]


class _TooLarge(Exception):
    pass


def loads(text: str, *, what: str, max_nodes: int = MAX_NODES, invalid_as_text: bool = False) -> Any:
    """Parse one YAML document safely and within bounds; `what` names the source in errors.

    `invalid_as_text`: text that is not YAML at all is returned as the string it is (a `--set` value such
    as a path with a colon); a document past the bounds is still refused."""
    loader = None
    try:
        loader = _BoundedLoader(text, max_nodes)  # its reader already refuses control characters
        return loader.get_single_data()
    except _TooLarge:
        raise SlnError(f"{what} expands to more than {max_nodes} YAML nodes (nested aliases?); "
                       "write the values out plainly") from None
    except RecursionError:
        raise SlnError(f"{what} is nested too deeply to be a config; fix the file") from None
    except ValueError:  # int() of a number over Python's 4,300-digit limit (CVE-2020-10735)
        raise SlnError(f"{what} holds an integer of over 4,300 digits; no setting takes one: fix the value") from None
    except yaml.YAMLError as exc:
        if invalid_as_text:
            return text
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc.__class__.__name__).split())[:200]
        raise SlnError(f"{what} is not valid YAML{where}: {problem}; fix the file") from None
    finally:
        if loader is not None:
            loader.dispose()


def load(path: Path, *, what: str = "preset", max_bytes: int = MAX_BYTES) -> Any:
    """A regular YAML file of at most `max_bytes`, UTF-8, parsed by `loads`."""
    data = readers.read_bytes(path, what=what, max_bytes=max_bytes)  # a regular file only: a FIFO never blocks
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SlnError(f"{what} {path} is not UTF-8 text (byte {exc.start}); give a YAML file") from None
    return loads(text, what=f"{what} {path}")
