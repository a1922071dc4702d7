"""The app's progress bars: a finished stage says done, never a time left."""

from pruning_core.runtime.progress import Progress
from ui.state import StreamlitProgress


class _Bar:
    """Records what a Streamlit progress bar was told (value and text)."""

    def __init__(self) -> None:
        self.shown: list[tuple[float, str]] = []

    def progress(self, value: float, text: str) -> "_Bar":
        self.shown.append((value, text))
        return self


class _Container:
    def __init__(self) -> None:
        self.bars: list[_Bar] = []

    def progress(self, value: float, text: str) -> _Bar:
        self.bars.append(_Bar().progress(value, text))
        return self.bars[-1]


def test_a_finished_stage_says_done_and_finish_closes_the_stages_left_open():
    container = _Container()
    progress = StreamlitProgress(container)
    progress(Progress("embed", 5, 10))
    assert "left" in container.bars[0].shown[-1][1]  # a running stage estimates its time left
    progress(Progress("embed", 10, 10))
    value, text = container.bars[0].shown[-1]
    assert value == 1.0 and text.startswith("embed: done") and "left" not in text
    progress(Progress("k-NN", 3, 10))  # a stage whose last report came before its end
    progress.finish()
    assert [bar.shown[-1][1].split(":")[1].strip().startswith("done") for bar in container.bars] == [True, True]
    assert all("left" not in bar.shown[-1][1] and bar.shown[-1][0] == 1.0 for bar in container.bars)
    assert container.bars[0].shown[-1][1] == text  # a finished stage keeps its own time, not the job's
