"""helmrelease-operator: a maintained successor to the Flux v1 Helm Operator and its image automation.

Layers, outer to inner (enforced by import-linter): ``cli`` > ``handlers`` > ``reconcile`` / ``automation`` >
``adapters`` (helm, kube, registry, git) > pure models (``api``, ``images``).
"""

__version__ = "0.1.0"
