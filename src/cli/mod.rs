//! Operator commands beside the server.

pub mod mount;
