"""Each verb's options are declared once: every default lives in ``api.py``, and the command line takes it from
there (``cli.default``); every verb the CLI calls is in ``import grokscope as gs``."""

from __future__ import annotations

import ast
import inspect

import grokscope
from grokscope import api, cli

# The API verb each command calls.
COMMANDS = {cli.data_build: api.build_data, cli.data_family: api.build_family, cli.data_transfer: api.derive_transfer,
            cli.data_show: api.load_data, cli.data_export: api.export_data, cli.data_import: api.import_data,
            cli.train_cmd: api.train, cli.stack_cmd: api.stack, cli.transfer_cmd: api.transfer,
            cli.analyze_cmd: api.analyze, cli.compare_cmd: api.compare, cli.export_tl_cmd: api.export_tl,
            cli.study_cmd: api.study, cli.sweep_cmd: api.sweep, cli.report_cmd: api.report}
RENAMED = {"overrides": "sets", "study": "path", "files": "calls"}  # the CLI's name -> the API's
CLI_ONLY = {"as_json", "plan_only", "spec_only"}  # how the command prints or what it does instead of the verb


def test_every_command_is_checked_and_its_verb_is_in_the_package():
    callbacks = {c.callback for app in (cli.app, cli.data_app, cli.export_app) for c in app.registered_commands}
    assert callbacks == set(COMMANDS)
    assert {verb.__name__ for verb in COMMANDS.values()} <= set(grokscope.__all__)
    assert all(getattr(grokscope, verb.__name__) is verb for verb in COMMANDS.values())


def test_every_option_has_the_apis_default():
    for command, verb in COMMANDS.items():
        wanted = inspect.signature(verb).parameters
        for name, param in inspect.signature(command).parameters.items():
            if name in CLI_ONLY:
                continue
            key = RENAMED.get(name, name)
            assert key in wanted, f"{command.__name__}: --{name} is not a keyword of api.{verb.__name__}"
            given = param.default.default  # typer's OptionInfo / ArgumentInfo
            if given is not ...:  # a required argument (the API may take a spec instead) has no default to restate
                assert given == wanted[key].default, (command.__name__, name, given, wanted[key].default)


def _restated_defaults(source: str) -> list[str]:
    """Options of the commands whose default is written as a value instead of taken from the API."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not (isinstance(fn, ast.FunctionDef) and fn.name in {c.__name__ for c in COMMANDS}):
            continue
        args = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
        for arg, value in zip(args, fn.args.defaults):
            if arg.arg in CLI_ONLY or not isinstance(value, ast.Call):
                continue
            helper = isinstance(value.func, ast.Name) and value.func.id.endswith("_opt")
            first = value.args[0] if value.args else None
            taken = helper or (isinstance(first, ast.Constant) and first.value is ...) or (
                isinstance(first, ast.Call) and isinstance(first.func, ast.Name) and first.func.id == "default")
            if not taken:
                found.append(f"{fn.name}.{arg.arg}")
    return found


def test_no_command_restates_a_default():
    assert _restated_defaults(inspect.getsource(cli)) == []
    # the check can fail: a default written as a value is found
    restated = inspect.getsource(cli).replace('typer.Option(default(api.train, "model"),', 'typer.Option("gpt",')
    assert _restated_defaults(restated) == ["train_cmd.model"]
