"""The TiKMiX paper's reported numbers that the checks, the figures and the report cite.

Each is the paper's value, for comparison with this study's own (which are always read from
result files); none is a setting of the workflow. Nothing here imports torch or another
``tikmix`` package.
"""

from __future__ import annotations

#: Parameters of the model of the paper's main experiments (sec. 4, table 1, fig. 4): 1B.
MODEL_PARAMETERS = 1e9

#: Pearson r between directly measured and linearly predicted benefit (appendix D, fig. 13).
ADDITIVITY_PEARSON_R = {"ARC": 0.845, "HellaSwag": 0.848, "TriviaQA": 0.931}
#: Perturbed mixtures that r is reported over, outliers removed (appendix D).
ADDITIVITY_MIXTURES = 254
#: Tokens sampled per perturbed mixture (appendix D): 0.1B.
ADDITIVITY_TOKENS_PER_MIXTURE = 1e8
#: Sampling outliers removed before r was reported (appendix D).
ADDITIVITY_OUTLIERS_REMOVED = 2
#: Bound on the p-value of every reported r (appendix D).
ADDITIVITY_P_BELOW = 0.0001

#: Pearson ρ between total predicted benefit and downstream improvement (fig. 4).
FIGURE4_PEARSON = 0.789
#: Mixtures correlated in fig. 4.
FIGURE4_MIXTURES = 10
#: Tokens each fig. 4 mixture was trained on (fig. 4): 500B.
FIGURE4_TOKENS = 5e11

#: FLOPs spent to determine each method's mixture (table 1, last row).
MIXTURE_FLOPS = {"tikmix_d": 7.2e17, "tikmix_m": 3.2e18, "regmix": 3.7e18, "doremi": 4.2e19}
#: TiKMiX-D's mixture FLOPs over RegMix's (table 1, last row): about 0.19.
TIKMIX_D_TO_REGMIX_FLOPS = MIXTURE_FLOPS["tikmix_d"] / MIXTURE_FLOPS["regmix"]


def billions(count: float) -> str:
    """A count as the paper writes it: ``1e8`` → ``0.1B``, ``5e11`` → ``500B``."""
    return f"{count / 1e9:g}B"
