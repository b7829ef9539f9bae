"""What a finished run becomes: ``summary`` (the run table), ``gate`` (the champion/challenger
decision and k-NN stability), ``manifest`` (release manifests, the champion pointer, compare)
and ``neighbors`` (``mrnet neighbors`` on a release)."""
