"""Files shipped with the package: the demo model's checkpoint (docs/results.md)."""

from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().with_name("demo.pt")
