"""The kopf wiring: the operator turns off kopf's diff base, which is safe only while every
handler it registers is a raw-event handler."""

from __future__ import annotations

import inspect
import json

import kopf
import kubeforge_operator.main as wiring
from kubeforge_operator import fastjson


def test_only_raw_event_handlers_so_no_diff_base_is_needed() -> None:
    registry = kopf.get_default_registry()
    assert list(registry._watching.get_all_handlers())  # the handlers are registered
    assert not list(registry._changing.get_all_handlers())  # create/update/delete handlers would need a diff
    assert not list(registry._spawning.get_all_handlers())


def test_no_diff_base_copies_nothing() -> None:
    storage = wiring.NoDiffBase()
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"nodes": 2}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None


def test_kopf_decodes_watch_events_with_the_fast_parser() -> None:
    from kopf._cogs.clients import api

    assert "json.loads(" in inspect.getsource(api.stream)  # kopf still decodes through its module's `json`
    wiring.use_fast_json()
    wiring.use_fast_json()  # idempotent
    decoder = vars(api)["json"]  # the `json` kopf's API client module calls
    assert decoder.loads is fastjson.loads
    assert decoder.dumps is json.dumps  # the rest of the module's `json` is still there
    line = '{"type":"ADDED","object":{"metadata":{"resourceVersion":"12"},"spec":{"n":1.5,"l":[1,null,true]}}}'
    assert decoder.loads(line) == json.loads(line)
