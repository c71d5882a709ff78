"""Every command shown in README.md and docs/ runs with --help and knows every flag it shows."""

import glob
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# `python -m module [subcommand] ...` or `python benchmarks/script.py ...` inside a ```bash
# block; a subcommand (`autorisk_tf.search build`) is checked against its own --help.
COMMAND = re.compile(r"python\S* (?:-m ([\w.]+(?: [a-z]+(?= |$))?)|(benchmarks/\w+\.py))(.*)")


def shown_commands() -> dict[str, set[str]]:
    """`{module or script: flags shown with it}` over every page's bash blocks."""
    found = {}
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = COMMAND.search(line)
                if match:
                    target = match.group(1) or match.group(2)
                    flags = re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)",
                                       match.group(3).split("#")[0])
                    found.setdefault(target, set()).update(flags)
    return found


def _help(target: str) -> tuple[int, str]:
    command = [sys.executable, "-m", *target.split()] if not target.endswith(".py") else [
        sys.executable, os.path.join(ROOT, target)]
    done = subprocess.run(command + ["--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return done.returncode, done.stdout + done.stderr


def _beam_options() -> set[str]:
    """Names of every option Beam's PipelineOptions knows (the Beam jobs pass them on)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return set(PipelineOptions([]).get_all_options())


def test_the_pages_show_the_main_commands():
    shown = shown_commands()
    for target in ("beam.preprocess", "beam.features", "autorisk_tf.train",
                   "autorisk_tf.embed", "autorisk_tf.evaluate", "export.savedmodel",
                   "export.serve", "beam.embed", "autorisk_tf.datasets.physionet2012"):
        assert target in shown, f"no page shows {target}"


@pytest.mark.slow
def test_every_shown_command_parses_its_flags():
    shown = shown_commands()
    with ThreadPoolExecutor(2) as pool:
        helps = dict(zip(shown, pool.map(_help, shown), strict=True))
    beam_options = _beam_options()
    stale = []
    for target, (code, text) in helps.items():
        # absl's --help (the `autorisk_tf` scripts) lists the flags and exits 1.
        assert code == 0 or (code == 1 and "\nflags:" in text), \
            f"{target} --help exited {code}: {text[-500:]}"
        for flag in shown[target]:
            name = flag.removeprefix("no") if f"--{flag}" not in text else flag
            known = f"--{name}" in text or f"--[no]{name}" in text
            if not known and target.startswith("beam.") and name in beam_options:
                known = True  # passed through to Beam's PipelineOptions
            if not known:
                stale.append(f"{target} --{flag}")
    assert not stale, f"flags shown in the docs that the command does not know: {stale}"
