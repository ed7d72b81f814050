"""Every strategy, one module or subpackage each: uniform, sensitivity, global (`global_threshold`),
eagleeye, netadapt, optuna (`optuna_search`), amc, metapruning and autoslim, all built on
`base.Strategy` (and `common`'s helpers). Each registers itself with `search.registry`, which
names these modules and imports them on its first lookup; nothing here imports them eagerly."""
