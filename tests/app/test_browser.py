"""The dashboard in a real browser: a Streamlit server on a free localhost port, driven by Debian's
Chromium through Playwright. Opens a patient, checks the risk, the saliency image and the note
highlights, and screenshots every page (copied to docs/screenshots/ when DEEPWE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.cohorts.cohort_table import load_cohort
from pipelines.explanations.explaining import patient_position
from pipelines.inference.batching import PredictOptions, iter_predictions
from pipelines.inference.output_table import read_predictions
from tests.processes import stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
START_TIMEOUT = 90
PAGE_TIMEOUT_MS = 120_000
SHOT_HEIGHT = 2400

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _command(model: Path, cohort: Path, predictions: Path, port: int) -> list[str]:
    """``deepwe dashboard`` as a user runs it."""
    return [
        sys.executable, "-m", "pipelines.cli", "dashboard", str(model), str(cohort),
        "--predictions", str(predictions), "--port", str(port), "--host", "127.0.0.1",
    ]  # fmt: skip


@pytest.fixture
def server(dashboard_model, dashboard_cohort, dashboard_predictions, tmp_path: Path):
    """A running dashboard (started from an unrelated folder); yields its URL and stops it after."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        _command(dashboard_model, dashboard_cohort, dashboard_predictions, port),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the CLI may start streamlit as a child: stop the whole group
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            stop_process_group(process, timeout=15)
        log.close()


def _shoot(page, name: str, folder: Path) -> None:
    """Screenshot the page from its top in a tall window (Streamlit scrolls inside its main area)."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": SHOT_HEIGHT})
    page.evaluate(
        "document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')"
        ".forEach((el) => el.scrollTo(0, 0))"
    )
    page.wait_for_timeout(500)  # let the charts re-lay out
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    _keep(path)


def _keep(path: Path) -> None:
    """Check a screenshot and, with DEEPWE_SCREENSHOTS=1, copy it to docs/screenshots/."""
    assert path.stat().st_size > 10_000
    if os.environ.get("DEEPWE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)


def _expected_risk(bundle, spec: Path, patient_id: str) -> str:
    cohort = load_cohort(spec)
    record = next(iter_predictions(bundle, cohort, [patient_position(cohort, patient_id)], PredictOptions()))
    return f"{record.risk:.1%}"


def _open_patient(page, server: str, patient_id: str, risk: str) -> tuple[float, float]:
    """Open the patient's page; seconds until the risk shows and until the explanation shows."""
    from playwright.sync_api import expect

    started = time.perf_counter()
    page.goto(f"{server}/patient?patient={patient_id}")
    expect(page.get_by_test_id("stMetricValue").first).to_have_text(risk)
    shown = time.perf_counter() - started
    expect(page.get_by_role("tab", name="labs")).to_be_visible()
    return shown, time.perf_counter() - started


def test_patient_page_in_chromium(
    server: str, dashboard_bundle, dashboard_cohort, dashboard_predictions, full_patient, tmp_path: Path
):
    from playwright.sync_api import expect, sync_playwright

    frame = read_predictions(dashboard_predictions)
    other = str(
        frame[(frame["status"] == "ok") & (frame["patient_id"] != full_patient)].iloc[0]["patient_id"]
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            expect.set_options(timeout=PAGE_TIMEOUT_MS)
            cold = _open_patient(
                page, server, full_patient, _expected_risk(dashboard_bundle, dashboard_cohort, full_patient)
            )
            page.get_by_role("tab", name="notes").click()
            note = page.locator(".deepwe-note .note-word")
            expect(note.first).to_be_visible()
            assert note.count() >= 5
            _shoot(page, "patient", tmp_path)
            page.get_by_role("tab", name="cxr").click()
            images = page.locator('[data-testid="stImage"] img')
            expect(images.nth(1)).to_be_visible()
            widths = images.evaluate_all("(all) => all.map((img) => img.complete ? img.naturalWidth : 0)")
            assert len(widths) >= 2 and min(widths) >= 256  # the X-ray and its overlay, enlarged
            assert page.get_by_test_id("stException").count() == 0
            page.locator("[role=tabpanel]:visible").screenshot(path=str(tmp_path / "patient-image.png"))
            _keep(tmp_path / "patient-image.png")
            warm = _open_patient(
                page, server, other, _expected_risk(dashboard_bundle, dashboard_cohort, other)
            )
            print(
                f"browser, first patient of the server: risk after {cold[0]:.1f} s, explained after {cold[1]:.1f} s; "
                f"next patient (model loaded): risk after {warm[0]:.1f} s, explained after {warm[1]:.1f} s"
            )
            for name, path, marker in (
                ("cohort", "", "Availability per modality"),  # the default page lives at /
                ("audit", "audit", "Global weights"),
                ("batch", "batch", "Run prediction"),
            ):
                page.goto(f"{server}/{path}")
                expect(page.get_by_text(marker).first).to_be_visible()
                if name == "audit":  # every patient of the tiny cohort, so both outcomes are there
                    page.get_by_text("every labelled patient").click()
                    expect(page.get_by_test_id("stMetricValue").first).to_have_text(str(len(frame)))
                assert page.get_by_test_id("stException").count() == 0
                _shoot(page, name, tmp_path)
        finally:
            browser.close()
