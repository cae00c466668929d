"""``mill report`` opened as a person would: in a real headless Chromium (Debian's package, driven by its
chromedriver through selenium). The page must log no console error, make no network request, draw every
chart, load every image, and look like something (a screenshot, kept in tests/artifacts/, is not blank).

Chromium is installed with apt-get when this runs as root and it is missing; otherwise the test fails
naming the packages. It never skips.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from attrs import frozen
from PIL import Image

from mill.core.results import read_aggregate

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
DEMO_MODEL = "clip[path=mill-shapes,pretrained=mill-shapes]"
DEMO_IDENTITY = "mill-shapes/mill-shapes"
VLM_LIMIT = 24
DEBIAN_PACKAGES = ("chromium", "chromium-driver")
#: The flags of a headless Chromium that must not reach anything on its own (updates, sync, first-run pages).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
)


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing Debian's packages first when root and missing.

    Fails the test (never skips) when they are missing and cannot be installed here.
    """

    def found() -> tuple[str | None, str | None]:
        return shutil.which("chromium"), shutil.which("chromedriver")

    browser, driver = found()
    if (browser is None or driver is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *DEBIAN_PACKAGES], check=False, env=env, capture_output=True)
        browser, driver = found()
    if browser is None or driver is None:
        pytest.fail(
            "the report's browser test needs Debian's Chromium and its driver: "
            f"apt-get install {' '.join(DEBIAN_PACKAGES)} (as root)"
        )
    return browser, driver


@frozen
class PageCheck:
    """What the browser saw on one page."""

    console_errors: list[str]
    requests: list[str]
    charts: list[dict[str, float]]
    images: list[dict[str, Any]]
    screenshot: Path
    text: str


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path, str], PageCheck]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = ensure_chromium()
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    ARTIFACTS.mkdir(exist_ok=True)

    def check(page: Path, name: str) -> PageCheck:
        driver.get_log("performance")  # drop what earlier pages left
        driver.get_log("browser")
        url = page.resolve().as_uri()
        driver.get(url)
        assert driver.execute_script("return document.readyState") == "complete"
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requested = message["params"]["request"]["url"]
                if requested != url and not requested.startswith("data:"):
                    requests.append(requested)
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        charts = driver.execute_script(
            """return [...document.querySelectorAll('figure.chart svg')].map(svg => {
                   const box = svg.getBoundingClientRect();
                   return {width: box.width, height: box.height,
                           marks: svg.querySelectorAll('path, rect, line, polyline, circle, use').length};
               });"""
        )
        images = driver.execute_script(
            "return [...document.images].map(i => ({complete: i.complete, naturalWidth: i.naturalWidth, alt: i.alt}));"
        )
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        screenshot = ARTIFACTS / f"{name}.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        text = driver.execute_script("return document.body.innerText")
        return PageCheck(errors, requests, charts, images, screenshot, text)

    yield check
    driver.quit()


def _assert_page_is_sound(check: PageCheck, *, n_charts: int, n_images: int) -> None:
    assert check.console_errors == []
    assert check.requests == []
    assert len(check.charts) == n_charts
    for chart in check.charts:
        assert chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["marks"] > 10, chart
    assert len(check.images) == n_images
    for image in check.images:
        assert image["complete"] and image["naturalWidth"] > 0, image
    with Image.open(check.screenshot) as shot:
        grey = shot.convert("L")
        low, high = grey.getextrema()
        assert high - low > 100, "the screenshot is blank"
        assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
        assert shot.height > 1000


# --- The runs reported --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, mill_in_process: Any, cache_dir: Path, vlm_model: str) -> Path:
    """The bundled demo (zero-shot, 300 images) and the tiny VLM on the demo's MCQ variant, in one directory."""
    out = tmp_path_factory.mktemp("report") / "results"
    flags = ("--output_dir", str(out), "--cache_dir", str(cache_dir), "--quiet")
    demo = mill_in_process("eval", DEMO_MODEL, "shapes", *flags)
    assert demo.code == 0, demo.err
    mcq = mill_in_process("eval", vlm_model, "shapes", "--limit", str(VLM_LIMIT), *flags)
    assert mcq.code == 0, mcq.err
    return out


def _report(mill_in_process: Any, results: Path, out: Path, *flags: str) -> Path:
    outcome = mill_in_process("report", "--output_dir", str(results), "--out", str(out), *flags)
    assert outcome.code == 0, outcome.err
    assert f"report: {out}" in outcome.out
    return out


def test_zero_shot_report_in_a_browser(
    browser: Callable[[Path, str], PageCheck], mill_in_process: Any, results: Path, tmp_path: Path
) -> None:
    page = _report(mill_in_process, results, tmp_path / "demo.html", "--models", DEMO_IDENTITY)
    check = browser(page, "report-zero-shot")
    misclassified = pl.read_parquet(next((results / "outputs").glob("mill-shapes*/*.parquet"))).filter(
        ~pl.col("correct")
    )
    # One chart (the per-class distribution); one thumbnail per misclassified image shown (at most 24).
    _assert_page_is_sound(check, n_charts=1, n_images=min(misclassified.height, 24))
    text = check.text
    assert "acc\t0.9167 ± 0.0161" in text or "0.9167 ± 0.0161" in text  # accuracy with its bootstrap stderr
    assert "Most confused pairs" in text and "green square" in text
    assert "sha256:" in text  # the figures' provenance names the weights' revision
    assert "not on this machine" not in text


def test_mcq_report_with_a_baseline_comparison_in_a_browser(
    browser: Callable[[Path, str], PageCheck], mill_in_process: Any, results: Path, tmp_path: Path
) -> None:
    page = _report(mill_in_process, results, tmp_path / "all.html")
    check = browser(page, "report-mcq")
    # Zero-shot distribution + MCQ position and letters + the comparison against the baseline.
    _assert_page_is_sound(check, n_charts=4, n_images=len(check.images))
    assert check.images  # the demo's grid is on this page too
    text = check.text
    assert "Accuracy by the gold option's position" in text
    assert "unparsed rate" in text
    assert f"against the baseline {DEMO_IDENTITY}" in text
    # Against the baseline: the paired accuracy difference over the shared samples, not a difference of means.
    assert "accuracy Δ (paired 95% CI)" in text and "McNemar p" in text and "mean Δ" not in text


def test_report_says_when_shards_are_not_local(mill_in_process: Any, results: Path, tmp_path: Path) -> None:
    moved = tmp_path / "results"
    shutil.copytree(results, moved)
    for manifest in (moved / "outputs").glob("mill-shapes*/*.json"):
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "data_source": str(tmp_path / "gone")}))
    html = _report(mill_in_process, moved, tmp_path / "moved.html", "--models", DEMO_IDENTITY).read_text()
    assert "are not on this machine" in html
    assert "never downloads" in html
    assert "<img" not in html


def test_report_baseline_must_be_a_reported_model(mill_in_process: Any, results: Path, tmp_path: Path) -> None:
    outcome = mill_in_process("report", "--output_dir", str(results), "--baseline", "nope/nope")
    assert outcome.code == 2
    assert "--baseline nope/nope" in outcome.err
    assert DEMO_IDENTITY in outcome.err
    assert set(read_aggregate(results).get_column("model")) >= {DEMO_IDENTITY}


def test_screenshot_check_catches_a_blank_page(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1280, 1600), "white").save(blank)
    with pytest.raises(AssertionError, match="blank"):
        _assert_page_is_sound(PageCheck([], [], [], [], blank, ""), n_charts=0, n_images=0)
