"""Plotly figures for the demo, benchmarks and README.

Every figure has an explicit height (autosized figures can render at zero height in Gradio),
transparent backgrounds and a neutral grey font that reads on light and dark themes alike.
"""

from __future__ import annotations

import plotly.graph_objects as go

from recsys import paper

BAR_COLOR = "#6b8fd6"
RETRIEVER_COLOR = "#8cb369"
BASE_COLOR = "#b8a1d9"
COWATCH_COLOR = "#f2a541"
FINAL_COLOR = "#3d5a80"
TITLES_COLOR = "#d1495b"
OTHER_COLOR = "#9aa0a6"  # an opinion without a colour of its own
# one colour per opinion the results chart can show, each distinct on light and dark backgrounds
OPINION_COLORS = {"Final": FINAL_COLOR, "LLM": BAR_COLOR, "Co-watch": COWATCH_COLOR, "Retriever": RETRIEVER_COLOR,
                  "LLM base model (no adapter)": BASE_COLOR, "LLM by title likelihood": TITLES_COLOR}
FONT_COLOR = "#808896"  # mid grey: contrast ~3.6:1 on white and ~5:1 on Gradio's dark background
GRID_COLOR = "rgba(128,128,128,0.25)"
PAPER_GENERATION_S = paper.GENERATION_S  # the paper's Fig. 3 (recsys.paper): what the demo's race compares with
STAGE_COLORS = {"retrieval": "#8cb369", "verbalizer ranking": "#6b8fd6", "generation": "#e4572e"}
MAX_LABEL_CHARS = 42
LEGEND_PER_ROW = 2  # legend entries a row: each gets half the chart's width, room for the longest name at 300 px
LEGEND_ROW_PX = 22
LABEL_PX = 44  # the top of a chart Gradio draws its label over: kept empty
TRANSPARENT = "rgba(0,0,0,0)"


def short_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _layout(figure: go.Figure, title: str, height: int) -> go.Figure:
    figure.update_layout(title=title, height=height, paper_bgcolor=TRANSPARENT, plot_bgcolor=TRANSPARENT,
                         margin={"l": 10, "r": 30, "t": 50, "b": 40}, showlegend=False,
                         font={"size": 12, "color": FONT_COLOR}, title_font={"size": 15, "color": FONT_COLOR})
    figure.update_xaxes(gridcolor=GRID_COLOR, zeroline=False)
    figure.update_yaxes(automargin=True)
    return figure


def message_figure(message: str, height: int = 200) -> go.Figure:
    """An empty figure showing `message` (a placeholder where a chart could not be drawn)."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return _layout(figure, "", height)


def opinions_figure(letters: list[str], titles: list[str], opinions: dict[str, list], order: list[int],
                    highlight: int | None = None) -> go.Figure:
    """Per candidate, one bar per named opinion (e.g. {"Final": ..., "LLM": ..., "Retriever": ...}, each a list of
    probabilities in candidate order; colours `OPINION_COLORS`), candidates in `order` (best first, drawn on top).
    `highlight` indexes a candidate to star. No title: the legend, above the bars, has the top margin to itself
    (sized for its rows), so the two can never overlap; the page names the chart and its formula.

    Built as one plain figure spec and handed to plotly unvalidated: the app draws this chart for every Recommend and
    slider release, and plotly's validation of its ~80 bars cost ~9 ms of the web server's CPU each time (0.7 ms
    without: `bench/serving_costs.py`). tests/test_pipeline.py checks that plotly's validation accepts the spec
    unchanged.
    """
    shown = list(reversed(order))  # plotly draws the first category lowest
    labels = [f"({letters[i]}) {short_label(titles[i])}" + (" ★" if i == highlight else "") for i in shown]
    bars = [{"type": "bar", "name": name, "x": [values[i] for i in shown], "y": labels, "orientation": "h",
             "marker": {"color": OPINION_COLORS.get(name, OTHER_COLOR)},
             "hovertemplate": "%{y}<br>" + name + ": %{x:.4f}<extra></extra>"} for name, values in opinions.items()]
    legend_rows = -(-len(opinions) // LEGEND_PER_ROW)
    height = 100 + LABEL_PX + LEGEND_ROW_PX * legend_rows + (10 + 9 * len(opinions)) * len(order)
    layout = {"height": height,
              "paper_bgcolor": TRANSPARENT, "plot_bgcolor": TRANSPARENT,
              "margin": {"l": 10, "r": 20, "t": LABEL_PX + LEGEND_ROW_PX * legend_rows, "b": 40},
              "font": {"size": 12, "color": FONT_COLOR}, "barmode": "group", "bargap": 0.25, "showlegend": True,
              "legend": {"orientation": "h", "xref": "container", "yref": "container", "x": 0.02, "yanchor": "top",
                         "y": 1 - LABEL_PX / height, "entrywidth": 1 / LEGEND_PER_ROW, "entrywidthmode": "fraction",
                         "font": {"size": 11}},
              "xaxis": {"title": {"text": "probability"}, "tickformat": ".0%", "rangemode": "tozero",
                        "gridcolor": GRID_COLOR, "zeroline": False},
              "yaxis": {"automargin": True}}
    return go.Figure({"data": bars, "layout": layout}, _validate=False)


def timing_figure(stage_ms: dict[str, float], title: str = "Time per stage (ms)") -> go.Figure:
    """Horizontal bars of stage times in milliseconds, e.g. {"retrieval": 8, "verbalizer ranking": 900, ...}."""
    names = list(stage_ms)[::-1]
    figure = go.Figure(go.Bar(x=[stage_ms[n] for n in names], y=names, orientation="h",
                              marker_color=[STAGE_COLORS.get(n, BAR_COLOR) for n in names],
                              text=[f"{stage_ms[n]:,.0f} ms" for n in names], textposition="outside",
                              cliponaxis=False, hovertemplate="%{y}: %{x:,.1f} ms<extra></extra>"))
    figure.update_xaxes(title="milliseconds", rangemode="tozero")
    return _layout(figure, title, height=140 + 50 * len(names))
