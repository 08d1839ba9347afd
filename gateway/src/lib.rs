//! `kura-gateway`: the public HTTP API (uploads, range streaming, listing, deletes, job
//! submission, admin). Stateless: it places every request on the ring built from the
//! cluster map and talks to storage nodes through `kura_cluster::client`.
//!
//! Not built yet: the data path arrives with the "Gateway data path" issue. The crate
//! exists now so that the workspace has its final shape and dependency direction.
