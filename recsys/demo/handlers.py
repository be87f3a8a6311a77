"""The demo's event handlers, one object per panel of the page (`recsys.demo.panels`): the watch history
(`recsys.demo.history`), Recommend's results and the fusion explorer (`recsys.demo.results`), the race
(`recsys.demo.race`). Handlers map values to named views, tested without a browser; each view's fields name the
components it fills."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.demo.history import HistoryHandlers
from recsys.demo.race import RaceHandlers
from recsys.demo.results import ResultsHandlers
from recsys.pipeline import Pipeline


@dataclass(frozen=True)
class DemoHandlers:
    """Every handler of the demo, by panel, over one shared, read-only pipeline."""

    pipeline: Pipeline
    history: HistoryHandlers
    results: ResultsHandlers
    race: RaceHandlers

    @classmethod
    def of(cls, pipeline: Pipeline) -> DemoHandlers:
        """The three panels' handlers over `pipeline` (the race draws its results with the results' handlers)."""
        results = ResultsHandlers(pipeline)
        return cls(pipeline, HistoryHandlers(pipeline), results, RaceHandlers(results))
