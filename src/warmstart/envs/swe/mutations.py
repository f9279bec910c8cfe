"""Candidate bugs: small AST mutations of one source file, applied as text edits.

Each mutation replaces the source text of one node (found by its positions) with the unparsed mutated
node, so the rest of the file (comments, formatting) stays as it was and the fix is a small diff. Kinds:
a comparison flipped (`<` / `<=`, `==` / `!=`, `in` / `not in`, `is` / `is not`), an int constant off by
one, a `range` bound off by one, the first two arguments of a call swapped, an `if` without `else`
removed, a default value changed (bools flipped, ints +1), `and` / `or` swapped, `+` / `-` swapped,
a `not` dropped. A mutation that does not parse or changes nothing is not offered.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

from ..python_tests import parses

COMPARE_FLIPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutation:
    path: str
    kind: str
    line: int
    description: str
    source: str  # the whole mutated file


def replaced(source: str, node: ast.AST, text: str) -> str:
    """`source` with `node`'s text (its positions are UTF-8 byte columns) replaced by `text`."""
    data = source.encode()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    begin = starts[node.lineno - 1] + node.col_offset
    end = starts[node.end_lineno - 1] + node.end_col_offset
    return (data[:begin] + text.encode() + data[end:]).decode()


def removed_statement(source: str, node: ast.stmt) -> str | None:
    """`source` without the lines of `node`, when it has them to itself. Lines as `ast` counts them: split
    at "\\n", "\\r" and "\\r\\n" only (bytes.splitlines), not also at a form feed, "\\x1c"-"\\x1e", "\\x85" or
    "\\u2028" as str.splitlines does (a form feed between functions put every later line off by one)."""
    lines = source.encode().splitlines(keepends=True)
    first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
    if first[: node.col_offset].strip() or last[node.end_col_offset :].strip():
        return None
    return b"".join(lines[: node.lineno - 1] + lines[node.end_lineno :]).decode()


def expression_mutants(node: ast.AST) -> list[tuple[str, ast.AST, str]]:
    """(kind, mutated copy of `node`, what changed) for one expression node."""
    out = []
    if isinstance(node, ast.Compare) and type(node.ops[0]) in COMPARE_FLIPS:
        new = copy.deepcopy(node)
        new.ops[0] = COMPARE_FLIPS[type(node.ops[0])]()
        out.append(("flipped comparison", new, f"`{ast.unparse(node)}` -> `{ast.unparse(new)}`"))
    elif isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 1000:
        out.append(("off by one", ast.Constant(node.value + 1), f"{node.value} -> {node.value + 1}"))
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("and/or swapped", new, f"`{ast.unparse(node)}` -> `{ast.unparse(new)}`"))
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        new = copy.deepcopy(node)
        new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        out.append(("+/- swapped", new, f"`{ast.unparse(node)}` -> `{ast.unparse(new)}`"))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("not dropped", node.operand, f"`{ast.unparse(node)}` -> `{ast.unparse(node.operand)}`"))
    elif isinstance(node, ast.Call):
        out.extend(call_mutants(node))
    return out


def call_mutants(node: ast.Call) -> list[tuple[str, ast.AST, str]]:
    out = []
    args = node.args
    if isinstance(node.func, ast.Name) and node.func.id == "range" and args and not isinstance(args[-1], ast.Starred):
        new = copy.deepcopy(node)
        new.args[-1] = ast.BinOp(args[-1], ast.Sub(), ast.Constant(1))
        out.append(("range bound off by one", new, f"`{ast.unparse(node)}` -> `{ast.unparse(new)}`"))
    if len(args) >= 2 and not any(isinstance(a, ast.Starred) for a in args[:2]):
        if ast.unparse(args[0]) != ast.unparse(args[1]):
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            out.append(("swapped arguments", new, f"`{ast.unparse(node)}` -> `{ast.unparse(new)}`"))
    return out


def default_mutants(node: ast.arguments) -> list[tuple[str, ast.AST, str]]:
    out = []
    for default in [*node.defaults, *(d for d in node.kw_defaults if d is not None)]:
        if isinstance(default, ast.Constant) and type(default.value) is bool:
            new = ast.Constant(not default.value)
        elif isinstance(default, ast.Constant) and type(default.value) is int:
            new = ast.Constant(default.value + 1)
        else:
            continue
        out.append((default, new))
    return [("wrong default", (d, n), f"default {d.value!r} -> {n.value!r}") for d, n in out]


def mutations(path: str, source: str) -> list[Mutation]:
    """Every candidate mutation of one file, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[Mutation] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstrings
        candidates = []
        if isinstance(node, ast.arguments):
            candidates = [(kind, d, n, what) for kind, (d, n), what in default_mutants(node)]
        elif isinstance(node, ast.expr) and hasattr(node, "lineno"):
            candidates = [(kind, node, new, what) for kind, new, what in expression_mutants(node)]
        for kind, target, new, what in candidates:
            found.append(Mutation(path, kind, target.lineno, what, replaced(source, target, ast.unparse(new))))
        if isinstance(node, ast.If) and not node.orelse:
            text = removed_statement(source, node)
            if text is not None:
                what = f"`if {ast.unparse(node.test)}:` branch removed"
                found.append(Mutation(path, "removed if branch", node.lineno, what, text))
    return [m for m in found if m.source != source and parses(m.source)]
