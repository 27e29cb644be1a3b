"""The ``gradscope_watch`` pytest fixture: a test whose training shows findings fails.

    def test_training(gradscope_watch):
        model, opt = Net(), torch.optim.SGD(...)
        with gradscope_watch(model, opt):          # gradscope.watch's arguments
            for x, y in batches:
                ...

When the ``with`` block ends, the scope's findings (and ``gradscope.check``'s static registration
findings of the model) at or above the bar fail the test right there, with the codes and places
in the message. The bar is ``warning`` unless the ini option ``gradscope_fail_on`` or the marker
``@pytest.mark.gradscope(fail_on="error", ignore=["GS208"])`` says otherwise. A scope entered and
never left is closed and checked when the test ends.

Installed as a pytest plugin through the ``pytest11`` entry point, so projects need no
``conftest.py`` line; the module imports neither torch nor gradscope's engine until a test uses
the fixture, so it costs nothing to test sessions that never do.
"""
from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.findings import Finding
    from gradscope.scope import Scope

LEVELS = ("error", "warning", "info", "never")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("gradscope_fail_on", "lowest finding severity that fails a test using gradscope_watch: "
                  "error, warning, info or never", default="warning")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gradscope(fail_on='warning', ignore=()): how the gradscope_watch "
                                       "fixture judges this test's findings")


class CheckedScope:
    """``gradscope.watch(...)`` whose clean exit fails the test on findings at or above the bar."""

    def __init__(self, owner: GradscopeWatch, scope: Scope, static: list[Finding]) -> None:
        self.owner = owner
        self.scope = scope
        self.static = static
        self.entered = False
        self.checked = False

    def __enter__(self) -> Scope:
        scope = self.scope.__enter__()
        self.entered = True
        return scope

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.scope.__exit__(exc_type, exc, tb)
        if exc_type is None:
            __tracebackhide__ = True  # the failure points at the test's `with`, not at this line
            self.verify()

    def findings(self) -> list[Finding]:
        from gradscope.findings import sort_findings

        return sort_findings([*self.static, *self.scope.findings])

    def verify(self) -> None:
        """Raise ``AssertionError`` for the findings at or above the bar (once)."""
        __tracebackhide__ = True
        if self.checked:
            return
        self.checked = True
        self.owner.verify(self)


class GradscopeWatch:
    """What the fixture gives a test: call it like ``gradscope.watch``; ``scopes`` lists them."""

    def __init__(self, fail_on: str, ignore: tuple[str, ...], check: bool = True) -> None:
        if fail_on not in LEVELS:
            raise pytest.UsageError(f"gradscope fail_on must be one of {', '.join(LEVELS)}, got {fail_on!r}")
        self.fail_on = fail_on
        self.ignore = ignore
        self.check = check
        self.scopes: list[CheckedScope] = []

    def __call__(self, model: Any, optimizer: Any = None, **options: Any) -> CheckedScope:
        from gradscope.registration import check
        from gradscope.scope import watch

        scope = watch(model, optimizer, **options)   # argument mistakes raise here, in the test
        static = list(check(model)) if self.check else []
        checked = CheckedScope(self, scope, static)
        self.scopes.append(checked)
        return checked

    def verify(self, checked: CheckedScope) -> None:
        __tracebackhide__ = True
        if self.fail_on == "never":
            return
        from gradscope.testing import describe, failing

        everything = checked.findings()
        bad = failing(everything, self.fail_on, self.ignore)
        if bad:
            model = type(checked.scope.model).__name__
            raise AssertionError(describe(bad, everything, self.fail_on,
                                          f"{model} after {checked.scope.steps} steps"))

    def finish(self) -> None:
        """At the end of the test: close what is still open and check what was not checked."""
        __tracebackhide__ = True
        for checked in self.scopes:
            if checked.entered and not checked.checked:
                checked.scope.close()
                checked.verify()


@pytest.fixture
def gradscope_watch(request: pytest.FixtureRequest) -> Iterator[GradscopeWatch]:
    """``gradscope.watch`` for a test: findings at or above the bar fail the test."""
    marker = request.node.get_closest_marker("gradscope")
    options = dict(marker.kwargs) if marker is not None else {}
    fail_on = str(options.pop("fail_on", request.config.getini("gradscope_fail_on")))
    ignore = tuple(options.pop("ignore", ()))
    check = bool(options.pop("check", True))
    if options:
        raise pytest.UsageError(f"@pytest.mark.gradscope got unknown options {sorted(options)}; it takes "
                                "fail_on, ignore and check")
    fixture = GradscopeWatch(fail_on, ignore, check)
    yield fixture
    fixture.finish()
