"""Training: models learned offline from data, written into an artifact (shell, not core).

* :mod:`stygig.training.compat` — the torch trainer of the outfit compatibility model.
* :mod:`stygig.training.command` — the ``stygig train-compat`` subcommand around it.

Serving reads what training writes through :mod:`stygig.compat` (NumPy inference only), so the
core never imports this package, torch, or :mod:`stygig.evaluation`, which training borrows its
split and FITB questions from.
"""
