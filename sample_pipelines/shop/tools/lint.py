"""A stand-in linter: long lines and trailing whitespace, with FILE:LINE positions."""

import sys
from pathlib import Path

problems = 0
for root in sys.argv[1:]:
    for path in sorted(Path(root).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if len(line) > 100 or line != line.rstrip():
                print(f"{path}:{number}: line too long or trailing whitespace")
                problems += 1
print(f"lint: {problems} problem(s)")
sys.exit(1 if problems else 0)
