"""The portal's languages: English (the source strings) and Russian, from gettext catalogs.

The `.po` catalogs are compiled in memory at start (Babel), so a checkout needs no build step and no
binary `.mo` file is kept in the repository. A request's language is the `lang` query parameter (the
switch on every page), else the `lang` cookie it sets, else the best match of `Accept-Language`.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = {"en": "English", "ru": "Русский"}
DEFAULT = "en"
LOCALES = Path(__file__).resolve().parent / "locale"


@cache
def translations(lang: str) -> NullTranslations:
    if lang == DEFAULT:
        return NullTranslations()
    path = LOCALES / lang / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def accept_language(header: str | None) -> str | None:
    """The first language of `Accept-Language` (by q) that the portal speaks."""
    if not header:
        return None
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            choices.append((-quality, position, primary))
    return min(choices)[2] if choices else None


def choose(query: str | None, cookie: str | None, header: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    return accept_language(header) or DEFAULT
