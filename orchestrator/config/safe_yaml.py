"""YAML read the safe way for a spec: size-limited, no duplicate keys, no nesting or alias expansion
beyond what a spec can need.
"""

import yaml

from orchestrator.config.schema import _cut

MAX_SPEC_BYTES = 1_000_000
"""A spec is a page of YAML; anything larger is refused before it is parsed."""
MAX_DEPTH = 32
"""How deeply a spec's values may nest (the spec itself needs 4 levels; model.options a few more)."""
MAX_EXPANDED_NODES = 100_000
"""How many values a spec may hold once YAML aliases are expanded (an alias bomb holds billions)."""


def _read_spec_text(path):
    # stat, not open: a FIFO or a device would block or never end
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise OSError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise OSError(f"{size:,} bytes is more than a spec's limit of {MAX_SPEC_BYTES:,}")
    return path.read_text(encoding="utf-8")


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing duplicate keys and nesting too deep to be a spec."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {_cut(repr(key_node.value))} (first on line {seen[key].line + 1}): "
                    f"YAML would keep only the last",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _parse_yaml(text):
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, depth=0) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values", node.start_mark
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node, sizes, depth):
    # an alias is the same node object again: counting with a memo costs the number of distinct nodes;
    # a node that contains itself expands forever, which the placeholder makes "too many". Aliases
    # of aliases nest without the composer seeing it, so the depth is checked here too
    if depth > MAX_DEPTH:
        raise yaml.composer.ComposerError(None, None, f"its aliases nest more than {MAX_DEPTH} levels deep", node.start_mark)
    if id(node) not in sizes:
        sizes[id(node)] = MAX_EXPANDED_NODES + 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes, depth + 1) for child in children)
    return sizes[id(node)]


def _yaml_problem(error):
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({error.context})" if error.context and error.problem else ""
    return _cut(f"{where}{error.problem or error.context}{context}", 300)


def _nested_too_deep(raw):
    stack = [(raw, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return _cut(where or "the spec")
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            path = f"{where}[{key}]" if isinstance(node, list) else f"{where}.{key}" if where else str(key)
            stack.append((child, path, depth + 1))
    return None
