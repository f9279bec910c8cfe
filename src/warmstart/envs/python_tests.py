"""How a python task's hidden tests are graded, decided once when the task file loads.

Two ways, the first whenever it applies:

- **literal calls**: a `check(candidate)` made only of `assert`s whose candidate calls have literal
  arguments (most tests). Only the calls' arguments enter the sandbox (python_harness.py); every
  assertion is evaluated outside on the returned plain data, so the expected values never meet the
  program at all.
- **proxy**: any other test — loops, helpers, random inputs, computed arguments, `assert True`, the
  prompt's own helpers, MBPP's `test_setup_code`. The test runs in a sandboxed process of its own and
  calls the candidate, in another, through a proxy (python_proxy.py); only the test's process reports.

Layouts read: HumanEval (`task_id`, `prompt`, `test`, `entry_point`[, `canonical_solution`]) and MBPP
(`task_id`, `text` or `prompt`, `code`, `test_list`[, `test_setup_code`, `test_imports`]).
"""

from __future__ import annotations

import ast

from ..errors import WarmstartError
from .python_harness import encode

PROXY_LOAD_S = 5.0  # how long the test waits for the program to load before calling it


# What an assertion graded outside the sandbox may name beside its calls' results (python.py evaluates it
# with these builtins and `math`); one naming anything else (range, a helper or constant of the test or the
# prompt, an import) goes through the proxy, where the test file runs whole.
SAFE_BUILTIN_NAMES = tuple(
    "abs all any bool dict float frozenset int isinstance len list max min round set sorted str sum tuple type".split()
)
OUTSIDE_NAMES = frozenset(SAFE_BUILTIN_NAMES) | {"math"}


class NotLiteral(WarmstartError):
    """The test is not of the literal-call shape (so it goes through the proxy)."""


def literal(node: ast.AST, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise NotLiteral(
            f"{where}: the arguments of candidate(...) must be literals (got {ast.unparse(node)!r})"
        ) from None


def parse(source: str, what: str, where: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise WarmstartError(f"{where}: the {what} cannot be parsed (line {exc.lineno}: {exc.msg})") from None


def check_function(test: str, where: str) -> ast.FunctionDef:
    tree = parse(test, "test", where)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None or not check.args.args:
        raise WarmstartError(f"{where}: the test has no `def check(candidate):`")
    return check


def compile_tests(test: str, entry_point: str, where: str) -> tuple[list[dict], list[dict]]:
    """(calls to run in the sandbox, assertions to evaluate outside) from a literal-call `check(candidate)`;
    NotLiteral for any other shape."""
    check = check_function(test, where)
    names = {check.args.args[0].arg, entry_point}
    calls: list[dict] = []
    asserts: list[dict] = []
    for statement in check.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if not isinstance(statement, ast.Assert):
            raise NotLiteral(
                f"{where}: line {statement.lineno} of the test is not an `assert` (only asserts can be graded outside the sandbox)"
            )
        used: list[int] = []

        class Replace(ast.NodeTransformer):
            def visit_Call(self, node: ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in names:
                    calls.append(
                        {
                            "args": [encode(literal(a, where)) for a in node.args],
                            "kwargs": {k.arg: encode(literal(k.value, where)) for k in node.keywords},
                        }
                    )
                    used.append(len(calls) - 1)
                    return ast.copy_location(ast.Name(id=f"__r{len(calls) - 1}", ctx=ast.Load()), node)
                return self.generic_visit(node)

        expression = Replace().visit(statement.test)
        if not used:
            raise NotLiteral(f"{where}: line {statement.lineno} of the test never calls the candidate")
        if unknown := names_needed(expression) - OUTSIDE_NAMES:
            # Graded outside, each had been a NameError read as a failed assert: every answer scored 0.
            raise NotLiteral(f"{where}: line {statement.lineno} of the test names {', '.join(sorted(unknown))}")
        if amplifier := amplifying(expression):
            raise NotLiteral(f"{where}: line {statement.lineno} of the test computes {amplifier} from the results")
        asserts.append({"expr": ast.unparse(expression), "calls": used})
    if not asserts:
        raise NotLiteral(f"{where}: the test has no assertions")
    return calls, asserts


# Graded outside, an assertion runs in the verifying process with no time or memory bound, on values the
# program chose: those whose work can grow past the values' own size run in the sandbox, through the proxy:
# `2 ** candidate(3)` with 10**9 returned, `[0] * candidate()`, `candidate() % 2` with a format string
# returned ('%0200000000d'), math.factorial of a result, a width read from a result (`"x".ljust(...)`,
# an f-string's format spec).
AMPLIFYING_OPERATORS = {ast.Pow: "**", ast.LShift: "<<", ast.Mult: "*", ast.MatMult: "@", ast.Mod: "%"}
MATH_OUTSIDE = frozenset("isclose isnan isinf isfinite fabs floor ceil trunc sqrt isqrt copysign".split())


def amplifying(expression: ast.AST) -> str | None:
    """What in the expression does work that a returned value can make unbounded, or None."""
    for node in ast.walk(expression):
        if isinstance(node, ast.BinOp) and type(node.op) in AMPLIFYING_OPERATORS and reads_values(node):
            return AMPLIFYING_OPERATORS[type(node.op)]
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None and reads_values(node.format_spec):
            return "a format width"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and any_reads_values(node):
            owner = node.func.value
            if not (isinstance(owner, ast.Name) and owner.id == "math" and node.func.attr in MATH_OUTSIDE):
                return f"{ast.unparse(node.func)}(...)"
    return None


def any_reads_values(call: ast.Call) -> bool:
    return any(reads_values(argument) for argument in [*call.args, *(k.value for k in call.keywords)])


def reads_values(node: ast.AST) -> bool:
    """Whether `node` reads anything but constants and modules: a result, or a name bound from one."""
    return any(isinstance(n, ast.Name) and n.id not in OUTSIDE_NAMES for n in ast.walk(node))


def names_needed(expression: ast.AST) -> set[str]:
    """The names an expression reads that it does not bind itself (a comprehension's or a lambda's), beside
    the calls' results (`__rN`)."""
    nodes = list(ast.walk(expression))
    bound = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    for lam in (n for n in nodes if isinstance(n, ast.Lambda)):
        spec = lam.args
        bound |= {a.arg for a in [*spec.posonlyargs, *spec.args, *spec.kwonlyargs, spec.vararg, spec.kwarg] if a}
    read = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return {name for name in read - bound if not name.startswith("__r")}


def humaneval_tests(record: dict, where: str) -> dict:
    """The hidden grading data of a HumanEval-layout task."""
    test, entry_point, prompt = record["test"], record["entry_point"], record["prompt"]
    try:
        calls, asserts = compile_tests(test, entry_point, where)
        return {"calls": calls, "asserts": asserts}
    except NotLiteral:
        check_function(test, where)  # it must still define check(candidate)
    # The prompt is trusted code the test may use (HumanEval's encode/decode pairs): the test's process
    # runs it first, when it is a whole program (a signature and docstring are), then the test's own
    # definitions; a failure there is the task's, not the candidate's. Only then is check called.
    setup = [prompt, test] if parses(prompt) else [test]
    return proxy_tests(setup, [f"check({entry_point})\n"], [entry_point])


def proxy_tests(setup: list[str], units: list[str], proxied: list[str]) -> dict:
    return {"mode": "proxy", "setup": setup, "units": units, "proxied": proxied}


def parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def is_mbpp_record(record: dict) -> bool:
    return "test_list" in record


def mbpp_parts(record: dict, where: str) -> tuple[str, str, dict]:
    """(task id, prompt text, hidden) of an MBPP-layout task: the asserts call the solution's functions by
    name; each assert is one test (so the fraction passed is a detail)."""
    missing = [k for k in ("task_id", "code", "test_list") if k not in record]
    if "text" not in record and "prompt" not in record:
        missing.append("text")
    if missing:
        raise WarmstartError(f"{where}: missing {', '.join(missing)}")
    tests = [str(t) for t in record["test_list"]]
    if not tests:
        raise WarmstartError(f"{where}: test_list is empty")
    setup = "\n".join([*record.get("test_imports", []), record.get("test_setup_code") or ""])
    parse(setup, "test_setup_code", where)
    defined = {n.name for n in parse(record["code"], "code", where).body if isinstance(n, ast.FunctionDef)}
    called = [name for test in tests for name in called_names(parse(test, "test", where))]
    proxied = list(dict.fromkeys(name for name in called if name in defined))
    if not proxied:
        raise WarmstartError(f"{where}: the tests call none of the functions that `code` defines")
    # MBPP's harness runs test_setup_code and the solution in one namespace: what the setup defines (a
    # table, a class, an import) the solution may use, so it leads the candidate's program as well.
    program_setup = f"{setup}\n" if setup.strip() else ""
    hidden = {"entry_point": proxied[0], "prompt_code": program_setup, "solution": record["code"]}
    try:
        if setup.strip() or len(proxied) > 1:
            raise NotLiteral("needs the proxy")
        check = "def check(candidate):\n" + "".join(f"    {t.strip()}\n" for t in tests)
        calls, asserts = compile_tests(check, proxied[0], where)
        hidden |= {"calls": calls, "asserts": asserts}
    except NotLiteral:
        hidden |= proxy_tests([setup], [t + "\n" for t in tests], proxied)
    text = str(record.get("text") or record.get("prompt"))
    listed = "\n".join(tests)
    prompt = f"{text}\nYour code should pass these tests:\n\n{listed}\n\nReply with the whole program in one ```python block."
    return str(record["task_id"]), prompt, hidden


def called_names(tree: ast.AST) -> list[str]:
    return [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


def proxy_spec(hidden: dict, program: str, nonce: str, per_call_s: float, seed: int) -> dict:
    """What the sandbox gets for one proxied grading (zygote.py and python_proxy.py read it)."""
    return {
        "mode": "proxy",
        "program": program,
        "setup": hidden["setup"],
        "units": hidden["units"],
        "proxied": hidden["proxied"],
        "nonce": nonce,
        "per_call_s": per_call_s,
        "load_s": PROXY_LOAD_S,
        "seed": seed,
    }
