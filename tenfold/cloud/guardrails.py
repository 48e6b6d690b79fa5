"""The guardrails an instance enforces on itself through tenfold's agent: --max-hours, --idle-stop and --max-cost,
kept as tags on the instance so that every later `up`, `start` and resume applies the same ones."""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from tenfold.argtypes import duration_text

IDLE_STOP = 3600  # seconds: the default idle stop, so a forgotten instance stops billing compute after an hour
GUARD_TAGS = {"max_hours": "tenfold:max-hours", "idle_stop": "tenfold:idle-stop",  # the guardrails, on AWS
              "max_cost": "tenfold:max-cost"}
PRICE_TAG = "tenfold:usd-per-h"  # what the instance costs an hour running (compute, gp3, IPv4), as launched


@dataclass
class Guardrails:
    """What the agent on the instance enforces, with the laptop closed. They live on the instance as tags (set
    at launch; changed only by `up --change-guardrails`), so every later `up`, `start` and resume applies the
    same ones, and --max-hours counts from the instance's start, not from whenever tenfold last connected."""
    max_hours: float | None = None       # hours since the instance started, then stop; None: no limit
    idle_stop: float | None = IDLE_STOP  # seconds with no job, ssh session or notebook in use, then stop; None: off
    max_cost: float | None = None        # USD the instance may cost since its launch (at its launch price); None

    @classmethod
    def of(cls, instance: dict) -> "Guardrails":
        """The guardrails an instance was given (tags); an instance without them gets the defaults."""
        found = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        values = {}
        for field, key in GUARD_TAGS.items():
            if key in found:
                values[field] = None if found[key] in ("none", "off") else float(found[key])
        return cls(**values)

    def merged(self, asked: dict) -> "Guardrails":
        """These guardrails with the flags given on top (0: off)."""
        return Guardrails(**{f: (v or None) if f in asked else getattr(self, f)
                             for f, v in {**vars(self), **asked}.items()})

    def tags(self) -> list[dict]:
        return [{"Key": GUARD_TAGS["max_hours"], "Value": "none" if self.max_hours is None else f"{self.max_hours:g}"},
                {"Key": GUARD_TAGS["idle_stop"], "Value": "off" if self.idle_stop is None else f"{self.idle_stop:g}"},
                {"Key": GUARD_TAGS["max_cost"], "Value": "none" if self.max_cost is None else f"{self.max_cost:.6g}"}]

    def describe(self) -> str:
        cost = "" if self.max_cost is None else f", --max-cost ${self.max_cost:.2f}"
        return (f"--max-hours {'off' if self.max_hours is None else f'{self.max_hours:g}'}, "
                f"--idle-stop {'off' if self.idle_stop is None else duration_text(self.idle_stop)}{cost}")

    def settings(self, spot: bool, running_since: float | None = None, usd_per_h: float | None = None,
                 spent_before: float = 0.0) -> dict:
        """The agent's agent.json; `running_since`: when the instance started (epoch seconds), the start of
        --max-hours; `usd_per_h`: its hourly cost as launched and `spent_before`: USD of its earlier starts, which
        with the time since `running_since` give what --max-cost is compared with."""
        return {"max_hours": self.max_hours, "idle_stop": self.idle_stop, "max_cost": self.max_cost,
                "usd_per_h": usd_per_h, "spent_before": spent_before, "spot": spot, "auto_resume": True,
                "boot_hook": True, "running_since": running_since,
                "stop": ["sudo", "-n", "shutdown", "-h", "now"]}  # an OS shutdown stops it


def launch_time(instance: dict) -> datetime.datetime:
    launched = instance["LaunchTime"]
    return datetime.datetime.fromisoformat(launched.replace("Z", "+00:00")) if isinstance(launched, str) else launched


def launch_price(instance: dict) -> float | None:
    """$/h running, as recorded at launch (PRICE_TAG); None for an instance launched before tenfold kept it."""
    found = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    try:
        return float(found[PRICE_TAG])
    except (KeyError, ValueError):
        return None


def agent_settings(instance: dict, rails: Guardrails, usd_per_h: float | None = None,
                   spent_before: float = 0.0) -> dict:
    settings = rails.settings(instance.get("InstanceLifecycle") == "spot", launch_time(instance).timestamp(),
                              usd_per_h, spent_before)
    return {**settings, "instance_type": instance["InstanceType"]}  # for the job: `tenfold bench` records under it
