"""Seed 000's merge family: an image vector and an LSTM text state, fused (add or concat), decoded."""

from plugins.registry import Family

MERGE = Family(
    "merge",
    defaults=dict(units=256, fusion="add", dropout=0.4, dropout_placement="early", hidden_layers=1,
                  init="framework"),
    choices=dict(fusion=("add", "concat"), dropout_placement=("early", "late"), init=("framework", "shared")),
    bounds=dict(units="[1, inf)", dropout="[0, 1)", hidden_layers="[0, inf)"),
    per_framework={
        # PyTorch pads without masking (or packs); Keras masks (mask_zero). PyTorch's LSTM has two biases
        "torch": dict(defaults=dict(masking="none", lstm_bias="two"),
                      choices=dict(masking=("none", "packed"), lstm_bias=("two", "one"))),
        "keras": dict(defaults=dict(masking="mask"), choices=dict(masking=("mask", "none"))),
    },
    reads="global",
    test_sizes=dict(units=32),
)
