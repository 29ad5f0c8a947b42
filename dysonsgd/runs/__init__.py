"""Configs, stores and sweeps (layer 6): where runs come from and where they are kept.

``config`` the sweep TOML schema and the bundled configs; ``validation_config`` the
``[expect]`` and ``[validate]`` tables, typed and parsed once; ``store`` run files and Zarr sweep
stores; ``sweep`` resumable sweeps; ``cluster`` dask; ``provenance``; ``validate`` a validation
config to its outcome in one call.
"""
