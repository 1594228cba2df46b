"""What a batch run did: counts, timings and the lines printed at its end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass
class BatchSummary:
    output: str
    total: int = 0              # images named by the inputs
    skipped: int = 0            # already in the output (--resume)
    done: int = 0               # rows written by this run
    failed: int = 0             # of those, rows with an error
    failed_before: int = 0      # error rows already in the output (--resume)
    retried: int = 0            # of the images done, rows with an error replaced (--retry-failed)
    actor_restarts: int = 0     # Ray inference actors that crashed and were restarted
    duplicates: int = 0         # rows an engine delivered twice, not written again
    seconds: float = 0.0        # wall time of this run, start-up included
    startup_seconds: float = 0.0  # until the first batch was written (model load, first decode)
    first_batch: int = 0        # rows in that first batch
    interrupted: bool = False
    engine: str = "local"
    model: str = ""
    backend: str = ""
    precision: str = ""
    failures: list = field(default_factory=list, repr=False)  # first few (image, message)

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    steady_from: tuple = (0.0, 0)  # (seconds, rows done) where the steady part begins

    @property
    def steady_images_per_second(self) -> float:
        """Throughput once the pipeline is full: from the first batch after a quarter of the rows
        (model load, the first batch and the decoders' head start left out) to the end."""
        start, done = self.steady_from
        span, rest = self.seconds - start, self.done - done
        return rest / span if rest > 0 and span > 0 and done else self.images_per_second

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("failures")
        data.pop("steady_from")
        data.update(remaining=self.remaining, images_per_second=round(self.images_per_second, 2),
                    steady_images_per_second=round(self.steady_images_per_second, 2),
                    seconds=round(self.seconds, 3), startup_seconds=round(self.startup_seconds, 3))
        return data

    def format(self) -> str:
        if not self.done and not self.interrupted:
            everything = ("the 1 image is" if self.total == 1
                          else f"all {self.total} images are")
            lines = [f"nothing to do: {everything} already in {self.output}"]
            if self.failed_before:
                lines.append(f"{self.failed_before} of them failed (rows with an \"error\"; "
                             "--retry-failed tries them again)")
            return "\n".join(lines)
        first = (f"{plural(self.done, 'image')} in {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} images/s; "
                 f"{self.steady_images_per_second:.1f} images/s after start-up), "
                 f"{self.done - self.failed} recognised, {self.failed} failed")
        if self.skipped:
            first += f", {self.skipped} skipped (already in {self.output})"
        lines = [first]
        if self.retried:
            lines.append(f"{plural(self.retried, 'failed image')} from earlier runs tried again "
                         "(their old rows replaced)")
        if self.actor_restarts:
            lines.append(f"{plural(self.actor_restarts, 'inference actor')} crashed and "
                         "restarted; their batches were run again (each image written once)")
        if self.failed_before:
            lines.append(f"{plural(self.failed_before, 'failed image')} from earlier runs "
                         f"{'is' if self.failed_before == 1 else 'are'} in {self.output}")
        if self.interrupted:
            lines.append(f"interrupted: {self.remaining} images left; run the same command with "
                         "--resume to finish")
        if self.failed or self.failed_before:
            lines.append("failed images have an \"error\" in their row "
                         "(columns error_type, error_message in CSV/Parquet)")
        return "\n".join(lines)


class LineProgress:
    """The progress of a run whose stderr is not a terminal (a log file, a pipe): a plain line
    at the start and every ``interval`` seconds, no bar redrawn with carriage returns. The calls the runner makes
    on a tqdm bar."""

    def __init__(self, total: int, *, say, interval: float = 30.0, disable: bool = False):
        import time

        self.clock = time.monotonic
        self.total, self.say, self.interval, self.disable = total, say, interval, disable
        self.n = 0
        self.failed = 0
        self.started = self.last = self.clock()
        if not disable:
            say(f"shiwu batch: {plural(total, 'image')} to do; progress every {interval:g} s")

    def update(self, count: int) -> None:
        self.n += count
        now = self.clock()
        if not self.disable and now - self.last >= self.interval and self.n < self.total:
            self.last = now
            rate = self.n / (now - self.started) if now > self.started else 0.0
            failed = f", {self.failed} failed" if self.failed else ""
            self.say(f"shiwu batch: {self.n}/{self.total} images ({self.n / self.total:.0%}), "
                     f"{rate:.1f} images/s{failed}")

    def set_postfix(self, failed: int = 0, refresh: bool = False) -> None:
        self.failed = failed

    def close(self) -> None:
        pass
