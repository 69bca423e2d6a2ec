"""The launch plan: what the launcher resolves once, before any server code runs.

The settings are read once, the profile chosen, and what every worker shares is
prepared: the Prometheus multiprocess directory and the drain flag file. The result
is one frozen `LaunchPlan` whose settings carry every resolved value (`server`,
`metrics_dir`, `drain_file`); the server and its workers run with exactly those.

Servers start their workers by importing the app by name (`service.main:app`), in
processes of their own: those rebuild the same settings from the environment.
`hand_over()` is the one place that writes the resolved values there, before any
worker exists, and no code writes or reads a setting's variable after it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from deploy import metrics_dir, temporary
from deploy.profile import Profile
from deploy.profiles import load_profile
from service.settings import Settings, env_name, get_settings

DRAIN_FLAG = "draining"


@dataclass(frozen=True)
class LaunchPlan:
    profile: Profile
    settings: Settings  # complete: every value the launcher resolved is in it
    drain_seconds: int  # the window between SIGTERM and the graceful stop (0: none)
    owned: tuple[Path, ...]  # directories the launcher made for this launch, removed after it

    def environment(self) -> dict[str, str]:
        """The variables a worker needs to rebuild these settings: the resolved values."""
        values: dict[str, str] = {env_name("server"): self.settings.server}
        if self.settings.metrics_dir is not None and self.settings.metrics_enabled:
            values[env_name("metrics_dir")] = str(self.settings.metrics_dir)
            values[metrics_dir.MULTIPROC_ENV] = str(self.settings.metrics_dir)
        if self.settings.drain_file is not None:
            values[env_name("drain_file")] = str(self.settings.drain_file)
        return values

    def hand_over(self) -> None:
        """Give the resolved values to every process the server starts, and to an app the server
        imports in this process (it reads the settings anew, as every worker does)."""
        os.environ.update(self.environment())
        get_settings.cache_clear()

    def clean_up(self) -> None:
        for path in self.owned:
            shutil.rmtree(path, ignore_errors=True)


def with_profile(settings: Settings, name: str) -> Settings:
    """The settings as they are for `name`, when the command line names another profile."""
    return settings if name == settings.server else settings.model_copy(update={"server": name})


def resolve(name: str, settings: Settings) -> LaunchPlan:
    """Choose the profile and prepare what its workers share; nothing runs yet."""
    settings = with_profile(settings, name)
    updates: dict[str, Path] = {}
    owned: list[Path] = []
    if settings.metrics_enabled:
        directory = metrics_dir.prepare(settings.metrics_dir)
        if settings.metrics_dir is None:
            owned.append(directory)
        updates["metrics_dir"] = directory
    drain_seconds = settings.effective_drain_seconds
    if drain_seconds and settings.drain_file is None:
        run_dir = temporary.make("asgi-deploy-run-", "the drain flag (APP_DRAIN_FILE is unset)")
        owned.append(run_dir)
        updates["drain_file"] = run_dir / DRAIN_FLAG
    return LaunchPlan(
        profile=load_profile(settings.server),
        settings=settings.model_copy(update=updates),
        drain_seconds=drain_seconds,
        owned=tuple(owned),
    )
