"""The page's 重复 (duplicates) tab in a real headless Chromium (Debian's), driven by Playwright:
the served index's groups with their tier badges (精确 exact / 近似 near / 相似 similar) and each
photo's thumbnail, through the API key."""

import shutil

import pytest
from playwright import sync_api

import httpx

from shiwu.server.process import ServerProcess
from support.duplicates import KEY, SERVE, dupes_index, dupes_server, library  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # no skip: the page is part of shiwu
    raise RuntimeError("the web page test needs Debian's chromium: apt-get install -y chromium")
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, dupes_server):  # noqa: F811
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, locale="zh-CN")
    page = context.new_page()
    page.goto(dupes_server.url + "/")
    page.wait_for_selector("#key-row.show")  # the server wants a key: the page asks for it
    page.fill("#key", KEY)
    page.click("#tab-dupes")
    yield page
    context.close()


def _groups(page) -> dict[frozenset, str]:
    """{file names of a group: the text of its tier badge}."""
    out = {}
    for card in page.locator("#dupes .dup-group").all():
        names = frozenset(f.get_attribute("data-image").rsplit("/", 1)[-1] for f in card.locator("figure").all())
        out[names] = card.locator(".tier").inner_text()
    return out


@pytest.mark.slow
def test_the_duplicates_tab_shows_each_group_with_its_tier_badge(page, tmp_path):
    assert page.is_visible("#dupes-form") and not page.is_visible("#dupes-off")
    page.click("#dupes-form button[type=submit]")
    page.wait_for_selector("#dupes .dup-group", timeout=60_000)
    groups = _groups(page)
    assert groups[frozenset({"coffee.jpg", "coffee copy.jpg"})] == "精确 exact"
    assert groups[frozenset({"chelsea.jpg", "chelsea_gray.jpg"})] == "近似 near"
    assert groups[frozenset({"rocket.jpg", "rocket_crop.jpg"})] == "相似 similar"
    # every photo's thumbnail arrived (fetched with the key) and was drawn
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dupes img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000)
    assert "组重复" in page.inner_text("#dupes-status")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(tmp_path / "web-duplicates-phone.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'web-duplicates-phone.png'}")


def test_choosing_the_exact_tier_leaves_only_identical_files(page):
    page.select_option("#dupes-tier", "exact")
    page.click("#dupes-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#dupes .dup-group').length === 1", timeout=60_000)
    assert _groups(page) == {frozenset({"coffee.jpg", "coffee copy.jpg"}): "精确 exact"}


@pytest.mark.slow
def test_without_an_index_the_tab_says_how_to_get_one_and_the_route_is_409(browser):
    with ServerProcess(SERVE) as server:
        answer = httpx.get(server.url + "/v1/duplicates", timeout=30)
        assert answer.status_code == 409 and "shiwu serve --index" in answer.json()["detail"]
        context = browser.new_context(locale="zh-CN")
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            page.click("#tab-dupes")
            page.wait_for_selector("#dupes-off", state="visible")
            assert not page.is_visible("#dupes-form") and "shiwu index" in page.inner_text("#dupes-off")
        finally:
            context.close()
