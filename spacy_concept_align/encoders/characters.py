"""Words the encoder cannot read, made readable: a word with characters its tokenizer maps to the unknown piece is
given a stand-in it can read, so that it still gets a vector of its own.

XLM-R's vocabulary (multilingual-e5) has no Coptic, Tifinagh, Cherokee or cuneiform, only a fifth of Syriac and a few
N'Ko letters, nor some accented letters (Yoruba's "ǹ"): 74% of the words of the Assyrian test set reach the encoder
as "<unk>". A word whose unknown characters lose nothing but accents (NFKD, combining marks dropped) keeps the rest;
any other is transliterated (anyascii: "ܟܠ" -> "kl"), and so is every word of a script whose letters the sentence
shows to be largely unknown (a Syriac word made of the few letters the tokenizer has would otherwise stay in a script
it barely knows beside its transliterated neighbours). The forms a user sees are never touched.
"""
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import List, Optional, Sequence

from anyascii import anyascii

#: A script is read in transliteration where at least this share of its letters in the sentence are unknown: 28-67%
#: of the Syriac letters of the Assyrian test set's sentences, at most 7% in any Chinese, Korean or Yoruba sentence.
UNREAD_SHARE = 0.2


def readable_words(words: Sequence[str], tokenizer) -> List[str]:
    """`words` as `tokenizer` can read them: unchanged where it can already."""
    unreadable = [any(not _known(tokenizer, ch) for ch in word) for word in words]
    if not any(unreadable):
        return list(words)
    letters = [(script, _known(tokenizer, ch)) for word in words for ch in word if (script := _script(ch))]
    used, unknown = Counter(script for script, _ in letters), Counter(script for script, known in letters if not known)
    unread = {script for script, n in unknown.items() if n >= UNREAD_SHARE * used[script]}
    stand_ins = []
    for word, bad in zip(words, unreadable):
        whole = any(_script(ch) in unread for ch in word)
        stand_ins.append(_stand_in(word, tokenizer, whole) if bad or whole else word)
    return stand_ins


def _stand_in(word: str, tokenizer, whole: bool) -> str:
    """The word without the accents of its unknown characters, if that is enough (and not `whole`); else its
    transliteration (characters still unknown dropped)."""
    if not whole:
        bare = "".join(ch if _known(tokenizer, ch) else _without_accents(ch) for ch in word)
        if all(_known(tokenizer, ch) for ch in bare):
            return bare
    return "".join(ch for ch in anyascii(word) if _known(tokenizer, ch))


def _without_accents(ch: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))


def _script(ch: str) -> Optional[str]:
    """The script a letter or mark belongs to, by its Unicode name ("SYRIAC LETTER KAPH" -> "SYRIAC")."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    return unicodedata.name(ch, "").split(" ")[0] or None


@lru_cache(maxsize=65536)
def _known(tokenizer, ch: str) -> bool:
    if ch.isspace():
        return True
    return tokenizer.unk_token_id not in tokenizer(ch, add_special_tokens=False, verbose=False)["input_ids"]
