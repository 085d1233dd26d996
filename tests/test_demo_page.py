"""The demo page in a real headless Chromium (Playwright driving Debian's ``chromium``).

A session fixture trains ``lseg_tiny_test`` briefly on a generated toy set; the demo serves it in a subprocess on a
free port. The browser uploads a toy validation image, types the labels, clicks **Segment** and checks that the
result is a real segmentation: the downloaded mask equals ``tools/infer.py``'s mask of the same image (one inference
path), matches the toy ground truth on most pixels, holds several labels; the overlay carries a legend and the table
lists the labels. Then bad input (no labels, an over-long label, a file that is not an image) shows a message in the
page, no server path reaches the client, the server keeps running and answers the next request. No request leaves
the machine. The screenshot is saved next to the test's files; with ``LSEG_UPDATE_SCREENSHOT=1`` it also replaces
``docs/demo_page.png`` (the README's picture).

Skips (with the reason) only when Gradio/Playwright are not installed (``pip install -e ".[test]"``) or no Chromium
binary exists (``apt-get install chromium``; or set ``LSEG_CHROMIUM`` to a Chromium/Chrome executable).
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import numpy as np
import pytest
from _paths import REPO
from PIL import Image

pytestmark = pytest.mark.slow  # trains a model, starts a server and a browser

TOY_LABELS = "sky, grass, water, road, red circle, yellow square"
SERVER_START_TIMEOUT = 600  # loading + compiling on a loaded 2-core machine
REQUEST_TIMEOUT_MS = 240_000


def _chromium() -> str:
    for cand in (os.environ.get("LSEG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        path = cand and shutil.which(cand)
        if path:
            return path
    pytest.skip(
        "no Chromium executable found: install Debian's chromium (`apt-get install chromium`, as .ci/run "
        "does) or set LSEG_CHROMIUM to a Chromium/Chrome binary"
    )


@pytest.fixture(scope="session")
def browser():
    """Gradio, Playwright and a Chromium binary, checked before anything is trained."""
    pytest.importorskip("gradio", reason='the demo extra is not installed: pip install -e ".[demo]"')
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e " '".[test]"'
    )
    return sync_api, _chromium()


@pytest.fixture(scope="session")
def toy_run(browser, tmp_path_factory):
    """``lseg_tiny_test`` trained briefly on a 96 px toy set (GRAPH mode, ~1 min on an idle 2-core machine), and two
    128 px toy validation images to try it on."""
    from conftest import run_tool

    from mindcv_lseg.data import make_toy_dataset

    work = tmp_path_factory.mktemp("demo_toy")
    data = make_toy_dataset(str(work / "toy"), num_train=48, num_val=0, size=96, seed=0)
    val = make_toy_dataset(str(work / "toy_val128"), num_train=0, num_val=2, size=128, seed=0)
    run_tool(
        "tools/train.py",
        "-c",
        "configs/lseg_toy.yaml",
        "--data_dir",
        data,
        "--ckpt_save_dir",
        str(work / "run"),
        "--epoch_size",
        "25",
        "--crop_size",
        "96",
        "--base_size",
        "96",
        "--val_while_train",
        "false",
        "--keep_checkpoint_max",
        "1",
        "--progress_bar",
        "false",
        timeout=1500,
    )
    ckpts = sorted(p for p in os.listdir(work / "run") if p.endswith(".ckpt"))
    assert ckpts, f"training wrote no checkpoint into {work / 'run'}"
    return {"ckpt": str(work / "run" / ckpts[-1]), "data": data, "val": val, "work": work}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log_path: str, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited with {proc.returncode} before serving:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"demo did not answer on {url} within {timeout} s:\n{_log_tail(log_path)}")


def _log_tail(path: str, n: int = 40) -> str:
    lines = [x for x in open(path, encoding="utf-8", errors="replace").read().splitlines() if "deprecated" not in x]
    return "\n".join(lines[-n:])


@pytest.fixture(scope="module")
def demo_server(toy_run, tmp_path_factory):
    port = _free_port()
    log_path = str(tmp_path_factory.mktemp("demo_log") / "demo.log")
    example = os.path.join(toy_run["val"], "images", "val_0000.png")
    cmd = [
        sys.executable,
        "tools/demo.py",
        "--model",
        "lseg_tiny_test",
        "--ckpt_path",
        toy_run["ckpt"],
        "--port",
        str(port),
        "--labels",
        TOY_LABELS,
        "--examples",
        example,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, proc, log_path, SERVER_START_TIMEOUT)
        yield {"url": url, "proc": proc, "log": log_path, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _infer_mask(toy_run, image_path, out_dir):
    """The same image through tools/infer.py (started in the background; returns a function giving the mask)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "tools/infer.py",
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            toy_run["ckpt"],
            "--labels",
            TOY_LABELS,
            "--input",
            image_path,
            "--output",
            out_dir,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def result():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"tools/infer.py failed:\n{err[-3000:]}"
        stem = os.path.splitext(os.path.basename(image_path))[0]
        return np.asarray(Image.open(os.path.join(out_dir, f"{stem}_mask.png")))

    return result


def _fetch(page, url) -> bytes:
    resp = page.request.get(url)
    assert resp.ok, f"GET {url}: {resp.status}"
    return resp.body()


def _upload(page, path) -> None:
    remove = page.locator("#input_image button[aria-label='Remove Image']")
    if remove.count():
        remove.first.click()
    page.locator("#input_image input[type=file]").set_input_files(path)
    page.locator("#input_image img").first.wait_for(state="attached", timeout=60_000)


def _status(page) -> str:
    return page.locator("#status").inner_text().strip()


def _segment(page, expect: str) -> str:
    """Click Segment and wait until the status line starts with ``expect``; returns the status text."""
    page.locator("#status").evaluate("el => { el.dataset.before = el.innerText }")
    page.get_by_role("button", name="Segment", exact=True).click()
    page.wait_for_function(
        "([sel, want]) => { const el = document.querySelector(sel); const t = el ? el.innerText.trim() : '';"
        " return t.startsWith(want) && t !== el.dataset.before; }",
        arg=["#status", expect],
        timeout=REQUEST_TIMEOUT_MS,
    )
    return _status(page)


def test_demo_page_in_chromium(browser, demo_server, toy_run, tmp_path):
    sync_api, chromium = browser
    image_path = os.path.join(toy_run["val"], "images", "val_0001.png")  # all six classes in its ground truth
    gt = np.asarray(Image.open(os.path.join(toy_run["val"], "masks", "val_0001.png")))
    infer_result = _infer_mask(toy_run, image_path, str(tmp_path / "infer"))
    secret_paths = [str(toy_run["work"]), toy_run["ckpt"], str(REPO)]
    external = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", only_local)
            page.goto(demo_server["url"], wait_until="networkidle", timeout=120_000)
            assert "LSeg" in page.title() + page.locator("h2").first.inner_text()
            assert page.locator("#labels textarea").input_value() == TOY_LABELS  # pre-filled

            # ---- a real segmentation
            _upload(page, image_path)
            page.locator("#labels textarea").fill(TOY_LABELS)
            status = _segment(page, "Segmented")
            assert "128x128 px with 6 labels" in status, status
            page.locator("#overlay img").first.wait_for(state="visible", timeout=60_000)
            page.locator("#mask img").first.wait_for(state="visible", timeout=60_000)
            overlay_src = page.locator("#overlay img").first.get_attribute("src")
            overlay = np.asarray(Image.open(io.BytesIO(_fetch(page, overlay_src))).convert("RGB"))
            mask_href = page.locator("#download a").first.get_attribute("href")
            assert os.path.basename(urlparse(mask_href).path) == "val_0001_mask.png"
            mask_png = Image.open(io.BytesIO(_fetch(page, mask_href)))
            assert mask_png.mode == "P"
            mask = np.asarray(mask_png)
            table_text = page.locator("#table").inner_text()
            page.wait_for_timeout(500)  # let the images paint before the screenshot
            shot = tmp_path / "demo_page.png"
            page.screenshot(path=str(shot), full_page=True)

            # ---- bad input: a message in the page, no server path, the server keeps running
            page.locator("#labels textarea").fill("   ")
            msg_empty = _segment(page, "Error")
            assert "no labels given" in msg_empty, msg_empty
            assert page.locator("#overlay img").count() == 0  # the old result is cleared, not left standing
            page.locator("#labels textarea").fill("sky, " + " ".join(["word"] * 80))
            msg_long = _segment(page, "Error")
            assert "too long" in msg_long, msg_long
            bogus = tmp_path / "not_an_image.png"
            bogus.write_bytes(b"this is text, not a PNG\n" * 40)
            _upload(page, str(bogus))
            page.locator("#labels textarea").fill(TOY_LABELS)
            msg_bad = _segment(page, "Error")
            assert "not an image" in msg_bad, msg_bad
            assert demo_server["proc"].poll() is None, "the server died on bad input"

            # the next good request is answered (examples work too)
            page.locator("#input_image button[aria-label='Remove Image']").first.click()
            page.locator("#examples img").first.click()
            page.locator("#input_image img").first.wait_for(state="attached", timeout=60_000)
            assert "128x128 px with 6 labels" in _segment(page, "Segmented")
            page_html = page.content()
            config = _fetch(page, demo_server["url"] + "config").decode("utf-8", "replace")
        finally:
            browser.close()

    # the page is served entirely by the demo: no font, script or image from another host
    assert external == [], f"the page requested other hosts: {external}"
    for text in (msg_empty, msg_long, msg_bad, page_html, config, mask_href, overlay_src):
        for secret in secret_paths:
            assert secret not in text, f"server path {secret} reached the client"

    # the result: the same mask as tools/infer.py (one inference path), close to the toy ground truth
    ref = infer_result()
    np.testing.assert_array_equal(mask, ref)
    present = np.unique(mask)
    assert len(present) >= 4, f"a near-blank segmentation: labels present {present.tolist()}"
    accuracy = float(np.mean(mask == gt))
    assert accuracy > 0.8, f"pixel accuracy against the toy ground truth only {accuracy:.2f}"

    # overlay = image blended with the colours, plus a legend panel to the right with a swatch per label
    from mindcv_lseg.viz import get_palette

    pal = get_palette(6)
    assert overlay.shape[0] >= 128 and overlay.shape[1] > 128 + 40, overlay.shape
    legend = overlay[:, 128:].reshape(-1, 3)
    for i in range(6):
        assert (legend == pal[i]).all(axis=1).any(), f"no legend swatch for label {i}"
    cells = [c.strip() for c in table_text.splitlines() if c.strip()]
    assert cells[cells.index("id") :][:4] == ["id", "label", "colour", "pixels %"], table_text
    rows = [cells[i : i + 4] for i in range(cells.index("pixels %") + 1, len(cells), 4)]
    assert [r[1] for r in rows] == [s.strip() for s in TOY_LABELS.split(",")], table_text
    assert [int(r[0]) for r in rows] == list(range(6)), table_text
    assert [r[2] for r in rows] == ["#%02x%02x%02x" % tuple(int(v) for v in pal[i]) for i in range(6)], table_text
    shares = [float(r[3]) for r in rows]
    expected = [100.0 * np.mean(mask == i) for i in range(6)]
    assert np.allclose(shares, expected, atol=0.01), (shares, expected)
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("LSEG_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "demo_page.png")
