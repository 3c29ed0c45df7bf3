"""Stage 5, expose: what people and Prometheus read, rendered from the latest Snapshot only.

One collector per concern (``env_metrics``, ``record_metrics``, ``cache_metrics``,
``root_metrics``, ``self_metrics``; ``families`` is their common helper), ``exposition`` (the text
rendered once per change), ``server`` (the HTTP front), ``report`` (the terminal table).
"""
