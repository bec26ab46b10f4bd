"""A `report` fixture: lines a test wants a person to read (measured errors, sizes), printed in
the terminal summary of every run, not only with -s."""

import pytest

_LINES: list[str] = []


@pytest.fixture
def report(request):
    def add(line: str) -> None:
        _LINES.append(f"{request.node.nodeid.split('::')[-1]}: {line}")

    return add


def pytest_terminal_summary(terminalreporter):
    if _LINES:
        terminalreporter.section("measured")
        for line in _LINES:
            terminalreporter.write_line(line)
