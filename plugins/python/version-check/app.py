"""`version-check`, a Medic check written in Python: asks a service which version it runs and
passes when that is one of the expected versions. Built with componentize-py against the same
WIT contract as the Rust plugins (`wit/plugin.wit`)."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http, log, types


def text_param(params, name, default=None):
    for key, value in params:
        if key == name:
            if isinstance(value, types.Value_Text):
                return value.value
            raise Err(types.PluginError_InvalidParams(f"parameter `{name}` must be text"))
    if default is None:
        raise Err(types.PluginError_InvalidParams(f"parameter `{name}` is required"))
    return default


class Plugin(exports.Plugin):
    def get_manifest(self) -> types.Manifest:
        return types.Manifest(
            name="version-check",
            version="0.1.0",
            description="Checks that a service runs one of the expected versions (written in Python)",
            kind=types.PluginKind.CHECK,
            params=[
                types.ParamSpec("url", types.ValueType.TEXT, True, None,
                                "Where to GET the version (plain text, or JSON with a `version` field)", False),
                types.ParamSpec("expect", types.ValueType.TEXT, True, None,
                                "The accepted versions, comma-separated", False),
            ],
            capabilities=["http", "log"],
            supports_revert=False,
            supports_dry_run=True,
        )

    def run(self, context: types.Context, params) -> types.Outcome:
        url = text_param(params, "url")
        accepted = [v.strip() for v in text_param(params, "expect").split(",") if v.strip()]
        try:
            response = http.send(http.Request("GET", url, [], None, None))
        except Err as e:
            if isinstance(e.value, (http.HttpError_Connection, http.HttpError_Timeout)):
                return types.Outcome(types.Status.FAILURE, f"{url}: {e.value.value}", [], [])
            raise Err(types.PluginError_Denied(f"{url}: {e.value.value}"))
        body = response.body.decode("utf-8", "replace").strip()
        if response.status != 200:
            return types.Outcome(types.Status.FAILURE, f"{url} answered {response.status}", [], [])
        try:
            version = str(json.loads(body)["version"])
        except (ValueError, KeyError, TypeError):
            version = body
        log.log(log.Level.INFO, "version read", [("url", url), ("version", version)])
        outputs = [("version", types.Value_Text(version))]
        if version in accepted:
            return types.Outcome(types.Status.SUCCESS, f"{url} runs {version}", outputs, [])
        return types.Outcome(
            types.Status.FAILURE,
            f"{url} runs {version}, expected {' or '.join(accepted)}",
            outputs,
            [],
        )

    def revert(self, context, params, outputs) -> types.Outcome:
        raise Err(types.PluginError_Permanent("a check has nothing to revert"))
