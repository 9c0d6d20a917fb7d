"""failover: the faults scenario's chat crowd on three server processes behind HAProxy, sharing
rooms through Redis, and at ``--kill-at`` the *runner* kills one instance with SIGKILL and does
not start it again: its clients reconnect through the balancer to a survivor and resume from
their cursor, which the survivors answer from the history in Redis.

What it checks is what a deploy on several machines relies on: every acknowledged message is
delivered to every receiver of its room exactly once and without a ``gap`` (0 lost, 0
duplicated), the time from the kill to each moved client's first message on its new
connection (p50/p99/max), and the delivery latency of everyone meanwhile.

    wirewise bench --scenario failover --transport ws     # the runner starts the cluster

Run by hand against ``wirewise serve T --instances 3``, nothing is killed (kill an instance
yourself: its pid is on the launcher's output).
"""

from wirewise.scenarios.faults import Flooder, Member, SlowReader

__all__ = ["Flooder", "Member", "SlowReader"]
