"""Soak test: thousands of generated strange inputs through `tag` and the Python API, every output validated.

Not a unit test (it takes minutes): `python -m spacy_concept_align soak --n 10000` prints inputs, crashes, invalid
outputs and peak memory. The generator mixes 18 scripts, emoji sequences, controls, bidi and zero-width marks,
combining accents, every kind of whitespace, very long words and very long documents; it is seeded, so a failure
can be replayed. Lone surrogates are left out: they are not Unicode text and no UTF-8 file can hold them.
"""
import json
import random
import resource
import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

SCRIPTS = [
    "The quick brown fox", "Dëgg la, waaw", "Ein Straßenbahnfahrer", "Привет, как дела", "Γειά σου κόσμε",
    "שלום עולם", "مرحبا بالعالم", "سلام دنیا", "नमस्ते दुनिया", "বাংলা ভাষা", "வணக்கம் உலகம்", "สวัสดีชาวโลก",
    "你好，世界。", "こんにちは世界", "안녕하세요 세계", "ሰላም ዓለም።", "Բարեւ աշխարհ", "გამარჯობა მსოფლიო",
]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇸🇳", "❤️", "1️⃣", "🏳️\u200d🌈", "🔥🔥🔥", "✔", "☕"]
SPACES = ["\t", " ", "  ", "\u00a0", "\u2009", "\u3000", "\u200b", "\u00ad", "\u2028", "\u2029", "\x0b", "\x0c",
          "\x85", "\r", "\u202f", "\ufeff", "\u200d", "\u2060"]
MARKS = ["\u202e", "\u202c", "\u2066", "\u2069", "\u200e", "\u200f", "e\u0301", "\u0301\u0301", "\u0654", "\u093c"]
CONTROLS = [chr(c) for c in list(range(0, 32)) + [127] + list(range(0x80, 0xA0)) if chr(c) not in "\n"]
OTHER = ["https://example.org/a/b?c=d", "1,000.5", "...", "?!", "-", "'", '"', "(", ")", "«", "»", "%", "$", "#x"]


def generate(rng: random.Random, long_doc_every: int = 500) -> str:
    """One input: a run of fragments joined by random separators (sometimes a very long word or document)."""
    if rng.randrange(long_doc_every) == 0:  # a very long document: thousands of words with no sentence boundary
        return " ".join(rng.choice(SCRIPTS) for _ in range(rng.randint(300, 800)))
    pieces = []
    for _ in range(rng.randint(0, 25)):
        kind = rng.random()
        if kind < 0.35:
            piece = rng.choice(SCRIPTS)
        elif kind < 0.45:
            piece = rng.choice(EMOJI)
        elif kind < 0.55:
            piece = rng.choice(MARKS) + rng.choice(SCRIPTS).split()[0]
        elif kind < 0.62:
            piece = rng.choice(CONTROLS)
        elif kind < 0.70:
            piece = rng.choice(OTHER)
        elif kind < 0.72:
            piece = rng.choice("xaब中") * rng.randint(100, 3000)  # a very long word
        elif kind < 0.85:
            piece = "".join(chr(rng.choice([rng.randint(0x20, 0x2FFF), rng.randint(0x1F300, 0x1FAFF)]))
                            for _ in range(rng.randint(1, 8)))
        else:
            piece = rng.choice(SPACES) * rng.randint(1, 3)
        pieces.append(piece)
        pieces.append(rng.choice([" ", " ", " ", "", rng.choice(SPACES)]))
    return "".join(pieces)


def soak(n: int = 10000, seed: int = 0, pipeline: Optional[str] = None, workdir: Optional[Path] = None,
         log=print) -> Dict[str, object]:
    """Generate n inputs; tag them as a text file and a JSONL file (the `tag` path) and through nlp.pipe."""
    from .corpus import doc_to_conllu
    from .tagging import load_pipeline, tag_file
    from .validate import validate_conllu

    rng = random.Random(seed)
    texts = [generate(rng) for _ in range(n)]
    nlp = load_pipeline(pipeline)
    result: Dict[str, object] = {"inputs": n, "words": 0, "crashes": 0, "invalid_lines": 0, "problems": []}
    problems: List[str] = result["problems"]  # type: ignore[assignment]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        # `tag` on text: one input a line (line separators inside a text are legitimate line breaks here)
        (tmp / "in.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        (tmp / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        for name in ("in.txt", "in.jsonl"):
            target = tmp / (name + ".conllu")
            try:
                report = tag_file(nlp, tmp / name, target)
                result["words"] += report.words
                found = validate_conllu(target.read_text(encoding="utf-8"), f"tag {name}", limit=1000)
                result["invalid_lines"] += len(found)
                problems += found[:5]
            except Exception:  # the soak's job is to count these, not to stop at the first
                result["crashes"] += 1
                problems.append(f"tag {name}: {traceback.format_exc(limit=3)}")
            log(f"tag {name}: done ({time.perf_counter() - start:.0f} s)")
        # the Python API, doc by doc, and the CoNLL-U written from each doc
        for i, text in enumerate(texts):
            try:
                doc = nlp(text)
                if doc.text != text:
                    problems.append(f"input {i}: the doc's text differs from the input")
                found = validate_conllu("".join(doc_to_conllu(doc)), f"nlp(input {i})")
                result["invalid_lines"] += len(found)
                problems += found[:2]
            except Exception:
                result["crashes"] += 1
                problems.append(f"nlp(input {i}): {traceback.format_exc(limit=3)}")
        log(f"Python API: done ({time.perf_counter() - start:.0f} s)")
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["problems"] = problems[:50]
    return result
