"""Where things live on disk: the cache (built encoder, feature cache) and the UD data directory."""
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

CACHE_ENV = "SPACY_CONCEPT_ALIGN_CACHE"
UD_ENV = "SPACY_CONCEPT_ALIGN_UD"


def cache_dir() -> Path:
    """The user cache ($SPACY_CONCEPT_ALIGN_CACHE, else $XDG_CACHE_HOME or ~/.cache, /spacy-concept-align)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "spacy-concept-align"


def ud_dir(path: Optional[Path] = None) -> Path:
    """The UD treebanks: an explicit path, else $SPACY_CONCEPT_ALIGN_UD, else ../shared/ud beside the checkout.

    Treebanks are never copied into the project; this is the one place that decides where they are read from.
    """
    candidates = [path, os.environ.get(UD_ENV)]
    candidates += [Path.cwd() / ".." / "shared" / "ud", Path(__file__).resolve().parents[2] / "shared" / "ud"]
    for candidate in candidates:
        if candidate and _is_ud_dir(Path(candidate)):
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"No UD data directory found. Pass one explicitly or set ${UD_ENV} to a folder holding UD_* treebank "
        "folders (see the README, 'Data')."
    )


def _is_ud_dir(path: Path) -> bool:
    return (path / "MANIFEST.tsv").exists() or (path.is_dir() and any(path.glob("UD_*/*.conllu")))


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target` to write into; it becomes `target` only if the block succeeds.

    A failure part-way leaves no half-written folder (and any previous `target` untouched).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: Union[str, Path], chunks: Iterable[bytes]) -> None:
    """Write chunks as they come into a temporary file beside `path`, renamed into place once complete: a failure
    part-way (in the writing or in whatever produces the chunks) leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
