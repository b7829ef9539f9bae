"""From a catalog file to word vectors (paper §3): ``catalog`` (read, map columns, validate,
quarantine), ``demo`` (the demo catalog from the public files), ``pgs`` (the PG list), ``sample``
(stable hash samples), ``text`` (normalizer, vocab), ``corpus``, ``word2vec`` and ``starter``
(``mrnet init``)."""
