"""Every strategy, one module or subpackage each: uniform, sensitivity, global, eagleeye, netadapt,
optuna, amc, metapruning, autoslim. Each registers itself with `search.registry`; importing this
package imports them all, in the order `search.registry.list_strategies()` reports them."""

from . import uniform, sensitivity, global_threshold, eagleeye, netadapt, optuna_search  # noqa: F401, I001  (registry order)
from . import amc, metapruning, autoslim  # noqa: F401  (registry order)
