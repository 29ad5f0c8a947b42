"""The fused engine of :func:`dysonsgd.sde.integrate`: compiled blocks of steps over paths.

    plan.py      what it runs: the solver's FusedScheme, the equation's KnotCoefficients
    driver.py    integrate_fused: blocks of steps, chunks of paths on threads
    step.py      the compiled step, Brownian-bridge refinement, a path's block of steps
    lanes.py     Dyson Brownian motion's explicit step on L paths per SIMD vector
    philox.py    counter-based normals (Philox4x32-10, 256-layer ziggurat)
    implicit.py  the Coulomb sum and the implicit Coulomb step, shared with the general engine
    complete.py  the complete eigenvalue SDE (EigenvalueSDE): its moments on knots and driver;
                 complete_lanes.py (L paths per vector), complete_step.py (one path)
"""
