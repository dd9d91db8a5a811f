"""Words the encoder cannot read, made readable: a word its tokenizer gives the unknown piece is given a stand-in it
can read, so that it still gets a vector of its own.

XLM-R's vocabulary (multilingual-e5) has no Coptic, Tifinagh, Cherokee or cuneiform, only a fifth of Syriac and a few
N'Ko letters, nor some accented letters (Yoruba's "ǹ"): 74% of the words of the Assyrian test set reach the encoder
as "<unk>". A word whose unknown letters lose nothing but accents (NFKD, combining marks dropped) keeps the rest;
any other is transliterated (anyascii: "ܟܠ" -> "kl"), and so is every word of a script whose letters the sentence
shows to be largely unknown (a Syriac word made of the few letters the tokenizer has would otherwise stay in a script
it barely knows beside its transliterated neighbours). Characters are judged as the tokenizer sees them (after its
own normalisation), and words it reads are never changed. The forms a user sees are never touched.
"""
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import List, Optional, Sequence

from anyascii import anyascii

#: Bump when what `readable_words` gives changes: it is part of the feature cache's key.
VERSION = 1
#: A script is read in transliteration where at least this share of its letters in the sentence are unknown: 28-67%
#: of the Syriac letters of the Assyrian test set's sentences, at most 7% in any Chinese, Korean or Yoruba sentence.
UNREAD_SHARE = 0.2
_LETTERS = ("Lu", "Ll", "Lt", "Lo")  # not modifier letters or marks, whose names do not name a script


def readable_words(words: Sequence[str], tokenizer, unreadable: Sequence[bool]) -> List[str]:
    """`words` as `tokenizer` can read them. unreadable: which words it gives an unknown piece (the others are kept
    as they are, unless their script is one the sentence shows it cannot read)."""
    if not any(unreadable):
        return list(words)
    seen = [_normalised(tokenizer, word) for word in words]
    letters = [(script, _known(tokenizer, ch)) for word in seen for ch in word if (script := _script(ch))]
    used, unknown = Counter(script for script, _ in letters), Counter(script for script, known in letters if not known)
    unread = {script for script, n in unknown.items() if n >= UNREAD_SHARE * used[script]}
    stand_ins = []
    for word, normal, bad in zip(words, seen, unreadable):
        whole = any(_script(ch) in unread for ch in normal)
        stand_ins.append(_stand_in(normal, tokenizer, whole) if bad or whole else word)
    return stand_ins


def _stand_in(word: str, tokenizer, whole: bool) -> str:
    """The word without the accents of its unknown letters, if that makes it readable (and not `whole`); else its
    transliteration (characters still unknown dropped; "" if nothing is left)."""
    if not whole:
        bare = "".join(ch if _known(tokenizer, ch) else _without_accents(ch) for ch in word)
        if bare != word and _readable(tokenizer, bare):
            return bare
    return "".join(ch for ch in anyascii(word) if _known(tokenizer, ch))


def _normalised(tokenizer, word: str) -> str:
    """The word as the tokenizer's own normaliser (NFKC for XLM-R) gives it to the vocabulary."""
    normaliser = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    return normaliser.normalize_str(word) if normaliser is not None else word


def _without_accents(ch: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))


def _script(ch: str) -> Optional[str]:
    """The script a letter belongs to, by its Unicode name ("SYRIAC LETTER KAPH" -> "SYRIAC"); None for others."""
    if unicodedata.category(ch) not in _LETTERS:
        return None
    return unicodedata.name(ch, "").split(" ")[0] or None


def _known(tokenizer, ch: str) -> bool:
    return ch.isspace() or _readable(tokenizer, ch)


@lru_cache(maxsize=65536)
def _readable(tokenizer, text: str) -> bool:
    return tokenizer.unk_token_id not in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
