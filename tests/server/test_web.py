"""The web page at / in a real headless Chromium (Debian's, installed by .ci/run), driven by Playwright.

Screenshots go to the test's tmp_path; their paths are printed (see them with `pytest -rP`).
"""

import base64
import shutil

import pytest
from playwright import sync_api

from support.photos import CAT_CLASSES, DATA  # noqa: E402

from shiwu.server.process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No skip: the page is part of shiwu, so a machine without a browser fails this test. README's
# test command installs Debian's chromium first.
if CHROMIUM is None:
    raise RuntimeError("the web page test needs Debian's chromium: apt-get install -y chromium")

KEY = "识物网页密钥-42"  # not ASCII, as the README's own example: the page sends its UTF-8 bytes
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backend", "torch", "--threads", "2", "--no-access-log"]) as process:
        yield process


@pytest.fixture(scope="module")
def keyed_server():
    with ServerProcess(["--backend", "torch", "--threads", "1", "--no-access-log"],
                       env={"SHIWU_API_KEY": KEY}) as process:
        yield process


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, locale="zh-CN")
    page = context.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.requests = requests
    yield page
    context.close()


def shoot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@pytest.mark.slow
def test_choosing_a_photo_shows_its_chinese_top1_and_five_bars(page, server, tmp_path):
    page.goto(server.url + "/")
    page.wait_for_selector("#model:has-text('efficientnet-lite0')")
    page.set_input_files("#file", str(DATA / "coffee.jpg"))
    page.wait_for_selector("#result.show", timeout=30_000)
    assert page.inner_text("#top1") == "浓缩咖啡"
    assert "espresso" in page.inner_text("#top1-en")
    items = page.locator("#predictions li")
    assert items.count() == 5
    assert items.first.get_attribute("data-index") == "967"
    assert "浓缩咖啡" in items.first.inner_text() and "%" in items.first.inner_text()
    widths = page.eval_on_selector_all("#predictions .bar > div", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > 5 * widths[1]
    assert page.eval_on_selector("#preview", "img => img.naturalWidth") > 0
    # readable on a phone: nothing wider than the screen, text not tiny
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('#top1')).fontSize)") >= 24
    shoot(page, tmp_path, "web-coffee-phone.png")
    # offline: every request the page made went to this server (no CDN, no fonts, no analytics)
    assert page.requests and all(url.startswith((server.url, "blob:" + server.url)) for url in page.requests), page.requests


def _drop_or_paste(page, path, how):
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate("""([data, name, how]) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const file = new File([bytes], name, {type: "image/jpeg"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        if (how === "drop") {
            document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        } else {
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true}));
        }
    }""", [data, path.name, how])


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_dropping_or_pasting_a_photo_works_too(page, server, how):
    page.goto(server.url + "/")
    _drop_or_paste(page, DATA / "chelsea.jpg", how)
    page.wait_for_selector("#result.show", timeout=30_000)
    top = page.locator("#predictions li").first
    assert int(top.get_attribute("data-index")) in CAT_CLASSES
    assert "猫" in page.inner_text("#top1")


def test_a_file_that_is_not_an_image_shows_the_reason(page, server, tmp_path):
    page.goto(server.url + "/")
    page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                          "buffer": "这不是图片".encode()}])
    page.wait_for_selector("#status.error", timeout=30_000)
    status = page.inner_text("#status")
    assert "415" in status and "not a recognised image format" in status
    assert not page.is_visible("#result")
    shoot(page, tmp_path, "web-error-phone.png")


@pytest.mark.slow
def test_the_page_asks_for_the_api_key_when_the_server_wants_one(browser, keyed_server, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 760}, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(keyed_server.url + "/")
        page.wait_for_selector("#key-row.show")
        page.set_input_files("#file", str(DATA / "coffee.jpg"))
        page.wait_for_selector("#status.error")
        assert "API 密钥" in page.inner_text("#status")
        page.fill("#key", KEY)
        page.set_input_files("#file", str(DATA / "coffee.jpg"))
        page.wait_for_selector("#result.show", timeout=30_000)
        assert page.inner_text("#top1") == "浓缩咖啡"
        shoot(page, tmp_path, "web-coffee-desktop.png")
    finally:
        context.close()


def test_without_an_index_or_gallery_the_tabs_say_how_to_get_them(page, server):
    page.goto(server.url + "/")
    page.click("#tab-similar")
    page.wait_for_selector("#similar-off", state="visible")
    assert "shiwu serve --index" in page.inner_text("#similar-off") and not page.is_visible("#similar-file")
    page.click("#tab-teach")
    page.wait_for_selector("#teach-off", state="visible")
    assert "--gallery" in page.inner_text("#teach-off") and not page.is_visible("#class-name")
    page.click("#tab-recognize")
    assert page.is_visible("#drop") and not page.is_visible("#teach-off")


def test_a_server_with_default_settings_measured_its_batch_size(server):
    """No --max-batch-size: the server timed batches of 1, 4, 8, 16 and batches only if it pays."""
    import httpx

    batching = httpx.get(server.url + "/v1/models").json()["batching"]
    assert batching["chosen_by"] == "measurement"
    per_image = {int(n): ms for n, ms in batching["measurement"]["per_image_ms"].items()}
    assert set(per_image) == {1, 4, 8, 16} and all(ms > 0 for ms in per_image.values())
    chosen = batching["max_batch_size"]
    if chosen == 1:
        assert batching["measurement"]["gain"] < 1.10
    else:
        assert per_image[chosen] == min(per_image.values()) and per_image[1] / per_image[chosen] >= 1.10
    assert f"shiwu_max_batch_size {float(chosen)}" in httpx.get(server.url + "/metrics").text



# ---------------------------------------------------------------- 找相似 and 教它认识

from support.gallery import RIGHT  # noqa: E402
from support.serving import SERVE, shiwu  # noqa: E402  (photos, index_dir: tests/server/conftest.py)


@pytest.fixture(scope="module")
def vector_server(index_dir, tmp_path_factory):  # noqa: F811
    # with an API key: the page must send it for searches, thumbnails (fetched, not <img src>) and
    # new examples alike
    gallery = tmp_path_factory.mktemp("web-gallery") / "我的类别"
    with ServerProcess([*SERVE, "--index", str(index_dir), "--gallery", str(gallery)],
                       env={"SHIWU_API_KEY": KEY}) as process:
        process.gallery = gallery
        yield process


def _new_page(browser):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, locale="zh-CN")
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    return context, page


@pytest.mark.slow
def test_find_similar_shows_the_copies_of_a_photo_as_thumbnails(browser, vector_server, tmp_path):
    context, page = _new_page(browser)
    try:
        page.goto(vector_server.url + "/")
        page.wait_for_selector("#key-row.show")
        page.fill("#key", KEY)
        page.click("#tab-similar")
        assert page.is_visible("#similar-drop") and not page.is_visible("#drop")
        assert not page.is_visible("#words-form")  # EfficientNet-Lite0 has no text tower: no words box
        page.set_input_files("#similar-file", str(DATA / "coffee.jpg"))
        page.wait_for_selector("#matches figure", timeout=30_000)
        figures = page.locator("#matches figure")
        assert figures.count() >= 3
        names = [figures.nth(i).get_attribute("data-image").rsplit("/", 1)[-1] for i in range(3)]
        assert names[0] == "coffee.jpg" and set(names[1:]) == {"咖啡 小.jpg", "coffee_bright.jpg"}
        scores = [float(figures.nth(i).get_attribute("data-score")) for i in range(figures.count())]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0.999
        assert "浓缩咖啡" in figures.first.inner_text() and "100.0%" in figures.first.inner_text()
        # every thumbnail arrived and was drawn (fetched from /v1/thumbnails/<row id>)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#matches img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert "最像的" in page.inner_text("#similar-status")
        shoot(page, tmp_path, "web-similar-phone.png")
        thumbs = [u for u in page.requests if "/v1/thumbnails/" in u]
        assert len(thumbs) == figures.count()
        assert all(u.startswith((vector_server.url, "blob:" + vector_server.url))
                   for u in page.requests), page.requests
    finally:
        context.close()


def _views_on_disk(folder, photo, count):
    from shiwu.calibrate import views
    from PIL import Image
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, view in enumerate(views(Image.open(photo).convert("RGB"), count + 1, np.random.default_rng(0))[1:]):
        view.save(folder / f"摩托{i}.jpg", quality=90)
        paths.append(str(folder / f"摩托{i}.jpg"))
    return paths


@pytest.mark.slow
def test_teach_it_a_class_by_a_few_photos_then_it_recognises_one(browser, vector_server, tmp_path):
    context, page = _new_page(browser)
    try:
        page.goto(vector_server.url + "/")
        page.click("#tab-teach")
        assert page.is_visible("#teach-drop") and not page.is_visible("#classes-card")
        examples = _views_on_disk(tmp_path / "examples", DATA / "motorcycle_left.jpg", 3)
        page.set_input_files("#teach-files", examples)  # no name yet: it asks for one, keeps nothing
        page.wait_for_selector("#teach-status.error")
        assert "叫什么" in page.inner_text("#teach-status")
        broken = {"name": "坏的.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo"}
        page.fill("#class-name", "我的摩托")
        page.set_input_files("#teach-files", files=[*examples])  # no key yet: it asks for it
        page.wait_for_selector("#teach-status:has-text('API 密钥')", timeout=60_000)
        assert not (vector_server.gallery / "我的摩托").exists()
        page.fill("#key", KEY)
        page.set_input_files("#teach-files", files=[*examples])
        page.wait_for_selector("#teach-status:has-text('记住了')", timeout=60_000)
        assert "记住了 3 张「我的摩托」" in page.inner_text("#teach-status")
        page.set_input_files("#teach-files", files=[broken])
        page.wait_for_selector("#teach-status.error", timeout=60_000)
        assert "没有记住" in page.inner_text("#teach-status") and "415" in page.inner_text("#teach-status")
        assert page.inner_text("#classes li[data-label='我的摩托']").endswith("3 张")
        assert len(list((vector_server.gallery / "我的摩托").iterdir())) == 3
        shoot(page, tmp_path, "web-teach-phone.png")

        page.click("#try-it")
        assert page.is_visible("#drop")
        page.set_input_files("#file", str(RIGHT))  # the other camera: a photo it was never shown
        page.wait_for_selector("#result.show", timeout=30_000)
        assert page.inner_text("#top1") == "我的摩托"
        assert "你教的" in page.inner_text("#top1-en")
        assert page.locator("#predictions li").first.get_attribute("data-source") == "gallery"
        shoot(page, tmp_path, "web-taught-phone.png")
    finally:
        context.close()


@pytest.mark.slow
def test_a_chinese_clip_index_gets_a_words_box_that_finds_photos(browser, photos, tmp_path, clip_dir):  # noqa: F811
    model = clip_dir("ViT-B-16")
    index = tmp_path / "clip"
    files = [photos / n for n in ("coffee.jpg", "rocket.jpg", "chelsea.jpg")]
    run = shiwu("index", *files, "--out", index, "--model", model, "--backend", "onnxruntime",
                "--threads", "1", "-q")
    assert run.returncode == 0, run.stderr
    with ServerProcess([*SERVE, "--model", str(model), "--index", str(index)]) as server:
        context, page = _new_page(browser)
        try:
            page.goto(server.url + "/")
            page.click("#tab-similar")
            page.wait_for_selector("#words-form", state="visible")
            page.fill("#words", "一张猫的照片")
            page.press("#words", "Enter")
            page.wait_for_selector("#matches figure", timeout=60_000)
            assert page.locator("#matches figure").count() == 3
            assert "一张猫的照片" in page.inner_text("#similar-status")
            want = httpx_search(server.url, "一张猫的照片")
            got = [page.locator("#matches figure").nth(i).get_attribute("data-image") for i in range(3)]
            assert got == want
            page.wait_for_function(
                "() => [...document.querySelectorAll('#matches img')].every(i => i.naturalWidth > 0)",
                timeout=30_000)
        finally:
            context.close()


def httpx_search(url, text):
    import httpx

    response = httpx.post(url + "/v1/search", params={"text": text, "topk": 12}, timeout=60)
    return [m["image"] for m in response.json()["results"][0]["matches"]]
@pytest.mark.slow
def test_the_api_docs_render_under_their_content_security_policy(page, server):
    # /docs gets a strict CSP now (issue 14): Swagger UI's own files and its one inline start-up
    # script must still run, and no CSP violation may be reported.
    violations = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
    response = page.goto(server.url + "/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/recognize\"]", timeout=30000)
    assert not violations, violations
    assert all(url.startswith(server.url) for url in page.requests), page.requests
