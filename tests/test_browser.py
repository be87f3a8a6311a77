"""The app in a real headless Chromium (Debian's, driven by Playwright): add movies, Recommend, wait for the chart;
typed titles, results that follow the history, the race streamed token by token, a shared link, a reload, the CSV.

Run as a script to take the README screenshot of the real app (default models, committed checkpoints), with the
repository and tests/ on the path as pytest puts them:
`PYTHONPATH=.:tests python tests/test_browser.py --screenshot assets/screenshot.png`
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import TINY_TITLES, make_catalog, make_llama, make_lrurec, make_pipeline

from bench.common import free_port
from recsys.data.titles import clean_title
from recsys.plots import short_label

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
# all digits; a partial "boat"; a subtitle that goes on in parentheses; Markdown stars (the last: tests find it there)
EXTRA_TITLES = ["300 (2007)", "Lifeboat (1944)", clean_title("Birdman: Or (The Unexpected Virtue of Ignorance) (2014)"),
                "M*A*S*H (1970)"]
FORWARD_PASS_S = 0.03  # the browser pipeline's model sleeps this long a forward pass, so its race is slow to watch


def launch_app(pipeline, temp_dir: Path) -> tuple[object, str]:
    """Build and launch the demo on localhost without blocking; returns (demo, url)."""
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    import app

    demo = app.build_demo(pipeline)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **app.launch_style())
    return demo, url


def type_movie(page, search: str) -> None:
    """Type `search` into the search box, key by key (the matches follow keystrokes)."""
    box = page.get_by_label("Find a movie")
    box.click()
    box.fill("")
    box.press_sequentially(search, delay=20)


def history_titles(page) -> list[str]:
    """The titles in the watch-history table, oldest first."""
    history = page.get_by_label("Watch history (viewing order, oldest first)")
    return [text.strip() for text in history.locator('[role="gridcell"][data-col="1"]').all_text_contents()]


def add_movie(page, search: str, title: str) -> None:
    """Type `search` into the search box and click `title` among the matches, which adds it."""
    type_movie(page, search)
    # click only once the list answers the whole text: a click on a list still answering a shorter prefix is
    # undone when the last search's list replaces it
    page.get_by_text(f"Matches for “{search}”").wait_for(timeout=TIMEOUT_MS)
    # click, not check(): the pick adds the movie and hides the list at once, so the radio never stays checked
    page.get_by_role("radio", name=title, exact=True).click(timeout=TIMEOUT_MS)
    history = page.get_by_label("Watch history (viewing order, oldest first)")
    history.get_by_text(title, exact=True).filter(visible=True).first.wait_for(timeout=TIMEOUT_MS)


# The chart's text colour and the colour it is drawn on (the first opaque background behind the transparent plot).
CHART_COLOURS_JS = """() => {
    const text = document.querySelector('.js-plotly-plot .ytick text');
    let node = document.querySelector('.js-plotly-plot');
    let background = 'rgba(0, 0, 0, 0)';
    while (node) {
        const colour = getComputedStyle(node).backgroundColor;
        if (colour && colour !== 'rgba(0, 0, 0, 0)' && colour !== 'transparent') { background = colour; break; }
        node = node.parentElement;
    }
    if (background === 'rgba(0, 0, 0, 0)') background = getComputedStyle(document.body).backgroundColor;
    return {text: getComputedStyle(text).fill, background: background};
}"""


# Every 20 ms, the race's clock ([seconds, tokens], or null), the generated text and how many ranked titles the
# results table shows, kept when any of them changed (the arguments: the generated text's textarea, the table).
RECORD_RACE_JS = """(textarea, results) => {
    window.raceSamples = [];
    let last = null;
    window.raceRecorder = setInterval(() => {
        const clock = document.body.textContent.match(/([\\d.]+) s, (\\d+) tokens? so far/);
        const ranked = [...results.querySelectorAll('[role="gridcell"][data-col="1"]')]
            .filter(cell => cell.textContent.trim()).length;
        const sample = JSON.stringify([clock && [parseFloat(clock[1]), parseInt(clock[2])], textarea.value, ranked]);
        if (sample !== last) { window.raceSamples.push(JSON.parse(sample)); last = sample; }
    }, 20);
}"""


def relative_luminance(css_colour: str) -> float:
    """WCAG relative luminance of an "rgb(r, g, b)" / "rgba(r, g, b, a)" colour."""
    channels = [float(v) / 255 for v in css_colour[css_colour.index("(") + 1:-1].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two CSS colours (1 = identical, 21 = black on white)."""
    high, low = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def recommend_in_browser(url: str, movies: list[tuple[str, str]], screenshot: Path, theme: str = "light",
                         width: int = 1400) -> dict:
    """Open the app in `theme` at `width` px, add `movies` ((search text, title) pairs), click Recommend, wait for
    the chart, screenshot.

    Returns what the page showed: {"ranked_titles", "outside_requests", "chart_colours", "table_width"}.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        outside = []
        page.on("request", lambda request: outside.append(request.url)
                if urlparse(request.url).hostname not in ("127.0.0.1", "localhost", None) else None)
        page.goto(f"{url}?__theme={theme}", wait_until="load")
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
        colours = page.evaluate(CHART_COLOURS_JS)
        table_width = page.locator(".results-table table").first.bounding_box()["width"]
        browser.close()
    return {"ranked_titles": ranked, "outside_requests": outside, "chart_colours": colours, "table_width": table_width}


@pytest.fixture(scope="module")
def browser_pipeline(tiny_tokenizer):
    """A tiny pipeline over the tiny catalog plus EXTRA_TITLES, whose model takes FORWARD_PASS_S a forward pass and
    generates at most 80 tokens in the race: a few seconds of streaming."""
    catalog = make_catalog(TINY_TITLES + EXTRA_TITLES)
    model = make_llama(tiny_tokenizer)
    model.register_forward_pre_hook(lambda module, args: time.sleep(FORWARD_PASS_S))
    return make_pipeline(catalog, make_lrurec(len(catalog)), model, tiny_tokenizer, generation_max_new_tokens=80)


@pytest.fixture(scope="module")
def served_url(browser_pipeline, tmp_path_factory):
    """The app on the browser pipeline, launched with its real theme and CSS."""
    pytest.importorskip("playwright")
    demo, url = launch_app(browser_pipeline, tmp_path_factory.mktemp("gradio"))
    yield url
    demo.close()


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium not installed")
@pytest.mark.parametrize("theme, width", [("light", 1400), ("dark", 420)])
def test_add_movies_recommend_and_read_the_chart(served_url, browser_pipeline, tmp_path, theme, width):
    # "matrix, the" is no substring of "The Matrix (1999)": the matches follow the forgiving search
    shown = recommend_in_browser(served_url, [("matrix, the", "The Matrix (1999)"), ("heat", "Heat (1995)"),
                                              ("fargo", "Fargo (1996)")], tmp_path / f"{theme}.png", theme, width)
    expected = browser_pipeline.recommend([6, 14, 16])
    labels = {f"({c.letter}) {short_label(c.title)}" for c in expected.candidates}  # long titles cut as the chart does
    assert len(shown["ranked_titles"]) == 20 and set(shown["ranked_titles"]) == labels
    assert (tmp_path / f"{theme}.png").stat().st_size > 20_000
    assert shown["outside_requests"] == []  # fonts and scripts all come from the local server
    colours = shown["chart_colours"]
    assert contrast(colours["text"], colours["background"]) >= 3, colours  # readable, not dark on dark
    assert shown["table_width"] >= 640  # at 420 px the table scrolls sideways instead of breaking words


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium not installed")
def test_typed_titles_a_streamed_race_and_results_that_follow_the_history(served_url):
    from playwright.sync_api import expect, sync_playwright

    from recsys.demo.results import STALE

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served_url, wait_until="load")
        add = page.get_by_role("button", name="Add", exact=True)

        type_movie(page, "300")  # typed digits are a title, never item id 300
        add.click()
        expect(page.get_by_label("Watch history (viewing order, oldest first)").get_by_text(
            "300 (2007)", exact=True).filter(visible=True)).to_have_count(1)

        type_movie(page, "Alie")  # a partial title adds nothing: its matches are offered to pick from
        add.click()
        expect(page.get_by_text("nothing was added")).to_be_visible()
        expect(page.get_by_role("radio")).to_have_count(2)
        assert history_titles(page) == ["300 (2007)"]
        page.get_by_role("radio", name="Aliens (1986)").click()
        expect(page.get_by_role("radio")).to_have_count(0)
        expect(page.get_by_label("Watch history (viewing order, oldest first)").get_by_text(
            "Aliens (1986)", exact=True).filter(visible=True)).to_have_count(1)
        assert history_titles(page) == ["300 (2007)", "Aliens (1986)"]

        running = page.get_by_text(re.compile(r"tokens? so far"))  # "0 tokens", "1 token", "2 tokens"
        generated = page.get_by_label("Generated text")
        # the page records what it shows as the race streams, each change once: sampled by the page itself, not by
        # round trips from here, which a busy machine slows to a few a stream
        generated.evaluate(RECORD_RACE_JS, page.get_by_label("Ranked candidates").element_handle())
        page.get_by_role("button", name="Race against generation", exact=True).click()  # the race streams
        expect(page.get_by_text("generation takes")).to_be_visible(timeout=TIMEOUT_MS)
        samples = page.evaluate("() => { clearInterval(window.raceRecorder); return window.raceSamples; }")
        streaming = [(tuple(clock), text, ranked) for clock, text, ranked in samples if clock]
        assert streaming and all(ranked > 0 for *_, ranked in streaming), samples  # the verbalizer's ranking is
        # on screen while generation still runs
        final = generated.input_value()
        partial = [text for text in dict.fromkeys(text for _, text, _ in streaming) if text and text != final]
        assert len(partial) >= 2 and all(final.startswith(text) for text in partial), samples
        clocks = [clock for clock, *_ in streaming]  # (seconds, tokens)
        assert clocks == sorted(clocks) and len(set(clocks)) >= 3 and clocks[-1][1] > 0, clocks
        comparison = page.get_by_label("The verbalizer's own ranking (the LLM's letters alone) beside the parsed "
                                       "generated one")
        expect(comparison).to_have_attribute("aria-rowcount", "21")  # the header and 20 positions

        slider = page.get_by_label("number input for LLM weight")
        slider.fill("0")
        slider.press("Tab")
        expect(page.get_by_text("no opinion (the retriever's order) (the sliders' weights")).to_be_visible()  # the
        # slider redraws this session's results

        page.get_by_role("button", name="Clear", exact=True).click()  # the results belong to the old history
        expect(page.get_by_text(STALE).first).to_be_visible()
        expect(page.locator(".js-plotly-plot .bars")).to_have_count(0)
        slider.fill("1")
        slider.press("Tab")
        page.wait_for_timeout(1000)
        expect(page.locator(".js-plotly-plot .bars")).to_have_count(0)  # ... never the old results against the new
        expect(page.get_by_text("(the sliders' weights")).to_have_count(0)

        add_movie(page, "Alie", "Aliens (1986)")  # a race left mid-stream stops: no clock ticks on for the old history
        page.get_by_role("button", name="Race against generation", exact=True).click()
        running.wait_for()
        page.get_by_role("button", name="Clear", exact=True).click()
        expect(running).to_have_count(0)
        for _ in range(25):  # 2.5 s: longer than the rest of an uncancelled race would stream
            assert running.count() == 0 and generated.input_value() == ""
            page.wait_for_timeout(100)
        intro = page.get_by_text("Click Race against generation")
        expect(intro).to_be_visible()

        add_movie(page, "Alie", "Aliens (1986)")  # an event that cancels a race but keeps the history: no frozen clock
        page.get_by_role("button", name="Race against generation", exact=True).click()
        running.wait_for()
        type_movie(page, "Alie")
        page.get_by_role("button", name="Add", exact=True).click()  # a partial title: nothing added
        expect(page.get_by_text("nothing was added")).to_be_visible()
        expect(running).to_have_count(0)
        expect(intro).to_be_visible()
        assert history_titles(page) == ["Aliens (1986)"]
        browser.close()


def main(argv=None) -> None:
    """Screenshot the real app (default flags) after adding a few movies and clicking Recommend."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", default="assets/screenshot.png")
    args = parser.parse_args(argv)
    import tempfile

    import app

    pipeline = app.load_pipeline(app.parse_args([]))
    with tempfile.TemporaryDirectory() as temp_dir:
        demo, url = launch_app(pipeline, Path(temp_dir))
        try:
            movies = [("alien (1979)", "Alien (1979)"), ("blade runner", "Blade Runner (1982)"),
                      ("the matrix (1999)", "The Matrix (1999)"), ("inception (2010)", "Inception (2010)")]
            shown = recommend_in_browser(url, movies, Path(args.screenshot))
        finally:
            demo.close()
    print(f"screenshot -> {args.screenshot}; outside requests: {shown['outside_requests'] or 'none'}")


if __name__ == "__main__":
    main()


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium not installed")
def test_a_shared_link_a_reload_a_download_and_titles_shown_as_written(served_url, browser_pipeline, tmp_path):
    """Share writes a link that opens the history in another browser; a reload keeps the history; the results
    download as CSV; a title with Markdown's stars keeps them in every notice."""
    from playwright.sync_api import expect, sync_playwright

    mash = browser_pipeline.catalog.title(len(browser_pipeline.catalog))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served_url, wait_until="load")
        add = page.get_by_role("button", name="Add", exact=True)
        for title in ("The Matrix (1999)", mash, "Heat (1995)", mash):  # the repeat says so, in Markdown
            type_movie(page, title)
            add.click()
            page.wait_for_timeout(300)
        expect(page.get_by_text(f"'{mash}' was already in the watch history")).to_be_visible()  # stars kept, no italics
        assert history_titles(page) == ["The Matrix (1999)", "Heat (1995)", mash]

        page.get_by_role("button", name="Share this history", exact=True).click()
        link = page.get_by_label("Link to this history")
        expect(link).to_have_value(re.compile(r"\?history=1006,1014,\d+$"))
        shared = link.input_value()

        page.reload(wait_until="load")  # the browser kept the history
        expect(page.get_by_text("from this browser's last visit")).to_be_visible()
        assert history_titles(page) == ["The Matrix (1999)", "Heat (1995)", mash]

        page.get_by_role("button", name="Recommend", exact=True).click()
        expect(page.get_by_label("Ranked candidates").locator('[role="gridcell"][data-col="1"]').first).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download these results (CSV)").click()
        saved = tmp_path / "results.csv"
        download.value.save_as(saved)
        import pandas as pd

        table = pd.read_csv(saved)
        assert len(table) == 20 and {"MovieLens id", "LLM", "Prompt"} <= set(table.columns)

        other = browser.new_context().new_page()  # another student: no copy of their own, only the link
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(shared, wait_until="load")
        expect(other.get_by_text("Loaded 3 movies from the link")).to_be_visible()
        assert history_titles(other) == ["The Matrix (1999)", "Heat (1995)", mash]
        browser.close()


# Per header cell of the results table: its text, its right edge, the visible box's right edge, and how many lines
# each of its words spans (a word on two lines was broken inside).
HEADERS_JS = """() => {
    const box = document.querySelector('.results-table .table-wrap') || document.querySelector('.results-table');
    const right = box.getBoundingClientRect().right;
    return [...document.querySelectorAll('.results-table thead th')].map(th => {
        const span = th.querySelector('.header') || th;
        const node = [...span.childNodes].find(n => n.nodeType === 3) || span.firstChild;
        const text = node.textContent;
        const lines = [];
        let at = 0;
        for (const word of text.split(' ')) {
            const start = text.indexOf(word, at);
            at = start + word.length;
            if (!word) continue;
            const range = document.createRange();
            range.setStart(node, start);
            range.setEnd(node, at);
            lines.push(new Set([...range.getClientRects()].map(r => Math.round(r.top))).size);
        }
        return {text: text.trim(), right: th.getBoundingClientRect().right, visible: right, lines};
    });
}"""

# The checkbox labels whose text is cut or runs past its box.
CHECKBOX_LABELS_JS = """() => [...document.querySelectorAll('label')]
    .filter(label => label.querySelector('input[type=checkbox]'))
    .map(label => [label.querySelector('span'), label.closest('.block') || label])
    .filter(([span, box]) => span && (span.scrollWidth > span.clientWidth + 1
                                      || span.getBoundingClientRect().right > box.getBoundingClientRect().right + 1))
    .map(([span]) => span.textContent)"""

# The chart's label (Gradio draws it over the figure's top), its legend and its bars, top and bottom each.
CHART_BOXES_JS = """() => {
    const plot = document.querySelector('.js-plotly-plot');
    const box = el => { const r = el.getBoundingClientRect(); return [r.top, r.bottom]; };
    return {label: box(plot.closest('.block').querySelector('[data-testid="block-label"]')),
            legend: box(plot.querySelector('.legend')), bars: box(plot.querySelector('.barlayer')),
            entries: plot.querySelectorAll('.legend .traces').length,
            colours: [...plot.querySelectorAll('.legend .traces .legendpoints path')].map(p => p.style.fill)};
}"""


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium not installed")
@pytest.mark.parametrize("width", [1400, 420, 390])
def test_the_explorer_tells_the_truth_and_the_results_fit_the_screen(served_url, width):
    """The formula follows the sliders (Enter in a number box, the arrow keys); the matches close once a film is
    added; headers never break inside a word; at 1,400 px the key columns show without scrolling; the chart's legend
    keeps clear of its label and bars, one colour an opinion; a subtitle in parentheses stays in the title."""
    from playwright.sync_api import expect, sync_playwright

    birdman = EXTRA_TITLES[2]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served_url, wait_until="load")
        assert birdman == "Birdman: Or (The Unexpected Virtue of Ignorance) (2014)"
        add_movie(page, "birdman", birdman)
        matches = page.get_by_role("radio", name=birdman, exact=True)
        page.wait_for_timeout(1000)  # a search answered after the pick must not bring the list back
        expect(matches).to_have_count(0)
        assert page.get_by_label("Find a movie").input_value() == ""
        add_movie(page, "heat", "Heat (1995)")
        page.get_by_label("Also ask by title likelihood").check()  # a fifth opinion in the chart
        page.get_by_role("button", name="Recommend", exact=True).click()
        page.locator(".js-plotly-plot .bars").first.wait_for()
        expect(page.get_by_text("1 × log p(LLM) (the served weights")).to_be_visible()

        page.wait_for_timeout(500)
        headers = page.evaluate(HEADERS_JS)
        assert [h["text"] for h in headers][:6] == ["Final rank", "Title", "Final", "LLM", "Co-watch", "Retriever"]
        assert all(lines == 1 for h in headers for lines in h["lines"]), headers  # no word broken
        if width >= 1400:
            assert all(h["right"] <= h["visible"] + 1 for h in headers[:6]), headers  # the key columns on screen
        assert page.evaluate(CHECKBOX_LABELS_JS) == [], "checkbox labels cut"
        chart = page.evaluate(CHART_BOXES_JS)
        assert chart["entries"] == 5 and len(set(chart["colours"])) == 5, chart  # an opinion, a colour
        assert chart["label"][1] <= chart["legend"][0] and chart["legend"][1] <= chart["bars"][0], chart

        number = page.get_by_label("number input for LLM weight")
        number.fill("0")
        number.press("Enter")  # Enter alone re-ranks: the formula says what the table is ranked by
        expect(page.get_by_text("no opinion (the retriever's order) (the sliders' weights")).to_be_visible()
        page.get_by_label("range slider for LLM weight").focus()
        for _ in range(4):  # the keyboard re-ranks too, and the last value wins
            page.keyboard.press("ArrowRight")
        expect(page.get_by_text("0.2 × log p(LLM) (the sliders' weights")).to_be_visible()
        page.get_by_role("button", name="Served weights", exact=True).click()
        expect(page.get_by_text("1 × log p(LLM) (the served weights")).to_be_visible()
        browser.close()
