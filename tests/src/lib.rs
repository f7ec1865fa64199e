//! The in-process cluster harness for tillswarm: a coordinator on port 0 and N till
//! nodes in temporary folders with injected discovery, reused by the end-to-end
//! tests, the bench and the demo. End-to-end tests live in `tests/tests/`.
