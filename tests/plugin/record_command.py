"""A command handler for tests: appends its ETL_* variables and stdin to $RECORD_DIR/<n>.json.
Exits with $RECORD_EXIT (default 0), saying why on stderr when that is not 0."""

import json
import os
import sys
from pathlib import Path

record_dir = Path(os.environ["RECORD_DIR"])
record_dir.mkdir(exist_ok=True)
call = {
    "env": {k: v for k, v in os.environ.items() if k.startswith("ETL_")},
    "stdin": json.loads(sys.stdin.read()),
}
(record_dir / f"{len(list(record_dir.iterdir()))}.json").write_text(json.dumps(call))
status = int(os.environ.get("RECORD_EXIT", "0"))
if status:
    print("the relay did not answer", file=sys.stderr)
print(f"relay set for {call['env']['ETL_SITE_ID']}")
sys.exit(status)
