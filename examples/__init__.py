"""Runnable deployments of sessionkit: services that use the library the way an application would.

Nothing here is installed with sessionkit (the wheel holds the ``sessionkit``
package only); run these from a checkout, e.g. ``python -m examples.demo``.
"""

__all__: list[str] = []
