"""The app in a real headless Chromium (Debian's, driven by Playwright): add movies, Recommend, wait for the chart.

Run as a script to take the README screenshot of the real app (default models, committed checkpoints):
`python tests/test_browser.py --screenshot assets/screenshot.png`
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(pipeline, temp_dir: Path) -> tuple[object, str]:
    """Build and launch the demo on localhost without blocking; returns (demo, url)."""
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    import app

    demo = app.build_demo(pipeline)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, url


def add_movie(page, search: str, title: str) -> None:
    """Type `search` into the catalog dropdown, pick `title` from the list and click Add."""
    from playwright.sync_api import expect

    box = page.get_by_label("Find a movie")
    box.click()
    box.fill("")
    box.press_sequentially(search)  # typed key by key: the dropdown filters on keystrokes, not on a pasted value
    page.get_by_role("option", name=title, exact=True).click()
    expect(box).to_have_value(title, timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Add", exact=True).click()
    history = page.get_by_label("Watch history (viewing order, oldest first)")
    history.get_by_text(title, exact=True).filter(visible=True).first.wait_for(timeout=TIMEOUT_MS)


def recommend_in_browser(url: str, movies: list[tuple[str, str]], screenshot: Path) -> dict:
    """Open the app, add `movies` ((search text, title) pairs), click Recommend, wait for the chart, screenshot.

    Returns what the page showed: {"ranked_titles": [...], "outside_requests": [...]}.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        outside = []
        page.on("request", lambda request: outside.append(request.url)
                if urlparse(request.url).hostname not in ("127.0.0.1", "localhost", None) else None)
        page.goto(url, wait_until="load")
        page.get_by_label("Find a movie").wait_for(timeout=TIMEOUT_MS)
        for search, title in movies:
            add_movie(page, search, title)
        page.get_by_role("button", name="Recommend", exact=True).click()
        page.locator(".js-plotly-plot .bars").first.wait_for(timeout=TIMEOUT_MS)
        table = page.get_by_label("Ranked candidates")
        table.get_by_text("Retriever rank").filter(visible=True).first.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_timeout(500)  # let the chart finish its layout before the picture
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        ranked = page.locator(".js-plotly-plot .ytick text").all_text_contents()
        browser.close()
    return {"ranked_titles": ranked, "outside_requests": outside}


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium not installed")
def test_add_movies_recommend_and_see_the_chart(tiny_pipeline, tmp_path):
    pytest.importorskip("playwright")
    demo, url = launch_app(tiny_pipeline, tmp_path / "gradio")
    try:
        shown = recommend_in_browser(url, [("matrix", "The Matrix (1999)"), ("heat", "Heat (1995)"),
                                           ("fargo", "Fargo (1996)")], tmp_path / "screenshot.png")
    finally:
        demo.close()
    expected = tiny_pipeline.recommend([6, 14, 16])
    labels = {f"({c.letter}) {c.title}" for c in expected.candidates}
    assert len(shown["ranked_titles"]) == 20 and set(shown["ranked_titles"]) == labels
    assert (tmp_path / "screenshot.png").stat().st_size > 20_000
    assert shown["outside_requests"] == []  # fonts and scripts all come from the local server


def main(argv=None) -> None:
    """Screenshot the real app (default flags) after adding a few movies and clicking Recommend."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", default="assets/screenshot.png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tempfile

    import app

    pipeline = app.load_pipeline(app.parse_args([]))
    with tempfile.TemporaryDirectory() as temp_dir:
        demo, url = launch_app(pipeline, Path(temp_dir))
        try:
            movies = [("alien (1979)", "Alien (1979)"), ("blade runner", "Blade Runner (1982)"),
                      ("the matrix", "The Matrix (1999)"), ("inception", "Inception (2010)")]
            shown = recommend_in_browser(url, movies, Path(args.screenshot))
        finally:
            demo.close()
    print(f"screenshot -> {args.screenshot}; outside requests: {shown['outside_requests'] or 'none'}")


if __name__ == "__main__":
    main()
