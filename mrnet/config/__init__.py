"""Typed configuration (frozen pydantic, ``configs/*.yaml`` plus ``--set`` overrides): ``base`` (the
frozen base model and the path-safe name rule), ``training`` (tasks, data, word vectors, model, training,
refresh, embedding: §3, §3.1, §6), ``autoencoders`` (§3.2, §5), ``evaluation`` (§4), ``retention``, and
``schema`` (the whole ``Config``, tracking and gate sections, and ``load_config``). The bottom layer: it imports
nothing of mrnet outside it."""
