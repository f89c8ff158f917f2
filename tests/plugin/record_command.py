"""A command handler for tests: writes its ETL_* variables and stdin to a file of its own in
$RECORD_DIR (named by its process id: commands run at once must not share one). Exits with
$RECORD_EXIT (default 0), saying why on stderr when that is not 0."""

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
(record_dir / f"{os.getpid()}.json").write_text(json.dumps(call))
status = int(os.environ.get("RECORD_EXIT", "0"))
if status:
    print("the relay did not answer", file=sys.stderr)
print(f"relay set for {call['env']['ETL_SITE_ID']}")
sys.exit(status)
