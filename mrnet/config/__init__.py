"""Typed configuration (frozen pydantic, ``configs/*.yaml`` plus ``--set`` overrides): ``base`` (the
frozen base model and the path-safe name rule), ``evaluation`` (the evaluation section, §4),
``schema`` (every other section and ``load_config``). The bottom layer: it imports nothing of mrnet."""
