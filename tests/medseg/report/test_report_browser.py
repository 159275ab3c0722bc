"""``report.html`` in a real browser (headless Chromium from Debian, driven by Playwright): each page opens
from ``file://`` with no console error and no network request, has one case row per case, sorts by a
clicked header, moves through a volume with its slice slider, is not blank, and every picture exists."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

# Debian's package (`apt-get install chromium`; `make test` installs it); CHROMIUM=... names another build
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A report opened in a fresh page, with every console error and every request recorded."""

    def __init__(self, browser, report: Path):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(report.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def case_ids(self) -> list[str]:
        return self.page.eval_on_selector_all("#cases tbody tr", "rs => rs.map(r => r.dataset.case)")

    def column(self, i: int) -> list[str]:
        return self.page.eval_on_selector_all(
            "#cases tbody tr", f"rs => rs.map(r => r.cells[{i}].getAttribute('data-v'))"
        )


def check_offline_and_complete(pg: Page, folder: Path) -> None:
    """No console error, only file:// requests inside the folder, every picture there and not blank."""
    assert pg.errors == []
    assert pg.requests and all(u.startswith("file://") for u in pg.requests), pg.requests
    srcs = pg.page.eval_on_selector_all("img", "xs => xs.map(x => x.getAttribute('src'))")
    srcs += sum(
        (
            json.loads(s)
            for s in pg.page.eval_on_selector_all("img[data-srcs]", "xs => xs.map(x => x.dataset.srcs)")
        ),
        [],
    )
    for s in srcs:
        assert (folder / s).is_file(), s
    for u in pg.requests:
        assert Path(unquote(urlparse(u).path)).is_file(), u
    shot = np.asarray(Image.open(io.BytesIO(pg.page.screenshot(full_page=True))).convert("L"))
    assert shot.std() > 10  # text, tables and pictures, not a blank page


def val_cases(folder: Path) -> set[str]:
    with open(folder / "val_cases_best.csv", encoding="utf-8", newline="") as f:
        return {r["case_id"] for r in csv.DictReader(f)}


def test_run_report_in_browser(run2d, browser):
    pg = Page(browser, run2d / "report.html")  # written by the run itself (medseg.run.app)
    check_offline_and_complete(pg, run2d)
    ids = pg.case_ids()
    assert sorted(ids) == sorted(val_cases(run2d)) and len(ids) == 3
    dice = [float(v) for v in pg.column(1)]
    assert dice == sorted(dice)  # worst first
    assert pg.page.locator("#cases img").count() == 3  # image | reference | prediction of each case
    assert "HD95 (px)" in pg.page.inner_text("#cases thead")
    assert pg.page.inner_text(".legend").replace(" ", "") == "Colours:polyp"  # the organ colours
    assert pg.page.locator("svg.chart").count() >= 2  # learning curves
    pg.page.click("#cases thead th:nth-child(1)")  # by case id, ascending
    assert pg.case_ids() == sorted(ids)
    pg.page.click("#cases thead th:nth-child(1)")  # descending
    assert pg.case_ids() == sorted(ids, reverse=True)


def test_inference_report_slice_slider(inference3d, browser):
    pg = Page(browser, inference3d / "report.html")
    check_offline_and_complete(pg, inference3d)
    assert sorted(pg.case_ids()) == sorted(p.stem for p in inference3d.glob("*.npy"))
    assert pg.page.locator(".legend .sw").count() == 2  # two organs, their colours
    slider = pg.page.locator("input.slider").first
    img = pg.page.locator("img.slice").first
    assert int(slider.get_attribute("max")) == 5  # every slice of the 6-slice volume
    assert img.evaluate("x => x.naturalWidth") >= 3 * 256
    before = img.get_attribute("src")
    key = int(slider.get_attribute("data-key"))
    slider.fill(str(0 if key else 5))  # moves the slider (an input event)
    after = img.get_attribute("src")
    assert after != before and (inference3d / after).is_file()
    assert pg.errors == []


def test_comparison_report_in_browser(comparison, browser):
    pg = Page(browser, comparison / "report.html")
    check_offline_and_complete(pg, comparison)
    head = pg.page.inner_text("#cases thead")
    assert all(f"Dice {a}" in head for a in "abc")
    ids = pg.case_ids()
    assert len(ids) == len(set(ids)) == 3
    links = pg.page.eval_on_selector_all("a.arm-link", "xs => xs.map(x => x.getAttribute('href'))")
    assert len(links) == 3 and all((comparison / h).resolve().is_file() for h in links)
    col_b = 3 + 1  # case, mean, worst arm, a, b, ...
    pg.page.click(f"#cases thead th:nth-child({col_b + 1})")
    vals = [float(v) for v in pg.column(col_b)]
    assert vals == sorted(vals)
    pg.page.click(f"#cases thead th:nth-child({col_b + 1})")
    assert [float(v) for v in pg.column(col_b)] == sorted(vals, reverse=True)


def test_sweep_report_in_browser(sweep, browser):
    pg = Page(browser, sweep / "report.html")
    check_offline_and_complete(pg, sweep)
    assert pg.page.locator("#sweep tbody tr").count() == 2
    assert pg.page.locator("svg.chart").count() == 1
