"""The alarm: callbacks at scheduled cycles, in order, re-armed for earlier deadlines."""

from __future__ import annotations

import simpy

from iommusim.hwmodels.alarm import Alarm


def test_rings_in_cycle_then_scheduling_order():
    env = simpy.Environment()
    rung = []
    alarm = Alarm(env, lambda key: rung.append((env.now, key)))
    alarm.at(10, "a")  # scheduled before the clock starts

    def later():
        yield env.timeout(2)
        alarm.at(5, "b")  # earlier than the armed deadline
        alarm.at(5, "c")
        alarm.at(20, "d")
        alarm.at(2, "now")

    env.process(later())
    env.run()
    assert rung == [(2, "now"), (5, "b"), (5, "c"), (10, "a"), (20, "d")]


def test_a_key_scheduled_while_ringing_for_the_same_cycle_rings_too():
    env = simpy.Environment()
    rung = []

    def ring(key):
        rung.append((env.now, key))
        if key == "first":
            alarm.at(env.now, "second")
            alarm.at(env.now + 1, "third")

    alarm = Alarm(env, ring)
    alarm.at(3, "first")
    env.run()
    assert rung == [(3, "first"), (3, "second"), (4, "third")]
