"""`engage rebuild`: replay the whole log into fresh read models and swap them in."""

from __future__ import annotations

import asyncio
import resource

import asyncpg
from nats.errors import Error as NatsError
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from shared.errors import EngageError
from shared.settings import Settings


class RateColumn(ProgressColumn):
    """Events per second since the start."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0
        rate = task.completed / elapsed if elapsed > 0 else 0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


def run(settings: Settings) -> None:
    from services.analytics.engine.rebuild import RebuildBusy, RebuildCheckFailed, rebuild

    console = Console(stderr=True)
    with Progress(
        TextColumn("rebuilding"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("rebuild", total=1, completed=0)

        def progress(reached: int, end: int) -> None:
            bar.update(task, completed=reached, total=end)

        try:
            result = asyncio.run(rebuild(settings, progress))
        except RebuildCheckFailed as exc:
            raise EngageError(f"the rebuilt tables failed a check, nothing was swapped: {exc}") from exc
        except RebuildBusy as exc:
            raise EngageError(str(exc)) from exc
        except (OSError, NatsError, asyncpg.PostgresError) as exc:
            raise EngageError(
                f"cannot reach NATS or PostgreSQL ({type(exc).__name__}: {exc}); is `engage up` running?"
            ) from exc
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    console.print(
        f"rebuilt from {result.events:,} events up to sequence {result.sequence:,} "
        f"in {result.seconds:.1f} s ({result.rate:,.0f} events/s, peak memory {peak:,.0f} MB); swapped in"
    )
    if result.unreadable:
        console.print(f"{result.unreadable:,} unreadable events were skipped (see the dead-letter stream)")
    for name in result.checks:
        console.print(f"  ✓ {name}")
    for process in sorted(set(result.before) | set(result.after)):
        console.print(
            f"  {process}: participants {result.before.get(process, 0):,} before, "
            f"{result.after.get(process, 0):,} after"
        )
