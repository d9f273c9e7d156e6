"""Data mixtures from a benefit matrix or from measured runs.

* :mod:`~tikmix.mixing.priors` — natural / uniform / file priors (one grammar, ``build_prior``);
* :mod:`~tikmix.mixing.tikmix_d` — TiKMiX-D (paper eq. 7, a conic program solved by Clarabel);
* :mod:`~tikmix.mixing.candidates` — Latin-hypercube and perturbed candidate mixtures;
* :mod:`~tikmix.mixing.surrogate`, :mod:`~tikmix.mixing.search` — TiKMiX-M (LightGBM
  surrogate, Algorithm 1);
* :mod:`~tikmix.mixing.pareto` — projection onto the box ∩ Pareto set;
* :mod:`~tikmix.mixing.stages` — the mixture rules' functions;
* :mod:`~tikmix.mixing.documents` — every mixture document (the workflow's methods, the prior,
  RegMix, DoReMi, the command line), in :mod:`tikmix.core.mixture`'s format (the only reader
  and writer of mixtures);
* :mod:`~tikmix.mixing.responses` — measured response tables (``benefit:<task>`` columns);
* :mod:`~tikmix.mixing.weights` — validation of benefit matrices and run tables;
* :mod:`~tikmix.mixing.regmix`, :mod:`~tikmix.mixing.doremi` — the RegMix and DoReMi baselines'
  arithmetic (mixture generator, regression over a run table; weight update, averaging). Their
  proxy models are trained in :mod:`tikmix.models.proxies`.

Pure numpy / scipy / lightgbm: nothing here imports torch.
"""
