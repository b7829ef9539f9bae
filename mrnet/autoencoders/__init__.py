"""The autoencoders on top of the PG models: ``sparse`` (one PG-agnostic space, paper §3.2),
``locales`` and ``crosslingual`` (the cross-language autoencoder that joins two locales, §5)."""
