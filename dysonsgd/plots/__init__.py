"""Figures (layer 6): Matplotlib ``Figure`` objects, saved as PNG and PDF, no pyplot state.

``figures`` figures 1-9 of the paper from arrays; ``paper`` all of them from a run;
``report`` the report of ``dysonsgd validate``.
"""
