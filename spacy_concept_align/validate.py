"""The CoNLL-U checks of the UD validator's levels 1 and 2 that concern format and trees, for what we write.

Level 1: 10 tab-separated columns, no empty column, no leading, trailing or doubled whitespace, no whitespace
outside FORM / LEMMA / MISC, NFC, IDs 1..n with well-formed ranges, LF line ends, one blank line after each
sentence. Level 2: one `# sent_id` (unique) and one `# text` matching the FORMs and SpaceAfter, UD UPOS, universal
relations, HEADs pointing inside the sentence, exactly one root (DEPREL root iff HEAD 0), no cycle.
Language-specific lists (features, subtypes, auxiliaries) are not checked. ASCII control characters in word lines are refused too.
"""
import re
import unicodedata
from typing import List, Optional

from .chars import is_ascii_control
from .labels import DEPREL_ID, UPOS_ID

_WORD_ID = re.compile(r"^[1-9][0-9]*$")
_RANGE_ID = re.compile(r"^([1-9][0-9]*)-([1-9][0-9]*)$")
_EMPTY_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")
_DEPREL = re.compile(r"^[a-z]+(:[a-z]+)?$")
_SENT_ID = re.compile(r"^# sent_id\s*=\s*(\S+)$")
_TEXT = re.compile(r"^# text\s*=\s*(.+)$")
NO_SPACE_COLUMNS = (0, 3, 4, 5, 6, 7, 8)  # ID UPOS XPOS FEATS HEAD DEPREL DEPS


def validate_conllu(text: str, name: str = "<conllu>", limit: int = 20) -> List[str]:
    """Problems found ("name:line: message"), at most `limit`; [] for a valid file."""
    problems: List[str] = []
    seen_ids: set = set()
    comments: List[str] = []
    rows: List[tuple] = []  # (line number, columns)

    def say(line: int, message: str) -> None:
        problems.append(f"{name}:{line}: {message}")

    if "\r" in text:
        say(text[: text.index("\r")].count("\n") + 1, "only LF line ends are allowed")
    if text and not text.endswith("\n\n"):
        say(text.count("\n") + 1, "the file must end with a blank line after the last sentence")
    for number, line in enumerate(text.split("\n"), start=1):
        if len(problems) >= limit:
            break
        if not line.startswith("#") and any(is_ascii_control(ch) and ch != "\t" for ch in line):
            say(number, "ASCII control character in a word line")
        if not line:
            if rows:
                _check_sentence(comments, rows, seen_ids, say)
            comments, rows = [], []
        elif line.isspace():
            say(number, "a line of whitespace (a blank line must be empty)")
        elif line.startswith("#"):
            if rows:
                say(number, "comment inside a sentence")
            comments.append(line)
        elif line[0].isdigit():
            columns = line.split("\t")
            if len(columns) != 10:
                say(number, f"{len(columns)} columns, expected 10")
                continue
            problem = _check_columns(columns)
            if problem:
                say(number, problem)
            rows.append((number, columns))
        else:
            say(number, "a line that is neither a comment, a word line nor blank")
    if rows:
        _check_sentence(comments, rows, seen_ids, say)
    return problems[:limit]


def _check_columns(columns: List[str]) -> Optional[str]:
    for name, value in zip(("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC"), columns):
        if not value:
            return f"empty {name}"
        if value[0].isspace() or value[-1].isspace() or re.search(r"\s\s", value):
            return f"leading, trailing or doubled whitespace in {name}: {value!r}"
    for index in NO_SPACE_COLUMNS:
        if re.search(r"\s", columns[index]):
            return f"whitespace in column {index + 1}: {columns[index]!r}"
    if "\t".join(columns) != unicodedata.normalize("NFC", "\t".join(columns)):
        return "text not in Unicode NFC"
    token_id = columns[0]
    if not (_WORD_ID.match(token_id) or _RANGE_ID.match(token_id) or _EMPTY_ID.match(token_id)):
        return f"invalid ID {token_id!r}"
    if _WORD_ID.match(token_id):
        if columns[3] not in UPOS_ID:
            return f"UPOS {columns[3]!r} is not a UD tag"
        if not _DEPREL.match(columns[7]) or columns[7].split(":")[0] not in DEPREL_ID:
            return f"DEPREL {columns[7]!r} is not a universal relation"
        if not columns[6].isdigit():
            return f"HEAD {columns[6]!r} is not a number"
    return None


def _check_sentence(comments: List[str], rows: List[tuple], seen_ids: set, say) -> None:
    first = rows[0][0]
    ids = [m.group(1) for m in map(_SENT_ID.match, comments) if m]
    if len(ids) != 1:
        say(first, f"{len(ids)} '# sent_id' lines, expected 1")
    elif ids[0] in seen_ids:
        say(first, f"sent_id {ids[0]!r} is not unique")
    seen_ids.update(ids)
    words = [(number, c) for number, c in rows if _WORD_ID.match(c[0])]
    if [int(c[0]) for _, c in words] != list(range(1, len(words) + 1)):
        say(first, "word IDs are not 1, 2, ..., n")
        return
    for number, c in rows:
        m = _RANGE_ID.match(c[0])
        if m and not (int(m.group(1)) < int(m.group(2)) <= len(words)):
            say(number, f"multiword range {c[0]} is not inside the sentence")
    texts = [m.group(1) for m in map(_TEXT.match, comments) if m]
    if len(texts) != 1:
        say(first, f"{len(texts)} '# text' lines, expected 1")
    else:
        problem = _text_mismatch(texts[0], rows)
        if problem:
            say(first, problem)
    heads = [int(c[6]) if c[6].isdigit() else -1 for _, c in words]
    for (number, c), head in zip(words, heads):
        if not 0 <= head <= len(words):
            say(number, f"HEAD {c[6]} is outside the sentence")
            return
        if (head == 0) != (c[7] == "root"):
            say(number, "DEPREL root must go with HEAD 0, and only with it")
    roots = heads.count(0)
    if roots != 1:
        say(first, f"{roots} roots, expected 1")
    for start in range(1, len(words) + 1):  # walking up from every word must reach the root
        node, steps = start, 0
        while node and steps <= len(words):
            node, steps = heads[node - 1], steps + 1
        if node:
            say(words[start - 1][0], "cycle in the HEADs")
            return


def _text_mismatch(text: str, rows: List[tuple]) -> Optional[str]:
    """The UD validator's check: the text is the FORMs of the tokens with whitespace where SpaceAfter allows."""
    if text[-1].isspace():
        return "the text ends with whitespace"
    inside_range = set()
    for _, c in rows:
        m = _RANGE_ID.match(c[0])
        if m:
            inside_range.update(str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1))
        elif _EMPTY_ID.match(c[0]) or c[0] in inside_range:
            continue
        if not text.startswith(c[1]):
            return f"# text does not match FORM {c[1]!r} of word {c[0]}"
        text = text[len(c[1]):]
        if "SpaceAfter=No" not in c[9].split("|"):
            text = text.lstrip()
    return f"# text has characters no FORM accounts for: {text!r}" if text else None
