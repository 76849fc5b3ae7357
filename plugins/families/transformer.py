"""Seed 003: a Transformer decoder over the spatial grid, with EOS suppression before 15 words."""

from plugins.registry import Family

TRANSFORMER = Family(
    "transformer",
    defaults=dict(d_model=128, nhead=8, num_layers=2, dim_feedforward=512, dropout=0.1, activation="relu",
                  norm_first=False, embed_dim=0, eos_weight=1.0, eos_min_len=15),
    choices=dict(activation=("relu", "gelu")),
    bounds=dict(d_model="[1, inf)", nhead="[1, inf)", num_layers="[1, inf)", dim_feedforward="[1, inf)",
                dropout="[0, 1)", embed_dim="[0, inf)", eos_weight="[0, inf)", eos_min_len="[0, inf)"),
    reads="spatial",
    test_sizes=dict(d_model=32, nhead=2, num_layers=2, dim_feedforward=64),
)
