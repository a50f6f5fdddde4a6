"""Expression models ready to use: the registry of shipped models (records and weights in this
folder), checkpoint files, and :func:`~keyfer.models.registry.create_model`, the one loader of
both, whose models describe themselves (:class:`~keyfer.models.info.ModelInfo`)."""
