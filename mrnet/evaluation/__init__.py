"""Downstream evaluation (paper §4): ``labels`` (the tasks' labels from catalog columns and rules),
``score`` (LR / RF on fixed folds, MRNet against TF-IDF, LSA, word2vec mean, PG-only, MiniLM),
``probes``, ``report`` (Table 2 and its plot) and ``retrieval`` (chunked exact k-NN, recall@k, MRR)."""
