//! Host-only: a write-back cache simulator that really aliases, and the oracle.
