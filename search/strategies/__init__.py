"""The built-in strategies (uniform, sensitivity, global, eagleeye, netadapt, optuna); look
them up by name through `search.registry`."""
