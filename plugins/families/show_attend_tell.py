"""Seeds 001/002: Show, Attend and Tell (additive attention over the grid, a gate, the doubly stochastic
regulariser alpha_c)."""

from plugins.registry import Family

SHOW_ATTEND_TELL = Family(
    "show_attend_tell",
    defaults=dict(embed_dim=512, attention_dim=512, decoder_dim=512, dropout=0.5, alpha_c=1.0, remat=False),
    bounds=dict(embed_dim="[1, inf)", attention_dim="[1, inf)", decoder_dim="[1, inf)", dropout="[0, 1)",
                alpha_c="[0, inf)"),
    per_framework={"torch": dict(defaults=dict(lstm_bias="two"), choices=dict(lstm_bias=("two", "one")))},
    reads="spatial",
    test_sizes=dict(embed_dim=32, attention_dim=24, decoder_dim=48),
)
