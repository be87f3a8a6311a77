"""The demo's inputs as an API client sees them: lists whose values a caller may name freely.

A Gradio Radio or Dropdown refuses any value outside its choices before the handler runs, with a server traceback and
Gradio's own words ("Value: 1309 ... not in the list of choices: []"): a client that never saw a session's matches, or
that names a film by title, could not use them at all. These templates (Gradio's way to reuse a component's browser
side: `is_template`) are drawn exactly as the originals; their values reach the handler as sent, and the handler
answers one it does not know in the app's own words, in the notice. `api_info` tells a client what it may send.

Gradio writes `components.pyi` beside this file when it is imported (git ignores it): after editing this file delete
it, or mypy reads the stale stub.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


def _any_of(description: str, *types: str) -> dict[str, Any]:
    return {"anyOf": [{"type": kind} for kind in types], "description": description}


class _PassedAsSent:
    """What FreeRadio and FreeDropdown add to their Gradio component (`gradio_base`, drawn as the browser draws it):
    the value reaches the handler as sent, and `api_info` says what a client may send."""

    gradio_base: type[gr.components.Component]
    is_template = True

    def __init__(self, *args, api_description: str = "", api_types: tuple[str, ...] = ("string",), **kwargs):
        super().__init__(*args, **kwargs)
        self.api_schema = _any_of(api_description, *api_types)

    def preprocess(self, payload: Any) -> Any:
        """The value as sent (the handler checks it)."""
        return payload

    def api_info(self) -> dict[str, Any]:
        """What a client may send: `api_types`, described by `api_description`."""
        return self.api_schema

    def get_config(self, cls=None) -> dict[str, Any]:
        """The browser's props: the Gradio component's (the API's description is not one)."""
        return super().get_config(cls or self.gradio_base)  # type: ignore[misc]

    def get_block_name(self) -> str:
        """The browser component that draws it: the Gradio component's (what `is_template` gives a class whose first
        base is the Gradio component; here the first base is this one)."""
        return self.gradio_base.__name__.lower()

    def get_block_class(self) -> str:
        """The component a client and `gr.load` see: the Gradio component's, as for its other templates."""
        return self.gradio_base.__name__.lower()


class FreeRadio(_PassedAsSent, gr.Radio):
    """A Radio whose value is passed to the handler as sent, in or out of its choices."""

    gradio_base = gr.Radio


class FreeDropdown(_PassedAsSent, gr.Dropdown):
    """A single-choice Dropdown whose value is passed to the handler as sent, in or out of its choices."""

    gradio_base = gr.Dropdown


class SavedHistory(gr.BrowserState):
    """The browser's copy of the history (kept across reloads), named for API clients, which receive it as the
    history's source ids (MovieLens ids, ASINs)."""

    is_template = True

    def __init__(self, default_value: Any = None, *, storage_key: str | None = None, secret: str | None = None,
                 label: str | None = None, render: bool = True):
        super().__init__(default_value, storage_key=storage_key, secret=secret, render=render)
        self.label = label

    def get_config(self, cls=None) -> dict[str, Any]:
        """A BrowserState's props, and the label API clients name the history by."""
        return {**super().get_config(cls), "label": self.label}
