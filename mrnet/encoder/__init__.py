"""One MRNet per product group (paper §3, §3.1, §6): ``model`` (the BiLSTM and its heads, the one
model file), ``targets`` (task specs → targets and normalizers), ``train`` (alternating optimization,
checkpoints), ``stopping`` (early stopping, task retirement), ``refresh`` (warm start on refreshed
dynamic labels) and ``embed`` (shards, cold start)."""
