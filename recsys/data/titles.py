"""MovieLens title cleaning, as in the LlamaRec reference preprocessing."""

import re

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_PARENS = re.compile(r"\s*\([^()]*\)")
_ARTICLE = re.compile(r"^(.*), (The|A|An)$")


def split_year(raw_title: str) -> tuple[str, int | None]:
    """Split "Heat (1995)" into ("Heat", 1995); titles without a year give (title, None)."""
    title = raw_title.strip()
    match = _YEAR.search(title)
    if match is None:
        return title, None
    return title[: match.start()].strip(), int(match.group(1))


def clean_title(raw_title: str) -> str:
    """Clean a MovieLens title for the LLM prompt.

    Strips the trailing year, drops other parenthesised text (alternative titles), moves a
    trailing article to the front and re-appends the year:
    "City of Lost Children, The (Cité des enfants perdus, La) (1995)" -> "The City of Lost Children (1995)".
    """
    title, year = split_year(raw_title)
    title = _PARENS.sub("", title).strip()
    match = _ARTICLE.match(title)
    if match is not None:
        title = f"{match.group(2)} {match.group(1)}"
    return title if year is None else f"{title} ({year})"
