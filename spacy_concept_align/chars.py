"""What a token's characters say before any model looks at it.

Blank tokens (spaces of every kind, zero-width and other format characters, controls) are not words: they get no
tag, head or CoNLL-U line, and are written back as the space after the word before them. Tokens made only of
symbols (emoji, signs) are SYM, as the UD guidelines say, in every language.
"""
import unicodedata

#: Categories that never make a word: format (zero-width space, joiners, soft hyphen, bidi marks), control,
#: and the separators (spaces, line and paragraph separators).
_BLANK_CATEGORIES = {"Cf", "Cc", "Zs", "Zl", "Zp"}
#: What may sit inside an emoji sequence beside its symbols: joiners, variation selectors, keycap marks.
_SYMBOL_GLUE = {"Cf", "Mn", "Me"}

# Escapes of the UD MISC attributes SpacesAfter / SpacesBefore; other characters are written as \uXXXX.
_SPACE_ESCAPES = {" ": "\\s", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "|": "\\p"}


def is_blank(text: str) -> bool:
    """True for "", whitespace, and runs of zero-width / format / control characters."""
    return all(ch.isspace() or unicodedata.category(ch) in _BLANK_CATEGORIES for ch in text)


def is_symbol(text: str) -> bool:
    """True for a token of pictographic symbols only (😀, 👍🏽, ☺, ✔), emoji joiners and selectors allowed.

    Signs such as + $ ° are left to the model: UD treebanks tag them PUNCT, SYM or NOUN by use.
    """
    pictographic = [_is_pictograph(ch) for ch in text]
    return any(pictographic) and all(p or unicodedata.category(ch) in _SYMBOL_GLUE for ch, p in zip(text, pictographic))


def _is_pictograph(ch: str) -> bool:
    """Emoji and pictograph blocks (a So / Sk character there): U+2600-27BF, U+2B00-2BFF, U+1F000-1FAFF."""
    code = ord(ch)
    in_block = 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF or 0x1F000 <= code <= 0x1FAFF
    return in_block and unicodedata.category(ch) in ("So", "Sk")


def clean_form(text: str) -> str:
    """A token's text as a CoNLL-U FORM: NFC, no ASCII control characters, inner whitespace runs as one space.

    (C1 controls stay: released treebanks carry them as mojibake, and they break no column.)
    """
    kept = "".join(ch for ch in text if not is_ascii_control(ch) or ch.isspace())
    return unicodedata.normalize("NFC", " ".join(kept.split()))


def is_ascii_control(ch: str) -> bool:
    """U+0000-001F and U+007F: never text, and some of them break lines and columns."""
    return ord(ch) < 0x20 or ord(ch) == 0x7F


def escape_spaces(text: str) -> str:
    """The UD escaping of a run of spaces for SpacesAfter (\\s, \\t, \\n, \\p, \\uXXXX for the rest)."""
    return "".join(_SPACE_ESCAPES.get(ch) or (ch if ch.isprintable() and not is_blank(ch) else f"\\u{ord(ch):04X}")
                   for ch in text)
