"""Write tiny (kilobyte) GGUF files with the ``gguf`` package, for metadata tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    file_type: int = 15,
    tokens: list[str] | None = None,
    name: str | None = "Tiny Test",
    n_embd: int = 8,
) -> Path:
    """A GGUF with a 4-token BPE tokenizer and one F32 tensor; returns ``path``."""
    tokens = tokens or ["<s>", "</s>", "a", "b"]
    w = gguf.GGUFWriter(str(path), arch)
    if name is not None:
        w.add_name(name)
    w.add_file_type(file_type)
    w.add_context_length(128)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["a b"])
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), n_embd), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
