"""Model identity from GGUF metadata, never from the file name.

:func:`read_identity` parses the GGUF header (the layout of llama.cpp's ``gguf-py``, whose
enums it uses) and returns a :class:`~configspec.backends.base.ModelIdentity`:
architecture, quantisation (``general.file_type``), parameter count (sum of tensor
elements), context length, vocabulary size, a tokenizer fingerprint and the sha256.
It reads the header itself rather than through :class:`gguf.GGUFReader`, which builds one
numpy view per vocabulary entry (9 s for Gemma 3's 262k tokens versus 30 ms here).

The tokenizer fingerprint hashes the raw bytes of the tokenizer metadata that decides how
text becomes ids (tokenizer model, pre-tokenizer, tokens, merges, token types). Two files
whose fingerprints match tokenize identically, so one can draft for the other whatever
their quantisation. The model ``family`` is the architecture plus a fingerprint prefix.

Hashing a whole file takes seconds per GB, so :class:`Sha256Cache` remembers digests by
(path, size, mtime) in a JSON file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import re
import struct
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from configspec.backends.base import ModelIdentity
from configspec.errors import ModelFileError
from configspec.store.atomic import atomic_write_json

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

#: Tokenizer metadata keys whose bytes make up the fingerprint (absent keys are skipped).
TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
)

_HASH_BLOCK_BYTES = 4 * 1024 * 1024


def file_type_name(file_type: int) -> str:
    """Short quantisation name of a GGUF ``general.file_type`` (15 → ``Q4_K_M``, 0 → ``F32``)."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"type{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (reads it in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class Sha256Cache:
    """File digests remembered by (resolved path, size, mtime) in a JSON file.

    A changed size or modification time invalidates the entry, so a replaced file is hashed
    again. ``cache_file=None`` keeps the cache in memory only.
    """

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        if self.cache_file is not None and self.cache_file.exists():
            try:
                raw = json.loads(self.cache_file.read_text(encoding="utf-8"))
                if isinstance(raw, dict):
                    self._entries = {k: v for k, v in raw.items() if isinstance(v, dict)}
            except (OSError, ValueError):
                logger.warning("ignoring unreadable hash cache %s", self.cache_file)

    def forget(self, path: Path) -> None:
        """Drop the cached digest of ``path`` so the next :meth:`sha256` reads the file."""
        self._entries.pop(str(Path(path).resolve()), None)

    def sha256(self, path: Path) -> str:
        """Hex sha256 of ``path``, from the cache when its size and mtime are unchanged."""
        path = Path(path).resolve()
        st = path.stat()
        key = str(path)
        entry = self._entries.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        logger.info("hashing %s (%.0f MB)", path, st.st_size / 1e6)
        digest = sha256_file(path)
        self._entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        if self.cache_file is not None:
            try:
                atomic_write_json(self.cache_file, self._entries)
            except OSError as exc:  # a read-only cache dir must not stop identification
                logger.warning("cannot write hash cache %s: %s", self.cache_file, exc)
        return digest


_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_MAX_REASONABLE = 1 << 40


@dataclass
class GGUFHeader:
    """Metadata of a GGUF file: scalar values, array lengths, raw byte spans, tensor table.

    ``values`` holds scalars and strings; arrays are summarised by ``array_lengths`` (their
    element count) and ``spans`` (start, end) byte offsets of every field's value, so a
    fingerprint can hash the exact bytes without decoding 262k token strings.
    """

    version: int
    values: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    tensors: list[tuple[str, int, int, int]] = field(default_factory=list)  # name, n, type, off
    data_offset: int = 0


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > _MAX_REASONABLE or self.pos + n > len(self.buf):
            raise ValueError(f"string of {n} bytes at offset {self.pos} runs past the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        unpack_from, buf, pos = struct.unpack_from, self.buf, self.pos
        for _ in range(count):
            pos += 8 + unpack_from("<Q", buf, pos)[0]
        if pos > len(buf):
            raise ValueError("string array runs past the end of the file")
        self.pos = pos


def _parse_header(buf: mmap.mmap) -> GGUFHeader:
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise ValueError(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
    header = GGUFHeader(version=version)
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("<I")
        start = cur.pos
        if vtype == _STRING:
            header.values[key] = cur.string()
        elif vtype == _ARRAY:
            etype, count = cur.unpack("<I"), cur.unpack("<Q")
            header.array_lengths[key] = count
            if etype == _STRING:
                cur.skip_strings(count)
            elif etype in _SCALAR_FORMATS:
                cur.pos += count * struct.calcsize(_SCALAR_FORMATS[etype])
            else:
                raise ValueError(f"unsupported array element type {etype} for {key}")
        elif vtype in _SCALAR_FORMATS:
            header.values[key] = cur.unpack(_SCALAR_FORMATS[vtype])
        else:
            raise ValueError(f"unknown metadata value type {vtype} for {key}")
        header.spans[key] = (start, cur.pos)
        if cur.pos > len(buf):
            raise ValueError(f"metadata {key} runs past the end of the file")
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= cur.unpack("<Q")
        ttype, offset = cur.unpack("<I"), cur.unpack("<Q")
        header.tensors.append((name, n_elements, ttype, offset))
    align = int(header.values.get("general.alignment", 32)) or 32
    header.data_offset = cur.pos + (-cur.pos % align)
    return header


def _tensor_nbytes(n_elements: int, ttype: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    return n_elements // block * type_size


def read_header(path: Path) -> GGUFHeader:
    """Parse the metadata and tensor table of the GGUF file at ``path``.

    Raises :class:`~configspec.errors.ModelFileError` with one line for a missing file, a
    file that is not GGUF, or a corrupt/truncated one (including tensor data cut short).
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; check the path")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file; give the path of a .gguf file")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from None
    with fh:
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise ModelFileError(
                f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF'); "
                "convert it with llama.cpp's convert_hf_to_gguf.py"
            )
        size = path.stat().st_size
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _parse_header(buf)
            for name, n_elements, ttype, offset in header.tensors:
                end = header.data_offset + offset + _tensor_nbytes(n_elements, ttype)
                if end > size:
                    raise ValueError(
                        f"tensor {name} ends at byte {end} but the file has {size} bytes"
                    )
        except (ValueError, struct.error, KeyError, UnicodeDecodeError) as exc:
            raise ModelFileError(
                f"{path} is a corrupt or truncated GGUF file ({exc}); re-download or re-create it"
            ) from None
    return header


def _span_bytes(path: Path, header: GGUFHeader, keys: tuple[str, ...]) -> list[bytes]:
    out = []
    with path.open("rb") as fh:
        for key in keys:
            if key in header.spans:
                start, end = header.spans[key]
                fh.seek(start)
                out.append(key.encode() + len(key).to_bytes(8, "little") + fh.read(end - start))
    return out


def tokenizer_fingerprint(path: Path, header: GGUFHeader | None = None) -> str:
    """sha256 over the raw bytes of the tokenizer fields in :data:`TOKENIZER_KEYS` (hex)."""
    path = Path(path)
    header = header or read_header(path)
    digest = hashlib.sha256()
    for chunk in _span_bytes(path, header, TOKENIZER_KEYS):
        digest.update(chunk)
    return digest.hexdigest()


def read_identity(
    path: Path,
    *,
    name: str | None = None,
    hash_cache: Sha256Cache | None = None,
    hash_file: bool = True,
) -> ModelIdentity:
    """Identify the GGUF model at ``path`` from its metadata.

    ``name`` overrides the derived name (``<general.name slug>-<quantisation>``);
    ``hash_file=False`` skips the sha256 (``file_sha256`` is then None). Raises
    :class:`~configspec.errors.ModelFileError` for a missing, non-GGUF or corrupt file.
    """
    path = Path(path)
    header = read_header(path)
    arch = header.values.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFileError(f"{path} has no general.architecture in its GGUF metadata")
    vocab_size = header.array_lengths.get("tokenizer.ggml.tokens")
    if vocab_size is None:
        raise ModelFileError(
            f"{path} has no tokenizer (tokenizer.ggml.tokens) in its GGUF metadata; "
            "ConfigSpec needs a model with an embedded tokenizer"
        )
    file_type = header.values.get("general.file_type")
    quant = file_type_name(int(file_type)) if isinstance(file_type, int) else None
    ctx = header.values.get(f"{arch}.context_length")
    params = sum(n for _, n, _, _ in header.tensors) or None
    fingerprint = tokenizer_fingerprint(path, header)
    if name is None:
        base = header.values.get("general.name")
        stem = _slug(base) if isinstance(base, str) and _slug(base) else _slug(path.stem)
        name = f"{stem}-{quant.lower()}" if quant and quant.lower() not in stem else stem
    digest: str | None = None
    if hash_file:
        digest = (hash_cache or Sha256Cache()).sha256(path)
    return ModelIdentity(
        name=name,
        family=f"{arch}-{fingerprint[:12]}",
        architecture=arch,
        quantization=quant,
        parameter_count=params,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        vocab_size=vocab_size,
        tokenizer_fingerprint=fingerprint,
        file_sha256=digest,
        file_size_bytes=path.stat().st_size,
        path=str(path.resolve()),
    )


def identity_to_dict(identity: ModelIdentity) -> dict[str, Any]:
    """A JSON-ready dict of ``identity`` (field names as in the dataclass)."""
    return asdict(identity)


def identity_from_dict(raw: dict[str, Any]) -> ModelIdentity:
    """Inverse of :func:`identity_to_dict`; unknown keys are ignored."""
    known = {f.name for f in fields(ModelIdentity)}
    return ModelIdentity(**{k: v for k, v in raw.items() if k in known})


def is_gguf(path: Path) -> bool:
    """True if ``path`` is a regular file starting with the GGUF magic."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


__all__ = [
    "TOKENIZER_KEYS",
    "GGUFHeader",
    "Sha256Cache",
    "file_type_name",
    "identity_from_dict",
    "identity_to_dict",
    "is_gguf",
    "read_header",
    "read_identity",
    "sha256_file",
    "tokenizer_fingerprint",
]
