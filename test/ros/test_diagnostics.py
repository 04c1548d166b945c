"""The node's diagnostics figures and level, on a clock of the test's own."""

from diagnostic_msgs.msg import DiagnosticStatus

from samwise_ros.ros.diagnostics import STALLED_S, ProcessingStats

REJECTION = "image: unsupported encoding 'yuv422'"


class ManualClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def processed_frame(stats: ProcessingStats) -> None:
    stats.frame_received()
    stats.inference_started()
    stats.inference_done()


def test_rejected_frames_warn_with_the_reason_and_a_clean_period_is_ok():
    clock = ManualClock()
    stats = ProcessingStats(clock)
    processed_frame(stats)
    assert stats.report(dropped=0, active=True).level == DiagnosticStatus.OK
    clock.now += 1.0
    stats.frame_rejected(REJECTION)
    report = stats.report(dropped=0, active=True)
    assert (report.level, report.values["frames rejected"]) == (DiagnosticStatus.WARN, "1")
    assert report.problem == f"1 frames rejected ({REJECTION})"
    processed_frame(stats)
    assert stats.report(dropped=0, active=True).level == DiagnosticStatus.OK


def test_an_active_node_whose_camera_stopped_is_an_error_after_stalled_s():
    clock = ManualClock()
    stats = ProcessingStats(clock)
    processed_frame(stats)
    clock.now += STALLED_S - 1
    assert stats.report(dropped=0, active=True).level == DiagnosticStatus.OK
    clock.now += 2
    report = stats.report(dropped=0, active=True)
    assert report.level == DiagnosticStatus.ERROR
    assert report.problem == "no frame processed for 6 s: no image received for 6 s"
    assert report.values["rate (results/s)"] == "0.00"
    assert stats.report(dropped=0, active=False).level == DiagnosticStatus.OK  # inactive: idle on purpose


def test_frames_arriving_but_none_processed_is_an_error_with_the_rejections():
    clock = ManualClock()
    stats = ProcessingStats(clock)
    for _ in range(int(STALLED_S) + 1):
        clock.now += 1.0
        stats.frame_received()
        stats.frame_rejected(REJECTION)
    report = stats.report(dropped=0, active=True)
    assert report.level == DiagnosticStatus.ERROR
    assert report.problem == f"no frame processed for 6 s; 6 frames rejected ({REJECTION})"


def test_a_frame_stuck_in_inference_is_an_error():
    """What a compilation or a wedged GPU looks like from outside: frames come, no result for seconds."""
    clock = ManualClock()
    stats = ProcessingStats(clock)
    processed_frame(stats)
    stats.inference_started()
    clock.now += STALLED_S + 2
    stats.frame_received()
    report = stats.report(dropped=3, active=True)
    assert report.level == DiagnosticStatus.ERROR
    assert report.problem == "one frame has been in inference for 7 s"
    stats.inference_done()
    assert stats.report(dropped=3, active=True).level == DiagnosticStatus.OK


def test_activation_restarts_the_idle_time():
    clock = ManualClock()
    stats = ProcessingStats(clock)
    clock.now += 60.0  # configured, inactive for a minute
    stats.activated()
    clock.now += 1.0
    assert stats.report(dropped=0, active=True).level == DiagnosticStatus.OK
