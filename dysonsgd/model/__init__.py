"""The teacher-student network once: its configuration (config), the activation registry
(activations), the forward pass and per-sample gradients (network) and the random draws of a
replica (draws)."""
