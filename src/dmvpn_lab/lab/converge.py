"""The one way this project waits: poll a JSON show command until a subset of expected JSON matches.

As in FRR's topotests, keys absent from ``expected`` are ignored, list order is ignored (each expected
item must match some actual item), and a budget bounds the wait.  On timeout the error names the node,
the command, the first mismatch and the last output, so a failing test explains itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

ABSENT = object()  # an expected value meaning "this key must not be present"


class ConvergenceError(AssertionError):
    """Raised when the expected JSON never appeared within the budget."""


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
        unused = list(actual)
        for i, want in enumerate(expected):
            match = next((item for item in unused if json_mismatch(want, item) is None), None)
            if match is None:
                return f"{path}[{i}]: no item matches {json.dumps(want)}"
            unused.remove(match)
        return None
    if expected != actual:
        return f"{path}: expected {expected!r}, got {actual!r}"
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
    last: dict[str, Any] = {"output": None, "problem": "never fetched"}

    def attempt() -> str | None:
        try:
            output = fetch()
        except Exception as exc:  # a daemon not up yet is normal while converging
            last["problem"] = f"{type(exc).__name__}: {exc}"
            return last["problem"]  # type: ignore[no-any-return]
        last["output"] = output
        problem = expected(output) if callable(expected) else json_mismatch(expected, output)
        last["problem"] = problem
        return problem

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda problem: problem is not None),
    )
    try:
        retrying(attempt)
    except RetryError:
        shown = json.dumps(last["output"], indent=1, default=str)
        if len(shown) > 4000:
            shown = shown[:4000] + "\n... (cut)"
        raise ConvergenceError(
            f"{what}: not converged after {timeout:.0f}s: {last['problem']}\nlast output:\n{shown}"
        ) from None
    return last["output"]
