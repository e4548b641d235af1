"""Files shipped with the package: the demo model's checkpoint (see README, "The demo model")."""

from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().with_name("demo.pt")
