"""Stream the word2vec corpus to disk (paper §3: titles and descriptions).

One document per line, tokens separated by single spaces (gensim's LineSentence
format, which ``corpus_file`` mode reads with all cores). The catalog is read in
record batches, so the corpus is never held in memory.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from mrnet.data.text import tokenize
from mrnet.io import storage
from mrnet.io.progress import bar as progress_bar


def build_corpus(catalog_uri: str, out_uri: str, batch_rows: int = 50_000,
                 progress: bool = True) -> tuple[str, dict]:
    """Write the tokenized titles + descriptions of a clean catalog; return (uri, stats)."""
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    columns = [c for c in ("title", "description") if c in parquet.schema_arrow.names]
    docs = tokens = 0
    with storage.atomic_path(out_uri, suffix=".txt") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        bar = progress_bar(total=parquet.metadata.num_rows, desc="corpus", unit="row", progress=progress)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for column in batch.columns:
                for text in column.to_pylist():
                    words = tokenize(text)
                    if words:
                        fh.write(" ".join(words) + "\n")
                        docs += 1
                        tokens += len(words)
            bar.update(batch.num_rows)
        bar.close()
    return out_uri, {"documents": docs, "tokens": tokens}
