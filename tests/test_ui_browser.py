"""The view `loopstudy ui` prints, in a real browser: headless Chromium (Debian's `chromium`)
driven by Playwright opens exactly the printed URL on a finished small study and finds the
objective and the searched parameters as visible column headers and the replicate runs listed;
then the chart view (the science curves overlaid across runs) and the parent run. Screenshots
go to a temporary folder (LOOPSTUDY_SCREENSHOTS=DIR keeps them, e.g. for docs/screenshots/)."""
from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from studyfiles import cli, start_cli, write_study

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
WAIT_MS = 120_000            # a cold MLflow page on a busy 2-core machine


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium "
                    "(`apt-get install -y chromium`; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def study_runs(results: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name(results.name).experiment_id])


def run_names(results: Path) -> dict[str, list[str]]:
    """{"trial": [...], "replicate": [...]}: the names of the study's runs, from its store."""
    names: dict[str, list[str]] = {"trial": [], "replicate": []}
    for run in study_runs(results):
        names.get(run.data.tags["loopstudy_role"], []).append(run.info.run_name)
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.service
def test_the_printed_url_shows_objective_searched_params_and_replicates(tmp_path, browser):
    shots = Path(os.environ.get("LOOPSTUDY_SCREENSHOTS") or tempfile.mkdtemp(prefix="loopstudy-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    path = write_study(tmp_path, "browse", trainable="synthetic", replicates={"top_k": 2, "seeds": 2})
    done = cli("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = run_names(tmp_path / "browse")
    assert runs["replicate"] and runs["trial"], runs

    port = free_port()
    ui = start_cli("ui", "browse", "--results-root", str(tmp_path), "--port", str(port), cwd=tmp_path)
    try:
        (opened,) = ui.wait_for(r"^open (http://\S+)", timeout_s=180)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.goto(opened.group(1))
        header = page.locator('[role="columnheader"]')
        for name in ("eval/err_last", "training.loop_dilation", "training.learning_rate", "training.seed"):
            header.filter(has_text=re.compile(f"^{re.escape(name)}$")).first.wait_for(state="visible")
        close_assistant = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
        if close_assistant.count():            # it opens once per browser on a local server
            close_assistant.click()
        for name in runs["replicate"] + runs["trial"]:
            page.get_by_role("link", name=name, exact=True).wait_for(state="visible")
        assert page.get_by_role("link", name=re.compile(r"^t\d{3}")).count() == len(runs["replicate"] + runs["trial"])
        assert page.get_by_text("Model training").count() and not page.get_by_text("Judges").count()
        page.screenshot(path=str(shots / "runs.png"))

        page.goto(opened.group(1) + "&compareRunsMode=CHART")         # the chart view's icon
        page.get_by_text("curve/err_vs_k", exact=True).first.wait_for(state="visible")
        page.locator(".js-plotly-plot").first.wait_for(state="visible")
        page.wait_for_timeout(1500)            # the lines animate in
        page.screenshot(path=str(shots / "curves.png"))

        (parent,) = ui.wait_for(r"^the study's own run \(its answer\): (http://\S+)")
        (parent_id,) = [r.info.run_id for r in study_runs(tmp_path / "browse")
                        if r.data.tags["loopstudy_role"] == "parent"]
        assert parent.group(1).split("/runs/")[1].startswith(parent_id)
        page.goto(parent.group(1))
        page.get_by_text("objectives", exact=True).first.wait_for(state="visible")     # a param of the study
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "parent_run.png"))
    finally:
        ui.process.send_signal(signal.SIGTERM)
        ui.rest(timeout_s=60)
    assert ui.process.returncode == 0
