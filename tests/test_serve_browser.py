"""`mage serve`'s web chat in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, as `.ci/run`
installs them) driven by Selenium with the system executables, against a server on 127.0.0.1 with a tiny random MAGE.

The chat: upload a ShapeWorld image, ask, wait for the streamed answer and compare it with greedy `generate`. The
agent tab: one request whose plan (ShapeWorld draws, MAGE describes) shows as a table with each step's status and
the drawn image. Screenshots go to the test's tmp_path (and to $MAGE_SCREENSHOT_DIR when set, to refresh docs/).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if importlib.util.find_spec("gradio") is None:  # gradio is imported when the server is built, not here
    pytest.skip("needs the serve extra (gradio, fastapi, uvicorn)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from mage_cli.serving.app import ServeOptions, Server, build_app  # noqa: E402
from tool_use.schema import plan_to_text  # noqa: E402

QUESTION = "What is in the image?"
MAX_NEW_TOKENS = 24
PLAN = [
    {"task": "text-to-image", "id": 0, "dep": [-1], "args": {"text": "a red circle to the left of a blue square"}},
    {"task": "image-to-text", "id": 1, "dep": [0], "args": {"image": "<GENERATED>-0"}},
]
REQUEST = "Draw a red circle to the left of a blue square, then describe the picture."


@pytest.fixture(scope="module")
def server(tiny_mage, tmp_path_factory):
    model, processor = tiny_mage
    work = tmp_path_factory.mktemp("serve")
    app, engine = build_app(
        model, processor, ServeOptions(model_name="tiny-mage", work_dir=work, examples=2, step_timeout=60)
    )
    srv = Server(app).start()
    srv.work = work
    yield srv
    srv.stop()
    engine.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,900",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("MAGE_SCREENSHOT_DIR"):
        shutil.copyfile(path, Path(os.environ["MAGE_SCREENSHOT_DIR"]) / name)
    return path


def flat(text: str) -> str:
    return " ".join(text.split())


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#chat-input textarea"), what="the chat to load")


def test_chat_streams_the_greedy_answer(server, browser, tiny_mage, tmp_path):
    from PIL import Image

    from inference.generation import generate_text

    model, processor = tiny_mage
    image_path = server.work / "examples" / "shapeworld_0.png"  # drawn by ShapeWorld when the server started
    with Image.open(image_path) as image:
        want = generate_text(model, processor, QUESTION, image=image.convert("RGB"), max_new_tokens=MAX_NEW_TOKENS)
    open_page(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, "#chat-image input[type=file]").send_keys(str(image_path))
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chat-image img"), what="the image preview")
    browser.find_element(By.CSS_SELECTOR, "#chat-sampling button.label-wrap").click()
    box = wait_for(
        lambda: [
            e for e in browser.find_elements(By.CSS_SELECTOR, "#chat-max-tokens input[type=number]") if e.is_displayed()
        ],
        what="the sampling settings",
    )[0]
    box.clear()
    box.send_keys(str(MAX_NEW_TOKENS), Keys.TAB)
    wait_for(
        lambda: (
            browser.find_element(By.CSS_SELECTOR, "#chat-max-tokens input[type=range]").get_attribute("value")
            == str(MAX_NEW_TOKENS)
        ),
        what="max new tokens to be set",
    )
    browser.execute_script(  # every text the answer shows on its way (streaming = a row of growing prefixes)
        "window.seen = []; new MutationObserver(() => {"
        "  const bots = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        "  if (bots.length) window.seen.push(bots[bots.length - 1].innerText);"
        "}).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});"
    )
    browser.find_element(By.CSS_SELECTOR, "#chat-input textarea").send_keys(QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#chat-send").click()

    def answer() -> str:
        bots = browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]')
        return flat(bots[-1].text) if bots else ""

    wait_for(lambda: answer() == flat(want), what=f"the answer {want!r} (shown: {answer()!r})")
    assert [flat(e.text) for e in browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="user"]')] == [QUESTION]
    partial = {flat(t) for t in browser.execute_script("return window.seen")} - {"", flat(want)}
    assert len(partial) >= 2 and all(flat(want).startswith(t) for t in partial), partial  # it streamed
    screenshot(browser, tmp_path, "serve_chat.png")
    # an empty message is answered with a message, and the chat goes on
    browser.find_element(By.CSS_SELECTOR, "#chat-send").click()
    wait_for(lambda: "empty" in browser.find_element(By.CSS_SELECTOR, "#chat-error").text, what="the empty warning")
    browser.find_element(By.CSS_SELECTOR, "#chat-clear").click()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]'), what="clear")
    # a corrupt PNG (the first half of a real one) is refused with a message; then a good turn still works
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(image_path.read_bytes()[: image_path.stat().st_size // 2])
    browser.find_element(By.CSS_SELECTOR, "#chat-image input[type=file]").send_keys(str(corrupt))
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chat-image img"), what="the corrupt file's box")
    browser.find_element(By.CSS_SELECTOR, "#chat-input textarea").send_keys(QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#chat-send").click()
    wait_for(lambda: "is corrupt" in browser.find_element(By.CSS_SELECTOR, "#chat-error").text, what="the warning")
    assert not browser.find_elements(By.CSS_SELECTOR, '#chatbot [data-testid="bot"]')
    browser.find_element(By.CSS_SELECTOR, "#chat-clear").click()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, "#chat-image img"), what="the image to clear")
    browser.find_element(By.CSS_SELECTOR, "#chat-image input[type=file]").send_keys(str(image_path))
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chat-image img"), what="the image preview")
    box = browser.find_element(By.CSS_SELECTOR, "#chat-input textarea")
    assert box.get_attribute("value") == QUESTION  # a refused message is kept for another try
    browser.find_element(By.CSS_SELECTOR, "#chat-send").click()
    wait_for(lambda: answer() == flat(want), what="an answer after the bad input")
    assert browser.find_element(By.CSS_SELECTOR, "#chat-error").text.strip() == ""


def test_agent_tab_shows_plan_status_and_image(server, browser, tmp_path, monkeypatch):
    """The planner's generation is replaced by a fixed plan (a random tiny model cannot plan, as in
    tests/test_tool_use_agent.py); parsing, validation, ShapeWorld drawing, MAGE describing the drawing and the
    page's table and gallery run for real."""
    import inference.generation

    real = inference.generation.generate_text

    def planner(model, processor, question, *, image=None, system=None, max_new_tokens=128):
        if system is not None:
            return "Here is my plan:\n```json\n" + plan_to_text(PLAN) + "\n```"
        return real(model, processor, question, image=image, max_new_tokens=6)

    monkeypatch.setattr(inference.generation, "generate_text", planner)
    open_page(browser, server.url)
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text.strip() == "Agent").click()
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#agent-input textarea").is_displayed(), what="agent tab")
    browser.find_element(By.CSS_SELECTOR, "#agent-input textarea").send_keys(REQUEST)
    browser.find_element(By.CSS_SELECTOR, "#agent-run").click()
    wait_for(
        lambda: "plan status: ok" in browser.find_element(By.CSS_SELECTOR, "#agent-status").text, what="the plan to run"
    )
    table = browser.find_element(By.CSS_SELECTOR, "#agent-plan").text
    for words in ("text-to-image", "image-to-text", "depends on", "status", "ok", "step0_text-to-image.png"):
        assert words in table, table
    images = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#agent-images img"), what="the drawn image")
    wait_for(lambda: browser.execute_script("return arguments[0].complete", images[0]), what="the image to load")
    assert browser.execute_script("return arguments[0].naturalWidth", images[0]) > 0
    browser.set_window_size(1200, 1060)  # the table and the drawing in one picture
    screenshot(browser, tmp_path, "serve_agent.png")
    browser.set_window_size(1200, 900)
