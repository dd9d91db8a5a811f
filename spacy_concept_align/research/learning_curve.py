"""Few-shot learning curves: accuracy on a language's test split after adapting on K of its sentences.

For each unseen language with enough data and each K (0 = zero-shot) and seed: K support sentences are sampled from
its train/dev split (test-only treebanks: from the first `support_pool` test sentences, evaluated on the rest, as the
original code does). Same-encoder baselines get the same K sentences: a target-only linear tagger, and the pooled
multi-source linear probe fine-tuned on them; and the original method's few-shot step (a linear adaptor only, Adam
1e-4, no prototype refinement, no arc adaptation). Heads of the linear baselines come from the zero-shot arc scorer.
"""
import copy
import json
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..adapt import AdaptSettings, adapt_language
from ..corpus import list_treebanks, read_conllu
from ..scoring import conll18_scores
from ..concepts import fit_linear
from .evaluation import LinearProbe, relabel_root, target_treebanks
from ..features import FeatureSet
from ..feature_cache import extract_features
from ..labels import DEPRELS, UPOS
from ..decoder import tensor
from ..suggest import choose_sentences

logger = logging.getLogger(__name__)
SYSTEMS = ("concept_align (adapted)", "concept_align (original few-shot: linear adaptor only)", "target-only linear",
           "pooled probe + fine-tuning", "concept_align (adapted, no word priors)",
           "concept_align (adapted, sentences chosen by `suggest`)")
ORIGINAL = AdaptSettings(train="linear", refine_prototypes=False, adapt_arcs=False, lr=1e-4, steps=400,
                         structured_relations=False, anchor_words=0, source_tagger_weight=0.0)


def _splits(tb, encoder, data_dir, support_pool: int, max_test: int):
    """(support pool, test set) features for a test treebank, with each sentence's word forms, or None when it is
    too small."""
    test = extract_features(tb.path, encoder, progress=False)
    test_forms = [s.words for s in read_conllu(tb.path)]
    others = [t for t in list_treebanks(data_dir) if t.treebank == tb.treebank and t.split in ("train", "dev")]
    if others:
        pool_file = max(others, key=lambda t: t.words)
        pool = extract_features(pool_file.path, encoder, max_sentences=500, progress=False)
        pool_forms = [s.words for s in read_conllu(pool_file.path)[:500]]
        evaluation = range(min(len(test), max_test))
        return pool, pool_forms, test.select(evaluation), [test_forms[i] for i in evaluation]
    if len(test) >= support_pool + 100:
        evaluation = range(support_pool, min(len(test), support_pool + max_test))
        return (test.select(range(support_pool)), test_forms[:support_pool], test.select(evaluation),
                [test_forms[i] for i in evaluation])
    return None


def _fine_tuned(probe: torch.nn.Sequential, x: np.ndarray, y: np.ndarray, steps: int = 50) -> torch.nn.Sequential:
    tuned = copy.deepcopy(probe)
    layer = tuned[1]
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x, y = tensor(x), tensor(y, torch.long)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(tuned(x), y, ignore_index=-1).backward()
        optimizer.step()
    return tuned.eval()


def _linear_predict(pos, rel, test: FeatureSet, heads: np.ndarray):
    with torch.no_grad():
        upos = pos(tensor(test.words)).argmax(-1).numpy()
        rels = rel(tensor(test.relation_vectors(heads))).argmax(-1).numpy()
    return upos, heads, relabel_root(rels, heads)


def learning_curve(nlp, ks: Sequence[int] = (0, 5, 10, 20, 50), seeds: Sequence[int] = (0, 1, 2),
                   only: Optional[Sequence[str]] = None, data_dir: Optional[Path] = None, support_pool: int = 100,
                   max_test: int = 500, settings: Optional[AdaptSettings] = None) -> dict:
    """Scores per (treebank, K, seed, system); the pipeline itself is left unchanged."""
    pipe = nlp.get_pipe("concept_align")
    decoder = copy.deepcopy(pipe.decoder)  # adapt a copy: the user's pipeline keeps its own adaptors
    encoder, meta = pipe.encoder, pipe.cfg.get("meta", {})
    from ..training import load_pools

    sources = load_pools(meta.get("source", ["en"]), encoder, meta.get("max_train_sentences", 500), data_dir,
                         progress=False)
    probe = LinearProbe(decoder, FeatureSet.concat(list(sources.values())))
    exclude = list(meta.get("train", [])) + list(meta.get("validation", []))
    rows: List[dict] = []
    start = time.perf_counter()
    for tb in target_treebanks(exclude, data_dir, only):
        splits = _splits(tb, encoder, data_dir, support_pool, max_test)
        if splits is None:
            continue
        pool, pool_forms, test, test_forms = splits
        test_forms = [w for sentence in test_forms for w in sentence]
        zero_heads = decoder.predict_heads(test)
        pool_confidence = decoder.predict_with_confidence(pool)[3].prod(1)
        suggested = choose_sentences([pool_confidence[a:b] for a, b in zip(pool.offsets[:-1], pool.offsets[1:])],
                                     pool_forms, max(ks))
        # the language's own code (its typology and nearest sources) beside any shipped parts for it
        key = f"{tb.treebank}_fewshot"
        zero_shot = conll18_scores(test, *decoder.predict(test, key))  # named, as adaptation is: nothing fitted yet
        for k in ks:
            for seed in seeds if k else seeds[:1]:
                row = {"treebank": tb.treebank, "lang": tb.lang, "k": k, "seed": seed}
                if k == 0:
                    scores = zero_shot
                    row.update({SYSTEMS[0]: vars(scores), SYSTEMS[1]: vars(scores), SYSTEMS[4]: vars(scores),
                                SYSTEMS[5]: vars(scores), SYSTEMS[3]: vars(conll18_scores(test, *probe.predict(test)))})
                    rows.append(row)
                    continue
                rng = np.random.default_rng(seed)
                chosen = sorted(rng.choice(len(pool), min(k, len(pool)), replace=False))
                support = pool.select(chosen)
                forms = [w for i in chosen for w in pool_forms[i]]
                report = adapt_language(decoder, support, key, settings, forms)
                row["adapt_seconds"] = report["seconds"]
                row[SYSTEMS[0]] = vars(conll18_scores(test, *decoder.predict(test, key, test_forms)))
                row[SYSTEMS[4]] = vars(conll18_scores(test, *decoder.predict(test, key)))  # same parts, no priors
                if seed == seeds[0]:  # `suggest` is deterministic: one run per K
                    picked = suggested[:k]
                    adapt_language(decoder, pool.select(picked), key, settings,
                                   [w for i in picked for w in pool_forms[i]])
                    row[SYSTEMS[5]] = vars(conll18_scores(test, *decoder.predict(test, key, test_forms)))
                adapt_language(decoder, support, "_original", ORIGINAL)  # no code: nothing from typology
                row[SYSTEMS[1]] = vars(conll18_scores(test, *decoder.predict(test, "_original")))
                rel_x, rel_y = support.relation_vectors(), support.deprels
                target_pos = fit_linear(support.words, support.upos, len(UPOS), 1e-3, 100)
                target_rel = fit_linear(rel_x, rel_y, len(DEPRELS), 1e-3, 100)
                row[SYSTEMS[2]] = vars(conll18_scores(test, *_linear_predict(target_pos, target_rel, test, zero_heads)))
                tuned_pos = _fine_tuned(probe.pos, support.words, support.upos)
                tuned_rel = _fine_tuned(probe.rel, rel_x, rel_y)
                row[SYSTEMS[3]] = vars(conll18_scores(test, *_linear_predict(tuned_pos, tuned_rel, test, zero_heads)))
                rows.append(row)
        logger.info("%s: %s", tb.treebank, {k: round(r[SYSTEMS[0]]["upos"], 1) for k, r in
                                            ((r["k"], r) for r in rows if r["treebank"] == tb.treebank)})
    return {"ks": list(ks), "seeds": list(seeds), "rows": rows, "seconds": time.perf_counter() - start}


def curve_table(result: dict, focus: Sequence[str] = ("wo", "cy", "ga", "mt", "ug")) -> str:
    """Markdown: mean over treebanks (and over seeds) per K and system, then the focus languages."""
    rows, ks = result["rows"], result["ks"]

    def mean(system, k, metric, treebanks=None):
        values = [r[system][metric] for r in rows if r["k"] == k and system in r
                  and (treebanks is None or r["lang"] in treebanks)]
        return float(np.mean(values)) if values else float("nan")

    n = len({r["treebank"] for r in rows})
    lines = [f"Mean over {n} treebanks (UPOS / UAS / LAS):", "",
             "| system | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for system in SYSTEMS:
        lines.append(f"| {system} | " + " | ".join(
            " / ".join(f"{mean(system, k, m):.1f}" for m in ("upos", "uas", "las")) for k in ks) + " |")
    lines += ["", "concept_align (adapted), per language (UPOS / LAS):", "",
              "| lang | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for lang in focus:
        if any(r["lang"] == lang for r in rows):
            lines.append(f"| {lang} | " + " | ".join(
                f"{mean(SYSTEMS[0], k, 'upos', [lang]):.1f} / {mean(SYSTEMS[0], k, 'las', [lang]):.1f}" for k in ks) + " |")
    times = [r["adapt_seconds"] for r in rows if "adapt_seconds" in r and r["k"] == 20]
    if times:
        lines += ["", f"Adaptation time at K=20: mean {np.mean(times):.2f} s, max {np.max(times):.2f} s."]
    return "\n".join(lines) + "\n"


def write_curve(result: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "learning_curve.json").write_text(json.dumps(result, indent=2))
    (output / "learning_curve.md").write_text(curve_table(result))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric in zip(axes, ("upos", "uas", "las")):
        for system in SYSTEMS:
            ys = [np.mean([r[system][metric] for r in result["rows"] if r["k"] == k and system in r] or [np.nan])
                  for k in result["ks"]]
            ax.plot(result["ks"], ys, marker="o", label=system)
        ax.set_xlabel("K annotated target sentences")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Few-shot learning curve (mean over unseen languages)")
    fig.tight_layout()
    fig.savefig(output / "learning_curve.png", dpi=110)
    plt.close(fig)
