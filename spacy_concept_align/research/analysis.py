"""How alignable are the concept spaces of many languages? RSA and Procrustes over class prototypes.

Xu et al. (2023) measure "the alignability between structural concepts in different languages" with RSA and
Procrustes analysis (scipy.spatial.procrustes); the details are not published (../shared/docs/method.md, section 2).
The choices made here:

- A concept is a UPOS tag (word vectors) or a universal relation (relation vectors h(head) - h(dependent) on gold
  heads). A language's prototype of a concept is the mean of its vectors; a concept counts for a language when it has
  at least `min_count` examples, and two languages are compared over the concepts both have (at least 3, else NaN).
- RSA: Spearman correlation (`method="pearson"` for Pearson) between the condensed pairwise Euclidean distance
  vectors (`metric="cosine"` for cosine distances) of the two prototype matrices. Spearman, because only the ranking of
  distances is comparable between spaces of different scale and anisotropy; Euclidean, because the aligner classifies
  by Euclidean distance to prototypes. 1 = same geometry, 0 = unrelated, < 0 = reversed.
- Procrustes: the disparity of scipy.spatial.procrustes (both matrices centred and Frobenius-normalised, the best
  rotation/reflection + scale fitted): 0 = alignable perfectly, 1 = not at all. A narrower matrix (another model) is
  padded with zero columns.
- "Before" is the raw encoder space; "after" runs both the language's and the source's vectors through a trained
  pipeline's shared aligner body SharedProjection (zero-shot: no language adaptor) before taking class means. "after vs learned
  prototypes" compares the language's SharedProjection-space means with the prototypes the pipeline actually classifies against
  (the prototype map applied to the source means).
- Files: a studied language reads its test split if it has one, else dev, else train (most low-resource languages have
  only test; this is also the split evaluation scores); the source languages read the file the meta-trainer takes
  prototypes from (`corpus.choose_file`: train, else dev, else test). A code may name a language ("ar": its largest
  file of that split) or a treebank ("ar_pud"). The first `max_sentences` sentences of each file are used.
"""
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..concepts import class_sums
from ..corpus import TEST_SPLITS, TRAIN_SPLITS, TreebankFile, choose_file
from ..encoders import FrozenEncoder
from ..features import FeatureSet
from ..feature_cache import extract_features
from ..inference import inference
from ..labels import DEPRELS, UPOS

logger = logging.getLogger(__name__)

TASKS = ("pos", "rel")
CONCEPTS = {"pos": UPOS, "rel": DEPRELS}
TASK_NAMES = {"pos": "POS (UPOS)", "rel": "relations"}
#: Fewer shared concepts than this and a comparison is NaN (2 points have a single distance: nothing to correlate).
MIN_SHARED = 3
#: The system whose scores are read from an evaluation results.json.
EVAL_SYSTEM = "concept_align (zero-shot)"

Prototypes = Tuple[np.ndarray, np.ndarray]  # means (C x d, NaN rows below min_count), counts (C)


# ---------------------------------------------------------------------------------------------------------------
# Prototypes

def task_vectors(features: FeatureSet, task: str) -> Tuple[np.ndarray, np.ndarray]:
    """The vectors and gold labels of one concept inventory: words + UPOS ("pos"), relation vectors + relations ("rel")."""
    if task == "pos":
        return np.asarray(features.words, np.float32), np.asarray(features.upos, np.int64)
    if task == "rel":
        labels = np.where(np.asarray(features.heads) >= 0, features.deprels, -1).astype(np.int64)
        return features.relation_vectors(), labels
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def apply_transform(transform: Optional[Callable], vectors: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """`transform` applied to [N, d] float32 vectors, in chunks.

    A torch module (e.g. a pipeline's `decoder.pos.phi`) gets torch tensors and runs in eval mode under no_grad (its
    mode is restored afterwards); any other callable gets numpy arrays. Returns float32 numpy.
    """
    vectors = np.asarray(vectors, np.float32)
    if transform is None:
        return vectors
    if isinstance(transform, torch.nn.Module):
        with inference(transform):
            param = next(transform.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            out = [transform(torch.from_numpy(vectors[i : i + chunk]).to(device)).float().cpu().numpy()
                   for i in range(0, len(vectors), chunk)]
    else:
        out = [np.asarray(transform(vectors[i : i + chunk]), np.float32) for i in range(0, len(vectors), chunk)]
    if not out:  # no vectors: the output width is unknown until something runs through
        probe = apply_transform(transform, np.zeros((1, vectors.shape[1]), np.float32))
        return np.zeros((0, probe.shape[1]), np.float32)
    return np.concatenate(out)


def _class_sums(features: FeatureSet, task: str, transform: Optional[Callable]) -> Tuple[np.ndarray, np.ndarray]:
    vectors, labels = task_vectors(features, task)
    keep = labels >= 0
    vectors = apply_transform(transform, vectors[keep])
    sums, counts = class_sums(torch.from_numpy(np.asarray(vectors, np.float64)),
                              torch.from_numpy(np.asarray(labels[keep], np.int64)), len(CONCEPTS[task]))
    return sums.numpy(), counts.numpy().astype(np.int64)


def pooled_prototypes(feature_sets: Sequence[FeatureSet], task: str, min_count: int = 1,
                      transform: Optional[Callable] = None) -> Prototypes:
    """Class means over several FeatureSets together (every example weighs the same), as the source prototypes are."""
    if not feature_sets:
        raise ValueError("pooled_prototypes needs at least one FeatureSet")
    parts = [_class_sums(f, task, transform) for f in feature_sets]
    sums, counts = sum(p[0] for p in parts), sum(p[1] for p in parts)
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    means[counts < max(min_count, 1)] = np.nan
    return means, counts


def language_prototypes(features: FeatureSet, task: str, min_count: int = 1,
                        transform: Optional[Callable] = None) -> Prototypes:
    """Class means of a language's vectors: UPOS classes of word vectors ("pos") or universal relations of relation
    vectors h(head) - h(dependent) on gold heads ("rel"), optionally after `transform` (e.g. a trained aligner's
    `decoder.pos.phi` / `decoder.rel.phi`; see `apply_transform`).

    RETURNS (Tuple[np.ndarray, np.ndarray]): means (C x d, float32; rows of classes with fewer than `min_count`
        examples are NaN, so they cannot be used by accident) and counts (C, the number of examples of each class).
    """
    return pooled_prototypes([features], task, min_count, transform)


# ---------------------------------------------------------------------------------------------------------------
# Measures

def rsa(a: np.ndarray, b: np.ndarray, metric: str = "euclidean", method: str = "spearman") -> float:
    """Representational similarity of two prototype matrices whose rows are the same concepts, in the same order.

    The correlation between the condensed pairwise-distance vectors (scipy.spatial.distance.pdist) of `a` and `b`.
    metric: "euclidean" (default: the aligner classifies by Euclidean distance) or "cosine".
    method: "spearman" (default: rank correlation, insensitive to the two spaces' different scales and to monotone
        distortions of distance) or "pearson". The paper does not say which it used.
    RETURNS (float): in [-1, 1]; NaN with fewer than 3 concepts or when either space has all distances equal.
    """
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr, spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"rsa needs the same concepts (rows) in both matrices, got {a.shape[0]} and {b.shape[0]}")
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    if a.shape[0] < MIN_SHARED or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    da, db = pdist(a, metric), pdist(b, metric)
    if not (np.isfinite(da).all() and np.isfinite(db).all()) or np.ptp(da) == 0 or np.ptp(db) == 0:
        return math.nan
    correlation = spearmanr(da, db)[0] if method == "spearman" else pearsonr(da, db)[0]
    return float(correlation)


def procrustes_disparity(a: np.ndarray, b: np.ndarray) -> float:
    """The disparity of scipy.spatial.procrustes for two prototype matrices over the same concepts (rows in order).

    0 = `b` is `a` up to translation, rotation/reflection and scale; 1 = nothing in common. A matrix narrower than
    the other (e.g. another model's vectors) counts as padded with zero columns, which changes no distance.
    Computed from the two C x C Gram matrices instead of scipy's width x width SVD: the same number (tested against
    scipy), without a large SVD per pair (with torch loaded, LAPACK's SVD can be ~100x slower on few cores).
    RETURNS (float): NaN with fewer than 2 concepts or when a matrix has all rows equal.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"procrustes needs the same concepts (rows) in both matrices, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    # scipy: centre, scale to unit Frobenius norm, rotate b onto a with the orthogonal R maximising trace(a^T b R);
    # then disparity = 1 - s^2, s = the nuclear norm of a^T b = sum of sqrt(eigenvalues of G^1/2 H G^1/2), with the
    # Gram matrices G = a a^T and H = b b^T (the nonzero eigenvalues of b^T a a^T b are those of G H). Zero columns
    # leave G and H unchanged, so matrices of different widths need no explicit padding.
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:  # scipy raises: "Input matrices must contain >1 unique points"
        return math.nan
    gram_a, gram_b = (a / norm_a) @ (a / norm_a).T, (b / norm_b) @ (b / norm_b).T
    values, vectors = np.linalg.eigh(gram_a)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    s = np.sqrt(np.clip(np.linalg.eigvalsh(root @ gram_b @ root), 0, None)).sum()
    return float(min(max(1.0 - s * s, 0.0), 1.0))


def shared_concepts(counts_a: np.ndarray, counts_b: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Indices of the concepts with at least `min_count` examples in both languages."""
    threshold = max(min_count, 1)
    return np.flatnonzero((np.asarray(counts_a) >= threshold) & (np.asarray(counts_b) >= threshold))


def compare(a: Prototypes, b: Prototypes, min_count: int = 1, metric: str = "euclidean",
            method: str = "spearman") -> Dict[str, float]:
    """RSA and Procrustes disparity of two languages' prototypes over their shared concepts (NaN below 3)."""
    shared = shared_concepts(a[1], b[1], min_count)
    if len(shared) < MIN_SHARED:
        return {"rsa": math.nan, "procrustes": math.nan, "n_concepts": int(len(shared))}
    x, y = a[0][shared], b[0][shared]
    return {"rsa": rsa(x, y, metric, method), "procrustes": procrustes_disparity(x, y), "n_concepts": int(len(shared))}


def pairwise(protos: Dict[str, Prototypes], min_count: int = 1, metric: str = "euclidean",
             method: str = "spearman") -> Dict[str, object]:
    """All pairs of languages, each over its own shared concepts.

    RETURNS (dict): "langs" (the order of rows and columns), "rsa" and "procrustes" (L x L float matrices, symmetric,
        NaN where a pair shares fewer than 3 concepts; the diagonal compares a language with itself: 1 and 0),
        "n_shared" (L x L int).
    """
    langs = list(protos)
    n = len(langs)
    result = {"langs": langs, "rsa": np.full((n, n), np.nan), "procrustes": np.full((n, n), np.nan),
              "n_shared": np.zeros((n, n), np.int64)}
    for i in range(n):
        for j in range(i, n):
            scores = compare(protos[langs[i]], protos[langs[j]], min_count, metric, method)
            for key, name in (("rsa", "rsa"), ("procrustes", "procrustes"), ("n_shared", "n_concepts")):
                result[key][i, j] = result[key][j, i] = scores[name]
    return result


# ---------------------------------------------------------------------------------------------------------------
# The study

def _get_pipe(pipeline):
    if pipeline is None:
        return None
    return pipeline.get_pipe("concept_align") if hasattr(pipeline, "get_pipe") else pipeline


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def alignability_study(encoder_name: Optional[str], langs: Sequence[str], source: Optional[Sequence[str]],
                       layers: Sequence[int], default_layer: Optional[int], output: Union[str, Path],
                       pipeline=None, data_dir: Optional[Path] = None, max_sentences: int = 200,
                       min_count: int = 10, eval_results: Optional[Union[str, Path]] = None,
                       pooling: Optional[str] = None, metric: str = "euclidean", method: str = "spearman",
                       progress: bool = True) -> dict:
    """How alignable the concept spaces of `langs` are, with each other and with the (pooled) source languages.

    encoder_name: a hub name, a model directory or "offline:multilingual-e5-small"; None = the pipeline's encoder.
    langs: language codes ("wo") or treebank codes ("ar_pud") to study (see the module docstring for which file).
    source: languages whose pooled class means are "the source" (None = the pipeline's meta-training sources).
    layers: encoder layers to compare (hidden_states index). default_layer: the layer of the per-language table
        (None = the pipeline's layer, else the middle of `layers`; added to `layers` if missing).
    pipeline: a loaded nlp with a concept_align pipe (or the pipe): adds "after the aligner" numbers, at the pipe's
        own encoder, layer and pooling.
    eval_results: an evaluation results.json ({"rows": [{"treebank", "lang", EVAL_SYSTEM: {"upos", "las", ...}}]}):
        adds correlations between a language's alignability with the source and its zero-shot UPOS / LAS.
    pooling: subword pooling (None = the pipeline's, else "first").
    Writes to `output`: alignability.json, alignability.md, heatmap_rsa_L{layer}.png, heatmap_procrustes_L{layer}.png,
        layer_curve.png and, with eval_results, alignability_vs_accuracy.png (PNGs only if matplotlib is installed).
    RETURNS (dict): what alignability.json holds (matrices as nested lists, NaN as None).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    pipe = _get_pipe(pipeline)
    if pipe is not None:
        encoder_name = encoder_name or pipe.encoder.name
        pooling = pooling or pipe.encoder.pooling
        if default_layer is None:
            default_layer = pipe.encoder.layer
        if source is None:
            source = pipe.cfg.get("meta", {}).get("source")
    if not encoder_name:
        raise ValueError("alignability_study needs an encoder name or a pipeline")
    if not source:
        raise ValueError("alignability_study needs source languages (or a pipeline that names its own)")
    if not langs:
        raise ValueError("alignability_study needs languages to study")
    pooling = pooling or "first"
    # words the tokenizer cannot read: as the pipeline's encoder reads them (without one, the encoder's default)
    unknown_characters = pipe.encoder.unknown_characters if pipe is not None else "transliterate"
    layers = sorted(set(int(layer) for layer in layers))
    if default_layer is None:
        default_layer = layers[len(layers) // 2]
    if default_layer not in layers:
        layers = sorted(layers + [default_layer])
    langs, source = list(dict.fromkeys(langs)), list(dict.fromkeys(source))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)

    target_files = {lang: choose_file(lang, TEST_SPLITS, data_dir) for lang in langs}
    source_files = {lang: choose_file(lang, TRAIN_SPLITS, data_dir) for lang in source}
    # The mean over "targets" leaves out the sources themselves unless nothing else is studied.
    targets = [lang for lang in langs if lang not in source and target_files[lang].lang not in source] or langs

    def features_of(encoder: FrozenEncoder, tb: TreebankFile) -> FeatureSet:
        return extract_features(tb.path, encoder, max_sentences=max_sentences, progress=False)

    per_layer: Dict[int, dict] = {}
    n_sentences: Dict[str, int] = {}
    files = list(target_files.items()) + [(f"source:{k}", v) for k, v in source_files.items()]
    bar = tqdm(total=len(layers) * len(files), desc="alignability", unit="file", disable=not progress)
    for layer in layers:
        encoder = FrozenEncoder(encoder_name, layer, pooling, unknown_characters=unknown_characters)
        feats = {}
        for key, tb in files:
            bar.set_postfix_str(f"L{layer} {tb.path.name}")
            feats[key] = features_of(encoder, tb)
            n_sentences[key] = len(feats[key])
            bar.update(1)
        src = [feats[f"source:{lang}"] for lang in source]
        layer_result = {}
        for task in TASKS:
            protos = {lang: language_prototypes(feats[lang], task, min_count) for lang in langs}
            source_protos = pooled_prototypes(src, task, min_count)
            with_source = {lang: compare(protos[lang], source_protos, min_count, metric, method) for lang in langs}
            layer_result[task] = {
                "pairwise": pairwise(protos, min_count, metric, method),
                "with_source": with_source,
                "mean_rsa": _mean(with_source[lang]["rsa"] for lang in targets),
                "mean_procrustes": _mean(with_source[lang]["procrustes"] for lang in targets),
                "source_concepts": int((source_protos[1] >= max(min_count, 1)).sum()),
            }
        per_layer[layer] = layer_result
    bar.close()

    per_language = {lang: {task: {"before": per_layer[default_layer][task]["with_source"][lang]} for task in TASKS}
                    for lang in langs}
    if pipe is not None:
        same = (pipe.encoder.name, pipe.encoder.layer, pipe.encoder.pooling) == (encoder_name, default_layer, pooling)
        _after_aligner(pipe, per_language, target_files, source_files, max_sentences, min_count, metric, method,
                       before_too=not same, progress=progress)

    result = {
        "encoder": {"name": encoder_name, "pooling": pooling},
        "pipeline_encoder": dict(pipe.cfg["encoder"]) if pipe is not None else None,
        "settings": {"metric": metric, "method": method, "min_count": min_count, "max_sentences": max_sentences,
                     "min_shared_concepts": MIN_SHARED, "target_splits": list(TEST_SPLITS),
                     "source_splits": list(TRAIN_SPLITS)},
        "langs": langs, "source": source, "targets_in_means": targets,
        "layers": layers, "default_layer": default_layer,
        "files": {lang: _file_info(tb, n_sentences[lang], tb.path in {s.path for s in source_files.values()})
                  for lang, tb in target_files.items()},
        "source_files": {lang: _file_info(tb, n_sentences[f"source:{lang}"]) for lang, tb in source_files.items()},
        "layer_curve": {task: {"rsa": [per_layer[layer][task]["mean_rsa"] for layer in layers],
                               "procrustes": [per_layer[layer][task]["mean_procrustes"] for layer in layers]}
                        for task in TASKS},
        "per_layer": {str(layer): {task: _jsonable_task(per_layer[layer][task]) for task in TASKS} for layer in layers},
        "per_language": per_language,
    }
    if eval_results is not None:
        result["correlations"] = correlate_with_accuracy(per_language, target_files,
                                                         json.loads(Path(eval_results).read_text()))
    result["seconds"] = time.perf_counter() - start
    result = _clean(result)
    (output / "alignability.json").write_text(json.dumps(result, indent=2))
    (output / "alignability.md").write_text(markdown_report(result))
    _plots(result, output)
    logger.info("alignability study of %d languages x %d layers in %.1f s -> %s", len(langs), len(layers),
                result["seconds"], output)
    return result


def _file_info(tb: TreebankFile, sentences: int, same_as_source: bool = False) -> dict:
    info = {"treebank": tb.treebank, "split": tb.split, "file": tb.path.name, "sentences_used": sentences}
    if same_as_source:
        info["same_file_as_source"] = True  # the comparison with the source then partly compares a file with itself
    return info


def _after_aligner(pipe, per_language, target_files, source_files, max_sentences, min_count, metric, method,
                   before_too: bool, progress: bool) -> None:
    """Fill per_language[lang][task]["after" / "after_vs_learned_prototypes"] from the pipeline's aligners (and
    "before_pipeline_encoder" when the pipeline's encoder, layer or pooling is not the study's default)."""
    from tqdm import tqdm

    encoder: FrozenEncoder = pipe.encoder
    decoder = pipe.decoder
    src = [extract_features(tb.path, encoder, max_sentences=max_sentences, progress=False)
           for tb in source_files.values()]
    aligners = {"pos": decoder.pos, "rel": decoder.rel}
    with torch.no_grad():
        learned = {task: aligners[task].prototypes().detach().float().cpu().numpy() for task in TASKS}
    valid = {task: aligners[task].valid.cpu().numpy() for task in TASKS}
    source_after = {task: pooled_prototypes(src, task, min_count, aligners[task].phi) for task in TASKS}
    source_before = {task: pooled_prototypes(src, task, min_count) for task in TASKS} if before_too else {}
    # The learned prototypes carry no counts: a valid class counts as "enough examples".
    learned_protos = {task: (learned[task], np.where(valid[task], max(min_count, 1), 0)) for task in TASKS}
    for lang, tb in tqdm(target_files.items(), desc="after the aligner", unit="lang", disable=not progress):
        features = extract_features(tb.path, encoder, max_sentences=max_sentences, progress=False)
        for task in TASKS:
            protos = language_prototypes(features, task, min_count, aligners[task].phi)
            if before_too:
                per_language[lang][task]["before_pipeline_encoder"] = compare(
                    language_prototypes(features, task, min_count), source_before[task], min_count, metric, method)
            per_language[lang][task]["after"] = compare(protos, source_after[task], min_count, metric, method)
            per_language[lang][task]["after_vs_learned_prototypes"] = compare(protos, learned_protos[task], min_count,
                                                                              metric, method)


def _jsonable_task(task_result: dict) -> dict:
    out = dict(task_result)
    out["pairwise"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in task_result["pairwise"].items()}
    return out


def _clean(value):
    """NaN / inf -> None and numpy scalars -> Python, so the JSON is valid."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Alignability vs zero-shot accuracy

def _eval_row(rows: List[dict], lang: str, tb: TreebankFile) -> Optional[dict]:
    """The evaluation row of the file studied for `lang` (same treebank), else the language's largest treebank."""
    for row in rows:
        if row.get("treebank") == tb.treebank:
            return row
    same_lang = [row for row in rows if row.get("lang") in (lang, tb.lang)]
    return max(same_lang, key=lambda row: row.get("words", 0)) if same_lang else None


def correlate_with_accuracy(per_language: dict, target_files: Dict[str, TreebankFile], results: dict,
                            system: str = EVAL_SYSTEM) -> dict:
    """Pearson and Spearman correlations, across languages, between alignability with the source (RSA, Procrustes;
    before and, where computed, after the aligner) and zero-shot accuracy (POS alignability vs UPOS, relation
    alignability vs LAS). NaN with fewer than 3 languages.
    """
    from scipy.stats import pearsonr, spearmanr

    rows = results.get("rows", [])
    points = {}
    for lang, tb in target_files.items():
        row = _eval_row(rows, lang, tb)
        if row is not None and isinstance(row.get(system), dict):
            points[lang] = {"treebank": row.get("treebank"), "upos": row[system].get("upos"),
                            "las": row[system].get("las")}
    out = {"system": system, "languages": points, "pairs": {}}
    for task, metric in (("pos", "upos"), ("rel", "las")):
        for stage in ("before", "after"):
            for measure in ("rsa", "procrustes"):
                xs, ys, names = [], [], []
                for lang, point in points.items():
                    x = per_language[lang][task].get(stage, {}).get(measure)
                    y = point.get(metric)
                    if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                        xs.append(x), ys.append(y), names.append(lang)
                if stage == "after" and not xs:
                    continue
                enough = len(xs) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0
                out["pairs"][f"{task}_{measure}_{stage}_vs_{metric}"] = {
                    "n": len(xs), "langs": names, "x": xs, "y": ys,
                    "pearson": float(pearsonr(xs, ys)[0]) if enough else math.nan,
                    "spearman": float(spearmanr(xs, ys)[0]) if enough else math.nan,
                }
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reports

def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_report(result: dict) -> str:
    """alignability.md: per-language table at the default layer, the layer curve, pairwise means, correlations."""
    layer, settings = result["default_layer"], result["settings"]
    lines = [
        "# Alignability of structural concepts",
        "",
        f"Encoder `{result['encoder']['name']}` (pooling {result['encoder']['pooling']}); source = pooled "
        f"{', '.join(result['source'])}; RSA = {settings['method']} correlation of {settings['metric']} distance "
        f"vectors; Procrustes = scipy disparity (0 = alignable, 1 = not). Concepts need {settings['min_count']} "
        f"examples per language; first {settings['max_sentences']} sentences per file.",
        "",
        f"## With the source, layer {layer}",
        "",
    ]
    has_after = any("after" in v["pos"] for v in result["per_language"].values())
    header = ["language", "treebank", "split", "POS RSA", "POS Procrustes", "#POS", "REL RSA", "REL Procrustes", "#REL"]
    if has_after:
        header += ["POS RSA after", "POS Procr. after", "REL RSA after", "REL Procr. after"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for lang, tasks in result["per_language"].items():
        info = result["files"][lang]
        pos, rel = tasks["pos"]["before"], tasks["rel"]["before"]
        cells = [lang, info["treebank"], info["split"], _fmt(pos["rsa"]), _fmt(pos["procrustes"]),
                 str(pos["n_concepts"]), _fmt(rel["rsa"]), _fmt(rel["procrustes"]), str(rel["n_concepts"])]
        if has_after:
            pa, ra = tasks["pos"].get("after", {}), tasks["rel"].get("after", {})
            cells += [_fmt(pa.get("rsa")), _fmt(pa.get("procrustes")), _fmt(ra.get("rsa")), _fmt(ra.get("procrustes"))]
        lines.append("| " + " | ".join(cells) + " |")
    if has_after:
        lines += ["", "\"After\" = both spaces through the pipeline's SharedProjection (pipeline encoder "
                      f"{result['pipeline_encoder']}); `after_vs_learned_prototypes` in the JSON compares with the "
                      "prototypes the pipeline classifies against."]
    lines += ["", "## Layer curve (mean over " + ", ".join(result["targets_in_means"]) + ")", "",
              "| layer | POS RSA | POS Procrustes | REL RSA | REL Procrustes | POS pairwise RSA | REL pairwise RSA |",
              "|---|---|---|---|---|---|---|"]
    for i, lay in enumerate(result["layers"]):
        curve = result["layer_curve"]
        pair = [_offdiag_mean(result["per_layer"][str(lay)][task]["pairwise"]["rsa"]) for task in TASKS]
        lines.append(f"| {lay} | {_fmt(curve['pos']['rsa'][i])} | {_fmt(curve['pos']['procrustes'][i])} | "
                     f"{_fmt(curve['rel']['rsa'][i])} | {_fmt(curve['rel']['procrustes'][i])} | {_fmt(pair[0])} | "
                     f"{_fmt(pair[1])} |")
    if "correlations" in result:
        corr = result["correlations"]
        lines += ["", f"## Alignability vs zero-shot accuracy ({corr['system']})", "",
                  "| alignability | accuracy | n | Pearson | Spearman |", "|---|---|---|---|---|"]
        for name, pair in corr["pairs"].items():
            x, y = name.rsplit("_vs_", 1)
            lines.append(f"| {x} | {y} | {pair['n']} | {_fmt(pair['pearson'])} | {_fmt(pair['spearman'])} |")
    lines += ["", f"{result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _offdiag_mean(matrix) -> float:
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    if m.size == 0:
        return math.nan
    off = m[~np.eye(len(m), dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else math.nan


def _plots(result: dict, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install 'spacy-concept-align[plots]')")
        return
    for layer in result["layers"]:
        for measure, cmap, limits in (("rsa", "viridis", (None, 1.0)), ("procrustes", "magma_r", (0.0, None))):
            _heatmap(plt, result, layer, measure, cmap, limits, output / f"heatmap_{measure}_L{layer}.png")
    _layer_curve(plt, result, output / "layer_curve.png")
    if "correlations" in result:
        _scatter(plt, result, output / "alignability_vs_accuracy.png")


def _heatmap(plt, result, layer, measure, cmap, limits, path) -> None:
    langs = result["langs"]
    n = len(langs)
    size = max(4.0, 0.42 * n + 2.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), constrained_layout=True)
    for ax, task in zip(axes, TASKS):
        m = np.array([[np.nan if v is None else v for v in row]
                      for row in result["per_layer"][str(layer)][task]["pairwise"][measure]], dtype=float)
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.set_xticks(range(n), langs, rotation=60, ha="right", fontsize=9)
        ax.set_yticks(range(n), langs, fontsize=9)
        ax.set_title(f"{TASK_NAMES[task]}: {'RSA' if measure == 'rsa' else 'Procrustes disparity'}, layer {layer}")
        if n <= 16:
            for i in range(n):
                for j in range(n):
                    if np.isfinite(m[i, j]):
                        r, g, b, _ = image.cmap(image.norm(m[i, j]))
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer_curve(plt, result, path) -> None:
    layers, curve = result["layers"], result["layer_curve"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, measure, label in ((axes[0], "rsa", "RSA with source (higher = more alignable)"),
                               (axes[1], "procrustes", "Procrustes disparity with source (lower = more alignable)")):
        for task, marker in (("pos", "o"), ("rel", "s")):
            values = [np.nan if v is None else v for v in curve[task][measure]]
            ax.plot(layers, values, marker=marker, label=TASK_NAMES[task])
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['encoder']['name']}: mean over {len(result['targets_in_means'])} languages "
                 f"vs source {'+'.join(result['source'])}", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _scatter(plt, result, path) -> None:
    pairs = result["correlations"]["pairs"]
    names = [f"{task}_{measure}_before_vs_{metric}" for task, metric in (("pos", "upos"), ("rel", "las"))
             for measure in ("rsa", "procrustes")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8), constrained_layout=True)
    for ax, name in zip(axes.flat, names):
        pair = pairs.get(name)
        x_label, y_label = name.rsplit("_vs_", 1)
        ax.set_xlabel(x_label.replace("_", " "))
        ax.set_ylabel(f"zero-shot {y_label.upper()}")
        if not pair or not pair["n"]:
            ax.set_title("no data")
            continue
        ax.scatter(pair["x"], pair["y"])
        for x, y, lang in zip(pair["x"], pair["y"], pair["langs"]):
            ax.annotate(lang, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=8)
        ax.set_title(f"Pearson {_fmt(pair['pearson'], 2)}, Spearman {_fmt(pair['spearman'], 2)} (n={pair['n']})",
                     fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
