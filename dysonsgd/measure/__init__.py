"""Measurements on weights and runs (layer 3).

``spectrum`` the eigenvalues of X = W W^T (4.1) and the mean level spacing (4.5); ``observables``
the observables of section 3.2 (losses, G (3.4), alignment (3.5), rates (4.7)); ``gradstats``
the drift K and noise V (4.4) of the eigenvalues and the spacing coefficients (B.7)-(B.9).
"""
