"""Telling clients at once that their session ended: WebSocket and Server-Sent Events (ASGI), polling (WSGI).

`InvalidationHub` listens to the store's invalidations in one task per process
and wakes the connections of the sessions they name; `PushEndpoint` is the
ASGI app a service mounts; `StatusEndpoint` the WSGI one for polling;
``client.js`` (served by both at ``…/client.js``) the browser side.
"""

from .asgi import CLOSE_FORBIDDEN_ORIGIN as CLOSE_FORBIDDEN_ORIGIN
from .asgi import CLOSE_SESSION_ENDED as CLOSE_SESSION_ENDED
from .asgi import PushEndpoint as PushEndpoint
from .hub import InvalidationHub as InvalidationHub
from .wsgi import StatusEndpoint as StatusEndpoint

__all__ = ["CLOSE_FORBIDDEN_ORIGIN", "CLOSE_SESSION_ENDED", "InvalidationHub", "PushEndpoint", "StatusEndpoint"]
