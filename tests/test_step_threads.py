"""A decode step's thread count: the faster choice of late, the other tried now and then."""

from chatbot.engine.threads import ThreadChoice


def run(choice: ThreadChoice, seconds_for, steps: int, most: int = 2) -> list[int]:
    picked = []
    for _ in range(steps):
        n = choice.pick(most)
        choice.record(n, seconds_for(n))
        picked.append(n)
    return picked


def test_runs_the_faster_choice_and_tries_the_other_now_and_then():
    choice = ThreadChoice()
    busy = run(choice, {2: 0.030, 1: 0.012}.get, 512)  # a busy machine: one thread is faster
    assert busy[:2] == [2, 1]  # each tried once first
    assert busy.count(2) == 2 + (512 - 2) // ThreadChoice.PROBE_EVERY  # then only the probes
    quiet = run(choice, {2: 0.005, 1: 0.010}.get, 512)  # the load goes: both threads win again
    assert quiet[-64:].count(2) > 56


def test_one_thread_only_and_a_changed_thread_count():
    choice = ThreadChoice()
    assert set(run(choice, lambda n: 0.01, 40, most=1)) == {1}
    assert run(choice, {4: 0.004, 1: 0.010}.get, 8, most=4)[:2] == [4, 1]  # torch's count changed: start over
