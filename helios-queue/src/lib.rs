//! helios-queue: the durable job queue state machine (PENDING -> IN_PROGRESS -> DONE/FAILED).
//!
//! Not built yet: issue 3 fills this crate. It will be a pure, synchronous state machine
//! whose every transition is one atomic ATLAS batch; it never reads the clock itself.
