"""``python -m kalshiflow.train``: train a PPO policy (the loop lives in kalshiflow/rl/train.py)."""

from __future__ import annotations

import sys

from kalshiflow.rl.train import main

if __name__ == "__main__":
    sys.exit(main())
