"""`show` and `rm` by id for sessions in connect-redis's format (``--codec connect``).

The walks (stats, ls, a search by id hash) are the commands' own, over a
`ConnectInventory`; what differs is reading one document by its id: the key is
``<prefix><raw id>``, the document is read by `documents.parse_document` (the
lifecycle's rule), and what `show` tells is the document's own: its cookie's
``expires`` and ``originalMaxAge`` beside the key's TTL, and each app key.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..record import CorruptRecord
from .commands import NotFound, Pacer, _emit_shown, _entry_json, _find, _shown
from .connect_inventory import ConnectInventory, Found
from .inventory import Inventory
from .targets import Target

__all__ = ["remove_ids", "show"]


def show(args: argparse.Namespace, inventory: Inventory, target: Target) -> int:
    """Print one session; `NotFound` if absent, `CorruptRecord` if the key holds no document a service could load."""
    assert isinstance(inventory, ConnectInventory)  # open_inventory(url, "connect") makes nothing else
    try:
        if target.session_id is not None:
            found = inventory.lookup(target.session_id)
        else:
            entry = _find(inventory, target.id_hash, args.count)
            found = None if entry is None else inventory.lookup_name(entry.name)
    finally:
        inventory.close()
    if found is None:
        raise NotFound(f"no session {target.id_hash} in the store")
    document = _shown(args, target) | _described(found, args.show_ids)
    if args.values and found.document is not None:
        document["values"] = {key: text.decode("utf-8", "replace") for key, text in found.document.members.items()}
    _emit_shown(args, document)
    return 0


def _described(found: Found, show_ids: bool) -> dict[str, Any]:
    if found.kind != "string":
        raise CorruptRecord(f"the key holds a {found.kind}, not a connect-redis document")
    if found.document is None:
        raise CorruptRecord(found.entry.problem)
    cookie = found.document.cookie
    described = _entry_json(found.entry, show_ids)
    del described["created"]  # the format keeps none
    described.update(document_bytes=len(found.document.raw), cookie_expires=cookie.get("expires"),
                     max_age_ms=cookie.get("originalMaxAge"),
                     keys={key: len(text) for key, text in found.document.members.items()})
    return described


def remove_ids(inventory: Inventory, targets: list[Target], pacer: Pacer) -> list[dict[str, Any]]:
    """Delete the documents of the sessions named by id (or cookie value); a key of another type is left alone."""
    assert isinstance(inventory, ConnectInventory)
    results: list[dict[str, Any]] = []
    for target in targets:
        if target.session_id is None:
            continue
        pacer.wait()
        outcome = inventory.remove_name(target.session_id)
        result: dict[str, Any] = {"id_hash": target.id_hash, "removed": outcome == 1}
        if outcome < 0:
            result["note"] = "not a session document (another type): left alone"
        results.append(result)
    return results
