"""storage (atomic writes), corpus streaming and word2vec (non-pickle vectors, <unk> fallback)."""

import numpy as np
import pytest

from mrnet.data.text import PAD, UNK
from mrnet.data.word2vec import load_vectors
from mrnet.io import storage


def test_atomic_write_publishes_only_complete_files(tmp_path):
    target = tmp_path / "a" / "out.bin"
    with pytest.raises(RuntimeError):
        with storage.atomic_path(str(target)) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(target.parent.iterdir()) == []
    storage.write_text(str(target), "done")
    assert target.read_text() == "done" and storage.exists(str(target))
    assert storage.join("s3://bucket/prefix/", "/models", "pg") == "s3://bucket/prefix/models/pg"


def test_local_path_of_a_missing_artifact_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        storage.local_path(str(tmp_path / "nope.parquet"))


def test_corpus_is_tokenized_lines_and_vectors_are_word2vec_binary(tiny_artifacts):
    cfg, catalog_uri, vectors_uri = tiny_artifacts
    corpus = storage.local_path(storage.join(cfg.artifact_root, "corpus", "corpus.txt")).read_text()
    lines = corpus.splitlines()
    assert lines and all(line == line.lower() and "  " not in line for line in lines)
    header = storage.read_bytes(vectors_uri).split(b"\n", 1)[0].split()
    assert int(header[1]) == 128  # "<vocab> <dim>": word2vec binary header, no pickle
    assert not storage.read_bytes(vectors_uri).startswith(b"\x80")  # not a pickle stream
    words, matrix = load_vectors(vectors_uri)
    assert words[:2] == [PAD, UNK] and matrix.shape == (len(words), 128)
    assert np.all(matrix[0] == 0) and np.allclose(matrix[1], matrix[2:].mean(axis=0), atol=1e-6)
