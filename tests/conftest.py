from __future__ import annotations

import hashlib
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from model.stm import STM
from model.weights import parity_state_dict

torch.set_flush_denormal(True)
# Children see Ctrl-C (the interrupt test sends it, a job's cancel sends it) even when the suite was
# started ignoring it, as a script's `pytest &` is: the same reset as commands/app.py's.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser):
    parser.addoption(
        "--order", default=None, help="run the tests in another order: 'reverse' or 'shuffle:SEED' (independence check)"
    )


TIERS = ("unit", "cli", "e2e")


def tier_of(item) -> str | None:
    """The test's tier: its closest tier marker (a test's own marker wins over its module's)."""
    for marker in item.iter_markers():
        if marker.name in TIERS:
            return marker.name
    return None


def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items if tier_of(item) is None]
    if untiered:
        raise pytest.UsageError(
            f"{len(untiered)} test(s) have no tier marker (unit, cli or e2e), e.g. {untiered[0]}; "
            "mark the module (pytestmark = pytest.mark.unit) or the test"
        )
    order = config.getoption("--order")
    if not order:
        return
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:"):
        random.Random(int(order.split(":", 1)[1])).shuffle(items)
    else:
        raise pytest.UsageError(f"--order {order!r}: use reverse or shuffle:SEED")


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request, monkeypatch):
    """The unit tier is the inner loop: a unit test that starts a child process fails, so that
    the tier stays in-process (and fast). Such a test belongs to the cli or e2e tier."""
    if tier_of(request.node) != "unit":
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} is marked unit but starts a child process: mark it e2e")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def parity_weights(tmp_path_factory) -> Path:
    """A checkpoint file with the parity weights (built by our own code from the documented rule)."""
    path = tmp_path_factory.mktemp("weights") / "parity.pth"
    torch.save(parity_state_dict(STM()), path)
    return path


def model_fingerprint(model: STM) -> tuple:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return model.memory_read, model.share_skips, model.read_budget, model.training, digest.hexdigest()


@pytest.fixture(scope="session")
def parity_model() -> STM:
    """The published computation with the parity weights. Shared: no test may change it (a test
    that needs a variant makes its own, e.g. with ``copy.deepcopy``); checked at the end."""
    model = STM(memory_read="naive", share_skips=False)
    model.load_state_dict(parity_state_dict(model))
    model.eval()
    before = model_fingerprint(model)
    yield model
    assert model_fingerprint(model) == before, "a test changed the shared parity_model fixture"


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A browser test that fails leaves a screenshot in test-artifacts/ (CI keeps the folder)."""
    outcome = yield
    report = outcome.get_result()
    driver = getattr(item, "browser", None)
    if driver is not None and report.when == "call" and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = item.nodeid.replace("/", "_").replace("::", "__")
        try:
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / f"{name}.log.txt").write_text(
                "\n".join(str(entry) for entry in driver.get_log("browser")) if hasattr(driver, "get_log") else ""
            )
        except Exception as exc:  # a broken browser must not hide the test's own failure
            report.sections.append(("screenshot", f"could not take one: {exc}"))


def pytest_collection_finish(session):
    """A test must carry one tier: a module marker and a different test marker would put it in two."""
    both = [item.nodeid for item in session.items if len({m.name for m in item.iter_markers()} & set(TIERS)) > 1]
    if both:
        raise pytest.UsageError(f"{both[0]} carries two tier markers; mark each test of a mixed module on its own")


_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Seconds per tier (setup, call and teardown of its tests), printed at the end of the run."""
    tier = next((name for name in TIERS if name in report.keywords), None)
    if tier is not None:
        _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        spent = ", ".join(f"{tier} {_TIER_SECONDS[tier]:.0f} s" for tier in TIERS if tier in _TIER_SECONDS)
        terminalreporter.write_line(f"time per tier (setup + call + teardown): {spent}")
