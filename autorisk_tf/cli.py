"""What the `python -m` command lines share."""

import sys

from absl import flags


def require_flags(*names: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Exits with one clear line when a required flag was not given.

    Args:
        *names: str. Flag names, without the dashes.
        flag_values: FlagValues. Where the flags live. Defaults to absl's global `FLAGS`.
    """
    for name in names:
        if not flag_values[name].value:
            sys.exit(f"error: --{name} is required (see --helpfull)")
