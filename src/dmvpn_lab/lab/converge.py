"""The one way this project waits: poll until a condition holds, within a budget.

``wait_until`` is the primitive: it calls a check until the check reports no problem, and on timeout
raises an error that says what was awaited and what the last problem was.  ``wait_for_json`` builds on
it for the lab's common case, as FRR's topotests do: poll a JSON show command until a subset of the
expected JSON matches (keys absent from ``expected`` are ignored, list order is ignored and each expected
item needs an actual item of its own), so a failing test names the node, the command, the first mismatch
and the last output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

ABSENT = object()  # an expected value meaning "this key must not be present"


class ConvergenceError(AssertionError):
    """Raised when the awaited condition never held within the budget."""


def wait_until(
    check: Callable[[], str | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.05,
    error: Callable[[str], Exception] = ConvergenceError,
) -> None:
    """Call ``check`` every ``interval`` seconds until it returns None (done); give up after ``timeout``.

    ``check`` returns a short description of what is still missing, or raises to end the wait at once
    (a process that died will never produce its file).  On timeout, ``error`` gets the message.
    """
    last: list[str | None] = ["never checked"]

    def attempt() -> str | None:
        last[0] = check()
        return last[0]

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda problem: problem is not None),
    )
    try:
        retrying(attempt)
    except RetryError:
        raise error(f"{what}: not done after {timeout:.0f}s: {last[0]}") from None


def stays(
    check: Callable[[], str | None],
    *,
    what: str,
    duration: float,
    interval: float = 1.0,
) -> None:
    """The counterpart of ``wait_until`` for "and stays so": ``check`` must find nothing wrong at every
    poll for ``duration`` seconds; the first problem raises ConvergenceError at once."""

    def still_fine() -> str | None:
        problem = check()
        if problem is not None:
            raise ConvergenceError(f"{what}: {problem}")
        return "holding"

    # Running out of time is the success here.
    with contextlib.suppress(_HeldLongEnough):
        wait_until(still_fine, what=what, timeout=duration, interval=interval, error=_HeldLongEnough)


class _HeldLongEnough(Exception):
    pass


def json_mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """The first place where ``actual`` does not contain ``expected``, or None when it does."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {type(actual).__name__}"
        for key, want in expected.items():
            if want is ABSENT:
                if key in actual:
                    return f"{path}.{key}: expected absent, found {actual[key]!r}"
                continue
            if key not in actual:
                return f"{path}.{key}: missing"
            problem = json_mismatch(want, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {type(actual).__name__}"
        return _list_mismatch(expected, actual, path)
    if expected != actual:
        return f"{path}: expected {expected!r}, got {actual!r}"
    return None


def _list_mismatch(expected: list[Any], actual: list[Any], path: str) -> str | None:
    """Each expected item needs a distinct actual item: a bipartite matching, not a greedy first fit.

    Greedy matching fails ``[{"a":1},{"a":1,"b":2}]`` against ``[{"a":1,"b":2},{"a":1}]``: the loose first
    item takes the only item the strict second one could match.  Augmenting paths (Kuhn's algorithm) find
    a full matching whenever one exists; the lists here are short.
    """
    fits = [[j for j, item in enumerate(actual) if json_mismatch(want, item) is None] for want in expected]
    for i, candidates in enumerate(fits):
        if not candidates:
            return f"{path}[{i}]: no item matches {json.dumps(expected[i], default=str)}"
    owner: dict[int, int] = {}  # actual index -> expected index holding it

    def assign(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or assign(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(expected)):
        if not assign(i, set()):
            return f"{path}[{i}]: no item left that matches {json.dumps(expected[i], default=str)} (others took them)"
    return None


def wait_for_json(
    fetch: Callable[[], Any],
    expected: Any | Callable[[Any], str | None],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 1.0,
) -> Any:
    """Call ``fetch`` until its JSON contains ``expected`` (or a predicate returns None); return it.

    ``expected`` may be a callable returning a mismatch description (None when satisfied) for checks
    a subset cannot express, such as "every GM holds the same SPI".  ``what`` names the node and the
    command for the error message.
    """
    last: dict[str, Any] = {"output": None}

    def check() -> str | None:
        try:
            output = fetch()
        except Exception as exc:  # a daemon not up yet is normal while converging
            return f"{type(exc).__name__}: {exc}"
        last["output"] = output
        return expected(output) if callable(expected) else json_mismatch(expected, output)

    def error(message: str) -> Exception:
        shown = json.dumps(last["output"], indent=1, default=str)
        if len(shown) > 4000:
            shown = shown[:4000] + "\n... (cut)"
        return ConvergenceError(f"{message}\nlast output:\n{shown}")

    wait_until(check, what=what, timeout=timeout, interval=interval, error=error)
    return last["output"]
