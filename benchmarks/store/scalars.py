"""Optional TensorBoard scalars of a run (`--tensorboard`): RUN_DIR/tensorboard/events.out.tfevents.*

Written with tensorboard's own event writer, which is protobuf only: no TensorFlow or PyTorch
import, so a torch run stays free of TensorFlow and the reverse. `tensorboard --logdir results/`
shows every run of every study side by side.
"""

from __future__ import annotations

import time
from pathlib import Path


class Scalars:
    def __init__(self, logdir: Path, resume_step: int | None = None):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(logdir))
        if resume_step is not None:
            # a run resumed from its checkpoint: TensorBoard drops what the killed attempt wrote after it
            self._writer.add_event(Event(wall_time=time.time(), step=resume_step,
                                         session_log=SessionLog(status=SessionLog.START)))

    def add(self, tag: str, value: float, step: int) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class NoScalars:
    def add(self, tag: str, value: float, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_scalars(run_dir: Path, enabled: bool, resume_step: int | None = None) -> Scalars | NoScalars:
    return Scalars(run_dir / "tensorboard", resume_step) if enabled else NoScalars()
