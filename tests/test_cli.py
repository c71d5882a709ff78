"""What the command lines share: a missing required flag is one clear line."""

import pytest
from absl import flags

from autorisk_tf.cli import require_flags


def test_a_missing_required_flag_names_itself():
    values = flags.FlagValues()
    flags.DEFINE_string("given", None, "A flag given.", flag_values=values)
    flags.DEFINE_string("missing", None, "A flag not given.", flag_values=values)
    values(["prog", "--given", "x"])
    require_flags("given", flag_values=values)
    with pytest.raises(SystemExit, match=r"^error: --missing is required \(see --helpfull\)$"):
        require_flags("given", "missing", flag_values=values)
