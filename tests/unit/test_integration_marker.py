"""The ``integration`` marker: the rule of tests/conftest.py (``needs_integration_marker``) and
that ``pytest -m "not integration"`` really leaves out every test under tests/integration and
every real-backend contract run, while keeping every unit test and every fake contract run."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import INTEGRATION_DIR, needs_integration_marker

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def collected(*args):
    """The test ids ``pytest --collect-only`` selects with ``args`` (run from the repository root)."""
    completed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *args],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode in (0, 5), completed.stdout + completed.stderr  # 5: nothing selected
    return [line for line in completed.stdout.splitlines() if "::" in line]


class TestTheRule:
    def test_every_test_under_tests_integration_is_marked(self):
        assert needs_integration_marker(INTEGRATION_DIR / "test_sockjs.py", ["server"])
        assert needs_integration_marker(INTEGRATION_DIR / "nested" / "test_x.py", [])

    def test_a_test_elsewhere_that_uses_the_real_servers_is_marked(self):
        assert needs_integration_marker(TESTS / "contract" / "test_message_store.py", ["embedded", "store"])

    def test_a_test_elsewhere_without_the_real_servers_is_not(self):
        assert not needs_integration_marker(TESTS / "unit" / "test_handlers.py", ["h", "alice"])
        assert not needs_integration_marker(TESTS / "contract" / "test_message_store.py", ["store"])
        assert not needs_integration_marker(TESTS / "integration_helpers.py", [])  # a look-alike name


class TestTheHookAppliesIt:
    def test_not_integration_selects_no_test_under_tests_integration(self):
        assert collected("-m", "not integration", "tests/integration") == []

    def test_integration_selects_every_test_under_tests_integration(self):
        every = collected("tests/integration")
        assert every and collected("-m", "integration", "tests/integration") == every

    def test_not_integration_keeps_every_unit_test(self):
        assert collected("-m", "not integration", "tests/unit") == collected("tests/unit")

    def test_contract_runs_split_into_fakes_and_real_backends(self):
        fast = collected("-m", "not integration", "tests/contract")
        real = collected("-m", "integration", "tests/contract")
        assert fast and real
        assert all("Fake" in test_id for test_id in fast), fast
        assert all("Real" in test_id for test_id in real), real
