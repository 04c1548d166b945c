"""The hand-over between the callbacks and the worker."""

from samwise_ros.ros.work_queue import WorkQueue


def test_work_queue_keeps_the_newest_frames_and_runs_commands_first():
    queue = WorkQueue(max_frames=2)
    assert [queue.put_frame(i) for i in range(5)] == [False, False, True, True, True]
    queue.put_command("reset")
    assert [queue.get() for _ in range(3)] == [("command", "reset"), ("frame", 3), ("frame", 4)]
    assert queue.dropped == 3
    queue.close()
    assert queue.get() is None
