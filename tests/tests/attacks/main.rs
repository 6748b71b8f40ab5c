//! The attack suite of issue #14: one attacker per module, each doing it for real against
//! real nodes on 127.0.0.1, each asserting the refusal it expects (the reason, and the
//! audit entry where one is written) and that legitimate viewers and the recorder carry
//! on. Every test has a positive control: the same setup, done by someone entitled to it,
//! succeeds. docs/SECURITY.md has one row per attack and names the test here.
//!
//! Tests that live elsewhere because they belong to a feature's own suite are named in
//! docs/SECURITY.md too (invites in `fleetstate.rs`, forged grants in `security.rs`).
mod enumeration;
mod flood;
mod flooding;
mod gateway;
mod nvr_abuse;
mod raw;
mod stale;
