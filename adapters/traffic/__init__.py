"""Traffic stores: where the gateway logs what it screened, and where retraining reads it back."""

from adapters.traffic.protocol import StoreUnavailable, TrafficRecord, TrafficStore
from adapters.traffic.sqlite import SQLiteTrafficStore

__all__ = ["SQLiteTrafficStore", "StoreUnavailable", "TrafficRecord", "TrafficStore"]
