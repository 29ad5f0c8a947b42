"""What a run means (layer 5): phases, SDE predictions, validation.

``phase`` phase labels, converged fractions (4.15) and guidance; ``predict`` K, V along a run and
the per-model predictions of (4.3) and (4.8); ``spec`` the typed targets of a validation;
``validation`` the checks of ``dysonsgd validate`` and their typed ``Outcome``;
``kramers_moyal`` the one-step Kramers-Moyal check of the eigenvalue SDE (one-step increments,
tests, power rule).
"""
