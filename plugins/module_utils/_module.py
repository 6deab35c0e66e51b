# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every hvops.kvm module does around the library: give it a command
runner, turn its errors into fail_json, pass its warnings on."""

from ansible_collections.hvops.kvm.plugins.module_utils._errors import KvmError


def runner(module):
    """run(argv) -> (rc, stdout, stderr) through module.run_command: never a
    shell, and every word passed as given (no ~ or $VAR expansion)."""
    def run(argv):
        return module.run_command(argv, expand_user_and_vars=False)
    return run


def call_library(module, func, *args, **kwargs):
    """func's result; a KvmError becomes fail_json with its message and details."""
    try:
        return func(*args, **kwargs)
    except KvmError as err:
        failure = err
    # Outside the except block: ansible-core would otherwise report the
    # message as an exception with a traceback.
    module.fail_json(msg=str(failure), **failure.details)
    return None


def exit_with(module, result, diff=None):
    """exit_json with result, its 'warnings' list sent through module.warn;
    ``diff`` (before/after) goes in only under --diff."""
    if diff is not None and module._diff:
        result['diff'] = diff
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)
