"""Training: methods as declared stages, the loop that runs them, its state.

``methods`` declares each method's recipe; ``stages`` builds what a stage
does; ``train`` runs the stages with checkpoints (``checkpointing``) over
devices and hosts (``parallel``), logging through ``logging_utils``.
"""
