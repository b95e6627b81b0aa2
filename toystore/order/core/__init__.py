"""
The order replicas' protocol with no I/O: Raft's election and commit rules
as plain objects, driven by events and answering with effects.  Nothing
here imports Twisted; the shell (:mod:`toystore.order.replica` and its
neighbours) owns the sockets, timers and disk, and the simulator
(``tests/sim``) runs many of these in one process.
"""

from .effects import Ready, State, Timing, Write
from .epochs import EpochLog
from .messages import Append, AppendReply, Handover, Message, VoteReply, VoteRequest
from .node import Counters, Node, NotServing, ProtocolError, Role
from .progress import Progress, majority, quorum_value

__all__ = [
    "Append",
    "AppendReply",
    "Counters",
    "EpochLog",
    "Handover",
    "Message",
    "Node",
    "NotServing",
    "Progress",
    "ProtocolError",
    "Ready",
    "Role",
    "State",
    "Timing",
    "VoteReply",
    "VoteRequest",
    "Write",
    "majority",
    "quorum_value",
]
