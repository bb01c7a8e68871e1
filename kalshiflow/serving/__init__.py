"""Policy serving logic, free of Ray: the message types, the double-buffered model slot, the
registry-pointer watcher and the request statistics. ``actors/policy_server.py`` is the Ray Serve
shell around them; docs/serving.md describes the whole.
"""

from kalshiflow.serving.messages import (
    HOLD_ACTION,
    NO_MODEL,
    ActBatch,
    ActBatchReply,
    ActReply,
    ActRequest,
    ControlEvent,
    ControlReply,
    PolicyServerConfig,
    ReplyStatus,
    ServerStats,
    hold_reply,
)
from kalshiflow.serving.model_slot import (
    LoadedModel,
    ModelSlot,
    SwitchOutcome,
    code_schema_hash,
    registry_loader,
)
from kalshiflow.serving.stats import ServingStats
from kalshiflow.serving.watch import PointerStamp, PointerWatch, read_pointer, startup_candidates

__all__ = [
    "HOLD_ACTION", "NO_MODEL", "ActBatch", "ActBatchReply", "ActReply", "ActRequest", "ControlEvent",
    "ControlReply", "LoadedModel",
    "ModelSlot", "PointerStamp", "PointerWatch", "PolicyServerConfig", "ReplyStatus", "ServerStats",
    "ServingStats", "SwitchOutcome", "code_schema_hash", "hold_reply", "read_pointer", "registry_loader",
    "startup_candidates",
]
