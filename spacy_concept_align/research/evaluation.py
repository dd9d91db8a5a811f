"""Zero-shot evaluation: CoNLL 2018 scores per language, beside same-encoder baselines and literature anchors.

Gold tokenization and sentences; every word counts (punctuation included); relations are the 37 universal ones.
Predictions come from the same ConceptDecoder.predict that the pipe calls, on cached features.
"""
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch


from ..corpus import TreebankFile, list_treebanks, read_conllu
from ..features import FeatureSet
from ..feature_cache import extract_features
from ..labels import DEPRELS, ROOT_ID, UPOS
from ..concepts import fit_linear
from ..decoder import ConceptDecoder, tensor
from ..scoring import conll18_scores

logger = logging.getLogger(__name__)

#: Published figures on matching treebanks (UPOS / UAS / LAS). Other encoders and UD versions: context, not a
#: like-for-like comparison (../shared/docs/anchors.md sections 3.2-3.3).
LITERATURE = {
    "wo_wtb": {"UDify zero-shot (mBERT, UD 2.3 model)": (41.39, 33.23, 11.17),
               "UDPipe 2 supervised (UD 2.15, gold tok)": (95.08, 86.19, 80.86)},
    "cy_ccg": {"UDify zero-shot (mBERT, UD 2.3 model)": (68.62, 69.07, 42.59),
               "UDPipe 2 supervised (UD 2.15, gold tok)": (96.03, 88.54, 82.54)},
    "pcm_nsc": {"UDify zero-shot (mBERT, UD 2.3 model)": (53.67, 49.47, 33.71),
                "UDPipe 2 supervised (UD 2.15, gold tok)": (98.15, 93.13, 90.58)},
    "ga_idt": {"UDPipe 2 supervised (UD 2.15, gold tok)": (96.04, 87.50, 81.97)},
    "mr_ufal": {"UDPipe 2 supervised (UD 2.15, gold tok)": (87.14, 72.33, 65.29)},
    "ta_ttb": {"UDPipe 2 supervised (UD 2.15, gold tok)": (89.04, 78.33, 68.98)},
    "ug_udt": {"UDPipe 2 supervised (UD 2.15, gold tok)": (90.21, 77.35, 66.34)},
    "en_ewt": {"UDPipe 2 supervised (UD 2.15, gold tok)": (97.50, 93.42, 91.52)},
}
SUPERVISED = "UDPipe 2 supervised (UD 2.15, gold tok)"


class NearestMeans:
    """Baseline (b): prototypes without meta-training, nearest raw class mean (POS) / relation mean (relations)."""

    name = "prototypes only"

    def __init__(self, decoder: ConceptDecoder):
        self.decoder = decoder

    def labels(self, aligner, vectors: np.ndarray) -> np.ndarray:
        distances = torch.cdist(tensor(vectors), aligner.source_means)
        return distances.masked_fill(~aligner.valid, float("inf")).argmin(-1).numpy()

    def predict(self, features: FeatureSet):
        heads = self.decoder.predict_heads(features)
        return self.labels(self.decoder.pos, features.words), heads, relabel_root(
            self.labels(self.decoder.rel, features.relation_vectors(heads)), heads)


class LinearProbe:
    """Baseline (d): multinomial logistic regression on pooled source features (UPOS; relations on head - dep)."""

    name = "linear probe (pooled sources)"

    def __init__(self, decoder: ConceptDecoder, train: FeatureSet, weight_decay: float = 1e-3, steps: int = 300):
        self.decoder = decoder
        self.pos = fit_linear(train.words, train.upos, len(UPOS), weight_decay, steps)
        self.rel = fit_linear(train.relation_vectors(), train.deprels, len(DEPRELS), weight_decay, steps)

    def predict(self, features: FeatureSet):
        heads = self.decoder.predict_heads(features)
        with torch.no_grad():
            upos = self.pos(tensor(features.words)).argmax(-1).numpy()
            rels = self.rel(tensor(features.relation_vectors(heads))).argmax(-1).numpy()
        return upos, heads, relabel_root(rels, heads)


def relabel_root(rels: np.ndarray, heads: np.ndarray) -> np.ndarray:
    rels = rels.copy()
    rels[heads == 0] = ROOT_ID
    rels[(heads != 0) & (rels == ROOT_ID)] = DEPRELS.index("dep")
    return rels


def target_treebanks(exclude_langs: Sequence[str], data_dir: Optional[Path] = None,
                     only: Optional[Sequence[str]] = None) -> List[TreebankFile]:
    """Test files of every language not used in training or validation (or just `only`, by lang or treebank)."""
    files = [tb for tb in list_treebanks(data_dir, "test") if tb.lang not in set(exclude_langs)]
    if only:
        files = [tb for tb in files if tb.lang in only or tb.treebank in only]
    return sorted(files, key=lambda tb: tb.treebank)


SPACY_BASELINE = "spaCy trf tagger+parser (same sources)"


UNLABELED = "concept_align (+ the test text, unlabeled)"
UNNAMED = "concept_align (zero-shot, language not named)"


def evaluate(nlp, data_dir: Optional[Path] = None, only: Optional[Sequence[str]] = None, baselines: bool = True,
             progress: bool = True, spacy_baseline=None, unlabeled: bool = False) -> dict:
    """Per-treebank zero-shot scores of the pipeline (and baselines) on the test splits of unseen languages.

    spacy_baseline (Optional[Language]): a pipeline from `python -m spacy_concept_align baseline`, scored too.
    unlabeled (bool): also score the pipeline adapted to each test set's own words, without their labels
        (transductive: adapt.adapt_unlabeled), on a copy per treebank.
    """
    pipe = nlp.get_pipe("concept_align")
    decoder, encoder, meta = pipe.decoder, pipe.encoder, pipe.cfg.get("meta", {})
    exclude = list(meta.get("train", [])) + list(meta.get("validation", []))
    systems: Dict[str, object] = {"concept_align (zero-shot)": None}
    if baselines and meta.get("train"):
        from ..training import load_pools

        pools = load_pools(meta["source"], encoder, meta.get("max_train_sentences", 500), data_dir, progress=progress)
        systems[NearestMeans.name] = NearestMeans(decoder)
        systems[LinearProbe.name] = LinearProbe(decoder, FeatureSet.concat(list(pools.values())))
    if spacy_baseline is not None:
        systems[SPACY_BASELINE] = spacy_baseline
    if unlabeled:
        systems[UNLABELED] = UNLABELED
    if decoder.word_order_weight and len(decoder.source_typology):
        systems[UNNAMED] = UNNAMED
    rows = []
    start = time.perf_counter()
    for tb in target_treebanks(exclude, data_dir, only):
        features = extract_features(tb.path, encoder, progress=progress)
        row = {"treebank": tb.treebank, "lang": tb.lang, "group": tb.group, "words": features.n_words}
        for name, system in systems.items():
            if name == SPACY_BASELINE:
                from .spacy_baseline import predict_treebank

                row[name] = asdict(conll18_scores(*predict_treebank(system, tb.path)))
                continue
            # the language named, as a user would (`--lang`), unless the pipeline has parts of its own for it
            lang = None if tb.lang in decoder.languages or tb.lang in decoder.priors else tb.lang
            if system == UNLABELED:
                forms = [word for sentence in read_conllu(tb.path) for word in sentence.words]
                predicted = _predict_after_unlabeled(decoder, features, forms, lang)
            elif system == UNNAMED:
                predicted = decoder.predict(features)
            elif system is None:
                *predicted, confidence = decoder.predict_with_confidence(features, lang)
                correct = (predicted[0] == features.upos) & (predicted[1] == features.heads)
                row["calibration"] = calibration(correct, confidence.prod(1))
            else:
                predicted = system.predict(features)
            row[name] = asdict(conll18_scores(features, *predicted))
        rows.append(row)
        main = row["concept_align (zero-shot)"]
        logger.info("%s: UPOS %.1f UAS %.1f LAS %.1f", tb.treebank, main["upos"], main["uas"], main["las"])
    return {"systems": list(systems), "rows": rows, "excluded_languages": exclude,
            "encoder": pipe.cfg["encoder"], "seconds": time.perf_counter() - start}


def in_language_scores(nlp, data_dir: Optional[Path] = None, only: Optional[Sequence[str]] = None,
                       workers: int = 1, progress: bool = True) -> Dict[str, dict]:
    """Per language the pipeline was specialised on (its meta's "in_language"): UPOS / UAS / LAS on the test split
    of the treebank it was trained on, with its own parts ("test") and through the zero-shot path
    ("test_zero_shot_path"); languages whose treebank has no test split are left out. workers: as `specialise`'s."""
    from ..training import per_language

    pipe = nlp.get_pipe("concept_align")
    trained = pipe.cfg.get("meta", {}).get("in_language", {})
    tests = {tb.treebank: tb for tb in list_treebanks(data_dir, "test")}
    jobs = [(lang, tests[entry["treebank"]], progress) for lang, entry in sorted(trained.items())
            if entry["treebank"] in tests and (not only or lang in only or entry["treebank"] in only)]
    scored = per_language(pipe, _score_in_language, jobs, workers, cost=lambda job: job[1].sentences)
    return {lang: dict(trained[lang], **scores) for (lang, _, _), scores in zip(jobs, scored)}


def with_test_scores(in_language: Dict[str, dict], scored: Dict[str, dict]) -> Dict[str, dict]:
    """A pipeline's in-language record with the test scores of `in_language_scores` added: for the languages it was
    specialised on only, and nothing else taken from the scores (they may come from another run's file)."""
    keys = ("test", "test_zero_shot_path")
    return {lang: dict(entry, **{k: scored[lang][k] for k in keys if k in scored.get(lang, {})})
            for lang, entry in in_language.items()}


def _score_in_language(pipe, lang: str, test: TreebankFile, progress: bool) -> Dict[str, dict]:
    """One language's test split, with its own parts and through the zero-shot path (rounded as reported)."""
    gold = extract_features(test.path, pipe.encoder, progress=progress)
    forms = [word for sentence in read_conllu(test.path) for word in sentence.words]
    scores = {}
    for key, predicted in (("test", pipe.decoder.predict(gold, lang, forms)),
                           ("test_zero_shot_path", pipe.decoder.predict(gold))):
        result = conll18_scores(gold, *predicted)
        scores[key] = {"upos": round(result.upos, 2), "uas": round(result.uas, 2), "las": round(result.las, 2)}
    logger.info("%s: %s test %s", lang, test.treebank, scores["test"])
    return scores


def calibration(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> dict:
    """How well `token._.concept_confidence` (P(tag) x P(head)) predicts that tag and head are both right:
    expected calibration error over equal-width bins, the mean confidence against the accuracy (what
    `doc._.concept_confidence` estimates), and the bins (words, mean confidence, accuracy) for a reliability plot."""
    which = np.clip((np.asarray(confidence) * bins).astype(int), 0, bins - 1)
    table = [[int((which == b).sum()), float(confidence[which == b].mean()) if (which == b).any() else 0.0,
              float(correct[which == b].mean()) if (which == b).any() else 0.0] for b in range(bins)]
    n = max(len(correct), 1)
    return {"ece": 100 * sum(k * abs(c - a) for k, c, a in table) / n, "confidence": 100 * float(np.mean(confidence)),
            "accuracy": 100 * float(np.mean(correct)), "bins": table}


def _predict_after_unlabeled(decoder: ConceptDecoder, features: FeatureSet, forms: List[str],
                             lang: Optional[str] = None):
    """Predictions of a copy of `decoder` adapted to the words it is about to tag (their forms, not their labels),
    as language `lang` (a placeholder code when None)."""
    import copy

    from ..adapt import adapt_unlabeled

    target, lang = copy.deepcopy(decoder), lang or "__target__"
    adapt_unlabeled(target, replace(features, forms=forms), lang)
    return target.predict(features, lang, forms)


def summary(result: dict) -> Dict[str, Dict[str, float]]:
    """Mean and spread (standard deviation across treebanks) of each system's UPOS / UAS / LAS."""
    out = {}
    for system in result["systems"]:
        keys = ("upos", "uas", "las", "label_acc", "inconsistent")
        table = np.array([[row[system].get(k, 0.0) for k in keys] for row in result["rows"]])
        if len(table):
            out[system] = {f"mean_{k}": float(v) for k, v in zip(keys, table.mean(0))}
            out[system].update({f"spread_{k}": float(v) for k, v in zip(("upos", "las"), table[:, [0, 2]].std(0))})
    return out


def calibration_summary(result: dict) -> Optional[dict]:
    """Word-level ECE over all words (pooled bins) and per language, and how close the language-level estimate
    (mean confidence) comes to the real share of words with tag and head right."""
    rows = [row for row in result["rows"] if "calibration" in row]
    if not rows:
        return None
    pooled = np.array([[b[0], b[0] * b[1], b[0] * b[2]] for row in rows for b in row["calibration"]["bins"]])
    bins = len(rows[0]["calibration"]["bins"])
    sums = pooled.reshape(len(rows), bins, 3).sum(0)
    words = sums[:, 0].sum()
    estimate = np.array([[row["calibration"]["confidence"], row["calibration"]["accuracy"]] for row in rows])
    return {"ece_words": float(100 * np.abs(sums[:, 1] - sums[:, 2]).sum() / words),
            "ece_per_language": float(np.mean([row["calibration"]["ece"] for row in rows])),
            "language_estimate_error": float(np.mean(np.abs(estimate[:, 0] - estimate[:, 1]))),
            "language_estimate_correlation": (float(np.corrcoef(estimate.T)[0, 1])
                                              if len(rows) > 2 and estimate.std(0).min() > 0 else None),
            "bins": [[int(n), float(c / n) if n else 0.0, float(a / n) if n else 0.0] for n, c, a in sums]}


def markdown_table(result: dict) -> str:
    systems = result["systems"]
    head = "| treebank | words | " + " | ".join(f"{s}: UPOS / UAS / LAS" for s in systems) + " | literature (other encoders / UD versions) |"
    lines = [head, "|" + "---|" * (len(systems) + 3)]
    for row in result["rows"]:
        cells = [" / ".join(f"{row[s][k]:.1f}" for k in ("upos", "uas", "las")) for s in systems]
        lit = "; ".join(f"{name}: {u} / {a} / {l}" for name, (u, a, l) in LITERATURE.get(row["treebank"], {}).items())
        lines.append(f"| {row['treebank']} | {row['words']} | " + " | ".join(cells) + f" | {lit} |")
    stats = summary(result)
    lines.append("| **mean** | | " + " | ".join(
        f"**{stats[s]['mean_upos']:.1f} / {stats[s]['mean_uas']:.1f} / {stats[s]['mean_las']:.1f}**" for s in systems) + " | |")
    lines.append("| spread (std of UPOS / LAS across treebanks) | | " + " | ".join(
        f"{stats[s]['spread_upos']:.1f} / {stats[s]['spread_las']:.1f}" for s in systems) + " | |")
    lines.append("| words with a (UPOS, relation) pair UD forbids (%) | | " + " | ".join(
        f"{stats[s]['mean_inconsistent']:.2f}" for s in systems) + " | |")
    calib = calibration_summary(result)
    if calib:
        lines.append(f"\nConfidence (P(tag) x P(head) against tag and head both right), {systems[0]}: expected "
                     f"calibration error {calib['ece_words']:.1f} points over all words ({calib['ece_per_language']:.1f} "
                     f"per language); the language-level estimate (mean confidence) is off by "
                     f"{calib['language_estimate_error']:.1f} points on average"
                     + (f", correlation {calib['language_estimate_correlation']:.2f} with the real share across "
                        "languages." if calib["language_estimate_correlation"] is not None else "."))
    return "\n".join(lines) + "\n"


def write_report(result: dict, output: Path) -> None:
    """results.json, results.md and a per-language bar chart (PNG, when matplotlib is installed)."""
    output.mkdir(parents=True, exist_ok=True)
    result = dict(result, summary=summary(result), calibration=calibration_summary(result))
    (output / "results.json").write_text(json.dumps(result, indent=2))
    (output / "results.md").write_text(markdown_table(result))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install spacy-concept-align[plots])")
        return
    rows, systems = result["rows"], result["systems"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(rows)), 7), sharex=True)
    x = np.arange(len(rows))
    width = 0.8 / len(systems)
    for ax, metric in zip(axes, ("upos", "las")):
        for i, system in enumerate(systems):
            ax.bar(x + i * width, [row[system][metric] for row in rows], width, label=system)
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Zero-shot, unseen languages (test splits, gold tokenization)")
    axes[1].set_xticks(x + 0.4 - width / 2, [row["treebank"] for row in rows], rotation=70, fontsize=8)
    fig.tight_layout()
    fig.savefig(output / "per_language.png", dpi=110)
    plt.close(fig)
    # The spread across languages: does a system narrow the gap between well- and poorly-served languages?
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * len(systems), 4.2))
    for ax, metric in zip(axes, ("upos", "las")):
        ax.boxplot([[row[s][metric] for row in rows] for s in systems], showmeans=True)
        ax.set_xticks(range(1, len(systems) + 1), [s.replace(" (", "\n(") for s in systems], fontsize=7)
        ax.set_ylabel(f"{metric.upper()} (%) per language")
        ax.set_title(f"{metric.upper()}: spread (std) " + ", ".join(
            f"{result['summary'][s][f'spread_{metric}']:.1f}" for s in systems), fontsize=8)
    fig.tight_layout()
    fig.savefig(output / "spread.png", dpi=110)
    plt.close(fig)
    if result["calibration"]:
        _reliability_plot(plt, result, output / "reliability.png")


def _reliability_plot(plt, result: dict, path: Path) -> None:
    """Confidence against accuracy (tag and head right), per bin over all words and per language."""
    calib = result["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    bins = np.array([b for b in calib["bins"] if b[0]])
    axes[0].plot([0, 1], [0, 1], "k:", lw=1)
    axes[0].plot(bins[:, 1], bins[:, 2], "o-")
    axes[0].set(xlabel="confidence (P(tag) x P(head))", ylabel="tag and head right", xlim=(0, 1), ylim=(0, 1),
                title=f"all words: ECE {calib['ece_words']:.1f}")
    rows = [row for row in result["rows"] if "calibration" in row]
    estimate = np.array([[row["calibration"]["confidence"], row["calibration"]["accuracy"]] for row in rows])
    axes[1].plot([0, 100], [0, 100], "k:", lw=1)
    axes[1].scatter(estimate[:, 0], estimate[:, 1], s=12)
    for row, (x, y) in zip(rows, estimate):
        axes[1].annotate(row["treebank"], (x, y), fontsize=6)
    axes[1].set(xlabel="doc._.concept_confidence, mean (%)", ylabel="words with tag and head right (%)",
                title=f"per language: off by {calib['language_estimate_error']:.1f} on average")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_scores(scores: Optional[dict]) -> str:
    """"UPOS / UAS / LAS" of a scores dict, "-" for none."""
    return f"{scores['upos']:.1f} / {scores['uas']:.1f} / {scores['las']:.1f}" if scores else "-"


def in_language_table(in_language: Dict[str, dict], zero_shot: Optional[dict] = None) -> str:
    """Markdown: per language with its own adaptation, test UPOS / UAS / LAS with it and through the zero-shot
    path, beside UDPipe 2 (supervised, where published) and, for leave-out languages, the leave-out zero-shot score
    (`zero_shot`: an evaluate result of a pipeline that never saw the language)."""
    leave_out = {row["treebank"]: row["concept_align (zero-shot)"] for row in (zero_shot or {}).get("rows", [])}
    fmt = format_scores
    lines = ["| language | trained on (sentences) | in-language UPOS / UAS / LAS | zero-shot path | zero-shot, "
             "leave-out | UDPipe 2 (supervised) |", "|---|---|---|---|---|---|"]
    scored = []
    for lang, entry in sorted(in_language.items()):
        if "test" not in entry:
            continue
        scored.append(entry["test"])
        tb = entry["treebank"]
        udpipe = LITERATURE.get(tb, {}).get(SUPERVISED)
        lines.append(f"| {lang} ({tb}) | {entry['split']} ({entry['sentences']}) | {fmt(entry['test'])} | "
                     f"{fmt(entry.get('test_zero_shot_path'))} | {fmt(leave_out.get(tb))} | "
                     f"{fmt(dict(zip(('upos', 'uas', 'las'), udpipe))) if udpipe else '-'} |")
    if scored:
        mean = {k: float(np.mean([s[k] for s in scored])) for k in ("upos", "uas", "las")}
        lines.append(f"| **mean of {len(scored)}** | | **{fmt(mean)}** | | | |")
    return "\n".join(lines)
