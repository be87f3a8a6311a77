"""Plotly figures for the demo, benchmarks and README.

Every figure has an explicit height (autosized figures can render at zero height in Gradio) and
transparent backgrounds, so that it reads in light and dark themes.
"""

from __future__ import annotations

import plotly.graph_objects as go

BAR_COLOR = "#6b8fd6"
HIGHLIGHT_COLOR = "#e4572e"
STAGE_COLORS = {"retrieval": "#8cb369", "verbalizer ranking": "#6b8fd6", "generation": "#e4572e"}
MAX_LABEL_CHARS = 42
TRANSPARENT = "rgba(0,0,0,0)"


def short_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _layout(figure: go.Figure, title: str, height: int) -> go.Figure:
    figure.update_layout(title=title, height=height, paper_bgcolor=TRANSPARENT, plot_bgcolor=TRANSPARENT,
                         margin={"l": 10, "r": 30, "t": 50, "b": 40}, showlegend=False,
                         font={"size": 12}, title_font={"size": 15})
    figure.update_xaxes(gridcolor="rgba(128,128,128,0.25)", zeroline=False)
    figure.update_yaxes(automargin=True)
    return figure


def message_figure(message: str, height: int = 200) -> go.Figure:
    """An empty figure showing `message` (a placeholder where a chart could not be drawn)."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return _layout(figure, "", height)


def probability_figure(letters: list[str], titles: list[str], probabilities: list[float],
                       highlight: int | None = None, title: str = "Verbalizer probabilities") -> go.Figure:
    """Horizontal bars of candidate probabilities, highest on top, labelled "letter · title".

    `highlight` is the index (into the given lists) of a candidate to colour, e.g. the held-out movie.
    """
    order = sorted(range(len(probabilities)), key=lambda i: probabilities[i])  # plotly draws the first bar lowest
    labels = [f"({letters[i]}) {short_label(titles[i])}" + (" ★" if i == highlight else "") for i in order]
    colors = [HIGHLIGHT_COLOR if i == highlight else BAR_COLOR for i in order]
    figure = go.Figure(go.Bar(x=[probabilities[i] for i in order], y=labels, orientation="h", marker_color=colors,
                              text=[f"{probabilities[i]:.1%}" for i in order], textposition="outside",
                              cliponaxis=False, hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>"))
    figure.update_xaxes(title="probability", tickformat=".0%", rangemode="tozero")
    return _layout(figure, title, height=120 + 26 * len(probabilities))


def timing_figure(stage_ms: dict[str, float], title: str = "Time per stage (ms)") -> go.Figure:
    """Horizontal bars of stage times in milliseconds, e.g. {"retrieval": 8, "verbalizer ranking": 900, ...}."""
    names = list(stage_ms)[::-1]
    figure = go.Figure(go.Bar(x=[stage_ms[n] for n in names], y=names, orientation="h",
                              marker_color=[STAGE_COLORS.get(n, BAR_COLOR) for n in names],
                              text=[f"{stage_ms[n]:,.0f} ms" for n in names], textposition="outside",
                              cliponaxis=False, hovertemplate="%{y}: %{x:,.1f} ms<extra></extra>"))
    figure.update_xaxes(title="milliseconds", rangemode="tozero")
    return _layout(figure, title, height=140 + 50 * len(names))
