"""MovieLens title cleaning: the display title (paper-style) and the alternative titles of a raw MovieLens name.

MovieLens writes "Main title, Article (Alternative title) (a.k.a. Another) (Year)". The paper's
cleaning keeps the main title, moves its trailing article to the front and re-appends the year.
Here only the parenthesised groups at the *end* of the name are alternative titles, so parentheses
inside a title survive ("(500) Days of Summer (2009)"), and articles of the languages MovieLens uses
are moved, not only The/A/An ("Misérables, Les" -> "Les Misérables"). A trailing group that belongs to
the title stays: one written onto the word before it ("Frontière(s)"), one that says what the film is
part of ("Hotel Chevalier (Part 1 of 'The Darjeeling Limited')"), and one that goes on with "and"
("Hommage à Zgougou (et salut à Sabine Mamou)"), and one after a word that must go on ("Birdman: Or (The Unexpected
Virtue of Ignorance)").
"""

import re
import unicodedata

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_TRAILING_GROUP = re.compile(r"\s*\(([^()]*)\)\s*$")
# Trailing articles seen in MovieLens titles: English, French, Spanish, Italian, German, Scandinavian.
ARTICLES = ("The", "A", "An", "Le", "La", "Les", "L'", "El", "Los", "Las", "Lo", "Il", "I", "Gli", "Der", "Die",
            "Das", "Den", "Det", "Un", "Une")
_ARTICLE = re.compile(r"^(.*), (" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_AKA = re.compile(r"^a\.?k\.?a\.?\s+", re.IGNORECASE)  # "a.k.a. X" and "aka X"
# a group that is part of the title, not another name: "Part 1 of ...", or one that goes on with "and" in a language
# MovieLens uses
_PART_OF_TITLE = re.compile(r"^(?:Part \w+ of\b|(?:and|et|und|y|e|&) )")
# a title that ends in a word which must go on ("Birdman: Or (The Unexpected Virtue of Ignorance)"): its group is the
# rest of the title, not another name
_GOES_ON = re.compile(r"(?:^|[\s:])or$", re.IGNORECASE)


def split_year(raw_title: str) -> tuple[str, int | None]:
    """Split "Heat (1995)" into ("Heat", 1995); titles without a year give (title, None)."""
    title = raw_title.strip()
    match = _YEAR.search(title)
    if match is None:
        return title, None
    return title[: match.start()].strip(), int(match.group(1))


def front_article(title: str) -> str:
    """Move a trailing article to the front.

    "Matrix, The" -> "The Matrix", "Auberge espagnole, L'" -> "L'Auberge espagnole"."""
    match = _ARTICLE.match(title.strip())
    if match is None:
        return title.strip()
    body, article = match.groups()
    return f"{article}{body}" if article.endswith("'") else f"{article} {body}"


def split_title(raw_title: str) -> tuple[str, list[str], int | None]:
    """(main title, alternative titles, year) of a raw MovieLens name, articles in front.

    "City of Lost Children, The (Cité des enfants perdus, La) (1995)" ->
    ("The City of Lost Children", ["La Cité des enfants perdus"], 1995).
    A title that is only parentheses keeps them: "(500) Days of Summer (2009)" -> ("(500) Days of Summer", [], 2009).
    """
    title, year = split_year(raw_title)
    alternatives: list[str] = []
    while (match := _TRAILING_GROUP.search(title)) is not None and match.start() > 0:
        attached = title[match.start()] == "(" and not title[match.start() - 1].isspace()
        if attached or _PART_OF_TITLE.match(match.group(1)) or _GOES_ON.search(title[: match.start()].rstrip()):
            break  # written onto the word before it, or part of the title: it and everything before it stay
        alternatives.insert(0, front_article(_AKA.sub("", match.group(1))))
        title = title[: match.start()].rstrip()
    return front_article(title), [a for a in alternatives if a], year


def clean_title(raw_title: str) -> str:
    """The display title used in the catalog, the search and the LLM's prompt: main title, article in front, year.

    "City of Lost Children, The (Cité des enfants perdus, La) (1995)" -> "The City of Lost Children (1995)".
    """
    title, _, year = split_title(raw_title)
    return title if year is None else f"{title} ({year})"


def alternative_titles(raw_title: str) -> list[str]:
    """The alternative titles in a raw MovieLens name (for search), articles in front, "a.k.a." dropped."""
    return split_title(raw_title)[1]


_ANY_ARTICLE = "|".join(re.escape(article.lower()) for article in sorted(ARTICLES, key=len, reverse=True))
_MOVED_ARTICLE = re.compile(rf"^(?P<rest>.*?),\s*(?P<article>{_ANY_ARTICLE})(?P<tail>\s*(\(\d{{4}}\))?)$")
# Only English articles are dropped from the front: foreign ones begin other titles too ("Die Hard", "La La Land").
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+")
_ELISION = re.compile(r"\b([a-z]|qu)'(?=[a-z])")  # "l'auberge" -> "l auberge", as a typed "L Auberge" reads


def search_key(text: str) -> str:
    """`text` reduced for matching (by the search box and the race's parser): no accents, lower case, a trailing
    article of any MovieLens language moved to the front, then a leading English article and all punctuation dropped,
    spaces collapsed.

    "Amélie" -> "amelie", "Matrix, The" -> "matrix", "Misérables, Les" -> "les miserables",
    "(500) Days of Summer" -> "500 days of summer".
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().replace("’", "'").strip()
    moved = _MOVED_ARTICLE.match(text)
    if moved:
        separator = "" if moved["article"].endswith("'") else " "  # "L'Auberge espagnole", "Les Misérables"
        text = f"{moved['article']}{separator}{moved['rest']}{moved['tail']}"
    text = _ELISION.sub(r"\1 ", text).replace("'", "")  # "Bug's" -> "bugs"
    text = re.sub(r"[^\w\s]", " ", text).replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return _LEADING_ARTICLE.sub("", text)
