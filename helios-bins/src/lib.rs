//! helios-bins: the only async crate (tokio + hyper). It will hold the app wrapper, the HTTP
//! gateway, the RESP server, the proxy server, the worker runtime and the CLI.
//!
//! Not built yet: issues 5 and 6 fill this crate. Its binaries stay thin mains.
