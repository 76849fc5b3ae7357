"""Seed 004's recurrent family: an RNN or LSTM started from the pooled image vector, and an LSTM that
attends over the spatial grid."""

from plugins.registry import Family

_SIZES = dict(embed_dim=256, hidden_dim=512, dropout=0.0)
_BOUNDS = dict(embed_dim="[1, inf)", hidden_dim="[1, inf)", dropout="[0, 1)")
_TEST = dict(embed_dim=32, hidden_dim=48)

RECURRENT = Family(
    "recurrent",
    defaults=_SIZES,
    bounds=_BOUNDS,
    per_framework={
        "torch": dict(defaults=dict(masking="packed", lstm_bias="two"),
                      choices=dict(masking=("packed", "none"), lstm_bias=("two", "one"))),
        "keras": dict(defaults=dict(masking="mask"), choices=dict(masking=("mask", "none"))),
    },
    reads="global",
    test_sizes=_TEST,
)

ATTENTION_LSTM = Family(
    "recurrent",
    defaults=_SIZES,
    bounds=_BOUNDS,
    per_framework={"torch": dict(defaults=dict(lstm_bias="two"), choices=dict(lstm_bias=("two", "one")))},
    reads="spatial",
    test_sizes=_TEST,
)
