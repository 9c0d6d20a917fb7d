"""rolling: the failover cluster through a deploy. The faults scenario's chat crowd on three
server processes behind HAProxy sharing rooms through Redis; at ``--kill-at`` (20 % into the
window by default) the *runner* sends each instance SIGTERM in turn and starts its replacement
on the same port, the next one only once the replacement listens. The stopped instance's
streams end and its sockets close with 1001; its clients reconnect through the balancer and
resume from their cursor.

It checks that a deploy loses nothing (every acknowledged message delivered once to every
receiver of its room, without a gap) and times each reconnection from the stop that caused it.

    wirewise bench --scenario rolling --transport sse     # the runner starts the cluster
"""

from wirewise.scenarios.faults import Flooder, Member, SlowReader

__all__ = ["Flooder", "Member", "SlowReader"]
