"""Models from elsewhere: diffusers, EDM / k-diffusion and flow-matching networks as probdiff models.

Each integration is a module imported on its own (``from probdiff.integrations import diffusers``), and
imports its optional dependency only when it needs it; this package imports none of them.
"""

__all__ = []
