//! `csi-provider-aws`: an AWS Secrets Manager and SSM Parameter Store
//! provider for the Kubernetes Secrets Store CSI driver.
//!
//! A mount reads top to bottom in [`mount::Provider::mount`]: [`spec`]
//! (parse and validate) → [`identity`] (the pod's own credentials) →
//! [`fetch`] (Secrets Manager, SSM) → [`render`] (files, versions, the
//! atomic writer). [`server`] owns the socket and the mapping of errors to
//! gRPC statuses; [`audit`] writes the record each mount leaves.

pub mod audit;
pub mod aws;
pub mod cache;
pub mod certificate;
pub mod cli;
pub mod client;
pub mod config;
pub mod encoding;
pub mod events;
pub mod failure;
pub mod fetch;
pub mod fetched;
pub mod health;
pub mod identity;
pub mod jmes;
pub mod kube;
pub mod limits;
pub mod memory;
pub mod mount;
pub mod proto;
pub mod region;
pub mod render;
pub mod secret;
pub mod server;
pub mod spec;
pub mod telemetry;
pub mod template;
