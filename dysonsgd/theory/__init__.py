"""Closed forms and symbolic derivations (layer 1): nothing here reads a run.

``rmt`` the Marchenko-Pastur law (4.2), the Wigner surmise, (4.14), (B.7)-(B.9); ``disorder``
the loss as a disordered Hamiltonian (2.6)-(2.22); ``symbolic`` the same derivations in sympy;
``boundaries`` the symmetry-breaking line (section 2.3) and the signal-to-noise line (4.15);
``tables`` the numbers that ``dysonsgd theory`` prints.
"""
