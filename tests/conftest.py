import sys
from pathlib import Path

# Test helper modules (e.g. tests/e2e/light_models.py) are imported by name.
for sub in ("e2e", "fuzz"):
    sys.path.insert(0, str(Path(__file__).parent / sub))
