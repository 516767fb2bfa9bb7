"""Mutation testing of the protocol cores: does each module's focused test suite notice a change?

Run (one module at a time on a shared machine; it is CPU heavy and slow, a benchmark, not a gate):

    .venv/bin/python tests/bench/mutation.py --module negotiator --sample 150
    .venv/bin/python tests/bench/mutation.py --module all --sample 100 --seed 1
    .venv/bin/python tests/bench/mutation.py --module wire --list          # mutants, no run
    .venv/bin/python tests/bench/mutation.py --module wire --show "KEY"    # one mutant's diff
    .venv/bin/python tests/bench/mutation.py --module wire --only "KEY"    # run it (repeatable)

It prints, per module: mutants generated, documented equivalents (not run), the sample run,
killed / survived / timed out, and the score ``killed / run`` (equivalents excluded), then the
key of every survivor. Budget (issue 18): >= 90 % per module.

Why a small AST mutator of our own rather than mutmut or cosmic-ray (both install from PyPI):

- mutmut 3 mutates only function bodies (it rewrites functions into trampolines); the wire
  constants, the construct layouts, the message tables and the ``Reason`` / ``MessageType``
  numbers are module- and class-level code, which is where issue 18 found real gaps.
- cosmic-ray does mutate module-level code, but it rewrites the source file on disk for each
  mutant (other agents edit and test this tree concurrently), needs a session database, and has
  no per-run sampling; its operators include none that delete a statement.
- Our own: about 400 lines of stdlib, no new dependency. Mutants are applied in memory by an
  import hook in a forked child (the parent pre-imports pytest, hypothesis, construct,
  cryptography and python-statemachine once, so a mutant costs one pytest collection and run,
  not an interpreter start), so the tree is never written. Sampling is seeded. Each mutant has a
  stable key (enclosing function, operator, original and mutated code, the enclosing statement;
  not a line number), so the list of equivalents survives edits elsewhere in the file.

Equivalent mutants are documented below, each with the reason no test can tell it from the
original: ``EQUIVALENT`` by key, ``EQUIVALENT_RULES`` by pattern for a family of identical
cases. They are not run and not counted. A documented key that is no longer generated is
reported (the code moved on: check the entry).

Operators: comparison swaps (``==``/``!=``, ``<``/``<=``, ``>``/``>=``, ``is``/``is not``,
``in``/``not in``), ``and``/``or``, removing ``not`` or unary minus, arithmetic and bitwise
operator swaps, ``+=``/``-=``, numbers +1, ``True``/``False``, strings and bytes altered (an
f-string as a whole), negating an ``if``/``while``/conditional-expression test,
``break``/``continue``, ``return x`` -> ``return None``, and deleting one statement inside a
function (a call, an assignment or a ``raise``). Not mutated: docstrings and other string
statements, annotations (never evaluated: the modules use ``from __future__ import
annotations``), ``__all__``/``__slots__``, ``assert`` statements (internal invariants, not
behaviour) and module-level statement deletion (an import error).

Determinism: hypothesis runs with a profile ``derandomize=True, database=None, deadline=None``
so a mutant is killed or not independently of earlier runs and of the machine's load. A mutant
that runs longer than the timeout (4x the unmutated run, at least 60 s) counts as killed (a
hang is noticed) but is reported apart.

Modules of the secure-channel issue (``p2psc/noise.py``, ``p2psc/core/channel.py``) are listed
below and skipped, with a note, while they do not exist.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    """A module under mutation and the focused test files that must notice its mutants."""

    name: str
    module: str
    tests: tuple[str, ...]
    """Globs relative to the repository root; a test module added later joins automatically."""
    exclude: tuple[str, ...] = ()


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "negotiator",
            "p2psc.core.negotiator",
            ("tests/test_negotiator_*.py",),
            exclude=("tests/test_negotiator_aio.py",),  # sockets and real time: not focused
        ),
        Target(
            "mediator",
            "p2psc.core.mediator",
            ("tests/test_mediator_*.py",),
            exclude=("tests/test_mediator_loopback.py", "tests/test_mediator_cli.py"),
        ),
        Target("wire", "p2psc.wire", ("tests/test_wire*.py", "tests/test_vectors.py")),
        # The secure-channel issue's modules: included once they exist.
        Target("noise", "p2psc.noise", ("tests/test_noise*.py",)),
        Target("channel", "p2psc.core.channel", ("tests/test_channel*.py",)),
    )
}

# --------------------------------------------------------------------------------------------
# Equivalent mutants: key -> why no test can tell the mutant from the original. Keys are printed
# by --list and for every survivor. Keep the reason precise: "no test" is not a reason.
# --------------------------------------------------------------------------------------------

EQUIVALENT: dict[str, dict[str, str]] = {
    "negotiator": {
        "Simultaneous: string: 'run' => 'XXrunXX' in `RUN = 'run'`": (
            "enum values are never read or compared (members are compared by identity); "
            "only the explorer prints them"
        ),
        "Simultaneous: string: 'fail' => 'XXfailXX' in `FAIL = 'fail'`": "as 'run'",
        "_Ask: string: 'ask' => 'XXaskXX' in `ASK = 'ask'`": (
            "a sentinel compared by identity; its value is unused"
        ),
        "Negotiator.__init__: unary: -1 => 1 in `self._byte = -1`": (
            "_byte is only read by guards about the received byte, and every receive step "
            "sets it first; the start step's guard (we_initiate) does not look at it"
        ),
        "Negotiator.__init__: constant: 1 => 2 in `self._byte = -1`": (
            "as the line above (_byte = -2)"
        ),
        "Negotiator._guard: compare: ours.rank() < spec.rank() => ours.rank() <= spec.rank() "
        "in `return ours is not None and ours.rank() < spec.rank()`": (
            "a rank is (-priority, id): two ranks are equal only for the same id, and the "
            "machine asks our_protocol_wins only when not same_protocol"
        ),
        "Negotiator.__init__: delete: self._accepts = False => pass": (
            "_accepts is read only by the should_accept guard, which runs only in the answer "
            "step, right after _receive_byte set it (or for a byte that is no known id, where "
            "the guard returns False before reading it)"
        ),
        (
            "Negotiator.__init__: constant: False => True in `self._accepts = False`"
        ): "as the line above (_accepts = True)",
    },
    "mediator": {
        "MediatorCore._close: delete: session.state = CLOSED => pass": (
            "the session leaves _sessions in the same call and every caller returns (or "
            "reads only the partner's session) after _close; the state of a dropped session "
            "is never read"
        ),
        "MediatorCore._on_received: binop: _HEADER_SIZE + (data[4] << 8 | data[5]) => "
        "_HEADER_SIZE - (data[4] << 8 | data[5]) in `whole = not session.buf and "
        "self._plain_framing and (len(data) >= _HEADER_SIZE) and (da...`": (
            "the lone-frame shortcut then holds only for a 6-byte frame of length 0, which is "
            "exactly the frame _next_frame would cut; otherwise the general path runs"
        ),
        "MediatorCore._on_advertise: bytes: b'' => b'X' in `sealed = b''`": (
            "the challenge is built only after key_usable answered True, which set sealed"
        ),
        # _next_frame: after the length check the slow path is unreachable, because a header
        # whose magic, version and length are valid is always taken by the fast path above.
        "MediatorCore._next_frame: delete: end = wire.HEADER_SIZE + length => pass": "unreachable",
        "MediatorCore._next_frame: binop: wire.HEADER_SIZE + length => wire.HEADER_SIZE - "
        "length in `end = wire.HEADER_SIZE + length`": "unreachable",
        "MediatorCore._next_frame: compare: have < end => have <= end in `if have < end:` #2": (
            "unreachable"
        ),
        "MediatorCore._next_frame: delete: session.buf = buf[end:] => pass #2": "unreachable",
        "MediatorCore._next_frame: return: return buf[:end] => return None #2": "unreachable",
    },
    "wire": {
        # construct_decode checks the header with the fast path's _check_header first, and a
        # frame shorter than a header fails construct's parse before these lines: they are
        # unreachable (defence in depth should the header check move).
        "construct_decode: delete: raise UnsupportedVersion(f'frame has protocol version "
        "{parsed.version}') => pass": "unreachable: _check_header refused the version first",
        "construct_decode: string: f'frame has protocol version {parsed.version}' => f'XXframe "
        "has protocol version {parsed.version}' in `raise UnsupportedVersion(f'frame has protocol "
        "version {parsed.version}')`": "unreachable, as the line above",
        "construct_decode: delete: raise ProtocolError(f'unknown message type {parsed.type}') "
        "=> pass": "unreachable: _check_header refused the type first",
        "construct_decode: string: f'unknown message type {parsed.type}' => f'XXunknown message "
        "type {parsed.type}' in `raise ProtocolError(f'unknown message type {parsed.type}')`": (
            "unreachable, as the line above"
        ),
        # encode(): no message of version 1 has a payload near MAX_PAYLOAD (the largest is
        # 1028 bytes); the check guards later extensions.
        "encode: compare: len(payload) > MAX_PAYLOAD => len(payload) >= MAX_PAYLOAD in `if "
        "len(payload) > MAX_PAYLOAD:`": "no version 1 payload is 4096 bytes long",
        "encode: delete: raise ProtocolError(f'payload of {len(payload)} bytes exceeds "
        "{MAX_PAYLOAD}') => pass": "no version 1 payload exceeds 4096 bytes",
        "encode: string: f'payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}' => f'XXpayload "
        "of {len(payload)} bytes exceeds {MAX_PAYLOAD}' in `raise ProtocolError(f'payload of "
        "{len(payload)} bytes exceeds {MAX_PAYLOAD}')`": "as the line above",
        "decode: compare: n < HEADER_SIZE + length => n <= HEADER_SIZE + length in `if n < "
        "HEADER_SIZE + length:`": "this branch runs only when n != HEADER_SIZE + length",
        "_reason_fields: compare: len(p) < 4 + size => len(p) <= 4 + size in `kind = "
        "'truncated' if len(p) < 4 + size else 'trailing bytes in'`": (
            "this line runs only when len(p) != 4 + size"
        ),
        "_fixed: compare: len(p) < want => len(p) <= want in `kind = 'truncated' if len(p) < "
        "want else 'trailing bytes in'`": "this line runs only when len(p) != want",
        "_normalise_host: return: return (_ntop(_AF_INET, ip.packed), FAMILY_IPV4, ip.packed) "
        "=> return None": (
            "unreachable: IPv4 text that ipaddress accepts is exactly the dotted quad that "
            "inet_pton accepts and inet_ntop prints back, which the fast path returned"
        ),
        # _trusted_address is called with a port its callers already refused when 0
        # (from_tuple's fast path tests 0 < port, _take_address tests port == 0 first).
        "_trusted_address: delete: raise ProtocolError('address port 0 is not allowed') => "
        "pass": "unreachable: every caller refuses port 0 before",
        "_trusted_address: string: 'address port 0 is not allowed' => 'XXaddress port 0 is not "
        "allowedXX' in `raise ProtocolError('address port 0 is not allowed')`": "as above",
    },
    "noise": {},
    "channel": {},
}

EQUIVALENT_RULES: dict[str, list[tuple[str, str]]] = {
    "wire": [
        (
            r"^Peer(Disconnect|Identification)\.__post_init__: (compare: 0 <= self\.version <= 255"
            r" => |constant: 0 => 1 in `if |boolop: local is None or type\(local\) is Address => "
            r"local is None and)",
            "the quick type check only decides whether the full checks may be skipped; a "
            "stricter quick check sends valid values on to the full checks, which accept them "
            "(a laxer one is killed: junk skips the full checks)",
        ),
    ],
    "mediator": [
        (
            r"^<module>: string: '(pending|waiting)' => .* in `_COUNTED = ",
            "_COUNTED's values only tell _move whether two states share a counter; with a "
            "label changed, a move between the two pending states takes -1 then +1 on the same "
            "counter instead of nothing",
        ),
        (
            r"^<module>: binop: _HEADER_SIZE \+ _MAX_PAYLOAD => ",
            "_MAX_FRAME only bounds the lone-frame shortcut of _on_received; a smaller bound "
            "sends every frame through _next_frame, which cuts the same frame",
        ),
        (
            r"^MediatorCore\.\w+: delete: _step\(",
            "a bare _step(...) whose result is discarded only asserts that the machine has the "
            "transition (it has, in every state these lines run in); the code around it makes "
            "the change",
        ),
    ],
}
"""Equivalence by pattern (regular expression on the key), for a family of identical cases."""


def is_equivalent(target: str, key: str) -> bool:
    if key in EQUIVALENT.get(target, {}):
        return True
    return any(re.search(rule, key) for rule, _why in EQUIVALENT_RULES.get(target, []))


# --------------------------------------------------------------------------------------------
# Mutant generation
# --------------------------------------------------------------------------------------------

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Div,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
}
_SKIP_NAMES = frozenset({"__all__", "__slots__"})


@dataclass(frozen=True)
class Mutant:
    """One change: the ``index``-th mutable node in traversal order, replaced by ``variant``."""

    key: str
    index: int
    variant: int
    line: int
    operator: str


@dataclass
class _Point:
    node: ast.AST
    parent: ast.AST
    field: str
    position: int | None
    scope: str
    in_function: bool
    statement: ast.stmt | None


def _points(tree: ast.Module) -> Iterator[_Point]:
    """Every node in a deterministic order, with where it hangs, skipping what is never mutated
    (docstrings, annotations, ``__all__``/``__slots__``, asserts)."""

    def visit(
        node: ast.AST, scope: str, in_function: bool, statement: ast.stmt | None
    ) -> Iterator[_Point]:
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "type_comment", "decorator_list_annotations"):
                continue
            if isinstance(value, list):
                items: list[tuple[int | None, Any]] = list(enumerate(value))
            else:
                items = [(None, value)]
            for position, child in items:
                if not isinstance(child, ast.AST):
                    continue
                if _is_docstring(node, name, position, child) or _skipped(child):
                    continue
                if isinstance(node, ast.JoinedStr) and isinstance(child, ast.Constant):
                    continue  # an f-string is one message: mutated whole, below
                child_scope, child_in_function = scope, in_function
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    child_scope = f"{scope}.{child.name}" if scope else child.name
                    child_in_function = not isinstance(child, ast.ClassDef)
                inner = child if isinstance(child, ast.stmt) else statement
                yield _Point(child, node, name, position, scope, in_function, statement)
                yield from visit(child, child_scope, child_in_function, inner)

    yield from visit(tree, "", False, None)


def _is_docstring(parent: ast.AST, name: str, position: int | None, child: ast.AST) -> bool:
    """A string statement: a docstring or an attribute docstring (a no-op anywhere)."""
    del parent, name, position
    return (
        isinstance(child, ast.Expr)
        and isinstance(child.value, ast.Constant)
        and isinstance(child.value.value, str)
    )


def _skipped(node: ast.AST) -> bool:
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id in _SKIP_NAMES for t in targets)
    return False


def _variants(point: _Point) -> list[tuple[str, ast.AST]]:
    """(operator name, replacement node) for each mutation of this node."""
    node = point.node
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            swap = _CMP_SWAP.get(type(op))
            if swap is not None:
                new = copy.deepcopy(node)
                new.ops[i] = swap()
                out.append(("compare", new))
    elif isinstance(node, ast.BoolOp):
        new_op: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("boolop", ast.BoolOp(op=new_op, values=copy.deepcopy(node.values))))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        out.append(("unary", copy.deepcopy(node.operand)))
    elif isinstance(node, ast.BinOp):
        swap_bin = _BIN_SWAP.get(type(node.op))
        if swap_bin is not None:
            new_bin = copy.deepcopy(node)
            new_bin.op = swap_bin()
            out.append(("binop", new_bin))
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add | ast.Sub):
        new_aug = copy.deepcopy(node)
        new_aug.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        out.append(("augassign", new_aug))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            out.append(("constant", ast.Constant(not value)))
        elif isinstance(value, int | float):
            out.append(("constant", ast.Constant(value + 1)))
        elif isinstance(value, str) and not isinstance(point.parent, ast.FormattedValue):
            out.append(("string", ast.Constant(f"XX{value}XX")))
        elif isinstance(value, bytes):
            out.append(("bytes", ast.Constant(b"X" + value[1:] if value else b"X")))
    elif isinstance(node, ast.JoinedStr):
        new_text = copy.deepcopy(node)
        new_text.values.insert(0, ast.Constant("XX"))
        out.append(("string", new_text))
    elif isinstance(node, ast.Break):
        out.append(("flow", ast.Continue()))
    elif isinstance(node, ast.Continue):
        out.append(("flow", ast.Break()))
    if isinstance(node, ast.If | ast.While | ast.IfExp) and not isinstance(
        node.test, ast.Compare | ast.BoolOp | ast.UnaryOp
    ):
        new_test = copy.deepcopy(node)
        new_test.test = ast.UnaryOp(op=ast.Not(), operand=new_test.test)
        out.append(("negate", new_test))
    if (
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ):
        out.append(("return", ast.Return(value=ast.Constant(None))))
    deletable = ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Raise
    bare_annotation = isinstance(node, ast.AnnAssign) and node.value is None
    if point.in_function and isinstance(node, deletable) and not bare_annotation:
        out.append(("delete", ast.Pass()))
    return out


def _label(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0] if not isinstance(node, ast.Pass) else "pass"
    return text if len(text) <= 90 else text[:87] + "..."


def mutants_of(source: str) -> list[Mutant]:
    """Every mutant of a module's source, in traversal order, with unique stable keys."""
    tree = ast.parse(source)
    seen: dict[str, int] = {}
    out: list[Mutant] = []
    for index, point in enumerate(_points(tree)):
        for variant, (operator, replacement) in enumerate(_variants(point)):
            before, after = _label(point.node), _label(replacement)
            base = f"{point.scope or '<module>'}: {operator}: {before} => {after}"
            if point.statement is not None and not isinstance(point.node, ast.stmt):
                base += f" in `{_label(point.statement)}`"  # stable when lines move
            count = seen.get(base, 0)
            seen[base] = count + 1
            key = base if count == 0 else f"{base} #{count + 1}"
            line = getattr(point.node, "lineno", 0)
            out.append(Mutant(key, index, variant, line, operator))
    return out


def apply(source: str, mutant: Mutant) -> ast.Module:
    """The module's tree with ``mutant`` applied (a fresh parse, so mutants never mix)."""
    tree = ast.parse(source)
    for index, point in enumerate(_points(tree)):
        if index == mutant.index:
            _operator, replacement = _variants(point)[mutant.variant]
            ast.copy_location(replacement, point.node)
            if point.position is None:
                setattr(point.parent, point.field, replacement)
            else:
                getattr(point.parent, point.field)[point.position] = replacement
            return ast.fix_missing_locations(tree)
    raise LookupError(mutant.key)


def diff(source: str, mutant: Mutant) -> str:
    mutated = ast.unparse(apply(source, mutant))
    original = ast.unparse(ast.parse(source))
    return "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            mutated.splitlines(keepends=True),
            "original",
            "mutant",
            n=2,
        )
    )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated code for one module name; every other import is left alone."""

    def __init__(self, name: str, path: Path, tree: ast.Module) -> None:
        self.name, self.path, self.tree = name, path, tree

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(self.path)
        exec(compile(self.tree, str(self.path), "exec"), module.__dict__)


def _preimport() -> None:
    """Third-party imports every child would repeat; never ``p2psc`` (it must be mutated)."""
    import construct  # noqa: F401
    import cryptography.hazmat.primitives.asymmetric.x25519  # noqa: F401
    import hypothesis.strategies  # noqa: F401
    import pytest  # noqa: F401
    import statemachine  # noqa: F401

    assert not any(m == "p2psc" or m.startswith("p2psc.") for m in sys.modules)


def _child(target: Target, tree: ast.Module | None, tests: list[str]) -> int:
    import hypothesis
    import pytest

    os.setpgid(0, 0)
    if not os.environ.get("MUTATION_VERBOSE"):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))  # the tree this script is in, whatever is installed
    if tree is not None:
        path = ROOT / (target.module.replace(".", "/") + ".py")
        sys.meta_path.insert(0, _MutantFinder(target.module, path, tree))
        # Import it now: pytest marks the modules of installed plugin distributions (p2psc has
        # one, the conformance plugin) for assertion rewriting, and its rewriting importer,
        # first on sys.meta_path, would otherwise load the file from disk, unmutated.
        importlib.import_module(target.module)
    hypothesis.settings.register_profile(
        "mutation", derandomize=True, database=None, deadline=None, print_blob=False
    )
    hypothesis.settings.load_profile("mutation")
    args = ["-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--no-header", *tests]
    code = int(pytest.main(args))
    loaded = sys.modules.get(target.module)
    if tree is not None and (loaded is None or not isinstance(loaded.__loader__, _MutantFinder)):
        return _NOT_MUTATED  # the tests ran against the file on disk: the result means nothing
    return code


_NOT_MUTATED = 99


@dataclass
class Outcome:
    status: str  # "killed", "survived", "timeout"
    seconds: float


def run_one(target: Target, tree: ast.Module | None, tests: list[str], timeout: float) -> Outcome:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = _child(target, tree, tests)
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        elapsed = time.monotonic() - start
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code == _NOT_MUTATED:
                raise RuntimeError(f"{target.module}: the tests did not import the mutant")
            return Outcome("survived" if code == 0 else "killed", elapsed)
        if elapsed > timeout:
            os.killpg(pid, signal.SIGKILL)  # the child's own group: only what we started
            os.waitpid(pid, 0)
            return Outcome("timeout", elapsed)
        time.sleep(0.05)


def test_files(target: Target) -> list[str]:
    files: set[str] = set()
    for pattern in target.tests:
        files.update(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
    return sorted(files - set(target.exclude))


@dataclass
class Report:
    target: Target
    generated: int = 0
    equivalent: int = 0
    stale_equivalents: list[str] = field(default_factory=list)
    results: dict[str, tuple[Mutant, Outcome]] = field(default_factory=dict)
    baseline: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for _, o in self.results.values() if o.status == status)

    def score(self) -> float:
        run = len(self.results)
        return 100.0 * (run - self.count("survived")) / run if run else 0.0


def run_target(
    target: Target, sample: int | None, seed: int, only: list[str] | None, progress: bool
) -> Report | None:
    path = ROOT / (target.module.replace(".", "/") + ".py")
    if not path.exists():
        print(f"{target.name}: {path.relative_to(ROOT)} does not exist yet, skipped")
        return None
    tests = test_files(target)
    if not tests:
        print(f"{target.name}: no focused test files match {target.tests}, skipped")
        return None
    source = path.read_text(encoding="utf-8")
    every = mutants_of(source)
    equivalents = EQUIVALENT.get(target.name, {})
    keys = {m.key for m in every}
    report = Report(target, generated=len(every))
    report.stale_equivalents = sorted(k for k in equivalents if k not in keys)
    candidates = [m for m in every if not is_equivalent(target.name, m.key)]
    report.equivalent = len(every) - len(candidates)
    if only is not None:
        candidates = [m for m in candidates if m.key in only]
    elif sample is not None and sample < len(candidates):
        candidates = sorted(random.Random(seed).sample(candidates, sample), key=lambda m: m.index)
    base = run_one(target, None, tests, timeout=1800.0)
    if base.status != "survived":
        print(f"{target.name}: the focused tests fail without any mutant; fix them first")
        return None
    report.baseline = base.seconds
    timeout = max(60.0, 4 * base.seconds)
    if progress:
        print(
            f"{target.name}: {len(every)} mutants, {report.equivalent} documented equivalent, "
            f"running {len(candidates)} against {' '.join(tests)} "
            f"(unmutated run {base.seconds:.1f} s)",
            flush=True,
        )
    for n, mutant in enumerate(candidates, start=1):
        outcome = run_one(target, apply(source, mutant), tests, timeout)
        report.results[mutant.key] = (mutant, outcome)
        if progress and outcome.status != "killed":
            print(f"  [{n}/{len(candidates)}] {outcome.status}: L{mutant.line} {mutant.key}")
        elif progress and n % 25 == 0:
            print(f"  [{n}/{len(candidates)}] ...", flush=True)
    return report


def print_summary(reports: list[Report]) -> None:
    print()
    header = (
        f"{'module':<24}{'mutants':>8}{'equiv':>7}{'run':>6}{'killed':>8}"
        f"{'timeout':>9}{'survived':>10}{'score':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        print(
            f"{r.target.module:<24}{r.generated:>8}{r.equivalent:>7}{len(r.results):>6}"
            f"{r.count('killed'):>8}{r.count('timeout'):>9}{r.count('survived'):>10}"
            f"{r.score():>7.1f}%"
        )
    for r in reports:
        survivors = sorted(
            (m for m, o in r.results.values() if o.status == "survived"), key=lambda m: m.line
        )
        if survivors:
            print(f"\nsurvivors of {r.target.module}:")
            for m in survivors:
                print(f"  L{m.line:<5} {m.key}")
        for key in r.stale_equivalents:
            print(f"  (documented equivalent no longer generated: {key})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="all", choices=["all", *TARGETS])
    parser.add_argument("--sample", type=int, default=None, help="mutants per module (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--show", metavar="KEY", help="print one mutant's diff")
    parser.add_argument("--only", metavar="KEY", action="append", help="run this mutant (again)")
    args = parser.parse_args(argv)
    targets = list(TARGETS.values()) if args.module == "all" else [TARGETS[args.module]]
    if args.list or args.show:
        for target in targets:
            path = ROOT / (target.module.replace(".", "/") + ".py")
            if not path.exists():
                continue
            source = path.read_text(encoding="utf-8")
            for m in mutants_of(source):
                if args.show and m.key == args.show:
                    print(diff(source, m))
                elif args.list:
                    mark = " (equivalent)" if is_equivalent(target.name, m.key) else ""
                    print(f"{target.name} L{m.line}: {m.key}{mark}")
        return 0
    _preimport()
    reports = []
    for target in targets:
        report = run_target(target, args.sample, args.seed, args.only, progress=True)
        if report is not None:
            reports.append(report)
    print_summary(reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
