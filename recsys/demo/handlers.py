"""The demo's event handlers, by concern: the watch history (`recsys.demo.history`), Recommend's results and the
fusion explorer (`recsys.demo.results`), the race (`recsys.demo.race`). Plain functions from values to named views,
tested without a browser; app.py wires each view's fields to the components of the same names."""

from __future__ import annotations

from recsys.demo.history import HistoryHandlers
from recsys.demo.race import RaceHandlers
from recsys.pipeline import Pipeline


class DemoHandlers(HistoryHandlers, RaceHandlers):
    """Every handler of the demo over one shared, read-only pipeline."""

    def __init__(self, pipeline: Pipeline):
        HistoryHandlers.__init__(self, pipeline)
        RaceHandlers.__init__(self, pipeline)
