#!/usr/bin/env python3
"""A provider error on demand, for the real terraform in the script tests.

tf_mirror.py gives the resources a test names a local-exec provisioner that
runs `python fault.py "<address>.create"` (or ".destroy"; an instance of a
for_each resource runs "<address>[<key>].create"). While
.faults/<address>[<key>].<create|destroy>, else .faults/<address>.<create|destroy>
(next to this file, in the mirror) says {"times": N, "message": "..."} with
N > 0, this prints the message the way the google provider reports an API
error, counts N down and fails, so terraform fails that resource (instance)
and exits 1 as it does on a real API error. Otherwise it succeeds and
terraform goes on.

It stands in for Google's APIs (which nothing here can reach), not for
Terraform: what terraform does with the failure is terraform's own.
"""

import json
import re
import sys
from pathlib import Path

name = sys.argv[-1]
faults = Path(__file__).resolve().parent / ".faults"
fault = faults / name
if not fault.exists():
    fault = faults / re.sub(r"\[[^\]]*\](?=\.(create|destroy)$)", "", name)  # the whole resource
if not fault.exists():
    sys.exit(0)
spec = json.loads(fault.read_text())
if spec.get("times", 0) <= 0:
    sys.exit(0)
spec["times"] -= 1
spec["fired"] = spec.get("fired", 0) + 1
fault.write_text(json.dumps(spec))
print(spec["message"], file=sys.stderr)
sys.exit(1)
