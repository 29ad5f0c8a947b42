"""The bundled validation and sweep configs, installed as the data package ``dysonsgd.configs``.

Read them with ``importlib.resources.files("dysonsgd.configs")`` (see
:func:`dysonsgd.runs.config.bundled_config`); this file only makes the folder a package.
"""
