"""The dashboard in a real browser (headless Chromium) without a cluster: `make dashboard`'s process
over local run records. Every page draws its tables and charts; a running job's page follows the job
without a reload; a hostile tenant's strings load no image and make no link or heading.

Streamlit loads the code of its elements lazily, in chunks, and a chunk whose fetch fails leaves an
error where a table should be until the page is reloaded. Chromium fails every fetch in flight when
the host's network changes (each pod of an embedded cluster adds a veth), and a saturated machine
keeps fetches in flight longer. The page reloads itself when it sees such an error
(kubeforge_dashboard.browser): one test makes a chunk fail on purpose and sees the page recover; the
page test passes with CPU burners beside it (two by default, as many as a 2-core machine has;
`KUBEFORGE_BROWSER_BURNERS=N` sets another number) while clusters come and go. Screenshots go to the
ignored folder .test-artifacts/dashboard-browser/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashboard_world as w
import pytest
from dashboard_world import TIMEOUT_MS, chunk_failures, settled, visit
from kubeforge_api.contracts import RunRecord
from kubeforge_dashboard import launch

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".test-artifacts" / "dashboard-browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def write_run(runs: Path, folder: str, status: dict[str, Any], spec: dict[str, Any] | None = None,
              log: str = "step 1 loss 2.3\n") -> None:
    run = runs / folder
    (run / "logs").mkdir(parents=True, exist_ok=True)
    record = RunRecord(name=folder.rsplit("-", 1)[0], uid=f"{folder}-uid", file="job.yaml",
                       spec=spec or {"nodes": 1, "recipe": w.RECIPE}, start_time=w.T0, storage=str(run / "storage"),
                       logs=str(run / "logs"), state=str(status.get("state", "Running")), status=status)
    tmp = run / "run.json.tmp"
    tmp.write_text(record.model_dump_json(by_alias=True))
    tmp.replace(run / "run.json")  # as `kubeforge run` writes it: never half a file
    (run / "logs" / f"{record.name}-node-0.log").write_text(log)


def running(step: int) -> dict[str, Any]:
    return {"state": "Running", "reason": "AllPodsRunning", "restartCount": 0, "startTime": w.T0,
            "conditions": [w.cond("Running", "True", "AllPodsRunning", "all 1 pods are running", 1)],
            "progress": {"step": step, "totalSteps": 400, "percent": f"{step / 4:.1f}%", "loss": 0.5},
            "history": w.history(12)}


def hostile() -> dict[str, Any]:
    return {"state": "Failed", "reason": "BackoffLimitExceeded", "restartCount": 1,
            "conditions": [w.cond("Failed", "True", "BackoffLimitExceeded", w.PAYLOAD, 3)],
            "lastFailure": {"pod": "evil-node-0", "exitCode": 1, "reason": "Error", "message": w.BANNER}}


@pytest.fixture
def burners() -> Iterator[int]:
    """CPU burners beside the test: the page must work on a saturated machine (KUBEFORGE_BROWSER_BURNERS, 2 by
    default)."""
    n = int(os.environ.get("KUBEFORGE_BROWSER_BURNERS", "2"))
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    yield n
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    runs = tmp_path / "runs"
    write_run(runs, "digits-0001", running(100))
    write_run(runs, "evil-0002", hostile(), {"nodes": 1, "command": ["python", "-c", w.PAYLOAD], "args": [w.PAYLOAD]},
              log=w.PAYLOAD)
    env = {"KUBEFORGE_DASHBOARD_SOURCE": "local", "KUBEFORGE_RUNS_DIR": str(runs),
           "KUBEFORGE_DASHBOARD_REFRESH_SECONDS": "1", "KUBEFORGE_DASHBOARD_CACHE_TTL_SECONDS": "0"}
    running_ = launch.start(tmp_path / "dashboard", env, port=0, timeout=180)
    yield running_.url, runs
    launch.stop(tmp_path / "dashboard")


def test_every_page_in_a_real_browser(dashboard: tuple[str, Path], burners: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, runs = dashboard
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        failed_fetches: list[str] = []
        page.on("requestfailed", lambda r: failed_fetches.append(f"{r.url} {r.failure}"))

        visit(page, url + "/")
        expect(page.get_by_text("Kubeforge jobs").first).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="Running")).to_contain_text("1")
        settled(page)
        page.screenshot(path=str(ARTIFACTS / f"overview-{burners}.png"), full_page=True)

        visit(page, f"{url}/training?ns=local&name=digits-0001")
        expect(page.get_by_text("TrainingJob digits-0001").first).to_be_visible()
        expect(page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg").first).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").nth(2)).to_be_visible()  # spec, timeline, pods
        expect(page.get_by_text("step 100 of 400").first).to_be_visible()
        write_run(runs, "digits-0001", running(240))  # the job moves on; the page follows without a reload
        expect(page.get_by_text("step 240 of 400").first).to_be_visible()
        settled(page)
        page.screenshot(path=str(ARTIFACTS / f"training-{burners}.png"), full_page=True)

        visit(page, f"{url}/training?ns=local&name=evil-0002")
        expect(page.get_by_text("root cause (first observed failure)").first).to_be_visible()  # as code
        expect(page.get_by_test_id("stDataFrame").nth(2)).to_be_visible()
        settled(page)
        evil = page.locator("[src*='evil.example'], [href*='evil.example']")  # an image, a link, an autolink
        assert evil.count() == 0, [evil.nth(i).evaluate("e => e.outerHTML") for i in range(evil.count())]
        assert page.locator("h1, h2, h3").filter(has_text="giant heading").count() == 0
        page.screenshot(path=str(ARTIFACTS / f"hostile-{burners}.png"), full_page=True)

        visit(page, f"{url}/cluster")
        expect(page.get_by_test_id("stMetric").filter(has_text="CPU requested by Kubeforge")).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="CPU in use")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        settled(page)
        page.screenshot(path=str(ARTIFACTS / f"cluster-{burners}.png"), full_page=True)
        assert not chunk_failures(page), (chunk_failures(page), failed_fetches)
        print(f"fetches that failed on the way (the page recovered): {len(failed_fetches)}")
        browser.close()


def test_a_page_whose_frontend_code_failed_to_load_reloads_itself(dashboard: tuple[str, Path]) -> None:
    """The first fetch of the metric element's code fails (as an in-flight fetch does when the network
    changes); the page sees the error, reloads, and shows its metrics. The fetch is failed through the
    DevTools protocol for that one URL, so the browser's cache still serves everything else."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = dashboard
    aborted: list[str] = []
    loads: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        cdp = page.context.new_cdp_session(page)

        def paused(event: dict[str, Any]) -> None:
            request = event["requestId"]
            if aborted:
                cdp.send("Fetch.continueRequest", {"requestId": request})
            else:
                aborted.append(event["request"]["url"])
                cdp.send("Fetch.failRequest", {"requestId": request, "errorReason": "InternetDisconnected"})

        cdp.on("Fetch.requestPaused", paused)
        cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/static/js/Metric.*.js"}]})
        page.on("framenavigated", lambda f: loads.append(f.url) if f == page.main_frame else None)
        visit(page, url + "/")
        expect(page.get_by_test_id("stMetric").filter(has_text="Running")).to_contain_text("1")
        assert aborted and not chunk_failures(page)
        assert len(loads) >= 2  # the page reloaded itself (once for ours, more if the network changed meanwhile)
        browser.close()
