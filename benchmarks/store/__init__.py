"""sessionkit on real redis and memcached: against the raw-client floor and against peer libraries.

``python -m benchmarks.store`` starts its own redis-server and memcached
(``testservers``; stopped at the end, also on an error) and calls every app
in-process, like ``wsgi_bench``. The package, one job per module:

- `harness`: setups, the in-process ASGI driver, interleaved shuffled rounds,
  and a result check after every workload (the final counter; for sessionkit
  and the floors also the ``Set-Cookie`` books), so a setup that stops saving
  or loading cannot look fast.
- `floors`: sessionkit's round trips by hand, with the raw clients built from
  the host and port this benchmark started, in bare apps with a plain id cookie.
- `setups`: every row (bare apps, sessionkit through its WSGI and ASGI
  middleware, floors, the session layer alone, peers with their documented setup).
- `counting`: store traffic per request, counted by the servers around a batch
  of requests (redis ``INFO``, memcached ``stats``); no client is patched.
- `verdicts`: the ratios judged, the tables, the JSON.
- `instructions`: the native and connect redis rows under callgrind,
  instructions per request (``python -m benchmarks.store.instructions``).
- `pairs`: the same rows alone, in adjacent A/B batches of wall time
  (``python -m benchmarks.store.pairs``).

It measures from the outside: sessionkit only through ``SessionManager`` and
its middleware, never through a private name.
"""

__all__: list[str] = []
