"""One visitor's state in the page: what every handler reads and the history handlers replace (Gradio keeps one per
browser tab, in a `gr.State`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Visit:
    """A visitor's history and, after a test user was loaded, whose it is and their held-out next item. Handlers
    never change one: they return a new one (`dataclasses.replace`)."""

    history: list[int] = field(default_factory=list)  # item ids, oldest first
    target: int | None = None  # the test user's held-out next item, marked ★ in the results
    user: int | None = None  # the test user loaded, or None
